package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// GetMany reads several chunks in one read transaction: out[i] holds the raw
// bytes of ids[i], appended to dsts[i][:0] when dsts has an i-th buffer (a
// buffer of ChunkSize capacity is filled without allocating). It is Get for
// a whole request: one Badger snapshot instead of one per chunk, the same
// checksum verification (a mismatch wraps ErrCorrupt and counts in
// Stats.CorruptReads) and ZeroChunk reading as ChunkSize zeros. It stops at
// the first failure and returns no data then.
func (s *Store) GetMany(ids []ChunkID, dsts [][]byte) ([][]byte, error) {
	var first error
	out := make([][]byte, len(ids))
	err := s.getMany(ids, dsts, out, func(_ int, err error) bool {
		first = err
		return false
	})
	if err == nil {
		err = first
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetEach is GetMany that reads every chunk whatever the others hold: errs[i]
// is ids[i]'s own failure (ErrCorrupt, counted once; ErrNotFound), out[i] nil
// then. The error is for the transaction as a whole, and no data comes with
// it. A cache filling several readers' misses at once uses it, so one
// damaged chunk fails only the reads of that chunk.
func (s *Store) GetEach(ids []ChunkID, dsts [][]byte) (out [][]byte, errs []error, err error) {
	out, errs = make([][]byte, len(ids)), make([]error, len(ids))
	if err := s.GetEachInto(ids, dsts, out, errs); err != nil {
		return nil, nil, err
	}
	return out, errs, nil
}

// GetEachInto is GetEach into slices the caller owns and may reuse: out and
// errs must have len(ids) entries, and are overwritten. A read path that
// pools them allocates nothing per call for the results (two slices of
// pointers, which the garbage collector also scans, per request).
func (s *Store) GetEachInto(ids []ChunkID, dsts, out [][]byte, errs []error) error {
	if len(out) != len(ids) || len(errs) != len(ids) {
		return fmt.Errorf("storage: GetEachInto: %d ids, %d outs, %d errs", len(ids), len(out), len(errs))
	}
	clear(errs)
	return s.getMany(ids, dsts, out, func(i int, err error) bool {
		errs[i] = err
		return true
	})
}

// getMany is the loop of GetMany and GetEach: it sets out[i] (len(ids)
// entries) to each chunk's bytes, nil for a failed one. A chunk's own
// failure goes to failed, already wrapped as Get wraps it; failed says
// whether to go on. Chunks of one pack (a read of consecutive blocks of one
// import) are decoded from one lookup of the pack.
func (s *Store) getMany(ids []ChunkID, dsts, out [][]byte, failed func(i int, err error) bool) error {
	clear(out)
	done := make([]bool, len(ids))
	var stop error // a chunk's failure that ends the transaction early
	// fail records chunk i's own error; false means stop.
	fail := func(i int, err error) bool {
		switch {
		case errors.Is(err, ErrNotFound):
		case errors.Is(err, ErrCorrupt):
			s.corruptReads.Add(1)
			err = fmt.Errorf("chunk %d: %w", ids[i], err)
		}
		out[i] = nil
		if !failed(i, err) {
			stop = err
			return false
		}
		return true
	}
	dst := func(i int) []byte {
		if i < len(dsts) {
			return dsts[i]
		}
		return nil
	}
	err := s.db.View(func(tx *badger.Txn) error {
		for i, id := range ids {
			if done[i] {
				continue
			}
			if id == ZeroChunk {
				out[i] = append(dst(i)[:0], zeroBlock[:s.chunkSize]...)
				continue
			}
			base := packBase(id)
			item, err := tx.Get(packKey(base))
			if errors.Is(err, badger.ErrKeyNotFound) {
				// The whole pack is gone: every chunk asked of it.
				for j := i; j < len(ids); j++ {
					if !done[j] && ids[j] != ZeroChunk && packBase(ids[j]) == base {
						done[j] = true
						if !fail(j, fmt.Errorf("%w: chunk %d", ErrNotFound, ids[j])) {
							return nil
						}
					}
				}
				continue
			}
			if err != nil {
				return fmt.Errorf("storage: get chunk %d: %w", id, err)
			}
			goOn := true
			err = item.Value(func(v []byte) error {
				// The trailer is checked once for all the pack's chunks;
				// a damaged one fails each of them.
				p, perr := openPack(v)
				for j := i; j < len(ids) && goOn; j++ {
					if done[j] || ids[j] == ZeroChunk || packBase(ids[j]) != base {
						continue
					}
					done[j] = true
					derr := perr
					if derr == nil {
						out[j], derr = s.decodeSlot(p, ids[j], dst(j))
					}
					if derr != nil {
						goOn = fail(j, derr)
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("storage: get chunk %d: %w", id, err)
			}
			if !goOn {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return stop
}
