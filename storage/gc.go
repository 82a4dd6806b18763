package storage

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// GCStats reports one collection.
type GCStats struct {
	FreedChunks   int64
	FreedBytes    int64 // stored bytes of the freed chunks
	VlogReclaimed int64 // bytes Badger's value-log GC gave back
	VlogRewritten int   // value-log files rewritten
}

// gcBatch is how many queue entries one GC transaction examines: small
// enough that a transaction never grows large and memory stays bounded,
// large enough to amortise the commit.
const gcBatch = 256

// GC frees chunks whose count has been zero for longer than the grace
// period and that no lease holds, then runs Badger's value-log GC.
//
// It walks the GC queue (entries keyed by the time a count reached zero,
// oldest first) in batches and stops at the first entry younger than the
// grace period, so its cost follows the garbage, not the store. Each batch
// is one transaction that re-reads every candidate's reference record
// before deleting it; a concurrent AddRef or deduplicating Put writes that
// same record, so Badger's conflict check lets only one of them commit and
// a referenced chunk is never freed. There is no store-wide lock: the
// data path runs on while GC does.
func (s *Store) GC(ctx context.Context) (GCStats, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	var st GCStats
	cutoff := time.Now().Add(-s.opts.GCGrace).UnixNano()
	start := []byte{nsZero}
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		cands, next, err := s.gcCandidates(start, cutoff)
		if err != nil {
			return st, err
		}
		if len(cands) == 0 {
			break
		}
		for len(cands) > 0 {
			if cands, err = s.gcFree(cands, cutoff, &st); err != nil {
				return st, err
			}
		}
		if next == nil {
			break
		}
		start = next
	}
	s.freedSinceCompact.Add(st.FreedBytes)
	if err := s.vlogGC(ctx, &st); err != nil {
		return st, err
	}
	return st, nil
}

type gcCand struct {
	since int64
	id    ChunkID
}

// gcCandidates reads up to gcBatch queue entries from start with a time at
// or before cutoff; next is where to continue, nil at the end.
func (s *Store) gcCandidates(start []byte, cutoff int64) (cands []gcCand, next []byte, err error) {
	err = s.db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte{nsZero}
		it := tx.NewIterator(opts)
		defer it.Close()
		for it.Seek(start); it.Valid(); it.Next() {
			since, id, ok := parseZeroKey(it.Item().Key())
			if !ok {
				continue
			}
			if since > cutoff {
				return nil
			}
			if len(cands) == gcBatch {
				next = it.Item().KeyCopy(nil)
				return nil
			}
			cands = append(cands, gcCand{since, id})
		}
		return nil
	})
	return cands, next, err
}

type gcDoomed struct {
	gcCand
	rr refRecord
}

// lockStripes locks the stripes of ids in ascending order (GC and puts
// both do, so no cycle is possible) and returns the unlock.
func (s *Store) lockStripes(ids []ChunkID) func() {
	var idx []int
	seen := make(map[int]bool, len(ids))
	for _, id := range ids {
		if i := stripeIndex(id); !seen[i] {
			seen[i] = true
			idx = append(idx, i)
		}
	}
	sort.Ints(idx)
	for _, i := range idx {
		s.stripes[i].Lock()
	}
	return func() {
		for _, i := range idx {
			s.stripes[i].Unlock()
		}
	}
}

// gcRewriteBudget bounds the pack bytes one GC transaction rewrites (packs
// that keep live chunks are rewritten without the freed ones): the
// rewritten values are built in memory and written by one commit.
const gcRewriteBudget = 8 << 20

