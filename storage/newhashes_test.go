package storage

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func randomHash(rng *rand.Rand) (h chunkHash) {
	for i := 0; i < hashSize; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			h[i+j] = byte(v >> (8 * j))
		}
	}
	return h
}

// TestNewHashesFilter: every hash added is reported as possibly present,
// through the filter's growth, and about 1 % of hashes never added are.
func TestNewHashesFilter(t *testing.T) {
	var n newHashes
	n.init(0)
	rng := rand.New(rand.NewPCG(81, 82))
	added := make([]chunkHash, 5*bloomMinHashes)
	for i := range added {
		added[i] = randomHash(rng)
	}
	n.addScanned(added)
	if len(n.blooms) < 3 {
		t.Fatalf("%d hashes over a first filter for %d: %d filters, want growth", len(added), bloomMinHashes, len(n.blooms))
	}
	for i := range added {
		if !n.mayExist(&added[i]) {
			t.Fatalf("hash %d added but reported absent", i)
		}
	}
	fp := 0
	const probes = 100000
	for range probes {
		h := randomHash(rng)
		if n.mayExist(&h) {
			fp++
		}
	}
	if rate := float64(fp) / probes; rate > 0.03 {
		t.Fatalf("false positive rate %.3f over %d filters", rate, len(n.blooms))
	}
}

// TestUnseenPicksHashesNeverSeen: of a batch, unseen keeps exactly the
// items whose hashes the filter has not seen (scanned or claimed), in
// order, so that an import compresses up front only chunks almost surely
// new.
func TestUnseenPicksHashesNeverSeen(t *testing.T) {
	var n newHashes
	n.init(0)
	rng := rand.New(rand.NewPCG(83, 84))
	items := make([]*putItem, 6)
	for i := range items {
		items[i] = &putItem{hash: randomHash(rng)}
	}
	n.addScanned([]chunkHash{items[1].hash})
	n.setReady()
	if c, wait := n.claim(items[4:5]); wait != nil {
		t.Fatal("claim waited")
	} else {
		defer n.release(c, items[4:5])
	}
	got := n.unseen(items, []*putItem{items[5]})
	want := []*putItem{items[5], items[0], items[2], items[3], items[5]}
	if len(got) != len(want) {
		t.Fatalf("unseen gave %d items, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("item %d of the result is not the one expected", i)
		}
	}
}

// TestNewHashesClaims: before the scan is done nothing is skipped; after
// it, an absent hash is claimed, and a second claim on it waits until the
// first is released, then looks the hash up like any put.
func TestNewHashesClaims(t *testing.T) {
	var n newHashes
	n.init(0)
	rng := rand.New(rand.NewPCG(83, 84))
	a, b := &putItem{hash: randomHash(rng)}, &putItem{hash: randomHash(rng)}
	c, wait := n.claim([]*putItem{a})
	if c != nil || wait != nil || a.absent {
		t.Fatalf("before the scan: claim %v, wait %v, absent %v", c, wait, a.absent)
	}
	n.setReady()
	c1, wait := n.claim([]*putItem{b, {zero: true}})
	if c1 == nil || wait != nil || !b.absent {
		t.Fatalf("a new hash: claim %v, wait %v, absent %v", c1, wait, b.absent)
	}
	b2 := &putItem{hash: b.hash}
	c2, wait := n.claim([]*putItem{{hash: randomHash(rng)}, b2})
	if c2 != nil || len(wait) != 1 {
		t.Fatalf("a hash another transaction creates: claim %v, %d waits", c2, len(wait))
	}
	select {
	case <-wait[0]:
		t.Fatal("wait ended before the creator released its claim")
	default:
	}
	n.release(c1, []*putItem{b})
	<-wait[0]
	c2, wait = n.claim([]*putItem{b2})
	if c2 != nil || wait != nil || b2.absent {
		t.Fatalf("after the creator ended: claim %v, wait %v, absent %v", c2, wait, b2.absent)
	}
	if len(n.creating) != 0 {
		t.Fatalf("%d claims left after release", len(n.creating))
	}
}

