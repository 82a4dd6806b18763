package layer

// This file holds the types api/ and cmd/stratad code against: ids, errors,
// options, accounting and the Volume handle. The Manager's methods live in
// the files named after their concern (manager.go, disk.go, seal.go, ...).

import (
	"context"
	"errors"
)

// LayerID names an immutable layer (an image's or a snapshot's block map).
type LayerID uint64

// DiskID names a disk: a writable overlay over one immutable layer.
type DiskID uint64

var (
	// ErrOutOfRange: a request beyond the end of the disk or layer.
	ErrOutOfRange = errors.New("layer: out of range")
	// ErrNotFound: no such layer or disk.
	ErrNotFound = errors.New("layer: not found")
	// ErrReadOnly: a write to an immutable layer.
	ErrReadOnly = errors.New("layer: read-only")
	// ErrNotFast: WriteZeroes with fastOnly could not be done as metadata.
	ErrNotFast = errors.New("layer: zeroing would not be fast")
	// ErrBusy: the disk is open elsewhere or a snapshot of it is in progress
	// where that matters (delete, resize).
	ErrBusy = errors.New("layer: busy")
	// ErrInvalid: a size or argument the operation cannot take (a shrink,
	// a disk smaller than its base, a negative size).
	ErrInvalid = errors.New("layer: invalid argument")
	// ErrCorruptMeta: a layer record (map page, disk record) could not be
	// decoded. Chunk corruption is storage.ErrCorrupt, wrapped.
	ErrCorruptMeta = errors.New("layer: corrupt metadata")
	// ErrClosed: the manager or the handle was closed.
	ErrClosed = errors.New("layer: closed")
)

// Usage is space accounting in bytes.
type Usage struct {
	Logical int64 // virtual size
	Unique  int64 // stored bytes only this layer or disk references
	Shared  int64 // stored bytes it shares with others
}

// LayerInfo describes an immutable layer.
type LayerInfo struct {
	ID     LayerID
	Size   int64
	Sealed bool // false while a snapshot's seal is still running
	Usage  Usage
}

// Extent is one run of the allocation map.
type Extent struct {
	Length int64
	Hole   bool // not allocated (reads as zeros)
	Zero   bool // reads as zeros
}

// Volume is the block view of a disk (read-write) or an image (read-only).
// All methods are safe for concurrent use; see nbd.Backend for the contract.
type Volume interface {
	Size() int64
	ReadOnly() bool
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	Flush(ctx context.Context) error
	Trim(ctx context.Context, off, length int64, fua bool) error
	WriteZeroes(ctx context.Context, off, length int64, mayTrim, fastOnly, fua bool) error
	Extents(ctx context.Context, off, length int64) ([]Extent, error)
	// Close drops this handle; the last Close of a disk flushes it.
	Close() error
}
