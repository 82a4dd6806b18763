package storage

import (
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Fresh chunks and lazy reference records.
//
// A chunk that a put creates under a lease is fresh: no map references it
// yet, and the lease keeps GC away from it. Its reference record (nsRef)
// is not written by the put. The first AddRef creates it, or, for a chunk
// still unreferenced when its lease lets go of it, the queueing
// (queueFresh). Until then the hold set keeps the facts the record will
// hold (sizes and hash; what a hold costs is at Lease.Forget). Nearly
// every imported chunk is referenced by the map commit that follows its
// put, so the put writing a record with count 0 that AddRef then
// overwrote was one memtable insert in three per new chunk for nothing:
// measured, a first import takes 13-27 % less CPU without it
// (docs/storage-notes.md).
//
// What stays true:
//   - A chunk without a record is fresh and held, and the hold set has its
//     facts, or a crash ended its lease. A record, once written, is
//     authoritative.
//   - AddRef and queueFresh both read the record's key before writing it,
//     so Badger's conflict check still orders them (a missing key is read
//     too).
//   - A put writes, with each pack it creates under a lease, a marker
//     (nsFresh + pack base) holding the facts of the pack's slots. The
//     lease's Release deletes its packs' markers once every chunk in them
//     has a record. After a crash, Open gives the chunks of marked packs
//     that still lack one a record in the GC queue (recoverFresh), as it
//     queues any other chunk whose lease a crash ended.

// appendFacts appends f to a pack's marker value, which holds the facts of
// its slots 0..n-1 in order, chunkFactsSize bytes each.
func appendFacts(dst []byte, f *chunkFacts) []byte {
	var b [chunkFactsSize]byte
	f.marshalTo(b[:])
	return append(dst, b[:]...)
}

// freshFactsOf reads a chunk's facts from a marker value.
func freshFactsOf(marker []byte, slot int) (chunkFacts, bool) {
	var f chunkFacts
	off := slot * chunkFactsSize
	if off+chunkFactsSize > len(marker) {
		return f, false
	}
	f.unmarshal(marker[off : off+chunkFactsSize])
	return f, true
}

// slotExists reports whether id's pack holds a body in its slot, as tx
// sees it (see liveSlots).
func slotExists(tx *badger.Txn, id ChunkID) (bool, error) {
	live, err := liveSlots(tx, packBase(id))
	return live[packSlotOf(id)], err
}

// record returns id's reference record as this transaction sees it, or,
// for a fresh chunk without one, the record it would have (count 0, not
// queued). A record written since this transaction began (a concurrent
// Release queued the chunk and dropped its holds) is a conflict, so that
// Update runs the transaction again; no record and no fresh facts is
// ErrNotFound.
func (t *Txn) record(id ChunkID) (refRecord, error) {
	rr, err := getRef(t.tx, idKey(nsRef, id))
	if !errors.Is(err, ErrNotFound) {
		return rr, err
	}
	if facts, ok := t.s.holds.freshFacts(id); ok {
		return refRecord{chunkFacts: facts}, nil
	}
	if t.s.hasRecordNow(id) {
		return rr, fmt.Errorf("%w: chunk %d got its reference record meanwhile", badger.ErrConflict, id)
	}
	return rr, ErrNotFound
}

// hasRecordNow reports whether id has a reference record in the newest
// snapshot.
func (s *Store) hasRecordNow(id ChunkID) bool {
	err := s.db.View(func(tx *badger.Txn) error {
		_, err := tx.Get(idKey(nsRef, id))
		return err
	})
	return err == nil
}

// freshOrRecordedNow reports whether a chunk whose body has no record in
// an older snapshot is fresh, or has its record by now.
func (s *Store) freshOrRecordedNow(id ChunkID) bool {
	if _, ok := s.holds.freshFacts(id); ok {
		return true
	}
	return s.hasRecordNow(id)
}

// dropFreshMarkers deletes the markers of packs whose chunks all have
// reference records now. A marker deleted here and brought back by
// value-log GC (see vlogGC) only costs Open a look at its pack.
func (s *Store) dropFreshMarkers(bases []ChunkID) error {
	batch := max(1, s.MaxTxnWrites())
	for len(bases) > 0 {
		part := bases[:min(batch, len(bases))]
		bases = bases[len(part):]
		err := s.db.Update(func(tx *badger.Txn) error {
			for _, b := range part {
				if err := tx.Delete(idKey(nsFresh, b)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("storage: drop fresh-pack markers: %w", err)
		}
	}
	return nil
}

// recoverFresh runs on Open, before the counters are set: every chunk of a
// marked pack that still has its body but no reference record (its lease
// ended in a crash) gets one, in the GC queue from now, and the marker
// goes.
func (s *Store) recoverFresh() error {
	type marked struct {
		base  ChunkID
		facts []byte
	}
	const batch = 16 // markers per transaction: up to 2 x 256 x 16 entries
	var todo []marked
	flush := func() error {
		if len(todo) == 0 {
			return nil
		}
		err := s.db.Update(func(tx *badger.Txn) error {
			now := time.Now().UnixNano()
			for _, m := range todo {
				if err := s.recoverPack(tx, m.base, m.facts, now); err != nil {
					return err
				}
				if err := tx.Delete(idKey(nsFresh, m.base)); err != nil {
					return err
				}
			}
			return nil
		})
		todo = todo[:0]
		return err
	}
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte{nsFresh}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			base, ok := parseIDKey(it.Item().Key())
			if !ok {
				continue
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			todo = append(todo, marked{base, v})
			if len(todo) == batch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("storage: recover fresh chunks: %w", err)
	}
	return nil
}

// recoverPack gives the chunks of the pack at base that lack a reference
// record one, queued since now, from the facts in its marker.
func (s *Store) recoverPack(tx *badger.Txn, base ChunkID, marker []byte, now int64) error {
	live, err := liveSlots(tx, base)
	if err != nil {
		return err
	}
	for slot := 0; ; slot++ {
		facts, ok := freshFactsOf(marker, slot)
		if !ok {
			return nil
		}
		if !live[slot] {
			continue // freed by GC after its first reference
		}
		id := base + ChunkID(slot)
		rk := idKey(nsRef, id)
		if _, err := tx.Get(rk); err == nil {
			continue
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		rr := refRecord{zeroSince: now, chunkFacts: facts}
		if err := tx.Set(rk, rr.marshal()); err != nil {
			return err
		}
		if err := tx.Set(zeroKey(now, id), nil); err != nil {
			return err
		}
	}
}

// liveSlots reports which slots of the pack at base hold a body, as tx
// sees it: none if the pack is gone, all if its slot table is damaged
// (the audit names its chunks).
func liveSlots(tx *badger.Txn, base ChunkID) (live [packSlots]bool, err error) {
	item, err := tx.Get(packKey(base))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return live, nil
	}
	if err != nil {
		return live, err
	}
	err = item.Value(func(v []byte) error {
		p, err := openPack(v)
		for i := range live {
			rec, rerr := p.record(i)
			live[i] = err != nil || rerr != nil || rec != nil
		}
		return nil
	})
	return live, err
}
