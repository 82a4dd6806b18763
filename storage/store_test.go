package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

func testOptions() Options {
	o := DefaultOptions()
	o.ChunkSize = 4 << 10
	o.GCGrace = 0
	o.GCInterval = 0
	o.ValueLogFileSize = 1 << 20 // Badger's minimum, so value-log GC has whole files to reclaim
	return o
}

// openIn opens a store in a fresh temporary directory and returns the
// directory too, for tests that reopen it (see reopen). The caller closes
// the store, or hands it to reopen.
func openIn(t testing.TB, o Options) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s, dir
}

// reopen closes s and opens its directory again; the new store is closed
// when the test ends.
func reopen(t testing.TB, s *Store, dir string, o Options) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openTest(t testing.TB, o Options) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// textChunk is compressible: words from a small vocabulary.
func textChunk(rng *rand.Rand, n int) []byte {
	words := []string{"strata ", "chunk ", "layer ", "disk ", "image ", "snapshot ", "the ", "of ", "\n"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
	}
	return b.Bytes()[:n]
}

func randomChunk(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestPutGetRoundTrip(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(1, 2))
	cs := s.ChunkSize()
	cases := map[string][]byte{
		"text":       textChunk(rng, cs),
		"random":     randomChunk(rng, cs),
		"short-last": textChunk(rng, 1000),
		"short-rand": randomChunk(rng, 17),
		"one-byte":   {7},
	}
	l := s.NewLease()
	defer l.Release()
	ids := map[string]ChunkID{}
	for name, raw := range cases {
		id, err := s.Put(raw, l)
		if err != nil {
			t.Fatalf("%s: Put: %v", name, err)
		}
		if id == ZeroChunk {
			t.Fatalf("%s: got ZeroChunk for non-zero data", name)
		}
		ids[name] = id
	}
	for name, raw := range cases {
		got, err := s.Get(ids[name], nil)
		if err != nil {
			t.Fatalf("%s: Get: %v", name, err)
		}
		if !bytes.Equal(got, raw) {
			t.Fatalf("%s: round trip differs", name)
		}
	}
	st := s.Stats()
	if st.Chunks != int64(len(cases)) {
		t.Fatalf("Chunks = %d, want %d", st.Chunks, len(cases))
	}
	if st.StoredBytes >= st.RawBytes {
		t.Fatalf("text did not compress: stored %d raw %d", st.StoredBytes, st.RawBytes)
	}
	// Incompressible data is stored raw: at most the header more.
	id, _ := s.Put(cases["random"], l)
	if id != ids["random"] {
		t.Fatalf("same content got a second id")
	}

	zero := make([]byte, cs)
	if id, err := s.Put(zero, l); err != nil || id != ZeroChunk {
		t.Fatalf("zero chunk: id %d err %v", id, err)
	}
	if id, err := s.Put(zero[:100], l); err != nil || id != ZeroChunk {
		t.Fatalf("short zero chunk: id %d err %v", id, err)
	}
	if got := s.Stats().Chunks; got != int64(len(cases)) {
		t.Fatalf("zero chunks were stored: %d chunks", got)
	}
	got, err := s.Get(ZeroChunk, nil)
	if err != nil || len(got) != cs || !isZero(got) {
		t.Fatalf("Get(ZeroChunk) = %d bytes, err %v", len(got), err)
	}
	if _, err := s.Get(ChunkID(1<<40), nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of unknown id: %v, want ErrNotFound", err)
	}
	if _, err := s.Put(make([]byte, cs+1), l); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversize Put: %v, want ErrInvalid", err)
	}
}

func TestReopenKeepsChunkSizeSecretAndFigures(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	o.ChunkSize = 8 << 10
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	raw := textChunk(rng, 8<<10)
	id, err := s.Put(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Txn) error { return tx.AddRef(id, 2) }); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	o.ChunkSize = 64 << 10
	s, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ChunkSize() != 8<<10 {
		t.Fatalf("ChunkSize after reopen = %d, want 8192", s.ChunkSize())
	}
	// Same secret: same content dedups onto the same id.
	id2, err := s.Put(raw, nil)
	if err != nil || id2 != id {
		t.Fatalf("after reopen Put = %d (%v), want %d", id2, err, id)
	}
	after := s.Stats()
	after.DiskBytes, before.DiskBytes = 0, 0
	if after != before {
		t.Fatalf("figures after reopen %+v, before %+v", after, before)
	}
	if before.ReferencedRaw != 2*int64(len(raw)) {
		t.Fatalf("ReferencedRaw = %d, want %d", before.ReferencedRaw, 2*len(raw))
	}
}

