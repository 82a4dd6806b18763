package layer

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"strata/storage"
)

// chunkCache is the one bounded cache of decoded chunks that every disk and
// image of a manager reads through. It is keyed by chunk id, so N disks on
// one image, or layers sharing chunks, hold each chunk once; concurrent
// misses on one id read the store once. Eviction is CLOCK per shard: cheap
// on the hit path (one flag store), close enough to LRU for boot storms.
//
// Admission decides which misses the cache keeps (see admitMode): a chunk
// it does not keep is decoded straight into the reader's buffer. That is
// what makes a scan cheap: measured side by side over NBD (strata-bench,
// 2 GiB set, cold), keeping every chunk read cost 2 to 4 times the CPU per
// MB of not keeping them, because every kept chunk is a fresh 4 KiB
// allocation, and on this VM writing into memory the process has not
// touched before runs at 100-300 MB/s against 11 GB/s for memory it has.
type chunkCache struct {
	store  *storage.Store
	shards [cacheShards]cacheShard
	door   doorkeeper
	pool   sync.Pool // *[]byte of ChunkSize: scratch for partial chunks read past the cache

	hits, misses, passed atomic.Int64
}

// admitMode is a read's admission policy for the chunks it misses.
type admitMode uint8

const (
	// admitSecond keeps a chunk on its second miss within the doorkeeper's
	// window: data read once (a scan, a seal, an export, one disk's cold
	// reads) passes by without allocating or evicting anything; data read
	// again is kept from then on.
	admitSecond admitMode = iota
	// admitFirst keeps every chunk on its first miss: reads through a
	// pooled disk, whose image many disks read at once (a boot storm reads
	// each chunk from the store once).
	admitFirst
)

// doorkeeper remembers the ids of recent misses that were not kept, one per
// slot of a direct-mapped table: a second miss on an id still in its slot
// is admitted. A collision only forgets an id (it is kept one miss later);
// it never returns wrong data. Lock-free: slots are atomic.
type doorkeeper struct {
	slots []atomic.Uint64
	shift uint
}

// newDoorkeeper sizes the table like the cache (one slot per chunk it can
// hold, a power of two, at least 1024), so an id is remembered about as
// long as a kept chunk would stay.
func newDoorkeeper(entries int64) doorkeeper {
	bits := uint(10)
	for int64(1)<<bits < entries && bits < 30 {
		bits++
	}
	return doorkeeper{slots: make([]atomic.Uint64, 1<<bits), shift: 64 - bits}
}

// doorLine is how many consecutive ids share one run of slots: eight
// 8-byte slots, one 64-byte cache line. A cold scan reads consecutive ids
// (one import's packs), and its misses then touch a line per eight chunks
// instead of one random line each: the table (512 KiB at the default
// cache) is past the CPU's near caches, and that load was three quarters
// of fill's own time in a cold sequential read.
const doorLine = 8

// again records a miss on id and says whether it is the second one.
func (d *doorkeeper) again(id storage.ChunkID) bool {
	line := (uint64(id) / doorLine) * 0x9E3779B97F4A7C15 >> d.shift
	s := &d.slots[(line&^(doorLine-1))|uint64(id)%doorLine]
	if s.Load() == uint64(id) {
		return true
	}
	s.Store(uint64(id))
	return false
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
	cs := store.ChunkSize()
	c := &chunkCache{store: store, door: newDoorkeeper(limit / int64(cs))}
	c.pool.New = func() any { b := make([]byte, cs); return &b }
	for i := range c.shards {
		c.shards[i].limit = limit / cacheShards
		c.shards[i].m = make(map[storage.ChunkID]*centry)
		c.shards[i].inflight = make(map[storage.ChunkID]*flight)
	}
	return c
}

// chunkRead is one chunk's part of a read: the chunk's bytes from co on go
// to dst (past the chunk's end, zeros).
type chunkRead struct {
	id  storage.ChunkID
	co  int64
	dst []byte

	data    []byte  // set from the cache
	f       *flight // or by the read in flight
	scratch *[]byte // or read past the cache: into dst, or into this for part of a chunk
	direct  bool    // read past the cache
}

