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
// The count lives in the chunk's reference record (created here for a
// fresh chunk, see fresh.go), read and written in this transaction, so a GC that frees the chunk concurrently conflicts
// with it and one of the two commits fails (see gc.go). A count reaching
// zero enters the GC queue with the time; leaving zero takes it out.
func (t *Txn) AddRef(id ChunkID, delta int64) error {
	if id == ZeroChunk || delta == 0 {
		return nil
	}
	rk := idKey(nsRef, id)
	rr, err := t.record(id)
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
	if rr.count == 0 && n > 0 {
		t.referenced = append(t.referenced, id)
	}
	rr.count = n
	t.writes++
	if err := t.tx.Set(rk, rr.marshal()); err != nil {
		return wrapSetErr(err)
	}
	t.refRaw += delta * int64(rr.rawLen)
	return nil
}

// ChunkInfo is what the store knows about one chunk without reading it.
type ChunkInfo struct {
	Refs      int64 // reference count
	RawLen    int   // raw bytes
	StoredLen int   // bytes stored, after compression and header
}

// ChunkInfo returns the count and sizes of a chunk, for space accounting
// (a chunk with one reference is unique to its holder). An unknown chunk
// is ErrNotFound; ZeroChunk is all zeros and takes no space.
func (t *Txn) ChunkInfo(id ChunkID) (ChunkInfo, error) {
	if id == ZeroChunk {
		return ChunkInfo{}, nil
	}
	rr, err := t.record(id)
	if errors.Is(err, ErrNotFound) {
		return ChunkInfo{}, fmt.Errorf("%w: chunk %d", ErrNotFound, id)
	}
	if err != nil {
		return ChunkInfo{}, fmt.Errorf("storage: chunk info %d: %w", id, err)
	}
	return ChunkInfo{Refs: rr.count, RawLen: int(rr.rawLen), StoredLen: int(rr.storedLen)}, nil
}
