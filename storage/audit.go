package storage

import (
	"context"
	"errors"
	"fmt"
	"sort"

	badger "github.com/dgraph-io/badger/v4"
)

// RefSource walks every chunk reference held by the maps above the store,
// as tx sees them, calling yield once per reference. The audit uses it to
// rebuild counts, reading the stored counts in the same transaction.
type RefSource func(tx *Txn, yield func(ChunkID) error) error

// AuditReport compares stored counts with counts rebuilt from the maps.
type AuditReport struct {
	Chunks   int64     // chunks with a reference record (a fresh chunk, held by the lease that put it, has none yet)
	Leaked   []ChunkID // stored count higher than the maps' (space never freed)
	Missing  []ChunkID // stored count lower than the maps' (would be freed too early)
	Dangling []ChunkID // referenced by a map but not stored
	Corrupt  []ChunkID // failed checksum when verify is on
}

// Clean reports whether the audit found nothing wrong.
func (r AuditReport) Clean() bool {
	return len(r.Leaked)+len(r.Missing)+len(r.Dangling)+len(r.Corrupt) == 0
}

// Audit rebuilds every reference count from refs and compares. With verify,
// every chunk is read and checksummed too.
//
// The rebuilt counts are held in a map of id -> count, about 40 bytes per
// distinct referenced chunk, for one range of ids at a time: a store of
// more than auditPassRecords reference records is audited in several
// passes over its id space, each walking refs again, so memory stays near
// 320 MB however large the store. The stored records and chunk bodies are
// streamed. All passes read one snapshot, so changes that commit maps and
// counts together never show up as differences, however busy the store.
func (s *Store) Audit(ctx context.Context, refs RefSource, verify bool) (AuditReport, error) {
	var rep AuditReport
	// One snapshot for the maps and the counts: a release that drops a map
	// and its counts in one transaction (the layer's reaper, say) is
	// either wholly before it or wholly after.
	err := s.db.View(func(tx *badger.Txn) error {
		bounds, err := auditBounds(ctx, tx, auditPassRecords)
		if err != nil {
			return err
		}
		lo := ChunkID(0)
		for i := 0; i <= len(bounds); i++ {
			r := idRange{lo: lo, last: i == len(bounds)}
			if !r.last {
				r.hi = bounds[i]
			}
			if err := s.auditRange(ctx, tx, refs, r, &rep); err != nil {
				return err
			}
			lo = r.hi
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("storage: audit: %w", err)
	}
	if verify {
		if err := s.verifyAll(ctx, &rep); err != nil {
			return rep, err
		}
	}
	for _, l := range [][]ChunkID{rep.Leaked, rep.Missing, rep.Dangling, rep.Corrupt} {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	}
	return rep, nil
}

// auditPassRecords bounds the reference records one pass of Audit covers
// (a variable for tests).
var auditPassRecords = 8 << 20

// idRange is the ids from lo up to hi, hi excluded, or with no end if last.
type idRange struct {
	lo, hi ChunkID
	last   bool
}

func (r idRange) has(id ChunkID) bool { return id >= r.lo && (r.last || id < r.hi) }

// auditBounds cuts the id space into ranges of at most per reference
// records: it returns the first id of every range after the first.
func auditBounds(ctx context.Context, tx *badger.Txn, per int) ([]ChunkID, error) {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte{nsRef}
	opts.PrefetchValues = false
	it := tx.NewIterator(opts)
	defer it.Close()
	var bounds []ChunkID
	n := 0
	for it.Rewind(); it.Valid(); it.Next() {
		id, ok := parseIDKey(it.Item().Key())
		if !ok {
			continue
		}
		if n == per {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			bounds = append(bounds, id)
			n = 0
		}
		n++
	}
	return bounds, nil
}

// auditRange rebuilds the counts of the ids in r from refs and compares
// them with the reference records of r.
func (s *Store) auditRange(ctx context.Context, tx *badger.Txn, refs RefSource, r idRange, rep *AuditReport) error {
	want := make(map[ChunkID]int64)
	if refs != nil {
		err := refs(&Txn{s: s, tx: tx}, func(id ChunkID) error {
			if id != ZeroChunk && r.has(id) {
				want[id]++
			}
			return ctx.Err()
		})
		if err != nil {
			return fmt.Errorf("walking references: %w", err)
		}
	}
	it := refIterator(tx)
	defer it.Close()
	var rr refRecord
	for it.Seek(idKey(nsRef, r.lo)); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		id, ok := parseIDKey(it.Item().Key())
		if !ok {
			continue
		}
		if !r.has(id) {
			break
		}
		rep.Chunks++
		if err := it.Item().Value(rr.unmarshal); err != nil {
			rep.Corrupt = append(rep.Corrupt, id)
			continue
		}
		n := want[id]
		delete(want, id)
		switch {
		case rr.count > n:
			rep.Leaked = append(rep.Leaked, id)
		case rr.count < n:
			rep.Missing = append(rep.Missing, id)
		}
	}
	for id := range want {
		rep.Dangling = append(rep.Dangling, id)
	}
	return nil
}

// verifyAll decodes and checksums every stored chunk, streaming. It walks
// the reference records and the packs side by side (both in id order), so
// a record whose body is missing is reported as corrupt and a body without
// a record (space nobody can free) as leaked, unless it is fresh (held by
// the lease of the put that created it, see fresh.go) or got its record
// after the audit's snapshot. A pack whose slot table is
// damaged makes every record of its id range corrupt.
func (s *Store) verifyAll(ctx context.Context, rep *AuditReport) error {
	err := s.db.View(func(tx *badger.Txn) error {
		ropts := badger.DefaultIteratorOptions
		ropts.Prefix = []byte{nsRef}
		ropts.PrefetchValues = false
		refs := tx.NewIterator(ropts)
		defer refs.Close()
		popts := badger.DefaultIteratorOptions
		popts.Prefix = []byte{nsPack}
		popts.PrefetchValues = false
		packs := tx.NewIterator(popts)
		defer packs.Close()
		refs.Rewind()
		// noBodyBefore reports every record below id as corrupt.
		noBodyBefore := func(id ChunkID) {
			for ; refs.Valid(); refs.Next() {
				rid, ok := parseIDKey(refs.Item().Key())
				if !ok {
					continue
				}
				if rid >= id {
					return
				}
				rep.Corrupt = append(rep.Corrupt, rid)
			}
		}
		// hasRecord says whether the current record is id's, and moves
		// past it if so.
		hasRecord := func(id ChunkID) bool {
			if !refs.Valid() {
				return false
			}
			if rid, ok := parseIDKey(refs.Item().Key()); ok && rid == id {
				refs.Next()
				return true
			}
			return false
		}
		buf := make([]byte, 0, MaxChunkSize)
		for packs.Rewind(); packs.Valid(); packs.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			base, ok := parseIDKey(packs.Item().Key())
			if !ok {
				continue
			}
			err := packs.Item().Value(func(v []byte) error {
				return eachPackRecord(v, func(slot int, rec []byte) error {
					id := base + ChunkID(slot)
					noBodyBefore(id)
					if !hasRecord(id) && !s.freshOrRecordedNow(id) {
						rep.Leaked = append(rep.Leaked, id)
						return nil
					}
					var err error
					if buf, err = s.codec.decode(rec, buf); errors.Is(err, ErrCorrupt) {
						s.corruptReads.Add(1)
						rep.Corrupt = append(rep.Corrupt, id)
						buf = make([]byte, 0, MaxChunkSize)
					} else if err != nil {
						return err
					}
					return nil
				})
			})
			if err != nil && !errors.Is(err, ErrCorrupt) {
				return err
			}
			noBodyBefore(base + packSlots)
		}
		noBodyBefore(^ChunkID(0))
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: audit verify: %w", err)
	}
	return nil
}
