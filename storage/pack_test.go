package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// TestPackRoundTrip builds a pack with empty slots in the middle and at the
// end and reads every slot back; packWithout empties the asked slots and
// reports a pack with nothing left as dead.
func TestPackRoundTrip(t *testing.T) {
	recs := [][]byte{[]byte("alpha"), nil, []byte("gamma-gamma"), nil, nil}
	var b packBuilder
	b.reset(0)
	for _, r := range recs {
		b.add(r)
	}
	v := b.finish()
	for i, want := range recs {
		got, err := packRecord(v, i)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("slot %d = %q, %v; want %q", i, got, err, want)
		}
	}
	if got, err := packRecord(v, len(recs)+7); got != nil || err != nil {
		t.Fatalf("slot past the end = %q, %v; want empty", got, err)
	}
	var slots []int
	if err := eachPackRecord(v, func(i int, _ []byte) error { slots = append(slots, i); return nil }); err != nil || len(slots) != 2 || slots[0] != 0 || slots[1] != 2 {
		t.Fatalf("eachPackRecord visited %v, %v", slots, err)
	}
	w, live, err := packWithout(v, func(i int) bool { return i == 0 })
	if err != nil || !live {
		t.Fatalf("packWithout slot 0: live %v, %v", live, err)
	}
	if got, _ := packRecord(w, 0); got != nil {
		t.Fatalf("emptied slot still holds %q", got)
	}
	if got, _ := packRecord(w, 2); !bytes.Equal(got, recs[2]) {
		t.Fatalf("kept slot reads %q", got)
	}
	if _, live, err := packWithout(w, func(i int) bool { return i == 2 }); live || err != nil {
		t.Fatalf("emptying the last record: live %v, %v", live, err)
	}
}

// TestPackDamageIsCorruption: a pack whose trailer or slot table does not
// add up is ErrCorrupt on every path, never a wrong slice.
func TestPackDamageIsCorruption(t *testing.T) {
	var b packBuilder
	b.reset(0)
	b.add([]byte("one"))
	b.add([]byte("two"))
	good := b.finish()
	damaged := map[string][]byte{
		"empty":       {},
		"short":       good[len(good)-2:],
		"version":     append(append([]byte{}, good[:len(good)-1]...), packVersion+1),
		"slot count":  func() []byte { v := bytes.Clone(good); binary.LittleEndian.PutUint16(v[len(v)-3:], 300); return v }(),
		"end past":    func() []byte { v := bytes.Clone(good); binary.LittleEndian.PutUint32(v[6:], 1000); return v }(),
		"end reverse": func() []byte { v := bytes.Clone(good); binary.LittleEndian.PutUint32(v[10:], 1); return v }(),
	}
	for name, v := range damaged {
		_, err1 := packRecord(v, 1)
		err2 := eachPackRecord(v, func(int, []byte) error { return nil })
		_, _, err3 := packWithout(v, func(int) bool { return false })
		for _, err := range []error{err1, err2, err3} {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: %v, want ErrCorrupt", name, err)
			}
		}
	}
}

// TestPutManySharesPacks: one transaction's new chunks share a pack, a
// pack never outgrows its bound, and GC freeing one chunk of a pack leaves
// its neighbours readable while the freed one reads as not found.
func TestPutManySharesPacks(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(41, 42))
	cs := s.ChunkSize()
	var raws [][]byte
	for range 600 {
		raws = append(raws, randomChunk(rng, cs))
	}
	l := s.NewLease()
	defer l.Release()
	ids, err := s.PutMany(raws, l)
	if err != nil {
		t.Fatal(err)
	}
	packs := map[ChunkID]int{}
	for _, id := range ids {
		packs[packBase(id)]++
	}
	// 600 incompressible 4 KiB chunks: the 1 MiB value-log files of the
	// test options bound a pack to 512 KiB, so 5 packs.
	if len(packs) > 6 {
		t.Fatalf("600 chunks in %d packs", len(packs))
	}
	for base, n := range packs {
		if n*(cs+recordHeader) > s.packBytes {
			t.Fatalf("pack %d holds %d chunks, over %d bytes", base, n, s.packBytes)
		}
	}
	gone := []ChunkID{ids[5], ids[300], ids[301]}
	l.Forget(gone)
	st, err := s.GC(context.Background())
	if err != nil || st.FreedChunks != 3 {
		t.Fatalf("GC = %+v, %v; want 3 freed", st, err)
	}
	for i, id := range ids {
		got, err := s.Get(id, nil)
		if id == gone[0] || id == gone[1] || id == gone[2] {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("freed chunk %d: %v", id, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, raws[i]) {
			t.Fatalf("chunk %d after its neighbour was freed: %v", id, err)
		}
	}
	if rep, err := s.Audit(context.Background(), nil, true); err != nil || len(rep.Corrupt)+len(rep.Dangling)+len(rep.Missing) != 0 {
		t.Fatalf("audit %+v, %v", rep, err)
	}
}

