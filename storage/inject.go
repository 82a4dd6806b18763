package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// InjectCorruption flips one bit of a chunk's stored payload, at byte at
// (modulo the payload's length), bypassing the write path as a failing
// disk would: its checksum no longer matches, so every later read of the
// chunk fails with ErrCorrupt. It exists for fault-injection tests and
// drills (showing that damage is reported, never served); nothing in
// strata's own paths calls it.
func (s *Store) InjectCorruption(id ChunkID, at int) error {
	if id == ZeroChunk {
		return fmt.Errorf("storage: the zero chunk is not stored")
	}
	err := s.db.Update(func(tx *badger.Txn) error {
		v, err := packCopy(tx, packBase(id))
		if err != nil {
			return err
		}
		rec, err := packRecord(v, packSlotOf(id))
		if err != nil {
			return err
		}
		if rec == nil {
			return badger.ErrKeyNotFound
		}
		if len(rec) <= recordHeader {
			return fmt.Errorf("record of %d bytes", len(rec))
		}
		// rec aliases v: flipping it changes the pack written back.
		rec[recordHeader+at%(len(rec)-recordHeader)] ^= 0x40
		return tx.Set(packKey(packBase(id)), v)
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("%w: chunk %d", ErrNotFound, id)
	}
	return err
}
