package layer

// CacheStats counts lookups in the decoded-chunk cache shared by every disk
// and image since Open: a hit is a chunk served from memory, a miss one read
// from the store (once, however many readers wanted it at the time). Passed
// counts the misses the cache did not keep (read once so far: decoded
// straight into the reader's buffer); Misses includes them.
type CacheStats struct {
	Hits, Misses, Passed int64
}

// CacheStats returns the shared chunk cache's counts, for metrics.
func (m *Manager) CacheStats() CacheStats {
	c := m.cache
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Passed: c.passed.Load()}
}