func TestOpenRejectsBadChunkSize(t *testing.T) {
	for _, n := range []int{1000, 2 << 10, 128 << 10, 12 << 10} {
		o := testOptions()
		o.ChunkSize = n
		if _, err := Open(t.TempDir(), o); !errors.Is(err, ErrInvalid) {
			t.Errorf("chunk size %d: %v, want ErrInvalid", n, err)
		}
	}
}

func TestTxnKeyValueNamespace(t *testing.T) {
	s := openTest(t, testOptions())
	id, err := s.Put(textChunk(rand.New(rand.NewPCG(5, 6)), 4096), nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := []byte("v1")
	err = s.Update(func(tx *Txn) error {
		for _, k := range []string{"a/1", "a/2", "b/1", "c", "s", "h", "r"} {
			if err := tx.Set([]byte(k), buf); err != nil {
				return err
			}
		}
		buf[1] = '9' // Set copied the value: this must not change what is stored
		return tx.Delete([]byte("b/1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(func(tx *Txn) error {
		v, err := tx.Get([]byte("a/1"))
		if err != nil || string(v) != "v1" {
			t.Errorf("Get a/1 = %q, %v", v, err)
		}
		if _, err := tx.Get([]byte("b/1")); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted key: %v, want ErrNotFound", err)
		}
		var keys []string
		if err := tx.Iterate([]byte("a/"), func(k, v []byte) error {
			keys = append(keys, string(k))
			return nil
		}); err != nil {
			return err
		}
		if len(keys) != 2 || keys[0] != "a/1" || keys[1] != "a/2" {
			t.Errorf("Iterate a/ = %v", keys)
		}
		// The whole user space holds only user keys, not the store's.
		keys = nil
		if err := tx.Iterate(nil, func(k, v []byte) error {
			keys = append(keys, string(k))
			return nil
		}); err != nil {
			return err
		}
		if len(keys) != 6 {
			t.Errorf("Iterate all = %v, want the 6 user keys", keys)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// User keys named like store prefixes did not disturb the chunk.
	if _, err := s.Get(id, nil); err != nil {
		t.Fatalf("chunk after user writes: %v", err)
	}
	// A failing fn commits nothing.
	sentinel := errors.New("stop")
	err = s.Update(func(tx *Txn) error {
		if err := tx.Set([]byte("a/3"), []byte("x")); err != nil {
			return err
		}
		return sentinel
	})
	if !errors.Is(err, sentinel) {
		t.Fatalf("Update error = %v", err)
	}
	s.View(func(tx *Txn) error {
		if _, err := tx.Get([]byte("a/3")); !errors.Is(err, ErrNotFound) {
			t.Errorf("aborted Set is visible: %v", err)
		}
		return nil
	})
}

func TestAddRefErrors(t *testing.T) {
	s := openTest(t, testOptions())
	id, err := s.Put(textChunk(rand.New(rand.NewPCG(7, 8)), 4096), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Txn) error { return tx.AddRef(id, -1) }); !errors.Is(err, ErrRefUnderflow) {
		t.Fatalf("AddRef below zero: %v", err)
	}
	if err := s.Update(func(tx *Txn) error { return tx.AddRef(id+1000, 1) }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("AddRef of unknown chunk: %v", err)
	}
	if err := s.Update(func(tx *Txn) error { return tx.AddRef(ZeroChunk, 5) }); err != nil {
		t.Fatalf("AddRef(ZeroChunk): %v", err)
	}
	// Several changes in one transaction see each other.
	err = s.Update(func(tx *Txn) error {
		for _, d := range []int64{1, 1, -1, 3, -4, 2} {
			if err := tx.AddRef(id, d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(func(tx *Txn) error {
		info, err := tx.ChunkInfo(id)
		if err != nil || info.Refs != 2 || info.RawLen != 4096 || info.StoredLen <= 0 || info.StoredLen > 4096+recordHeader {
			t.Errorf("ChunkInfo = %+v, %v", info, err)
		}
		if _, err := tx.ChunkInfo(id + 1000); !errors.Is(err, ErrNotFound) {
			t.Errorf("ChunkInfo of unknown chunk: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Audit(context.Background(), func(_ *Txn, yield func(ChunkID) error) error {
		yield(id)
		return yield(id)
	}, true)
	if err != nil || !rep.Clean() {
		t.Fatalf("audit after AddRefs: %+v %v", rep, err)
	}
}

func TestConcurrentIdenticalPutsYieldOneID(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(9, 10))
	contents := [][]byte{textChunk(rng, 4096), randomChunk(rng, 4096), textChunk(rng, 333)}
	const workers = 8
	ids := make([][]ChunkID, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := s.NewLease()
			defer l.Release()
			for _, c := range contents {
				id, err := s.Put(append([]byte(nil), c...), l)
				if err != nil {
					t.Error(err)
					return
				}
				ids[w] = append(ids[w], id)
			}
		}()
	}
	wg.Wait()
	for w := 1; w < workers; w++ {
		for i := range contents {
			if ids[w][i] != ids[0][i] {
				t.Fatalf("worker %d content %d: id %d, worker 0 got %d", w, i, ids[w][i], ids[0][i])
			}
		}
	}
	if got := s.Stats().Chunks; got != int64(len(contents)) {
		t.Fatalf("Chunks = %d, want %d", got, len(contents))
	}
}

// flipStoredByte damages a chunk's stored record in place, as a bad disk
// sector would, bypassing the store's write path.
func flipStoredByte(t *testing.T, s *Store, id ChunkID, at int) {
	t.Helper()
	if err := s.InjectCorruption(id, at); err != nil {
		t.Fatal(err)
	}
}

func TestFlippedByteIsCorruptionNeverData(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(11, 12))
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
	flipStoredByte(t, s, ids[0], 100) // zstd payload
	flipStoredByte(t, s, ids[1], 100) // raw payload
	for _, id := range ids[:2] {
		got, err := s.Get(id, nil)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Get of damaged chunk %d: %d bytes, err %v; want ErrCorrupt", id, len(got), err)
		}
		if got != nil {
			t.Fatalf("damaged chunk returned data")
		}
	}
	if _, err := s.Get(ids[2], nil); err != nil {
		t.Fatalf("undamaged chunk: %v", err)
	}
	if n := s.Stats().CorruptReads; n != 2 {
		t.Fatalf("CorruptReads = %d, want 2", n)
	}
	rep, err := s.Audit(context.Background(), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Corrupt) != 2 || rep.Corrupt[0] != ids[0] || rep.Corrupt[1] != ids[1] {
		t.Fatalf("audit Corrupt = %v, want %v", rep.Corrupt, ids[:2])
	}
	if rep.Clean() {
		t.Fatal("audit with corrupt chunks reports clean")
	}
}

func TestAuditFindsLeakedMissingDangling(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(13, 14))
	var ids []ChunkID
	for range 4 {
		id, err := s.Put(textChunk(rng, 4096), nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	addRefs(t, s, ids...)
	// The maps: ids[0] once (clean), ids[1] never (leaked), ids[2] twice
	// (missing), and an id the store never had (dangling). ids[3] once.
	const ghost = ChunkID(999999)
	refs := func(_ *Txn, yield func(ChunkID) error) error {
		for _, id := range []ChunkID{ids[0], ids[2], ids[2], ghost, ids[3], ZeroChunk} {
			if err := yield(id); err != nil {
				return err
			}
		}
		return nil
	}
	rep, err := s.Audit(context.Background(), refs, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Chunks != 4 || len(rep.Leaked) != 1 || rep.Leaked[0] != ids[1] ||
		len(rep.Missing) != 1 || rep.Missing[0] != ids[2] ||
		len(rep.Dangling) != 1 || rep.Dangling[0] != ghost || len(rep.Corrupt) != 0 {
		t.Fatalf("audit = %+v; ids %v", rep, ids)
	}
}

func TestDeleteEverythingGCFreesAllAndDiskShrinks(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(15, 16))
	n := 1500 // ~6 MiB of incompressible chunks: several 1 MiB value-log files
	if testing.Short() {
		n = 800
	}
	l := s.NewLease()
	ids := putEach(t, s, l, n, func() []byte { return randomChunk(rng, 4096) })
	addRefs(t, s, ids...)
	l.Release()
	ctx := context.Background()
	if st, err := s.GC(ctx); err != nil || st.FreedChunks != 0 {
		t.Fatalf("GC with everything referenced freed %d (%v)", st.FreedChunks, err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	diskBefore := s.Stats().DiskBytes

	// Delete every reference.
	if err := s.Update(func(tx *Txn) error {
		for _, id := range ids {
			if err := tx.AddRef(id, -1); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.FreedChunks != int64(n) {
		t.Fatalf("GC freed %d chunks, want %d", st.FreedChunks, n)
	}
	if st.VlogRewritten == 0 || st.VlogReclaimed <= 0 {
		t.Fatalf("value-log GC reclaimed nothing: %+v", st)
	}
	stats := s.Stats()
	if stats.Chunks != 0 || stats.RawBytes != 0 || stats.StoredBytes != 0 || stats.ReferencedRaw != 0 {
		t.Fatalf("figures after deleting everything: %+v", stats)
	}
	if stats.DiskBytes >= diskBefore {
		t.Fatalf("disk bytes %d after GC, %d before", stats.DiskBytes, diskBefore)
	}
	rep, err := s.Audit(ctx, func(*Txn, func(ChunkID) error) error { return nil }, true)
	if err != nil || !rep.Clean() || rep.Chunks != 0 {
		t.Fatalf("audit after delete-all: %+v %v", rep, err)
	}
	for _, id := range ids[:10] {
		if _, err := s.Get(id, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("freed chunk %d: %v", id, err)
		}
	}
	t.Logf("disk %d -> %d bytes; %+v", diskBefore, stats.DiskBytes, st)
}

func TestLeaseProtectsUnreferencedChunks(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(17, 18))
	ctx := context.Background()
	l := s.NewLease()
	raw := textChunk(rng, 4096)
	id, err := s.Put(raw, l)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := s.GC(ctx); st.FreedChunks != 0 {
		t.Fatal("GC freed a leased chunk")
	}
	if _, err := s.Get(id, nil); err != nil {
		t.Fatal(err)
	}
	l.Release()
	if st, _ := s.GC(ctx); st.FreedChunks != 1 {
		t.Fatalf("GC after release freed %d, want 1", st.FreedChunks)
	}
	// Forget drops a hold the same way.
	l3 := s.NewLease()
	id3, err := s.Put(raw, l3)
	if err != nil || l3.Held() != 1 {
		t.Fatalf("Put: %v, held %d", err, l3.Held())
	}
	if st, _ := s.GC(ctx); st.FreedChunks != 0 {
		t.Fatal("GC freed a leased chunk")
	}
	l3.Forget([]ChunkID{id3})
	if st, _ := s.GC(ctx); st.FreedChunks != 1 || l3.Held() != 0 {
		t.Fatalf("GC after Forget freed %d, held %d", st.FreedChunks, l3.Held())
	}
	l3.Release()
	if _, err := s.Put(raw, l); !errors.Is(err, ErrLeaseReleased) {
		t.Fatalf("Put under released lease: %v", err)
	}

	// Revive: a chunk at zero refs waiting for GC, deduplicated by a new
	// Put under a new lease, must survive GC and keep its id.
	id1, _ := s.Put(raw, nil)
	l2 := s.NewLease()
	id2, err := s.Put(raw, l2)
	if err != nil || id2 != id1 {
		t.Fatalf("dedup onto zero-count chunk: %d, %v (want %d)", id2, err, id1)
	}
	if st, _ := s.GC(ctx); st.FreedChunks != 0 {
		t.Fatal("GC freed a revived, leased chunk")
	}
	if err := s.Update(func(tx *Txn) error { return tx.AddRef(id2, 1) }); err != nil {
		t.Fatal(err)
	}
	l2.Release()
	if st, _ := s.GC(ctx); st.FreedChunks != 0 {
		t.Fatal("GC freed a referenced chunk")
	}

	// Grace: with a long grace period nothing young is freed, lease or not.
	o := testOptions()
	o.GCGrace = time.Hour
	s2 := openTest(t, o)
	if _, err := s2.Put(raw, nil); err != nil {
		t.Fatal(err)
	}
	if st, _ := s2.GC(ctx); st.FreedChunks != 0 {
		t.Fatal("GC freed a chunk inside its grace period")
	}
}

// TestGCRacingAddRefNeverFreesReferenced runs GC continuously while
// writers put chunks under short leases, reference some, drop others and
// re-put content that may be waiting for GC. Whatever interleaving happens,
// every chunk a committed transaction references must stay readable, and
// the final audit must be clean.
func TestGCRacingAddRefNeverFreesReferenced(t *testing.T) {
	s := openTest(t, testOptions())
	ctx, cancel := context.WithCancel(context.Background())
	rounds := 300
	if testing.Short() {
		rounds = 100
	}
	var gcWG sync.WaitGroup
	gcWG.Add(1)
	go func() {
		defer gcWG.Done()
		for ctx.Err() == nil {
			if _, err := s.GC(ctx); err != nil && ctx.Err() == nil {
				t.Error(err)
				return
			}
		}
	}()

	// A small pool of contents so puts dedup onto chunks that GC is busy
	// freeing.
	rng0 := rand.New(rand.NewPCG(19, 20))
	var pool [][]byte
	for range 24 {
		pool = append(pool, textChunk(rng0, 4096))
	}
	const writers = 4
	var mu sync.Mutex
	refs := map[ChunkID]int64{} // committed references, the model
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			var mine []ChunkID
			for range rounds {
				l := s.NewLease()
				id, err := s.Put(pool[rng.IntN(len(pool))], l)
				if err != nil {
					t.Error(err)
					l.Release()
					return
				}
				if rng.IntN(3) > 0 {
					if err := s.Update(func(tx *Txn) error { return tx.AddRef(id, 1) }); err != nil {
						t.Errorf("AddRef of leased chunk %d: %v", id, err)
						l.Release()
						return
					}
					mine = append(mine, id)
					mu.Lock()
					refs[id]++
					mu.Unlock()
				}
				l.Release()
				if len(mine) > 0 && rng.IntN(2) == 0 {
					i := rng.IntN(len(mine))
					drop := mine[i]
					mine = append(mine[:i], mine[i+1:]...)
					if err := s.Update(func(tx *Txn) error { return tx.AddRef(drop, -1) }); err != nil {
						t.Errorf("drop %d: %v", drop, err)
						return
					}
					mu.Lock()
					refs[drop]--
					mu.Unlock()
				}
				for _, id := range mine {
					if _, err := s.Get(id, nil); err != nil {
						t.Errorf("referenced chunk %d unreadable: %v", id, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	gcWG.Wait()
	if t.Failed() {
		return
	}
	rep, err := s.Audit(context.Background(), func(_ *Txn, yield func(ChunkID) error) error {
		for id, n := range refs {
			for range n {
				if err := yield(id); err != nil {
					return err
				}
			}
		}
		return nil
	}, true)
	if err != nil || !rep.Clean() {
		t.Fatalf("audit after race: %+v %v", rep, err)
	}
	// One last GC frees exactly the unreferenced chunks.
	if _, err := s.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, n := range refs {
		if n > 0 {
			live++
		}
	}
	if got := s.Stats().Chunks; got != int64(live) {
		t.Fatalf("after final GC %d chunks, %d referenced", got, live)
	}
}

func TestInMemoryStore(t *testing.T) {
	o := testOptions()
	o.InMemory = true
	s, err := Open("", o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw := textChunk(rand.New(rand.NewPCG(23, 24)), 4096)
	l := s.NewLease()
	id, err := s.Put(raw, l)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("Get: %v", err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Release()
	st, err := s.GC(context.Background())
	if err != nil || st.FreedChunks != 1 {
		t.Fatalf("GC in memory: %+v %v", st, err)
	}
}

func TestBackgroundGCLoop(t *testing.T) {
	o := testOptions()
	o.GCInterval = time.Millisecond
	s := openTest(t, o)
	if _, err := s.Put(textChunk(rand.New(rand.NewPCG(25, 26)), 4096), nil); err != nil {
		t.Fatal(err)
	}
	// Wait (bounded by the test timeout, not by a sleep) until the loop has
	// collected the unreferenced chunk.
	for {
		st, at, err := s.LastGC()
		if err != nil {
			t.Fatal(err)
		}
		if !at.IsZero() && s.Stats().Chunks == 0 {
			t.Logf("loop freed it: %+v", st)
			break
		}
		runtime.Gosched()
	}
}

func TestTxnTooBigIsReportedAndWritesCounted(t *testing.T) {
	s := openTest(t, testOptions())
	max := s.MaxTxnWrites()
	if max < 1000 {
		t.Fatalf("MaxTxnWrites = %d", max)
	}
	var writes int
	err := s.Update(func(tx *Txn) error {
		for i := range max {
			if err := tx.Set(fmt.Appendf(nil, "k%08d", i), []byte("v")); err != nil {
				return err
			}
		}
		writes = tx.Writes()
		return nil
	})
	if err != nil || writes != max {
		t.Fatalf("MaxTxnWrites small writes: %v (writes %d)", err, writes)
	}
	err = s.Update(func(tx *Txn) error {
		for i := 0; ; i++ {
			if err := tx.Set(fmt.Appendf(nil, "k%08d", i), []byte("v")); err != nil {
				return err
			}
		}
	})
	if !errors.Is(err, ErrTxnTooBig) {
		t.Fatalf("oversized transaction: %v, want ErrTxnTooBig", err)
	}
}

func TestPutManyMatchesPut(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(27, 28))
	a, b := textChunk(rng, 4096), randomChunk(rng, 4096)
	raws := [][]byte{a, make([]byte, 4096), b, a, textChunk(rng, 100)}
	l := s.NewLease()
	defer l.Release()
	ids, err := s.PutMany(raws, l)
	if err != nil {
		t.Fatal(err)
	}
	if ids[1] != ZeroChunk || ids[0] != ids[3] || ids[0] == ids[2] || ids[4] == ZeroChunk {
		t.Fatalf("ids %v", ids)
	}
	for i, raw := range raws {
		id, err := s.Put(raw, l)
		if err != nil || id != ids[i] {
			t.Fatalf("Put of chunk %d = %d (%v), PutMany gave %d", i, id, err, ids[i])
		}
	}
	if got := s.Stats().Chunks; got != 3 {
		t.Fatalf("Chunks = %d, want 3", got)
	}
}

// TestCrashLeftoversAreCollected: chunks put under a lease that never
// ended (the process died) are queued for GC when the store reopens.
func TestCrashLeftoversAreCollected(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(29, 30))
	l := s.NewLease()
	kept, err := s.Put(textChunk(rng, 4096), l)
	if err != nil {
		t.Fatal(err)
	}
	var left [][]byte
	for range 5 {
		raw := textChunk(rng, 4096)
		if _, err := s.Put(raw, l); err != nil {
			t.Fatal(err)
		}
		left = append(left, raw)
	}
	if err := s.Update(func(tx *Txn) error { return tx.AddRef(kept, 1) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // no Release: as if the process died
		t.Fatal(err)
	}
	s, err = Open(dir, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The leftovers never got reference records (fresh.go): Open gave them
	// ones, queued, from their packs' markers, and dropped the markers.
	if n, m := countKeys(s, nsRef), countKeys(s, nsFresh); n != 6 || m != 0 {
		t.Fatalf("after reopen: %d reference records, %d markers; want 6 and 0", n, m)
	}
	if st := s.Stats(); st.Chunks != 6 || st.RawBytes != 6*4096 {
		t.Fatalf("stats after reopen %+v", st)
	}
	auditOf(t, s, kept)
	// Their content is found again by a put, until GC frees them.
	l = s.NewLease()
	again, err := s.Put(left[0], l)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	if ci := chunkInfo(t, s, again); ci.Refs != 0 || ci.RawLen != 4096 {
		t.Fatalf("leftover found again: %+v", ci)
	}
	st, err := s.GC(context.Background())
	if err != nil || st.FreedChunks != 5 {
		t.Fatalf("GC after reopen freed %d (%v), want 5", st.FreedChunks, err)
	}
	if _, err := s.Get(kept, nil); err != nil {
		t.Fatalf("referenced chunk: %v", err)
	}
}

// TestAuditVerifyFindsMissingAndOrphanBodies: a reference record whose
// chunk body vanished is corrupt; a body with no record is leaked space.
func TestAuditVerifyFindsMissingAndOrphanBodies(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(31, 32))
	l := s.NewLease()
	defer l.Release()
	var ids []ChunkID
	for range 3 {
		id, err := s.Put(textChunk(rng, 4096), l)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Referenced, so they have their reference records (fresh.go).
	addRefs(t, s, ids...)
	// ids[1]'s slot loses its record; an orphan record lands in a pack of
	// its own that no reference record points at.
	const orphan = ChunkID(777777 << packSlotBits)
	err := s.db.Update(func(tx *badger.Txn) error {
		k := packKey(packBase(ids[1]))
		v, err := packCopy(tx, packBase(ids[1]))
		if err != nil {
			return err
		}
		emptied, live, err := packWithout(v, func(slot int) bool { return slot == packSlotOf(ids[1]) })
		switch {
		case err != nil:
			return err
		case live:
			err = tx.Set(k, emptied)
		default:
			err = tx.Delete(k)
		}
		if err != nil {
			return err
		}
		var b packBuilder
		b.add(s.codec.encode(textChunk(rng, 4096), nil))
		return tx.Set(packKey(orphan), b.finish())
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Audit(context.Background(), refsOf(ids...), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Corrupt) != 1 || rep.Corrupt[0] != ids[1] || len(rep.Leaked) != 1 || rep.Leaked[0] != orphan {
		t.Fatalf("audit = %+v, want corrupt %d and leaked %d", rep, ids[1], orphan)
	}
}
