package storage

import (
	"runtime"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Options are the store's tunables. See DefaultOptions for the measured
// defaults. A zero ChunkSize, CompressionLevel or Workers takes the default;
// a zero GCGrace really means none (start from DefaultOptions).
type Options struct {
	ChunkSize        int           // bytes, power of two, 4 KiB..64 KiB; fixed at creation
	CompressionLevel int           // 1 (fastest, the default) .. 5 (best); see zstdLevel
	GCGrace          time.Duration // how long a zero-ref chunk waits before it is freed
	GCInterval       time.Duration // background GC period; 0 disables the loop
	Workers          int           // import pipeline workers; 0 = GOMAXPROCS
	InMemory         bool          // for tests only

	// ValueLogFileSize is the size at which Badger starts a new value-log
	// file; 0 means the default (256 MiB). Value-log GC reclaims whole files,
	// so tests that check reclaim set it small (1 MiB is Badger's minimum).
	ValueLogFileSize int64

	// HugeReadLimit: while the value-log files add up to at most this many
	// bytes, reads map them in 2 MiB page-cache folios (see hugeReads);
	// above it, in 4 KiB pages. 0 means a quarter of the machine's memory;
	// a negative limit means never, as does the kernel's transparent
	// hugepage setting "never".
	HugeReadLimit int64
}

// Chunk size bounds: below 4 KiB the map of a disk outgrows its data's
// guest block; above 64 KiB separately built images stop deduplicating.
const (
	MinChunkSize = 4 << 10
	MaxChunkSize = 64 << 10
)

// DefaultOptions returns the measured defaults.
func DefaultOptions() Options {
	return Options{
		// 4 KiB, by TestDedupByChunkSize (docs/BENCHMARKS.md): two ext4
		// images made by mke2fs -d from the same 396 MB of files with
		// different layouts share 97.7 % of the second image's data at
		// 4 KiB chunks but only 8.8 % at 16 KiB, 5.9 % at 32 KiB and 3.9 %
		// at 64 KiB: ext4 places file data at 4 KiB block boundaries, so
		// any larger chunk straddles files whose relative offsets differ
		// between the images. 4 KiB is also the guest block, so overlay
		// writes never cut a chunk. The price is the map (2 MiB per GiB,
		// 8 bytes a chunk) and per-chunk work on import.
		ChunkSize: 4 << 10,
		// Level 1 (zstd "fastest" without literal entropy coding): import
		// must keep up with 500 MB/s on two cores, and at 4 KiB chunks
		// this is 2.3x faster than plain "fastest" for 9 % more bytes
		// (measured in zstdLevel's comment).
		CompressionLevel: 1,
		// A chunk whose last reference went away is kept this long, so a
		// client holding an id it read just before (a map being copied
		// outside a lease) can still AddRef it.
		GCGrace:    10 * time.Minute,
		GCInterval: 5 * time.Minute,
		Workers:    0,
	}
}

func (o Options) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// badgerOptions are chosen by measurement on this project's 2-core machine:
//
//   - ValueThreshold 1 KiB: with v4's default (1 MiB, every chunk inline in
//     the LSM tree) writing 2 GiB of 64 KiB values ran at 24 MB/s with 10 GB
//     peak memory, because every compaction rewrote the chunk bodies. With
//     chunk bodies in the value log it ran at ~370 MB/s and 2.2 GB. 256
//     bytes rather than 1 KiB: at 4 KiB chunks many compress below 1 KiB,
//     and inline they filled the memtables and their flushes (BenchmarkImport
//     4K/workers=2: 189 -> 212 MB/cpu-s, 125 -> 161 counting the flush at
//     Close). Reference records (56 bytes) and hash entries stay inline.
//   - Badger's own block compression off: chunks are already zstd-compressed
//     and the LSM holds small keys; compressing again only burns CPU.
//   - Small memtables and block cache: the store shares the machine with the
//     guest-facing data path; 3 x 32 MiB memtables and a 64 MiB block cache
//     keep Badger's resident memory modest.
//   - SyncWrites false: durability comes from Store.Sync, which the layer
//     calls on NBD FLUSH/FUA; a commit is in the memtable WAL (an mmap'd
//     file) when it returns, so it survives kill -9 even before Sync.
//   - ValueLogFileSize 256 MiB: value-log GC rewrites whole files, so
//     smaller files return freed space in finer steps than the 1 GiB default.
func (o Options) badgerOptions(dir string) badger.Options {
	bo := badger.DefaultOptions(dir).
		WithLogger(nil).
		// Badger's own expvar counters, updated under a lock on every
		// level of every get: 2.4 % of the CPU of a cold 64 KiB random
		// read over NBD (pprof, strata-bench), and strata never exports
		// them (it counts what it serves itself).
		WithMetricsEnabled(false).
		WithValueThreshold(256).
		WithCompression(options.None).
		WithBlockCacheSize(64 << 20).
		WithMemTableSize(32 << 20).
		WithNumMemtables(3).
		WithSyncWrites(false).
		WithNumVersionsToKeep(1).
		WithValueLogFileSize(256 << 20)
	if o.ValueLogFileSize > 0 {
		bo = bo.WithValueLogFileSize(o.ValueLogFileSize)
	}
	if o.InMemory {
		// No value log in memory: every value must be under the
		// threshold, so raise it to Badger's maximum (1 MiB).
		bo = bo.WithInMemory(true).WithDir("").WithValueDir("").WithValueThreshold(1 << 20)
	}
	return bo
}
