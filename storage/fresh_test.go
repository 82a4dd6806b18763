package storage

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
)

// refsOf is a RefSource of one reference to each of ids.
func refsOf(ids ...ChunkID) RefSource {
	return func(_ *Txn, yield func(ChunkID) error) error {
		for _, id := range ids {
			if err := yield(id); err != nil {
				return err
			}
		}
		return nil
	}
}

// addRefs adds one reference to each of ids in one transaction.
func addRefs(t testing.TB, s *Store, ids ...ChunkID) {
	t.Helper()
	if err := s.Update(func(tx *Txn) error {
		for _, id := range ids {
			if err := tx.AddRef(id, 1); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// auditOf audits s against references to ids (one each) and fails unless
// the audit, with verify, is clean.
func auditOf(t *testing.T, s *Store, ids ...ChunkID) {
	t.Helper()
	rep, err := s.Audit(context.Background(), refsOf(ids...), true)
	if err != nil || !rep.Clean() {
		t.Fatalf("audit %+v %v", rep, err)
	}
}

func chunkInfo(t *testing.T, s *Store, id ChunkID) ChunkInfo {
	t.Helper()
	var ci ChunkInfo
	if err := s.View(func(tx *Txn) error {
		var err error
		ci, err = tx.ChunkInfo(id)
		return err
	}); err != nil {
		t.Fatalf("chunk info %d: %v", id, err)
	}
	return ci
}

// TestFreshChunksGetRecordsLazily: a put under a lease writes no reference
// record, only its pack's marker; the first AddRef writes the record, the
// Release queues what is still unreferenced and drops the marker, and GC
// frees exactly that.
func TestFreshChunksGetRecordsLazily(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(41, 42))
	l := s.NewLease()
	raws := [][]byte{textChunk(rng, 4096), textChunk(rng, 4096), randomChunk(rng, 1000)}
	ids, err := s.PutMany(raws, l)
	if err != nil {
		t.Fatal(err)
	}
	if n, m := countKeys(s, nsRef), countKeys(s, nsFresh); n != 0 || m != 1 {
		t.Fatalf("after the put: %d reference records, %d markers; want 0 and 1", n, m)
	}
	if ci := chunkInfo(t, s, ids[2]); ci.Refs != 0 || ci.RawLen != 1000 || ci.StoredLen < 1000 {
		t.Fatalf("fresh chunk's info %+v", ci)
	}
	if st := s.Stats(); st.Chunks != 3 {
		t.Fatalf("stats count %d chunks, want 3", st.Chunks)
	}
	auditOf(t, s) // fresh chunks are neither leaked nor missing
	if err := s.Update(func(tx *Txn) error { return tx.AddRef(ids[0], 2) }); err != nil {
		t.Fatal(err)
	}
	if ci := chunkInfo(t, s, ids[0]); ci.Refs != 2 || ci.RawLen != 4096 {
		t.Fatalf("referenced chunk's info %+v", ci)
	}
	if err := s.Update(func(tx *Txn) error { return tx.AddRef(ids[1], -1) }); err == nil {
		t.Fatal("taking a fresh chunk's count below zero succeeded")
	}
	l.Release()
	if n, m := countKeys(s, nsRef), countKeys(s, nsFresh); n != 3 || m != 0 {
		t.Fatalf("after Release: %d reference records, %d markers; want 3 and 0", n, m)
	}
	st, err := s.GC(context.Background())
	if err != nil || st.FreedChunks != 2 {
		t.Fatalf("GC freed %d (%v), want the 2 unreferenced", st.FreedChunks, err)
	}
	if got, err := s.Get(ids[0], nil); err != nil || string(got) != string(raws[0]) {
		t.Fatalf("referenced chunk after GC: %v", err)
	}
	auditOf(t, s, ids[0], ids[0])
}

// TestDedupOntoFreshChunk: a second lease's put of the same content finds
// the fresh chunk (no record yet) and holds it, so the first lease's end
// queues it but GC leaves it, and the second lease can reference it.
func TestDedupOntoFreshChunk(t *testing.T) {
	s := openTest(t, testOptions())
	raw := textChunk(rand.New(rand.NewPCG(43, 44)), 4096)
	a, b := s.NewLease(), s.NewLease()
	x, err := s.Put(raw, a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := s.Put(raw, b)
	if err != nil || y != x {
		t.Fatalf("second put: id %d (%v), want %d", y, err, x)
	}
	a.Release()
	if st, err := s.GC(context.Background()); err != nil || st.FreedChunks != 0 {
		t.Fatalf("GC freed %d (%v) of a chunk another lease holds", st.FreedChunks, err)
	}
	if err := s.Update(func(tx *Txn) error { return tx.AddRef(x, 1) }); err != nil {
		t.Fatal(err)
	}
	b.Release()
	if st, err := s.GC(context.Background()); err != nil || st.FreedChunks != 0 {
		t.Fatalf("GC freed %d (%v) of a referenced chunk", st.FreedChunks, err)
	}
	auditOf(t, s, x)
}

// TestAddRefRacingReleaseOfFreshChunk: the lease that created a chunk ends
// (queueing it, writing its record) while another lease that holds it
// references it. Whatever the order, the chunk ends with count 1, out of
// the GC queue, and GC leaves it.
func TestAddRefRacingReleaseOfFreshChunk(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(45, 46))
	var kept []ChunkID
	for range 200 {
		raw := textChunk(rng, 4096)
		a, b := s.NewLease(), s.NewLease()
		x, err := s.Put(raw, a)
		if err != nil {
			t.Fatal(err)
		}
		if y, err := s.Put(raw, b); err != nil || y != x {
			t.Fatalf("dedup put: %d (%v), want %d", y, err, x)
		}
		var wg sync.WaitGroup
		var addErr error
		wg.Add(2)
		go func() { defer wg.Done(); a.Release() }()
		go func() {
			defer wg.Done()
			addErr = s.Update(func(tx *Txn) error { return tx.AddRef(x, 1) })
		}()
		wg.Wait()
		b.Release()
		if addErr != nil {
			t.Fatal(addErr)
		}
		if ci := chunkInfo(t, s, x); ci.Refs != 1 {
			t.Fatalf("chunk %d has %d references, want 1", x, ci.Refs)
		}
		kept = append(kept, x)
	}
	if st, err := s.GC(context.Background()); err != nil || st.FreedChunks != 0 {
		t.Fatalf("GC freed %d (%v) referenced chunks", st.FreedChunks, err)
	}
	if n := countKeys(s, nsZero); n != 0 {
		t.Fatalf("%d referenced chunks left in the GC queue", n)
	}
	auditOf(t, s, kept...)
}
