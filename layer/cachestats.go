package layer

// CacheStats counts lookups in the decoded-chunk cache shared by every disk
// and image since Open: a hit is a chunk served from memory, a miss one read
// from the store (once, however many readers wanted it at the time).
type CacheStats struct {
	Hits, Misses int64
}

// CacheStats returns the shared chunk cache's counts, for metrics.
func (m *Manager) CacheStats() CacheStats {
	return CacheStats{Hits: m.cache.hits.Load(), Misses: m.cache.misses.Load()}
}
