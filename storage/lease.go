package storage

import (
	"errors"
	"fmt"
	mathbits "math/bits"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Lease protects chunks written under it from GC until Release, so an
// import or seal can write chunks before the map that references them is
// committed.
type Lease struct {
	s  *Store
	mu sync.Mutex
	// ids are the chunks held that puts under this lease found stored
	// already; made are the slots held, per pack, of the chunks its puts
	// created. A set per pack instead of an entry per chunk: an import
	// creates hundreds of thousands, and a map of that many, probed at
	// random, cost 2.5 % of an import's CPU in cache misses.
	ids      map[ChunkID]struct{}
	made     map[ChunkID]*slotSet
	released bool
	// packs are the packs this lease's puts created, whose fresh markers
	// Release deletes once every chunk in them has its reference record
	// (see fresh.go). queueFailed keeps them: a chunk may lack its record.
	packs       []ChunkID
	queueFailed bool
}

// NewLease starts a lease.
func (s *Store) NewLease() *Lease {
	return &Lease{s: s, ids: make(map[ChunkID]struct{}), made: make(map[ChunkID]*slotSet)}
}

// slotSet is a set of slots of one pack.
type slotSet [packSlots / 64]uint64

func (ss *slotSet) has(slot int) bool { return ss[slot/64]&(1<<(slot%64)) != 0 }
func (ss *slotSet) set(slot int)      { ss[slot/64] |= 1 << (slot % 64) }
func (ss *slotSet) clear(slot int)    { ss[slot/64] &^= 1 << (slot % 64) }

func (ss *slotSet) empty() bool { return *ss == slotSet{} }

// heldIDs lists every chunk the lease holds.
func (l *Lease) heldIDs() []ChunkID {
	ids := make([]ChunkID, 0, l.heldCount())
	for id := range l.ids {
		ids = append(ids, id)
	}
	for base, ss := range l.made {
		for w, bits := range ss {
			for ; bits != 0; bits &= bits - 1 {
				ids = append(ids, base+ChunkID(w*64+mathbits.TrailingZeros64(bits)))
			}
		}
	}
	return ids
}

func (l *Lease) heldCount() int {
	n := len(l.ids)
	for _, ss := range l.made {
		for _, bits := range ss {
			n += mathbits.OnesCount64(bits)
		}
	}
	return n
}

// holds reports whether the lease holds id.
func (l *Lease) holds(id ChunkID) bool {
	if _, ok := l.ids[id]; ok {
		return true
	}
	ss := l.made[packBase(id)]
	return ss != nil && ss.has(packSlotOf(id))
}

// unhold forgets id, if held, and reports whether it was.
func (l *Lease) unhold(id ChunkID) bool {
	if _, ok := l.ids[id]; ok {
		delete(l.ids, id)
		return true
	}
	base := packBase(id)
	ss := l.made[base]
	if ss == nil || !ss.has(packSlotOf(id)) {
		return false
	}
	ss.clear(packSlotOf(id))
	if ss.empty() {
		delete(l.made, base)
	}
	return true
}

// Release ends the lease; chunks still at zero references become
// collectable: fresh ones enter the GC queue now, so GCGrace counts from
// the release. Calling it again does nothing.
func (l *Lease) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return
	}
	l.released = true
	ids := l.heldIDs()
	// Queue before dropping the holds, so no moment exists where a chunk
	// is neither held nor queued. If queueing fails (the store is closing)
	// the chunks stay fresh, and their packs' markers tell Open to queue
	// them.
	if err := l.s.queueFresh(l.s.holds.unreferenced(ids)); err != nil {
		l.queueFailed = true
	}
	if !l.queueFailed {
		// Every chunk of the lease's packs now has its record: referenced
		// (marked), queued just now, or queued when Forget dropped it.
		// A marker left behind costs Open a look at its pack, no more.
		_ = l.s.dropFreshMarkers(l.packs)
	}
	for _, id := range ids {
		l.s.holds.dec(id)
	}
	l.ids, l.made = nil, nil
	l.packs = nil
}

// Forget stops holding ids that a committed transaction now references,
// so a long import's lease does not keep one hold-set entry per chunk
// until it ends (127 bytes each for a chunk its puts created, facts
// included: 33 MB per GiB at 4 KiB chunks; measured with runtime.MemStats
// over 262,144 entries). Forgetting a chunk that is still unreferenced
// makes it collectable like Release.
func (l *Lease) Forget(ids []ChunkID) { l.dropIDs(ids, true) }

// Held is the number of chunks the lease holds.
func (l *Lease) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heldCount()
}

// add holds id; fresh reports whether this lease did not hold it yet (and
// so the caller must undo with drop if its transaction fails). facts is
// non-nil for a chunk the caller's put creates: the hold set keeps them
// until the chunk has a reference record (see fresh.go).
func (l *Lease) add(id ChunkID, facts *chunkFacts) (fresh bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return false, ErrLeaseReleased
	}
	if facts != nil {
		// A chunk being created: no lease can hold it yet.
		base := packBase(id)
		ss := l.made[base]
		if ss == nil {
			ss = new(slotSet)
			l.made[base] = ss
		}
		ss.set(packSlotOf(id))
	} else {
		if l.holds(id) {
			return false, nil
		}
		l.ids[id] = struct{}{}
	}
	l.s.holds.inc(id, facts)
	return true, nil
}

// addPacks records packs that a committed put of this lease created. On a
// released lease (a put racing Release, which callers avoid) they keep
// their markers, and Open queues what is left fresh.
func (l *Lease) addPacks(bases []ChunkID) {
	if len(bases) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.released {
		l.packs = append(l.packs, bases...)
	}
}

