package storage

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
)

// TestGetManyMatchesGet reads a mix of compressible, random, zero and
// repeated chunks in one call, into supplied buffers and into none, and
// compares every one with Get.
func TestGetManyMatchesGet(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(21, 22))
	cs := s.ChunkSize()
	l := s.NewLease()
	defer l.Release()
	var ids []ChunkID
	for _, raw := range [][]byte{textChunk(rng, cs), randomChunk(rng, cs), textChunk(rng, cs)} {
		id, err := s.Put(raw, l)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	ids = append(ids, ZeroChunk, ids[0])
	bufs := make([][]byte, len(ids))
	for i := range bufs {
		bufs[i] = bytes.Repeat([]byte{0xee}, cs)
	}
	for name, dsts := range map[string][][]byte{"nil": nil, "short": bufs[:2], "full": bufs} {
		got, err := s.GetMany(ids, dsts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) != len(ids) {
			t.Fatalf("%s: %d results for %d ids", name, len(got), len(ids))
		}
		for i, id := range ids {
			want, err := s.Get(id, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[i], want) {
				t.Fatalf("%s: chunk %d (#%d) differs from Get", name, id, i)
			}
			if i < len(dsts) && &got[i][0] != &dsts[i][0] {
				t.Fatalf("%s: #%d not decoded into its buffer", name, i)
			}
		}
	}
	if got, err := s.GetMany(nil, nil); err != nil || len(got) != 0 {
		t.Fatalf("empty GetMany = %v, %v", got, err)
	}
}

// TestGetManyCorruptionIsAnError damages one chunk of a batch: the call
// fails with ErrCorrupt naming it, returns no data and counts the read, as
// Get does; a missing id is ErrNotFound.
func TestGetManyCorruptionIsAnError(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(23, 24))
	l := s.NewLease()
	defer l.Release()
	var ids []ChunkID
	for _, raw := range [][]byte{textChunk(rng, 4096), randomChunk(rng, 4096), textChunk(rng, 4096)} {
		id, err := s.Put(raw, l)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if _, err := s.GetMany(ids, nil); err != nil {
		t.Fatalf("undamaged batch: %v", err)
	}
	for k, at := range []int{1, 0} { // raw payload, then zstd payload
		flipStoredByte(t, s, ids[at], 100)
		got, err := s.GetMany(ids, nil)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("batch with damaged chunk %d: err %v; want ErrCorrupt", ids[at], err)
		}
		if got != nil {
			t.Fatal("damaged batch returned data")
		}
		if n := s.Stats().CorruptReads; n != int64(k+1) {
			t.Fatalf("CorruptReads = %d, want %d", n, k+1)
		}
	}
	if _, err := s.GetMany([]ChunkID{ids[2], ids[2] + 1000}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing chunk: err %v; want ErrNotFound", err)
	}
}

// TestGetEachFailsOnlyTheDamagedChunk damages one chunk of three: GetEach
// returns the other two intact and ErrCorrupt for that one alone, counted
// once.
func TestGetEachFailsOnlyTheDamagedChunk(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(25, 26))
	l := s.NewLease()
	defer l.Release()
	var ids []ChunkID
	var raws [][]byte
	for _, raw := range [][]byte{textChunk(rng, 4096), textChunk(rng, 4096), randomChunk(rng, 4096)} {
		id, err := s.Put(raw, l)
		if err != nil {
			t.Fatal(err)
		}
		ids, raws = append(ids, id), append(raws, raw)
	}
	flipStoredByte(t, s, ids[1], 100)
	ids = append(ids, ids[2]+1000)
	got, errs, err := s.GetEach(ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		if errs[i] != nil || !bytes.Equal(got[i], raws[i]) {
			t.Fatalf("intact chunk #%d: err %v, equal %v", i, errs[i], bytes.Equal(got[i], raws[i]))
		}
	}
	if !errors.Is(errs[1], ErrCorrupt) || got[1] != nil {
		t.Fatalf("damaged chunk: %d bytes, err %v; want ErrCorrupt", len(got[1]), errs[1])
	}
	if !errors.Is(errs[3], ErrNotFound) || got[3] != nil {
		t.Fatalf("missing chunk: err %v; want ErrNotFound", errs[3])
	}
	if n := s.Stats().CorruptReads; n != 1 {
		t.Fatalf("CorruptReads = %d, want 1", n)
	}
}

