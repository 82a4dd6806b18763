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
	out := make([][]byte, len(ids))
	dst := func(i int) []byte {
		if i < len(dsts) {
			return dsts[i]
		}
		return nil
	}
	var bad ChunkID
	err := s.db.View(func(tx *badger.Txn) error {
		for i, id := range ids {
			if id == ZeroChunk {
				out[i] = append(dst(i)[:0], zeroBlock[:s.chunkSize]...)
				continue
			}
			item, err := tx.Get(idKey(nsChunk, id))
			if errors.Is(err, badger.ErrKeyNotFound) {
				return fmt.Errorf("%w: chunk %d", ErrNotFound, id)
			}
			if err != nil {
				return fmt.Errorf("storage: get chunk %d: %w", id, err)
			}
			bad = id
			if err := item.Value(func(v []byte) error {
				out[i], err = s.codec.decode(v, dst(i))
				return err
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, ErrCorrupt) {
		s.corruptReads.Add(1)
		return nil, fmt.Errorf("chunk %d: %w", bad, err)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}