// gcFree frees the candidates that still qualify, in one transaction,
// retried on conflict (each retry re-reads everything). Candidates it
// leaves for another transaction, so that one does not rewrite more than
// gcRewriteBudget of packs, come back in rest.
func (s *Store) gcFree(cands []gcCand, cutoff int64, st *GCStats) (rest []gcCand, err error) {
	for attempt := 0; ; attempt++ {
		var freed, freedBytes, freedRaw int64
		rest = nil
		err := func() error {
			tx := s.db.NewTransaction(true)
			defer tx.Discard()
			var doomed []gcDoomed
			for _, c := range cands {
				zk := zeroKey(c.since, c.id)
				rr, err := getRef(tx, idKey(nsRef, c.id))
				if errors.Is(err, ErrNotFound) {
					// A stale queue entry; the chunk is already gone.
					if err := tx.Delete(zk); err != nil {
						return err
					}
					continue
				}
				if err != nil {
					return err
				}
				if rr.count != 0 || rr.zeroSince != c.since {
					// Referenced again or revived since it was queued:
					// the entry is stale (a current one exists if needed).
					if err := tx.Delete(zk); err != nil {
						return err
					}
					continue
				}
				if rr.zeroSince > cutoff {
					continue
				}
				doomed = append(doomed, gcDoomed{c, rr})
			}
			// Hold checks and the commit happen under the stripe locks
			// of the chunks to free: a put that deduplicates onto one of
			// them takes its hold under the same lock and then checks the
			// chunk still exists (see commitPuts), so a hold is either seen
			// here or the put sees the chunk gone.
			ids := make([]ChunkID, len(doomed))
			for i, d := range doomed {
				ids[i] = d.id
			}
			unlock := s.lockStripes(ids)
			defer unlock()
			free := doomed[:0]
			for _, d := range doomed {
				if !s.holds.held(d.id) {
					free = append(free, d)
				}
			}
			sort.Slice(free, func(i, j int) bool { return free[i].id < free[j].id })
			rewritten := 0
			var freeing []gcDoomed
			for k := 0; k < len(free); {
				base := packBase(free[k].id)
				e := k + 1
				for e < len(free) && packBase(free[e].id) == base {
					e++
				}
				if k > 0 && rewritten >= gcRewriteBudget {
					for _, d := range free[k:] {
						rest = append(rest, d.gcCand)
					}
					break
				}
				n, ok, err := freeSlots(tx, base, free[k:e])
				if err != nil {
					return err
				}
				if ok {
					freeing = append(freeing, free[k:e]...)
				}
				rewritten += n
				k = e
			}
			for _, d := range freeing {
				for _, k := range [][]byte{idKey(nsRef, d.id), hashKey(&d.rr.hash), zeroKey(d.since, d.id)} {
					if err := tx.Delete(k); err != nil {
						return err
					}
				}
				freed++
				freedBytes += int64(d.rr.storedLen)
				freedRaw += int64(d.rr.rawLen)
			}
			return tx.Commit()
		}()
		if err == nil {
			st.FreedChunks += freed
			st.FreedBytes += freedBytes
			s.chunks.Add(-freed)
			s.storedBytes.Add(-freedBytes)
			s.rawBytes.Add(-freedRaw)
			return rest, nil
		}
		if errors.Is(err, badger.ErrConflict) && attempt < commitRetries {
			continue
		}
		if errors.Is(err, badger.ErrConflict) {
			// Busy chunks: leave them for the next collection.
			return nil, nil
		}
		return nil, fmt.Errorf("storage: gc: %w", err)
	}
}

// freeSlots empties the slots of the chunks in doomed (all in the pack at
// base) within tx: the pack is rewritten without them, or deleted when
// nothing is left in it. It returns the bytes rewritten. A pack already
// missing is left so (the audit reports its chunks' records as corrupt);
// a pack whose slot table is damaged cannot be rewritten, so ok is false
// and its chunks stay queued (and the audit names them).
func freeSlots(tx *badger.Txn, base ChunkID, doomed []gcDoomed) (n int, ok bool, err error) {
	key := packKey(base)
	item, err := tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, true, nil
	}
	if err != nil {
		return 0, false, err
	}
	var drop [packSlots]bool
	for _, d := range doomed {
		drop[packSlotOf(d.id)] = true
	}
	var out []byte
	var live bool
	err = item.Value(func(v []byte) error {
		var err error
		out, live, err = packWithout(v, func(slot int) bool { return drop[slot] })
		return err
	})
	switch {
	case errors.Is(err, ErrCorrupt):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("pack %d: %w", base, err)
	case !live:
		return 0, true, tx.Delete(key)
	}
	return len(out), true, tx.Set(key, out)
}