// TestGetEachIntoOverwritesReusedSlices reads into slices left over from
// an earlier call: every entry is overwritten, a stale error or buffer
// never survives, and slices of the wrong length are refused.
func TestGetEachIntoOverwritesReusedSlices(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(27, 28))
	l := s.NewLease()
	defer l.Release()
	raw := textChunk(rng, 4096)
	id, err := s.Put(raw, l)
	if err != nil {
		t.Fatal(err)
	}
	ids := []ChunkID{id, id + 1000}
	stale := []byte("stale")
	out, errs := [][]byte{stale, stale}, []error{ErrCorrupt, nil}
	if err := s.GetEachInto(ids, nil, out, errs); err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || !bytes.Equal(out[0], raw) {
		t.Fatalf("present chunk: err %v, equal %v", errs[0], bytes.Equal(out[0], raw))
	}
	if !errors.Is(errs[1], ErrNotFound) || out[1] != nil {
		t.Fatalf("missing chunk: %q, err %v; want nil, ErrNotFound", out[1], errs[1])
	}
	if err := s.GetEachInto(ids, nil, out[:1], errs); err == nil {
		t.Fatal("GetEachInto took one out slot for two ids")
	}
}

// TestGetEachRunOfIDs reads runs of consecutive ids, the shape a multi-chunk
// read of imported data has (one pack lookup for many): forward, over a
// freed id, with a gap, a missing id, the zero chunk and a step back in the
// middle, and a damaged chunk. Every chunk matches Get; the missing one is
// ErrNotFound and the damaged one ErrCorrupt, alone.
func TestGetEachRunOfIDs(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(31, 32))
	cs := s.ChunkSize()
	l := s.NewLease()
	defer l.Release()
	// One PutMany: the chunks share packs (a pack holds one transaction's
	// new chunks), the freed one in the middle of one.
	var raws [][]byte
	for i := range 41 {
		raw := textChunk(rng, cs)
		if i%3 == 0 {
			raw = randomChunk(rng, cs)
		}
		raws = append(raws, raw)
	}
	all, err := s.PutMany(raws, l)
	if err != nil {
		t.Fatal(err)
	}
	freed := all[10] // stored between ids[9] and ids[10], then freed by GC
	if packBase(freed) != packBase(all[9]) || packBase(freed) != packBase(all[11]) {
		t.Fatalf("chunks %d, %d, %d are not in one pack", all[9], freed, all[11])
	}
	ids := append(append([]ChunkID{}, all[:10]...), all[11:]...)
	l.Forget([]ChunkID{freed})
	if _, err := s.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(freed, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the freed chunk still reads: %v", err)
	}
	missing := ids[len(ids)-1] + 5
	want := map[ChunkID][]byte{}
	for _, id := range append(ids, ZeroChunk) {
		b, err := s.Get(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = b
	}
	damaged := ids[30]
	flipStoredByte(t, s, damaged, 9)
	req := append([]ChunkID{}, ids[:10]...)               // a run
	req = append(req, freed, ids[10], ids[11])            // over a freed id
	req = append(req, ids[20:26]...)                      // after a gap
	req = append(req, missing, ZeroChunk, ids[3], ids[4]) // missing, zero, a step back
	req = append(req, ids[26:36]...)                      // on, over the damaged one
	got, errs, err := s.GetEach(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range req {
		switch id {
		case missing, freed:
			if !errors.Is(errs[i], ErrNotFound) || got[i] != nil {
				t.Fatalf("#%d missing id: %v", i, errs[i])
			}
		case damaged:
			if !errors.Is(errs[i], ErrCorrupt) || got[i] != nil {
				t.Fatalf("#%d damaged chunk: %v", i, errs[i])
			}
		default:
			if errs[i] != nil || !bytes.Equal(got[i], want[id]) {
				t.Fatalf("#%d chunk %d: %v, or bytes differ from Get", i, id, errs[i])
			}
		}
	}
}
