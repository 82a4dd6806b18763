package nbd

import "context"

// Backend is the block device an export serves. The nbd package depends on
// nothing else: layer.Disk and layer.Image implement it, and tests use an
// in-memory one.
//
// Concurrency: the server calls every method from many goroutines at once
// (many requests in flight per connection, many connections per export).
// Implementations must be safe for that. Overlapping writes in flight at the
// same time have no defined order, as with any block device.
//
// Durability: Flush returns only when every write that completed (returned
// nil) before Flush was called, on any connection, is durable. A write with
// fua=true is durable when WriteAt returns.
//
// Offsets and lengths are in bytes; the server has already checked that
// off+len <= Size() and, for read-only backends, refused writes.
type Backend interface {
	// Size is the export size in bytes.
	Size() int64
	// ReadOnly reports whether writes, trims and zeroing must be refused.
	ReadOnly() bool
	// ReadAt fills p from off. A corrupt block is an error, never data.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt stores p at off; with fua the data is durable on return.
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// Flush makes every completed write durable.
	Flush(ctx context.Context) error
	// Trim hints that the range is unused; later reads return zeros.
	Trim(ctx context.Context, off, length int64, fua bool) error
	// WriteZeroes makes the range read as zeros. mayTrim allows
	// deallocating it; fastOnly asks to fail with ErrNotFast rather than
	// doing slow work (NBD_CMD_FLAG_FAST_ZERO).
	WriteZeroes(ctx context.Context, off, length int64, mayTrim, fastOnly, fua bool) error
	// Extents reports the allocation of [off, off+length) in order,
	// covering at least a prefix of the range; it may stop early.
	Extents(ctx context.Context, off, length int64) ([]Extent, error)
}

// Extent is one run of the block status map.
type Extent struct {
	Length int64
	// Hole: not allocated in this export (reads as zeros).
	Hole bool
	// Zero: reads as zeros (holes are always zero).
	Zero bool
}

// BlockSizer is optionally implemented by a Backend to advertise its block
// size constraints (NBD_INFO_BLOCK_SIZE). Without it the server uses
// 1 / 4096 / its own maximum payload.
type BlockSizer interface {
	BlockSizes() (minimum, preferred, maximum uint32)
}
