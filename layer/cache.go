package layer

import (
	"fmt"
	"sync"
	"sync/atomic"

	"strata/storage"
)

// chunkCache is the one bounded cache of decoded chunks that every disk and
// image of a manager reads through. It is keyed by chunk id, so N disks on
// one image, or layers sharing chunks, hold each chunk once; concurrent
// misses on one id read the store once. Eviction is CLOCK per shard: cheap
// on the hit path (one flag store), close enough to LRU for boot storms.
type chunkCache struct {
	store        *storage.Store
	shards       [cacheShards]cacheShard
	hits, misses atomic.Int64
}

const cacheShards = 16

type cacheShard struct {
	mu       sync.Mutex
	limit    int64
	bytes    int64
	m        map[storage.ChunkID]*centry
	ring     []*centry
	hand     int
	inflight map[storage.ChunkID]*flight
}

type centry struct {
	id   storage.ChunkID
	data []byte // never modified after insertion
	ref  bool
}

type flight struct {
	done chan struct{}
	data []byte
	err  error
}

func newChunkCache(store *storage.Store, limit int64) *chunkCache {
	c := &chunkCache{store: store}
	for i := range c.shards {
		c.shards[i].limit = limit / cacheShards
		c.shards[i].m = make(map[storage.ChunkID]*centry)
		c.shards[i].inflight = make(map[storage.ChunkID]*flight)
	}
	return c
}

// get returns the raw bytes of a chunk. The slice is shared: callers copy
// out of it and never write to it.
func (c *chunkCache) get(id storage.ChunkID) ([]byte, error) {
	s := c.shard(id)
	s.mu.Lock()
	if e, ok := s.m[id]; ok {
		e.ref = true
		s.mu.Unlock()
		c.hits.Add(1)
		return e.data, nil
	}
	if f, ok := s.inflight[id]; ok {
		s.mu.Unlock()
		<-f.done
		return f.data, f.err
	}
	c.misses.Add(1)
	f := &flight{done: make(chan struct{})}
	s.inflight[id] = f
	s.mu.Unlock()

	// A buffer of the chunk's size: decoding into nil grows the slice as
	// zstd writes, several allocations and copies per chunk.
	data, err := c.store.Get(id, make([]byte, 0, c.store.ChunkSize()))
	if err != nil {
		err = fmt.Errorf("layer: chunk %d: %w", id, err)
	}
	f.data, f.err = data, err
	s.mu.Lock()
	delete(s.inflight, id)
	if err == nil && int64(len(data)) <= s.limit {
		s.insert(&centry{id: id, data: data})
	}
	s.mu.Unlock()
	close(f.done)
	return data, err
}

// chunkRead is one chunk's part of a read: the chunk's bytes from co on go
// to dst (past the chunk's end, zeros).
type chunkRead struct {
	id  storage.ChunkID
	co  int64
	dst []byte

	data []byte  // set from the cache
	f    *flight // or by the read in flight
}

// fill serves every read of a multi-chunk request: hits from the cache,
// chunks another reader is already reading from its flight, and all the
// rest from the store in one read transaction (GetEach), each decoded into
// a buffer of its own that the cache then keeps. As in get, each chunk is
// read from the store once however many readers miss it at once.
func (c *chunkCache) fill(reads []chunkRead) error {
	ids := make([]storage.ChunkID, 0, len(reads))
	mine := make([]*flight, 0, len(reads))
	for i := range reads {
		r := &reads[i]
		s := c.shard(r.id)
		s.mu.Lock()
		if e, ok := s.m[r.id]; ok {
			e.ref = true
			s.mu.Unlock()
			c.hits.Add(1)
			r.data = e.data
			continue
		}
		if f, ok := s.inflight[r.id]; ok { // another reader's, or ours for a repeated id
			s.mu.Unlock()
			r.f = f
			continue
		}
		f := &flight{done: make(chan struct{})}
		s.inflight[r.id] = f
		s.mu.Unlock()
		c.misses.Add(1)
		r.f = f
		ids, mine = append(ids, r.id), append(mine, f)
	}
	if len(ids) > 0 {
		c.fetch(ids, mine)
	}
	for i := range reads {
		r := &reads[i]
		if r.f != nil {
			<-r.f.done
			if r.f.err != nil {
				return r.f.err
			}
			r.data = r.f.data
		}
		k := 0
		if r.co < int64(len(r.data)) {
			k = copy(r.dst, r.data[r.co:])
		}
		clear(r.dst[k:])
	}
	return nil
}

// fetch reads the chunks of the flights this reader started, completes the
// flights and caches what it read.
func (c *chunkCache) fetch(ids []storage.ChunkID, mine []*flight) {
	cs := c.store.ChunkSize()
	dsts := make([][]byte, len(ids))
	for i := range dsts {
		dsts[i] = make([]byte, 0, cs)
	}
	out, errs, err := c.store.GetEach(ids, dsts)
	for i, id := range ids {
		f := mine[i]
		switch {
		case err != nil:
			f.err = fmt.Errorf("layer: chunk %d: %w", id, err)
		case errs[i] != nil:
			f.err = fmt.Errorf("layer: chunk %d: %w", id, errs[i])
		default:
			f.data = out[i]
		}
		s := c.shard(id)
		s.mu.Lock()
		delete(s.inflight, id)
		if f.err == nil && int64(len(f.data)) <= s.limit {
			s.insert(&centry{id: id, data: f.data})
		}
		s.mu.Unlock()
		close(f.done)
	}
}

// peek returns a chunk's bytes only if they are cached: it never reads the
// store nor waits for a read in flight (a shard's lock is never held across
// I/O), so a non-blocking read can use it. A hit counts as one for
// eviction, as in get; a miss is counted by the get that follows it.
func (c *chunkCache) peek(id storage.ChunkID) ([]byte, bool) {
	s := c.shard(id)
	s.mu.Lock()
	e, ok := s.m[id]
	if ok {
		e.ref = true
	}
	s.mu.Unlock()
	if !ok {
		return nil, false
	}
	c.hits.Add(1)
	return e.data, true
}

func (c *chunkCache) shard(id storage.ChunkID) *cacheShard {
	return &c.shards[uint64(id)*0x9E3779B97F4A7C15>>60]
}

func (s *cacheShard) insert(e *centry) {
	if _, ok := s.m[e.id]; ok {
		return
	}
	for s.bytes+int64(len(e.data)) > s.limit && len(s.ring) > 0 {
		if s.hand >= len(s.ring) {
			s.hand = 0
		}
		v := s.ring[s.hand]
		if v.ref {
			v.ref = false
			s.hand++
			continue
		}
		last := len(s.ring) - 1
		s.ring[s.hand] = s.ring[last]
		s.ring[last] = nil
		s.ring = s.ring[:last]
		delete(s.m, v.id)
		s.bytes -= int64(len(v.data))
	}
	s.m[e.id] = e
	s.ring = append(s.ring, e)
	s.bytes += int64(len(e.data))
}

// cachedBytes reports the bytes held, for tests.
func (c *chunkCache) cachedBytes() int64 {
	var n int64
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.bytes
		s.mu.Unlock()
	}
	return n
}
