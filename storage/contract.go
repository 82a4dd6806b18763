package storage

// This file pins the API that layer/ and api/ code against. The storage
// helper implements it (replace the panics, split into files by concern,
// delete this comment); changing a signature needs the lead's agreement.

import (
	"context"
	"errors"
	"io"
	"time"
)

// ChunkID is the small internal id of a stored chunk. Layer maps hold ids,
// never hashes.
type ChunkID uint64

// ZeroChunk is the sentinel id for an all-zero chunk; such chunks are never
// stored and carry no reference count.
const ZeroChunk ChunkID = 0

var (
	// ErrCorrupt: a stored chunk failed its checksum or could not be decoded.
	ErrCorrupt = errors.New("storage: chunk corrupt")
	// ErrNotFound: no such chunk or key.
	ErrNotFound = errors.New("storage: not found")
)

// Options are the store's tunables. See DefaultOptions for the measured defaults.
type Options struct {
	ChunkSize        int           // bytes, power of two, 4 KiB..64 KiB; fixed at creation
	CompressionLevel int           // zstd encoder level
	GCGrace          time.Duration // how long a zero-ref chunk waits before it is freed
	GCInterval       time.Duration // background GC period; 0 disables the loop
	Workers          int           // import pipeline workers; 0 = GOMAXPROCS
	InMemory         bool          // for tests only
}

// DefaultOptions returns the measured defaults.
func DefaultOptions() Options { panic("unimplemented") }

// Store is the chunk store and the single Badger database of a data directory.
type Store struct{}

// Open opens or creates the store in dir. An existing store keeps the chunk
// size it was created with.
func Open(dir string, opts Options) (*Store, error) { panic("unimplemented") }

// Close stops background work and closes the database.
func (s *Store) Close() error { panic("unimplemented") }

// ChunkSize is the store's fixed chunk size.
func (s *Store) ChunkSize() int { panic("unimplemented") }

// Sync makes every committed transaction durable.
func (s *Store) Sync() error { panic("unimplemented") }

// Lease protects chunks written under it from GC until Release, so an
// import or seal can write chunks before the map that references them is
// committed.
type Lease struct{}

// NewLease starts a lease.
func (s *Store) NewLease() *Lease { panic("unimplemented") }

// Release ends the lease; chunks still at zero references become collectable.
func (l *Lease) Release() { panic("unimplemented") }

// Put stores one raw chunk (len <= ChunkSize; shorter only at the end of an
// image) and returns its id, deduplicated by keyed hash. An all-zero chunk
// returns ZeroChunk and stores nothing. The chunk is held by the lease until
// a transaction references it with AddRef.
func (s *Store) Put(raw []byte, l *Lease) (ChunkID, error) { panic("unimplemented") }

// Get returns the raw bytes of a chunk, appended to dst[:0]. The checksum is
// verified; a mismatch returns an error wrapping ErrCorrupt.
func (s *Store) Get(id ChunkID, dst []byte) ([]byte, error) { panic("unimplemented") }

// ImportStats reports one import.
type ImportStats struct {
	LogicalBytes int64 // bytes read from the stream
	ZeroChunks   int64
	NewChunks    int64 // chunks stored by this import
	DedupChunks  int64 // chunks that already existed
	StoredBytes  int64 // bytes written for new chunks, after compression
}

// Import cuts r into ChunkSize chunks, hashes, compresses and stores them in
// parallel under the lease, and calls emit in index order for every chunk
// (ZeroChunk included). progress, when not nil, is called with the bytes read.
func (s *Store) Import(ctx context.Context, r io.Reader, l *Lease, emit func(index int64, id ChunkID) error, progress func(bytesRead int64)) (ImportStats, error) {
	panic("unimplemented")
}

// Txn is one Badger transaction over the store's metadata: the key/value
// space that layer/ and api/ keep their records in, and the chunk reference
// counts. Keys given to Get/Set/Delete/Iterate live in a namespace separate
// from the store's own keys.
type Txn struct{}

// Update runs fn in a read-write transaction and commits it if fn returns
// nil. A transaction too large for Badger returns an error; callers split
// work into resumable steps.
func (s *Store) Update(fn func(tx *Txn) error) error { panic("unimplemented") }

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(tx *Txn) error) error { panic("unimplemented") }

// Get returns a copy of the value of key, or ErrNotFound.
func (t *Txn) Get(key []byte) ([]byte, error) { panic("unimplemented") }

// Set stores key=val.
func (t *Txn) Set(key, val []byte) error { panic("unimplemented") }

// Delete removes key.
func (t *Txn) Delete(key []byte) error { panic("unimplemented") }

// Iterate calls fn for each key with the prefix, in key order. key and val
// are valid only during the call.
func (t *Txn) Iterate(prefix []byte, fn func(key, val []byte) error) error {
	panic("unimplemented")
}

// AddRef changes the reference count of a chunk by delta. ZeroChunk is
// ignored. A count that would fall below zero is an error.
func (t *Txn) AddRef(id ChunkID, delta int64) error { panic("unimplemented") }

// GCStats reports one collection.
type GCStats struct {
	FreedChunks   int64
	FreedBytes    int64 // stored bytes of the freed chunks
	VlogReclaimed int64 // bytes Badger's value-log GC gave back
	VlogRewritten int   // value-log files rewritten
}

// GC frees chunks whose count has been zero for longer than the grace
// period and that no lease holds, then runs Badger's value-log GC.
func (s *Store) GC(ctx context.Context) (GCStats, error) { panic("unimplemented") }

// RefSource walks every chunk reference held by the maps above the store,
// calling yield once per reference. The audit uses it to rebuild counts.
type RefSource func(yield func(ChunkID) error) error

// AuditReport compares stored counts with counts rebuilt from the maps.
type AuditReport struct {
	Chunks   int64
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
func (s *Store) Audit(ctx context.Context, refs RefSource, verify bool) (AuditReport, error) {
	panic("unimplemented")
}

// Stats are store-wide figures.
type Stats struct {
	Chunks        int64 // stored chunks
	RawBytes      int64 // raw bytes of stored chunks
	StoredBytes   int64 // bytes after compression
	ReferencedRaw int64 // raw bytes summed over all references (dedup numerator)
	CorruptReads  int64 // checksum failures seen since open
	DiskBytes     int64 // Badger's LSM + value log size
}

// Stats returns current figures.
func (s *Store) Stats() Stats { panic("unimplemented") }
