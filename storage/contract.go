package storage

import (
	"context"
	"errors"
	"io"
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
