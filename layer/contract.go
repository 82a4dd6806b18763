package layer

// This file pins the API that api/ and cmd/stratad code against. The layer
// helper implements it (replace the panics, split into files by concern,
// delete this comment); changing a signature needs the lead's agreement.

import (
	"context"
	"errors"
	"io"

	"strata/storage"
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
)

// Options are the layer manager's tunables.
type Options struct {
	CacheBytes  int64 // decoded chunk cache shared by every disk and image
	SealWorkers int   // background seal parallelism; 0 = GOMAXPROCS
}

// DefaultOptions returns the measured defaults.
func DefaultOptions() Options { panic("unimplemented") }

// Manager owns every layer and disk of one store.
type Manager struct{}

// Open loads layer and disk state from the store, drops layers of imports
// that never committed, and resumes unfinished seals.
func Open(store *storage.Store, opts Options) (*Manager, error) { panic("unimplemented") }

// Close waits for seals to reach a resumable point and releases memory. It
// does not close the store.
func (m *Manager) Close() error { panic("unimplemented") }

// Pending is a layer whose chunks and map are written but that nobody can
// see until Commit runs inside the caller's transaction (the same one that
// adds, say, the image record).
type Pending struct{}

// Import reads a raw image of size bytes from r into a new pending layer.
// progress, when not nil, gets the bytes read so far.
func (m *Manager) Import(ctx context.Context, r io.Reader, size int64, progress func(int64)) (*Pending, error) {
	panic("unimplemented")
}

// Stats of the import that made the pending layer.
func (p *Pending) Stats() storage.ImportStats { panic("unimplemented") }

// Commit makes the layer visible with one holder, in tx.
func (p *Pending) Commit(tx *storage.Txn) (LayerID, error) { panic("unimplemented") }

// Abort drops the pending layer; safe after Commit (then a no-op).
func (p *Pending) Abort() { panic("unimplemented") }

// RetainLayer adds a holder (an image or snapshot record) to a layer, in tx.
func (m *Manager) RetainLayer(tx *storage.Txn, id LayerID) error { panic("unimplemented") }

// ReleaseLayer drops a holder, in tx. A layer with no holders and no disks
// on it is deleted and its references released (in the background, in
// resumable steps).
func (m *Manager) ReleaseLayer(tx *storage.Txn, id LayerID) error { panic("unimplemented") }

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

// LayerInfo returns the layer's description.
func (m *Manager) LayerInfo(id LayerID) (LayerInfo, error) { panic("unimplemented") }

// WaitSealed blocks until the layer's seal is done (at once for imported
// layers), reporting progress in [0,1].
func (m *Manager) WaitSealed(ctx context.Context, id LayerID, progress func(float64)) error {
	panic("unimplemented")
}

// CreateDisk makes a disk of size bytes over base (0: an empty disk), in tx.
// pooled puts the overlay directly on base's layer, sharing its cache; a
// standard disk gets its own base. Both copy no data. size must be at least
// the base's size.
func (m *Manager) CreateDisk(tx *storage.Txn, base LayerID, size int64, pooled bool) (DiskID, error) {
	panic("unimplemented")
}

// DeleteDisk removes a disk, in tx; its overlay and base references are
// released in the background. ErrBusy while it is open.
func (m *Manager) DeleteDisk(tx *storage.Txn, id DiskID) error { panic("unimplemented") }

// ResizeDisk grows a disk, in tx. Shrinking is refused.
func (m *Manager) ResizeDisk(tx *storage.Txn, id DiskID, size int64) error { panic("unimplemented") }

// DiskUsage returns the disk's space accounting.
func (m *Manager) DiskUsage(id DiskID) (Usage, error) { panic("unimplemented") }

// Snapshot switches the disk atomically to a fresh overlay and returns the
// layer that will hold exactly the writes acknowledged before the call,
// with one holder. The seal runs in the background (see WaitSealed); the
// layer reads correctly at once.
func (m *Manager) Snapshot(ctx context.Context, id DiskID) (LayerID, error) { panic("unimplemented") }

// Refs walks every chunk reference for storage.Store.Audit.
func (m *Manager) Refs() storage.RefSource { panic("unimplemented") }

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

// OpenDisk returns a read-write handle on a disk. Handles are shared: every
// open of the same disk sees the same data.
func (m *Manager) OpenDisk(id DiskID) (Volume, error) { panic("unimplemented") }

// OpenLayer returns a read-only handle on an immutable layer.
func (m *Manager) OpenLayer(id LayerID) (Volume, error) { panic("unimplemented") }
