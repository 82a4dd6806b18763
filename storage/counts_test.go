package storage

import (
	"context"
	"math/rand/v2"
	"reflect"
	"testing"
)

// crashClose ends s as a crash would for the counters: Badger closes, but
// Close's saving of them never runs.
func crashClose(t *testing.T, s *Store) {
	t.Helper()
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		if err := s.db.Close(); err != nil {
			t.Fatal(err)
		}
		s.codec.close()
	})
}

// savedExact reports whether an Open now would believe the saved
// counters, and their chunks.
func savedExact(t *testing.T, s *Store) (bool, int64) {
	t.Helper()
	c, exact, err := s.savedCounts()
	if err != nil {
		t.Fatal(err)
	}
	return exact, c.chunks
}

// scannedStats is what a full scan of the reference records finds now,
// in Stats' terms.
func scannedStats(t *testing.T, s *Store) Stats {
	t.Helper()
	tx := s.db.NewTransaction(false)
	defer tx.Discard()
	c, _, err := s.scanCounts(tx)
	if err != nil {
		t.Fatal(err)
	}
	return Stats{Chunks: c.chunks, RawBytes: c.raw, StoredBytes: c.stored, ReferencedRaw: c.refRaw}
}

// figures is st without what a scan cannot know.
func figures(st Stats) Stats {
	st.DiskBytes, st.CorruptReads, st.Counting = 0, 0, false
	return st
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// putEach puts n chunks that next makes, under l, and returns their ids.
func putEach(t testing.TB, s *Store, l *Lease, n int, next func() []byte) []ChunkID {
	t.Helper()
	ids := make([]ChunkID, 0, n)
	for range n {
		id, err := s.Put(next(), l)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// putReferenced stores n new chunks and references each refs times.
func putReferenced(t *testing.T, s *Store, rng *rand.Rand, n int, refs int64) []ChunkID {
	t.Helper()
	l := s.NewLease()
	defer l.Release()
	ids := putEach(t, s, l, n, func() []byte { return textChunk(rng, 4096) })
	if err := s.Update(func(tx *Txn) error {
		for _, id := range ids {
			if err := tx.AddRef(id, refs); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestCleanCloseSavesCountersForOpen: after a clean Close, Open takes the
// counters from the record Close left (no scan: they are exact when Open
// returns). The record stops being believed as soon as anything commits
// after it, so a crash later is never mistaken for a clean stop.
func TestCleanCloseSavesCountersForOpen(t *testing.T) {
	s, dir := openIn(t, testOptions())
	rng := rand.New(rand.NewPCG(41, 42))
	putReferenced(t, s, rng, 40, 2)
	want := figures(s.Stats())
	if want.Chunks != 40 || want.ReferencedRaw != 2*40*4096 {
		t.Fatalf("figures before close %+v", want)
	}
	prev := recountHook
	recountHook = func(*Store) { t.Error("Open after a clean Close scanned the reference records") }
	defer func() { recountHook = prev }()
	s = reopen(t, s, dir, testOptions())
	if !isClosed(s.Counted()) || s.Stats().Counting || s.RecountedAtOpen() {
		t.Fatal("counters not ready when Open returned")
	}
	if got := figures(s.Stats()); got != want {
		t.Fatalf("figures after reopen %+v, want %+v", got, want)
	}
	if exact, n := savedExact(t, s); exact || n != 40 {
		t.Fatalf("record after Open: exact %v, %d chunks; want stale, 40", exact, n)
	}
}

// TestCountersRebuiltAfterCrash: an Open that follows no clean Close
// rebuilds the counters in the background. Commits made while the scan
// runs (puts, references, a GC that frees) count exactly once, and the
// result matches a fresh scan.
func TestCountersRebuiltAfterCrash(t *testing.T) {
	o := testOptions()
	s, dir := openIn(t, o)
	rng := rand.New(rand.NewPCG(43, 44))
	old := putReferenced(t, s, rng, 30, 1)
	// A clean stop saves the counters; what commits after makes them stale.
	s = reopen(t, s, dir, o)
	putReferenced(t, s, rng, 5, 1)
	want := figures(s.Stats())
	crashClose(t, s)

	release := make(chan struct{})
	prev := recountHook
	recountHook = func(*Store) { <-release }
	defer func() { recountHook = prev }()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if isClosed(s.Counted()) || !s.Stats().Counting || !s.RecountedAtOpen() {
		t.Fatal("the counters a crash left were believed")
	}
	// While the scan waits: ten chunks more, one dropped and freed.
	putReferenced(t, s, rng, 10, 3)
	if err := s.Update(func(tx *Txn) error { return tx.AddRef(old[0], -1) }); err != nil {
		t.Fatal(err)
	}
	if st, err := s.GC(context.Background()); err != nil || st.FreedChunks != 1 {
		t.Fatalf("GC freed %d (%v), want 1", st.FreedChunks, err)
	}
	close(release)
	<-s.Counted()
	got := figures(s.Stats())
	if got != scannedStats(t, s) {
		t.Fatalf("figures after recount %+v, a scan finds %+v", got, scannedStats(t, s))
	}
	if got.Chunks != 44 || got.RawBytes != 44*4096 || got.ReferencedRaw != want.ReferencedRaw-4096+10*3*4096 {
		t.Fatalf("figures after recount %+v (before the crash %+v)", got, want)
	}
}

// TestUnfinishedRecountSavesNothing: a store closed while its recount is
// still scanning keeps its record stale, so the next Open counts again.
func TestUnfinishedRecountSavesNothing(t *testing.T) {
	o := testOptions()
	s, dir := openIn(t, o)
	putReferenced(t, s, rand.New(rand.NewPCG(45, 46)), 5, 1)
	want := figures(s.Stats())
	crashClose(t, s)

	started := make(chan struct{})
	prev := recountHook
	recountHook = func(s *Store) { close(started); <-s.stop }
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	recountHook = prev
	s, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-s.Counted()
	if got := figures(s.Stats()); got != want {
		t.Fatalf("figures %+v, want %+v", got, want)
	}
}

// TestNewStoreCountersReady: a new store's counters are exact (zero) when
// Open returns; nothing is scanned.
func TestNewStoreCountersReady(t *testing.T) {
	prev := recountHook
	recountHook = func(*Store) { t.Error("a new store scanned its reference records") }
	defer func() { recountHook = prev }()
	s := openTest(t, testOptions())
	if !isClosed(s.Counted()) || s.Stats().Counting || s.RecountedAtOpen() {
		t.Fatal("a new store's counters are not ready")
	}
}

// TestAuditInPassesMatchesOnePass: an audit cut into passes over id ranges
// (down to one record a pass) finds exactly what one pass finds, dangling
// ids below, between and above the stored ones included.
func TestAuditInPassesMatchesOnePass(t *testing.T) {
	s := openTest(t, testOptions())
	rng := rand.New(rand.NewPCG(47, 48))
	ids := putReferenced(t, s, rng, 40, 1)
	have := map[ChunkID]bool{}
	for _, id := range ids {
		have[id] = true
	}
	ghosts := []ChunkID{1, ids[0] + 100000, 1 << 60}
	for _, g := range ghosts {
		if have[g] {
			t.Fatalf("ghost %d is stored", g)
		}
	}
	// Every third chunk is not in the maps (leaked), every fifth twice
	// (missing), the rest once.
	refs := func(_ *Txn, yield func(ChunkID) error) error {
		for i, id := range ids {
			n := 1
			switch {
			case i%3 == 0:
				n = 0
			case i%5 == 0:
				n = 2
			}
			for range n {
				if err := yield(id); err != nil {
					return err
				}
			}
		}
		for _, g := range ghosts {
			if err := yield(g); err != nil {
				return err
			}
		}
		return nil
	}
	audit := func(per int) AuditReport {
		t.Helper()
		prev := auditPassRecords
		auditPassRecords = per
		defer func() { auditPassRecords = prev }()
		rep, err := s.Audit(context.Background(), refs, true)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	one := audit(1 << 30)
	if one.Chunks != 40 || len(one.Leaked) != 14 || len(one.Missing) != 5 || len(one.Dangling) != 3 || len(one.Corrupt) != 0 {
		t.Fatalf("one pass: %d chunks, %d leaked, %d missing, %v dangling, %d corrupt",
			one.Chunks, len(one.Leaked), len(one.Missing), one.Dangling, len(one.Corrupt))
	}
	for _, per := range []int{1, 3, 7, 40} {
		if got := audit(per); !reflect.DeepEqual(got, one) {
			t.Fatalf("%d records a pass: %+v\none pass: %+v", per, got, one)
		}
	}
}
