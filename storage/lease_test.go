package storage

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestHoldMarksReferenced: a commit that takes a held chunk's count off
// zero marks it, so a lease's end skips it; a chunk nobody holds is not
// remembered, and one referenced then dropped back to zero is still
// collected (its AddRef queued it).
func TestHoldMarksReferenced(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(51, 52))
	l := s.NewLease()
	ids, err := s.PutMany([][]byte{textChunk(rng, 4096), textChunk(rng, 4096), textChunk(rng, 4096)}, l)
	if err != nil {
		t.Fatal(err)
	}
	kept, dropped, fresh := ids[0], ids[1], ids[2]
	if err := s.Update(func(tx *Txn) error {
		if err := tx.AddRef(kept, 1); err != nil {
			return err
		}
		return tx.AddRef(dropped, 2)
	}); err != nil {
		t.Fatal(err)
	}
	if got := s.holds.unreferenced(ids); !slices.Equal(got, []ChunkID{fresh}) {
		t.Fatalf("unreferenced = %v, want only the fresh chunk %d", got, fresh)
	}
	// A transaction that fails leaves no mark.
	if err := s.Update(func(tx *Txn) error {
		if err := tx.AddRef(fresh, 1); err != nil {
			return err
		}
		return ErrInvalid
	}); err == nil {
		t.Fatal("the failing transaction committed")
	}
	if got := s.holds.unreferenced([]ChunkID{fresh}); len(got) != 1 {
		t.Fatalf("an aborted AddRef marked chunk %d", fresh)
	}
	if err := s.Update(func(tx *Txn) error { return tx.AddRef(dropped, -2) }); err != nil {
		t.Fatal(err)
	}
	l.Release()
	s.holds.markReferenced([]ChunkID{fresh}) // not held any more: ignored
	if _, ok := s.holds.shard(fresh).m[fresh]; ok {
		t.Fatalf("an unheld chunk is remembered")
	}
	st, err := s.GC(context.Background())
	if err != nil || st.FreedChunks != 2 {
		t.Fatalf("GC = %+v, %v; want the dropped and the fresh chunk freed", st, err)
	}
	if _, err := s.Get(kept, nil); err != nil {
		t.Fatalf("the referenced chunk: %v", err)
	}
}
