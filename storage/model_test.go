package storage

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// TestStoreAgainstModel drives the store with random puts, reference
// changes, lease ends, GCs and reopens, and checks it against a plain
// model after every step: referenced or leased chunks read back exactly,
// GC frees exactly the chunks that are neither, and the figures (chunks,
// raw bytes, referenced raw) match.
func TestStoreAgainstModel(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	rng := rand.New(rand.NewPCG(33, 34))
	var pool [][]byte // contents, some repeated so puts dedup
	for i := range 40 {
		switch i % 4 {
		case 0:
			pool = append(pool, randomChunk(rng, 4096))
		case 1:
			pool = append(pool, textChunk(rng, 1+rng.IntN(4096)))
		default:
			pool = append(pool, textChunk(rng, 4096))
		}
	}
	type chunk struct {
		raw    []byte
		refs   int64
		leases int
	}
	model := map[ChunkID]*chunk{}
	type lease struct {
		l   *Lease
		ids map[ChunkID]bool
	}
	var leases []*lease
	// Caller keys with values big enough for Badger's value log, set and
	// deleted in between: a deleted one must never come back.
	userKeys := map[string][]byte{}
	ctx := context.Background()
	steps := 1500
	if testing.Short() {
		steps = 500
	}
	endLease := func(i int) {
		le := leases[i]
		le.l.Release()
		for id := range le.ids {
			model[id].leases--
		}
		leases = append(leases[:i], leases[i+1:]...)
	}
	lastOp := 0
	for step := range steps {
		op := rng.IntN(100)
		lastOp = op
		if rng.IntN(3) == 0 {
			k := fmt.Sprintf("u/%03d", rng.IntN(60))
			err := s.Update(func(tx *Txn) error {
				if _, ok := userKeys[k]; ok && rng.IntN(2) == 0 {
					return tx.Delete([]byte(k))
				}
				return tx.Set([]byte(k), randomChunk(rng, 2048))
			})
			if err != nil {
				t.Fatalf("step %d: user key: %v", step, err)
			}
			s.View(func(tx *Txn) error {
				v, err := tx.Get([]byte(k))
				if err == nil {
					userKeys[k] = v
				} else {
					delete(userKeys, k)
				}
				return nil
			})
		}
		switch {
		case op < 35: // put under a lease, maybe a new one
			if len(leases) == 0 || rng.IntN(4) == 0 {
				leases = append(leases, &lease{l: s.NewLease(), ids: map[ChunkID]bool{}})
			}
			le := leases[rng.IntN(len(leases))]
			// Half the time several chunks in one PutMany: their new
			// chunks share a pack, which GC later rewrites piecemeal.
			raws := [][]byte{pool[rng.IntN(len(pool))]}
			if rng.IntN(2) == 0 {
				for range rng.IntN(12) {
					raws = append(raws, pool[rng.IntN(len(pool))])
				}
			}
			ids, err := s.PutMany(raws, le.l)
			if err != nil {
				t.Fatalf("step %d: put: %v", step, err)
			}
			for i, id := range ids {
				raw := raws[i]
				c := model[id]
				if c == nil {
					for oid, oc := range model {
						if bytes.Equal(oc.raw, raw) {
							t.Fatalf("step %d: content of chunk %d stored again as %d", step, oid, id)
						}
					}
					c = &chunk{raw: raw}
					model[id] = c
				} else if !bytes.Equal(c.raw, raw) {
					t.Fatalf("step %d: id %d reused for other content", step, id)
				}
				if !le.ids[id] {
					le.ids[id] = true
					c.leases++
				}
			}
		case op < 60: // reference a leased or referenced chunk
			var cands []ChunkID
			for id, c := range model {
				if c.refs > 0 || c.leases > 0 {
					cands = append(cands, id)
				}
			}
			if len(cands) == 0 {
				continue
			}
			id := cands[rng.IntN(len(cands))]
			n := int64(1 + rng.IntN(3))
			if err := s.Update(func(tx *Txn) error { return tx.AddRef(id, n) }); err != nil {
				t.Fatalf("step %d: addref: %v", step, err)
			}
			model[id].refs += n
		case op < 80: // drop references
			var cands []ChunkID
			for id, c := range model {
				if c.refs > 0 {
					cands = append(cands, id)
				}
			}
			if len(cands) == 0 {
				continue
			}
			id := cands[rng.IntN(len(cands))]
			n := 1 + rng.Int64N(model[id].refs)
			if err := s.Update(func(tx *Txn) error { return tx.AddRef(id, -n) }); err != nil {
				t.Fatalf("step %d: drop: %v", step, err)
			}
			model[id].refs -= n
		case op < 88: // end a lease
			if len(leases) > 0 {
				endLease(rng.IntN(len(leases)))
			}
		case op < 98: // collect
			if _, err := s.GC(ctx); err != nil {
				t.Fatalf("step %d: gc: %v", step, err)
			}
			for id, c := range model {
				if c.refs == 0 && c.leases == 0 {
					delete(model, id)
				}
			}
		default: // restart: leases do not survive it
			for len(leases) > 0 {
				endLease(0)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = Open(dir, o); err != nil {
				t.Fatal(err)
			}
		}

		// Every body has its record, but for fresh chunks whose lease
		// holds them still: none outlived a free (Badger's value-log GC
		// once brought deleted bodies back, see vlogGC).
		if nc, nr := countBodies(t, s), countKeys(s, nsRef); nc != nr {
			t.Fatalf("step %d (op %d): %d chunk bodies (fresh ones left out), %d records", step, lastOp, nc, nr)
		}
		seen := 0
		s.View(func(tx *Txn) error {
			return tx.Iterate([]byte("u/"), func(k, v []byte) error {
				seen++
				if want, ok := userKeys[string(k)]; !ok || !bytes.Equal(v, want) {
					t.Fatalf("step %d (op %d): user key %s is back or wrong", step, lastOp, k)
				}
				return nil
			})
		})
		if seen != len(userKeys) {
			t.Fatalf("step %d: %d user keys, want %d", step, seen, len(userKeys))
		}
		// The store agrees with the model after every step.
		var raw, refRaw int64
		for id, c := range model {
			got, err := s.Get(id, nil)
			if err != nil || !bytes.Equal(got, c.raw) {
				t.Fatalf("step %d: chunk %d (refs %d, leases %d): %v", step, id, c.refs, c.leases, err)
			}
			raw += int64(len(c.raw))
			refRaw += c.refs * int64(len(c.raw))
		}
		st := s.Stats()
		if st.Chunks != int64(len(model)) || st.RawBytes != raw || st.ReferencedRaw != refRaw {
			t.Fatalf("step %d: stats %+v, model %d chunks raw %d referenced %d", step, st, len(model), raw, refRaw)
		}
	}
	rep, err := s.Audit(ctx, func(_ *Txn, yield func(ChunkID) error) error {
		for id, c := range model {
			for range c.refs {
				if err := yield(id); err != nil {
					return err
				}
			}
		}
		return nil
	}, true)
	if err != nil || !rep.Clean() {
		s.View(func(tx *Txn) error {
			for _, id := range rep.Leaked {
				info, err := tx.ChunkInfo(id)
				c := model[id]
				t.Logf("leaked %d: stored %+v %v; model %+v", id, info, err, c)
			}
			return nil
		})
		t.Fatalf("final audit %+v %v", rep, err)
	}
}

// countBodies counts the chunk records in the store's packs, but for
// those of fresh chunks still without a reference record (fresh.go).
func countBodies(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	err := s.db.View(func(tx *badger.Txn) error {
		hasRecord := func(id ChunkID) bool {
			_, err := tx.Get(idKey(nsRef, id))
			return err == nil
		}
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte{nsPack}
		it := tx.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			base, _ := parseIDKey(it.Item().Key())
			err := it.Item().Value(func(v []byte) error {
				return eachPackRecord(v, func(slot int, _ []byte) error {
					id := base + ChunkID(slot)
					if _, fresh := s.holds.freshFacts(id); !fresh || hasRecord(id) {
						n++
					}
					return nil
				})
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// countKeys counts the store's keys in one namespace.
func countKeys(s *Store, ns byte) int {
	n := 0
	s.db.View(func(tx *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte{ns}
		o.PrefetchValues = false
		it := tx.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n
}
