package storage

import (
	"errors"
	"fmt"
	"time"
)

// AddRef changes the reference count of a chunk by delta. ZeroChunk is
// ignored. A count that would fall below zero is an error wrapping
// ErrRefUnderflow; an unknown chunk is an error wrapping ErrNotFound.
//
// The count lives in the chunk's reference record, read and written in
// this transaction, so a GC that frees the chunk concurrently conflicts
// with it and one of the two commits fails (see gc.go). A count reaching
// zero enters the GC queue with the time; leaving zero takes it out.
func (t *Txn) AddRef(id ChunkID, delta int64) error {
	if id == ZeroChunk || delta == 0 {
		return nil
	}
	rk := idKey(nsRef, id)
	rr, err := getRef(t.tx, rk)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: chunk %d", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("storage: addref %d: %w", id, err)
	}
	n := rr.count + delta
	if n < 0 {
		return fmt.Errorf("%w: chunk %d has %d, change %d", ErrRefUnderflow, id, rr.count, delta)
	}
	switch {
	case rr.count == 0 && n > 0 && rr.zeroSince != 0:
		// Leaving the GC queue (a fresh chunk was never in it).
		if err := t.tx.Delete(zeroKey(rr.zeroSince, id)); err != nil {
			return wrapSetErr(err)
		}
		t.writes++
		rr.zeroSince = 0
	case rr.count > 0 && n == 0:
		rr.zeroSince = time.Now().UnixNano()
		if err := t.tx.Set(zeroKey(rr.zeroSince, id), nil); err != nil {
			return wrapSetErr(err)
		}
		t.writes++
	}
	rr.count = n
	t.writes++
	if err := t.tx.Set(rk, rr.marshal()); err != nil {
		return wrapSetErr(err)
	}
	t.refRaw += delta * int64(rr.rawLen)
	return nil
}