// waitHashScan waits for the store's scan of its dedup index.
func waitHashScan(s *Store) { <-s.newHashes.readyCh }

func skippedLookups(s *Store) int64 {
	s.newHashes.mu.Lock()
	defer s.newHashes.mu.Unlock()
	return s.newHashes.skipped
}

// indexID reads the dedup index entry of raw's hash.
func indexID(t *testing.T, s *Store, raw []byte) ChunkID {
	t.Helper()
	h := s.hash.sum(raw)
	var id ChunkID
	err := s.db.View(func(tx *badger.Txn) error {
		item, err := tx.Get(hashKey(&h))
		if err != nil {
			return err
		}
		id, err = indexedID(item)
		return err
	})
	if err != nil {
		t.Fatalf("index entry: %v", err)
	}
	return id
}

// TestSkippedLookupsKeepContentUnique: eight writers put the same new
// contents in different orders and batches at once, most of them skipping
// the index lookup. Every content still ends as one chunk, which the index
// names, and a reopened store (its filter rebuilt by the scan) dedups all
// of it without skipping a lookup.
func TestSkippedLookupsKeepContentUnique(t *testing.T) {
	o := testOptions()
	s, dir := openIn(t, o)
	waitHashScan(s)
	rng := rand.New(rand.NewPCG(85, 86))
	contents := make([][]byte, 300)
	for i := range contents {
		if i%2 == 0 {
			contents[i] = textChunk(rng, 4096)
		} else {
			contents[i] = randomChunk(rng, 4096)
		}
	}
	const writers = 8
	ids := make([][]ChunkID, writers)
	var wg sync.WaitGroup
	for w := range writers {
		ids[w] = make([]ChunkID, len(contents))
		order := rand.New(rand.NewPCG(uint64(w), 87)).Perm(len(contents))
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := s.NewLease()
			defer l.Release()
			for len(order) > 0 {
				n := min(len(order), 1+w*3)
				batch := make([][]byte, n)
				for i, c := range order[:n] {
					batch[i] = contents[c]
				}
				got, err := s.PutMany(batch, l)
				if err != nil {
					t.Error(err)
					return
				}
				for i, c := range order[:n] {
					ids[w][c] = got[i]
				}
				order = order[n:]
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if n := skippedLookups(s); n < int64(len(contents))/2 {
		t.Fatalf("%d lookups skipped for %d new contents", n, len(contents))
	}
	for c := range contents {
		for w := 1; w < writers; w++ {
			if ids[w][c] != ids[0][c] {
				t.Fatalf("content %d: writer %d got chunk %d, writer 0 chunk %d", c, w, ids[w][c], ids[0][c])
			}
		}
		if got := indexID(t, s, contents[c]); got != ids[0][c] {
			t.Fatalf("content %d: index names chunk %d, puts returned %d", c, got, ids[0][c])
		}
	}
	if got := s.Stats().Chunks; got != int64(len(contents)) {
		t.Fatalf("Chunks = %d, want %d", got, len(contents))
	}
	s = reopen(t, s, dir, o)
	waitHashScan(s)
	got, err := s.PutMany(contents, nil)
	if err != nil {
		t.Fatal(err)
	}
	for c := range contents {
		if got[c] != ids[0][c] {
			t.Fatalf("after reopen, content %d: chunk %d, want %d", c, got[c], ids[0][c])
		}
	}
	if n := skippedLookups(s); n != 0 {
		t.Fatalf("after reopen, %d lookups of stored contents skipped", n)
	}
	fresh := textChunk(rng, 4096)
	if _, err := s.Put(fresh, nil); err != nil {
		t.Fatal(err)
	}
	if n := skippedLookups(s); n != 1 {
		t.Fatalf("after reopen, a new content skipped %d lookups, want 1", n)
	}
	buf := make([]byte, 4096)
	for c := range contents {
		out, err := s.Get(ids[0][c], buf)
		if err != nil || !bytes.Equal(out, contents[c]) {
			t.Fatalf("content %d reads back wrong: %v", c, err)
		}
	}
}
