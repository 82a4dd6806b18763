package storage

import (
	"context"
	"fmt"
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

// TestAuditIsOneSnapshot audits again and again while another goroutine
// adds and drops "maps" (caller keys listing chunk ids) with their counts,
// each in one transaction: the audit reads maps and counts in one
// snapshot, so it never reports a difference. (Reading them in two, as it
// once did, reported references that a release had just dropped.)
func TestAuditIsOneSnapshot(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(71, 72))
	l := s.NewLease()
	defer l.Release()
	var raws [][]byte
	for range 64 {
		raws = append(raws, textChunk(rng, 4096))
	}
	ids, err := s.PutMany(raws, l)
	if err != nil {
		t.Fatal(err)
	}
	refs := func(tx *Txn, yield func(ChunkID) error) error {
		return tx.Iterate([]byte("map/"), func(_, v []byte) error {
			for _, b := range v {
				if err := yield(ids[b]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		r := rand.New(rand.NewPCG(73, 74))
		type stored struct {
			key  []byte
			refs []byte // indexes into ids
		}
		var live []stored
		for seq := 0; ; seq++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			// Add a map and count its references, or drop the oldest and
			// uncount them: either is one transaction.
			drop := len(live) > 4
			next := stored{key: []byte(fmt.Sprintf("map/%08d", seq)), refs: make([]byte, 32)}
			for i := range next.refs {
				next.refs[i] = byte(r.IntN(len(ids)))
			}
			err := s.Update(func(tx *Txn) error {
				m, d := next, int64(1)
				if drop {
					m, d = live[0], -1
				}
				for _, b := range m.refs {
					if err := tx.AddRef(ids[b], d); err != nil {
						return err
					}
				}
				if drop {
					return tx.Delete(m.key)
				}
				return tx.Set(m.key, m.refs)
			})
			if err != nil {
				done <- err
				return
			}
			if drop {
				live = live[1:]
			} else {
				live = append(live, next)
			}
		}
	}()
	for range 200 {
		rep, err := s.Audit(context.Background(), refs, false)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Clean() {
			close(stop)
			<-done
			t.Fatalf("audit during releases: %+v", rep)
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestLeaseCountsWhatItMadeAndFound: a lease holds each chunk once,
// whether its puts created it (kept per pack) or found it; Forget and
// Release let go of exactly theirs, and a chunk another lease holds stays.
func TestLeaseCountsWhatItMadeAndFound(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(47, 48))
	raws := make([][]byte, 300) // more than one pack's slots
	for i := range raws {
		raws[i] = textChunk(rng, 4096)
	}
	l := s.NewLease()
	ids, err := s.PutMany(raws, l)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutMany(raws[:10], l); err != nil { // its own chunks again
		t.Fatal(err)
	}
	if n := l.Held(); n != 300 {
		t.Fatalf("lease holds %d, want 300", n)
	}
	l.Forget(ids[:100])
	if n := l.Held(); n != 200 {
		t.Fatalf("after Forget: lease holds %d, want 200", n)
	}
	for i, id := range ids {
		if held := s.holds.held(id); held != (i >= 100) {
			t.Fatalf("chunk %d (put %d): held %v after Forget", id, i, held)
		}
	}
	l2 := s.NewLease()
	if _, err := s.PutMany(raws[295:], l2); err != nil {
		t.Fatal(err)
	}
	if n := l2.Held(); n != 5 {
		t.Fatalf("second lease holds %d, want 5", n)
	}
	l.Release()
	if st, err := s.GC(context.Background()); err != nil || st.FreedChunks != 295 {
		t.Fatalf("GC freed %d (%v), want 295", st.FreedChunks, err)
	}
	l2.Release()
	if st, err := s.GC(context.Background()); err != nil || st.FreedChunks != 5 {
		t.Fatalf("GC freed %d (%v), want the last 5", st.FreedChunks, err)
	}
	auditOf(t, s)
}