// drop undoes add for ids whose transaction did not commit.
func (l *Lease) drop(ids []ChunkID) {
	l.dropIDs(ids, false)
}

func (l *Lease) dropIDs(ids []ChunkID, queue bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return
	}
	if queue {
		if err := l.s.queueFresh(l.s.holds.unreferenced(ids)); err != nil {
			l.queueFailed = true
		}
	}
	for _, id := range ids {
		if l.unhold(id) {
			l.s.holds.dec(id)
		}
	}
}

// holdSet counts, per chunk, the live leases holding it, and remembers
// which held chunks a committed transaction has referenced. It is sharded
// so that parallel import workers do not serialise on one mutex.
type holdSet struct {
	shards [64]holdShard
}

type holdShard struct {
	mu sync.Mutex
	m  map[ChunkID]holdEntry
}

// holdEntry is one held chunk: how many leases hold it, and whether its
// count has left zero since it was put or last queued. Such a chunk needs
// no queueing when its holds end: it is referenced, or the AddRef that
// took it back to zero queued it. A chunk put under a lease also keeps the
// facts its reference record will hold, which is written only when it is
// first referenced or queued (fresh.go); made says the facts are set.
type holdEntry struct {
	n          int32
	referenced bool
	made       bool
	facts      chunkFacts
}

func (h *holdSet) init() {
	for i := range h.shards {
		h.shards[i].m = make(map[ChunkID]holdEntry)
	}
}

func (h *holdSet) shard(id ChunkID) *holdShard {
	return &h.shards[uint64(id)*0x9E3779B97F4A7C15>>58]
}

// inc adds a hold on id; facts, if not nil, are those of a chunk being
// created.
func (h *holdSet) inc(id ChunkID, facts *chunkFacts) {
	sh := h.shard(id)
	sh.mu.Lock()
	e := sh.m[id]
	e.n++
	if facts != nil {
		e.made, e.facts = true, *facts
	}
	sh.m[id] = e
	sh.mu.Unlock()
}

// freshFacts returns the facts of a held chunk that its put created, for
// one that may still lack its reference record.
func (h *holdSet) freshFacts(id ChunkID) (chunkFacts, bool) {
	sh := h.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[id]
	return e.facts, ok && e.made
}

func (h *holdSet) dec(id ChunkID) {
	sh := h.shard(id)
	sh.mu.Lock()
	if e := sh.m[id]; e.n <= 1 {
		delete(sh.m, id)
	} else {
		e.n--
		sh.m[id] = e
	}
	sh.mu.Unlock()
}

func (h *holdSet) held(id ChunkID) bool {
	sh := h.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[id].n > 0
}

// markReferenced records, after its transaction committed, that ids' counts
// left zero. Only held chunks are marked: the mark lives as long as a
// hold, which is the only time it is read.
func (h *holdSet) markReferenced(ids []ChunkID) {
	for _, id := range ids {
		sh := h.shard(id)
		sh.mu.Lock()
		if e, ok := sh.m[id]; ok {
			e.referenced = true
			sh.m[id] = e
		}
		sh.mu.Unlock()
	}
}

// unreferenced returns the ids not marked referenced: the only ones a
// lease's end may have to queue (queueFresh reads each one's record, one
// Badger lookup per chunk, which for an import's chunks, all referenced by
// then, was pure cost).
func (h *holdSet) unreferenced(ids []ChunkID) []ChunkID {
	var out []ChunkID
	for _, id := range ids {
		sh := h.shard(id)
		sh.mu.Lock()
		e := sh.m[id]
		sh.mu.Unlock()
		if !e.referenced {
			out = append(out, id)
		}
	}
	return out
}

// queueFresh puts the chunks among ids that are still fresh (count 0,
// never queued: no reference record yet, or one with count and zeroSince
// 0 from before records were lazy) into the GC queue, in transactions of
// bounded size. The caller holds ids, so a chunk without a record is one
// a put created and the hold set has its facts.
func (s *Store) queueFresh(ids []ChunkID) error {
	const batch = 1024
	for len(ids) > 0 {
		n := min(batch, len(ids))
		part := ids[:n]
		ids = ids[n:]
		for attempt := 0; ; attempt++ {
			err := s.db.Update(func(tx *badger.Txn) error {
				now := time.Now().UnixNano()
				for _, id := range part {
					rk := idKey(nsRef, id)
					rr, err := getRef(tx, rk)
					if errors.Is(err, ErrNotFound) {
						facts, ok := s.holds.freshFacts(id)
						if !ok {
							continue // gone
						}
						// A put racing Release may not have committed
						// yet: queue only a body that exists. (Reading
						// the pack makes this transaction conflict with
						// a put that commits it meanwhile.)
						if ok, err := slotExists(tx, id); err != nil || !ok {
							if err != nil {
								return err
							}
							continue
						}
						rr, err = refRecord{chunkFacts: facts}, nil
					}
					if err != nil {
						return err
					}
					if rr.count != 0 || rr.zeroSince != 0 {
						continue
					}
					rr.zeroSince = now
					if err := tx.Set(rk, rr.marshal()); err != nil {
						return err
					}
					if err := tx.Set(zeroKey(now, id), nil); err != nil {
						return err
					}
				}
				return nil
			})
			if err == nil {
				break
			}
			if errors.Is(err, badger.ErrConflict) && attempt < commitRetries {
				continue
			}
			return fmt.Errorf("storage: queue unreferenced chunks: %w", err)
		}
	}
	return nil
}
