package storage

import (
	"sync"
)

// Lease protects chunks written under it from GC until Release, so an
// import or seal can write chunks before the map that references them is
// committed.
type Lease struct {
	s        *Store
	mu       sync.Mutex
	ids      map[ChunkID]struct{}
	released bool
}

// NewLease starts a lease.
func (s *Store) NewLease() *Lease {
	return &Lease{s: s, ids: make(map[ChunkID]struct{})}
}

// Release ends the lease; chunks still at zero references become collectable.
// Calling it again does nothing.
func (l *Lease) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return
	}
	l.released = true
	for id := range l.ids {
		l.s.holds.dec(id)
	}
	l.ids = nil
}

// Forget stops holding ids that a committed transaction now references,
// so a long import's lease does not keep one entry per chunk (about 30
// bytes each: 8 MB per GiB at 4 KiB chunks) until it ends. Forgetting a
// chunk that is still unreferenced makes it collectable like Release.
func (l *Lease) Forget(ids []ChunkID) { l.drop(ids) }

// Held is the number of chunks the lease holds.
func (l *Lease) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids)
}

// add holds id; fresh reports whether this lease did not hold it yet (and
// so the caller must undo with drop if its transaction fails).
func (l *Lease) add(id ChunkID) (fresh bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return false, ErrLeaseReleased
	}
	if _, ok := l.ids[id]; ok {
		return false, nil
	}
	l.ids[id] = struct{}{}
	l.s.holds.inc(id)
	return true, nil
}

// drop undoes add for ids whose transaction did not commit.
func (l *Lease) drop(ids []ChunkID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return
	}
	for _, id := range ids {
		if _, ok := l.ids[id]; ok {
			delete(l.ids, id)
			l.s.holds.dec(id)
		}
	}
}

// holdSet counts, per chunk, the live leases holding it. It is sharded so
// that parallel import workers do not serialise on one mutex.
type holdSet struct {
	shards [64]holdShard
}

type holdShard struct {
	mu sync.Mutex
	m  map[ChunkID]int32
}

func (h *holdSet) init() {
	for i := range h.shards {
		h.shards[i].m = make(map[ChunkID]int32)
	}
}

func (h *holdSet) shard(id ChunkID) *holdShard {
	return &h.shards[uint64(id)*0x9E3779B97F4A7C15>>58]
}

func (h *holdSet) inc(id ChunkID) {
	sh := h.shard(id)
	sh.mu.Lock()
	sh.m[id]++
	sh.mu.Unlock()
}

func (h *holdSet) dec(id ChunkID) {
	sh := h.shard(id)
	sh.mu.Lock()
	if sh.m[id] <= 1 {
		delete(sh.m, id)
	} else {
		sh.m[id]--
	}
	sh.mu.Unlock()
}

func (h *holdSet) held(id ChunkID) bool {
	sh := h.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[id] > 0
}