// TestGCRewritesManyPacksInSteps frees one chunk in each of many packs:
// the rewrites exceed one transaction's budget, so GC commits in several
// steps, and still frees them all.
func TestGCRewritesManyPacksInSteps(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(43, 44))
	cs := s.ChunkSize()
	l := s.NewLease()
	defer l.Release()
	var gone []ChunkID
	var keep []ChunkID
	keepRaw := map[ChunkID][]byte{}
	// Each PutMany makes packs of about 512 KiB; freeing one chunk of each
	// rewrites the rest of it.
	for range 48 {
		var raws [][]byte
		for range 100 {
			raws = append(raws, randomChunk(rng, cs))
		}
		ids, err := s.PutMany(raws, l)
		if err != nil {
			t.Fatal(err)
		}
		gone = append(gone, ids[0])
		keep = append(keep, ids[1:]...)
		for i, id := range ids[1:] {
			keepRaw[id] = raws[i+1]
		}
	}
	if 48*99*cs < 2*gcRewriteBudget {
		t.Fatalf("the test no longer exceeds the rewrite budget")
	}
	l.Forget(gone)
	st, err := s.GC(context.Background())
	if err != nil || st.FreedChunks != int64(len(gone)) {
		t.Fatalf("GC = %+v, %v; want %d freed", st, err, len(gone))
	}
	for _, id := range gone {
		if _, err := s.Get(id, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("freed chunk %d: %v", id, err)
		}
	}
	for _, id := range keep {
		if got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, keepRaw[id]) {
			t.Fatalf("kept chunk %d: %v", id, err)
		}
	}
}

// TestOpenRefusesFormat1Store: a store written before packs (one record per
// chunk under 'c') is refused with ErrFormat rather than misread.
func TestOpenRefusesFormat1Store(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(tx *badger.Txn) error {
		if err := tx.Delete(keyFormat); err != nil {
			return err
		}
		return tx.Set(idKey(nsChunk, 1), s.codec.encode([]byte("old"), nil))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir, o); !errors.Is(err, ErrFormat) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open of a format-1 store: %v, want ErrFormat", err)
	}
}

// TestDamagedPackFailsEachOfItsChunks: a pack whose trailer is damaged
// fails every chunk asked of it with ErrCorrupt, alone: a chunk of another
// pack in the same request still reads.
func TestDamagedPackFailsEachOfItsChunks(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(45, 46))
	l := s.NewLease()
	defer l.Release()
	ids, err := s.PutMany([][]byte{textChunk(rng, 4096), textChunk(rng, 4096)}, l)
	if err != nil {
		t.Fatal(err)
	}
	other := textChunk(rng, 4096)
	oid, err := s.Put(other, l)
	if err != nil {
		t.Fatal(err)
	}
	if packBase(ids[0]) != packBase(ids[1]) || packBase(oid) == packBase(ids[0]) {
		t.Fatalf("ids %v and %d: want the first two in one pack, the third apart", ids, oid)
	}
	err = s.db.Update(func(tx *badger.Txn) error {
		v, err := packCopy(tx, packBase(ids[0]))
		if err != nil {
			return err
		}
		v[len(v)-1] = packVersion + 1
		return tx.Set(packKey(packBase(ids[0])), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	got, errs, err := s.GetEach([]ChunkID{ids[0], oid, ids[1]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		if !errors.Is(errs[i], ErrCorrupt) || got[i] != nil {
			t.Fatalf("#%d of the damaged pack: %v", i, errs[i])
		}
	}
	if errs[1] != nil || !bytes.Equal(got[1], other) {
		t.Fatalf("the chunk of the sound pack: %v", errs[1])
	}
}