// fill serves every read of a request: hits from the cache, chunks another
// reader is already reading from its flight, and all the rest from the
// store in one read transaction (GetEach). A miss the cache admits (mode)
// is decoded into a buffer of its own that the cache then keeps, and is
// read from the store once however many readers miss it at once; any
// other miss is decoded straight into dst (or, for part of a chunk, into
// pooled scratch), allocating nothing.
func (c *chunkCache) fill(reads []chunkRead, mode admitMode) error {
	b := batchPool.Get().(*fetchBatch)
	defer b.release()
	cs := c.store.ChunkSize()
	// Counted here and added once: shared counters bumped per chunk
	// bounce their cache line between the cores reading.
	var hits, misses, passed int64
	defer func() {
		c.hits.Add(hits)
		c.misses.Add(misses)
		c.passed.Add(passed)
	}()
	for i := range reads {
		r := &reads[i]
		s := c.shard(r.id)
		s.mu.Lock()
		if e, ok := s.m[r.id]; ok {
			e.ref = true
			s.mu.Unlock()
			hits++
			r.data = e.data
			continue
		}
		if f, ok := s.inflight[r.id]; ok { // another reader's, or ours for a repeated id
			s.mu.Unlock()
			r.f = f
			continue
		}
		misses++
		if mode != admitFirst && !c.door.again(r.id) {
			s.mu.Unlock()
			passed++
			r.direct = true
			dst := r.dst[:0:len(r.dst)]
			if r.co != 0 || len(r.dst) != cs {
				r.scratch = c.pool.Get().(*[]byte)
				dst = (*r.scratch)[:0]
			}
			b.add(r.id, dst, i, nil)
			continue
		}
		f := &flight{done: make(chan struct{})}
		s.inflight[r.id] = f
		s.mu.Unlock()
		r.f = f
		b.add(r.id, make([]byte, 0, cs), -1, f)
	}
	var err error
	if len(b.ids) > 0 {
		err = c.fetch(reads, b)
	}
	for i := range reads {
		r := &reads[i]
		if r.direct {
			continue // placed by fetch
		}
		if r.f != nil {
			<-r.f.done
			if r.f.err != nil {
				return r.f.err
			}
			r.data = r.f.data
		}
		place(r.dst, r.data, r.co)
	}
	return err
}

// fetchBatch is what one fill reads from the store: for each id the buffer
// it is decoded into and who gets it, a direct read (the index of its
// chunkRead) or a flight. Batches are pooled: the store keeps its slices
// for the call, so one on the stack moved to the heap, an allocation of
// ~800 bytes per read that grew again for every read past 16 chunks.
type fetchBatch struct {
	ids     []storage.ChunkID
	dsts    [][]byte
	direct  []int     // index into reads, or -1
	flights []*flight // or the flight to complete
	out     [][]byte  // the store's results, one per id
	errs    []error
}

var batchPool = sync.Pool{New: func() any { return new(fetchBatch) }}

// release empties b, dropping its references, and pools it.
func (b *fetchBatch) release() {
	clear(b.dsts)
	clear(b.flights)
	clear(b.out)
	clear(b.errs)
	b.ids, b.dsts, b.direct, b.flights = b.ids[:0], b.dsts[:0], b.direct[:0], b.flights[:0]
	b.out, b.errs = b.out[:0], b.errs[:0]
	batchPool.Put(b)
}

// readsPool holds the chunkRead slices of reads that span chunks.
var readsPool = sync.Pool{New: func() any { return new([]chunkRead) }}

// getReads returns an empty slice of chunk reads with room for n.
func getReads(n int) *[]chunkRead {
	rs := readsPool.Get().(*[]chunkRead)
	if cap(*rs) < n {
		*rs = make([]chunkRead, 0, n)
	}
	return rs
}

// putReads pools rs (which the caller may have grown), dropping its
// references.
func putReads(rs *[]chunkRead) {
	clear((*rs)[:cap(*rs)])
	*rs = (*rs)[:0]
	readsPool.Put(rs)
}

func (b *fetchBatch) add(id storage.ChunkID, dst []byte, direct int, f *flight) {
	b.ids = append(b.ids, id)
	b.dsts = append(b.dsts, dst)
	b.direct = append(b.direct, direct)
	b.flights = append(b.flights, f)
}

// place copies a chunk's bytes from co on into dst, zeros past the chunk's
// end. A chunk decoded in place (data starts at dst) is only padded.
func place(dst, data []byte, co int64) {
	if len(data) > 0 && len(dst) > 0 && co == 0 && &data[0] == &dst[0] {
		clear(dst[len(data):])
		return
	}
	k := 0
	if co < int64(len(data)) {
		k = copy(dst, data[co:])
	}
	clear(dst[k:])
}

// fetch reads a batch in one store transaction: each direct read is placed
// into its read's dst at once, each flight completed and its chunk cached.
// It returns the first direct read's failure; a flight's goes to the
// flight, and so to every reader waiting on it.
func (c *chunkCache) fetch(reads []chunkRead, b *fetchBatch) error {
	n := len(b.ids)
	b.out, b.errs = slices.Grow(b.out[:0], n)[:n], slices.Grow(b.errs[:0], n)[:n]
	out, errs := b.out, b.errs
	err := c.store.GetEachInto(b.ids, b.dsts, out, errs)
	var first error
	for i, id := range b.ids {
		ferr := err
		if ferr == nil {
			ferr = errs[i]
		}
		if ferr != nil {
			ferr = fmt.Errorf("layer: chunk %d: %w", id, ferr)
		}
		if ri := b.direct[i]; ri >= 0 {
			r := &reads[ri]
			if ferr == nil {
				place(r.dst, out[i], r.co)
			} else if first == nil {
				first = ferr
			}
			if r.scratch != nil {
				c.pool.Put(r.scratch)
				r.scratch = nil
			}
			continue
		}
		f := b.flights[i]
		if f.err = ferr; ferr == nil {
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
	return first
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
