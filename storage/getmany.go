package storage

import (
	"bytes"
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
	out, err := s.getMany(ids, dsts, func(_ int, err error) bool {
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
	errs = make([]error, len(ids))
	out, err = s.getMany(ids, dsts, func(i int, err error) bool {
		errs[i] = err
		return true
	})
	if err != nil {
		return nil, nil, err
	}
	return out, errs, nil
}

// getMany is the loop of GetMany and GetEach. A chunk's own failure goes to
// failed, already wrapped as Get wraps it; failed says whether to go on.
func (s *Store) getMany(ids []ChunkID, dsts [][]byte, failed func(i int, err error) bool) ([][]byte, error) {
	out := make([][]byte, len(ids))
	var stop error // a chunk's failure that ends the transaction early
	err := s.db.View(func(tx *badger.Txn) error {
		var it *badger.Iterator
		if runOfIDs(ids) {
			it = tx.NewIterator(badger.IteratorOptions{Prefix: []byte{nsChunk}})
			defer it.Close()
		}
		for i, id := range ids {
			var dst []byte
			if i < len(dsts) {
				dst = dsts[i]
			}
			if id == ZeroChunk {
				out[i] = append(dst[:0], zeroBlock[:s.chunkSize]...)
				continue
			}
			var item *badger.Item
			var err error
			if it != nil {
				item, err = seekItem(it, idKey(nsChunk, id))
			} else {
				item, err = tx.Get(idKey(nsChunk, id))
			}
			if err == nil {
				err = item.Value(func(v []byte) error {
					var derr error
					out[i], derr = s.codec.decode(v, dst)
					return derr
				})
			}
			switch {
			case err == nil:
				continue
			case errors.Is(err, badger.ErrKeyNotFound):
				err = fmt.Errorf("%w: chunk %d", ErrNotFound, id)
			case errors.Is(err, ErrCorrupt):
				s.corruptReads.Add(1)
				err = fmt.Errorf("chunk %d: %w", id, err)
			default:
				return fmt.Errorf("storage: get chunk %d: %w", id, err)
			}
			out[i] = nil
			if !failed(i, err) {
				stop = err
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if stop != nil {
		return nil, stop
	}
	return out, nil
}

// runOfIDs says whether ids are mostly a run of consecutive ids (a read of
// several chunks of one import): one iterator then finds each after the
// last with a step, where a get per id would search every level.
func runOfIDs(ids []ChunkID) bool {
	if len(ids) < 8 {
		return false
	}
	next := 0
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1]+1 {
			next++
		}
	}
	return next*2 >= len(ids)
}

// seekItem positions it at key: a step or two forward when key is just
// ahead, a seek otherwise. ErrKeyNotFound if key is not there.
func seekItem(it *badger.Iterator, key []byte) (*badger.Item, error) {
	for step := 0; ; step++ {
		if !it.Valid() {
			it.Seek(key)
			break
		}
		c := bytes.Compare(it.Item().Key(), key)
		if c == 0 {
			return it.Item(), nil
		}
		if c > 0 || step == 2 {
			it.Seek(key)
			break
		}
		it.Next()
	}
	if it.Valid() && bytes.Equal(it.Item().Key(), key) {
		return it.Item(), nil
	}
	return nil, badger.ErrKeyNotFound
}