// vlogGC gives freed space back to the file system. Badger rewrites a
// value-log file only once compactions have recorded how much of it is
// dead (its discard statistics), and a small or quiet store may never
// compact on its own. So once a value-log file's worth (or a quarter of
// one, for small files) has been freed, GC forces that: it flushes the
// memtable and flattens the LSM tree, then rewrites files while Badger
// finds ones that are at least half garbage.
func (s *Store) vlogGC(ctx context.Context, st *GCStats) error {
	if s.opts.InMemory {
		return nil
	}
	before, _ := dirBytes(s.dir, ".vlog")
	vlogSize := s.db.Opts().ValueLogFileSize
	if s.freedSinceCompact.Load() < vlogSize/4 {
		return nil
	}
	// Only right after a forced compaction, and with deletes of caller
	// keys held off until the rewrite is done: Badger's rewrite looks a
	// moved entry up at its own version, so an entry whose key was
	// deleted but whose old version has not yet been compacted away is
	// written back, and can outlive its tombstone (a deleted key comes
	// back; TestStoreAgainstModel caught it with chunk bodies). Compacting
	// first drops the old versions of everything deleted so far, so the
	// rewrite discards them; chunk frees are already serialised with this
	// by gcMu, and Update commits that delete caller keys wait on vlogMu.
	// Other commits (puts, counts, sets) go on: overwriting a key is safe,
	// as its newest version always shadows a rewritten older one.
	s.vlogMu.Lock()
	defer s.vlogMu.Unlock()
	if err := s.forceCompaction(); err != nil {
		return err
	}
	s.freedSinceCompact.Store(0)
	for ctx.Err() == nil {
		err := s.db.RunValueLogGC(0.5)
		if err != nil {
			if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
				break
			}
			return fmt.Errorf("storage: value-log gc: %w", err)
		}
		st.VlogRewritten++
	}
	after, _ := dirBytes(s.dir, ".vlog")
	if before > after {
		st.VlogReclaimed = before - after
	}
	return nil
}

// forceCompaction pushes deletions down the LSM tree so Badger learns how
// much of each value-log file is dead. Badger has no public "flush the
// memtable" call; DropPrefix of a scratch key does exactly that (it blocks
// writes for the duration of one memtable flush), and Flatten then
// compacts every level into one.
func (s *Store) forceCompaction() error {
	if err := s.db.Update(func(tx *badger.Txn) error { return tx.Set(keyFlush, nil) }); err != nil {
		return fmt.Errorf("storage: gc flush: %w", err)
	}
	if err := s.db.DropPrefix(keyFlush); err != nil {
		return fmt.Errorf("storage: gc flush: %w", err)
	}
	if err := s.db.Flatten(1); err != nil {
		return fmt.Errorf("storage: gc flatten: %w", err)
	}
	return nil
}

// gcLoop runs GC every interval until Close. Errors are retried on the
// next tick; the last result is kept for LastGC.
func (s *Store) gcLoop(interval time.Duration) {
	defer s.wg.Done()
	ctx, cancel := s.detach(context.Background())
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			st, err := s.GC(ctx)
			s.lastGCMu.Lock()
			s.lastGC, s.lastGCErr, s.lastGCAt = st, err, time.Now()
			s.lastGCMu.Unlock()
		}
	}
}

// LastGC returns the result of the background loop's last collection and
// when it ran (the zero time if it has not run yet).
func (s *Store) LastGC() (GCStats, time.Time, error) {
	s.lastGCMu.Lock()
	defer s.lastGCMu.Unlock()
	return s.lastGC, s.lastGCAt, s.lastGCErr
}
