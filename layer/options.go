package layer

// Options are the layer manager's tunables.
type Options struct {
	CacheBytes  int64 // decoded chunk cache shared by every disk and image
	SealWorkers int   // background seal parallelism; 0 = GOMAXPROCS
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		// 256 MiB of decoded chunks: a Linux guest touches roughly 100 to
		// 300 MiB of its image while booting, so a boot storm of N disks on
		// one pooled image fits and reads each chunk from the store once,
		// while the daemon stays well inside a small VM host's memory next to
		// Badger's own ~160 MiB (memtables and block cache).
		CacheBytes: 256 << 20,
		// One seal per core: a seal hashes and compresses every chunk it
		// rewrites, which is CPU bound.
		SealWorkers: 0,
	}
}
