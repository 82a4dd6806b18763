package storage

import (
	"encoding/binary"
	"math/bits"
	"sync"
)

// newHashes lets a put skip the dedup-index lookup of a hash the store has
// certainly never seen. On a first import nearly every lookup misses, and
// a miss is Badger's most expensive read: every memtable and every level
// is searched (5.4 us a lookup, 12 % of the CPU of a layer import of
// strata-bench's data set).
//
// It keeps a Bloom filter of every hash in the index (filled from the index
// by a scan after Open, while puts run) and of every hash a put has
// claimed since, never cleared: a hash whose bits are not all set is
// certainly not in the index. A freed chunk's hash stays in the filter,
// which only costs a lookup. Memory: 10 bits a hash (1 % false
// positives), sized at Open for the chunks stored and a quarter more,
// growing by filters twice the last one's size; rebuilt at every Open.
//
// Skipping the lookup must not let two puts create the same content:
// Badger's conflict check stops the later of two transactions that both
// read the hash key, but a put that did not read it would commit over the
// other's index entry. So a put that finds a hash absent claims it until
// its transaction ends, and a put that meets another's claim on any of its
// hashes waits for that transaction to end first, then looks again (the
// hash is in the filter by then, so it reads the index like any put).
// Claims are taken for a whole batch at once and waiters hold none, so
// waits cannot form a cycle.
type newHashes struct {
	mu       sync.Mutex
	ready    bool // the scan of the index has finished
	readyCh  chan struct{}
	blooms   []bloom // each one full before the next, twice its size, is added
	inLast   int     // hashes added to the last bloom
	creating map[chunkHash]*hashClaim
	skipped  int64 // lookups skipped so far
}

// hashClaim is one put transaction's claim on the absent hashes it is
// creating; done closes when the transaction has ended.
type hashClaim struct{ done chan struct{} }

// bloomBitsPerHash and bloomProbes give a false positive rate of about 1 %
// at capacity: a tenth of the lookups of new content still go to Badger.
const (
	bloomBitsPerHash = 10
	bloomProbes      = 7
	bloomMinHashes   = 1 << 16
)

// bloom is a fixed-size Bloom filter over keyed BLAKE3 hashes, whose bytes
// are uniformly random already: the probe positions come straight from
// them (double hashing over two 64-bit words, each mapped onto the bit
// count by a multiply, so the size need not be a power of two).
type bloom struct {
	bits     []uint64
	nbits    uint64
	capacity int
}

func newBloom(capacity int) bloom {
	words := (capacity*bloomBitsPerHash + 63) / 64
	return bloom{bits: make([]uint64, words), nbits: uint64(words) * 64, capacity: capacity}
}

func probes(h *chunkHash) (uint64, uint64) {
	return binary.LittleEndian.Uint64(h[0:8]), binary.LittleEndian.Uint64(h[8:16]) | 1
}

func (b *bloom) has(h *chunkHash) bool {
	p, step := probes(h)
	for range bloomProbes {
		i, _ := bits.Mul64(p, b.nbits)
		if b.bits[i/64]&(1<<(i%64)) == 0 {
			return false
		}
		p += step
	}
	return true
}

func (b *bloom) add(h *chunkHash) {
	p, step := probes(h)
	for range bloomProbes {
		i, _ := bits.Mul64(p, b.nbits)
		b.bits[i/64] |= 1 << (i % 64)
		p += step
	}
}

// init sizes the first filter for the chunks the store holds and a
// quarter more: 1.6 bytes per chunk. Until setReady, every hash may be in
// the index.
func (n *newHashes) init(chunks int64) {
	n.readyCh = make(chan struct{})
	c := int(min(chunks, 1<<40))
	n.blooms = []bloom{newBloom(max(bloomMinHashes, c+c/4))}
	n.creating = map[chunkHash]*hashClaim{}
}

// mayExist reports whether h may be in the filter. n.mu is held.
func (n *newHashes) mayExist(h *chunkHash) bool {
	for i := range n.blooms {
		if n.blooms[i].has(h) {
			return true
		}
	}
	return false
}

// insert adds h unless it may be in the filter already. n.mu is held.
func (n *newHashes) insert(h *chunkHash) (added bool) {
	if n.mayExist(h) {
		return false
	}
	last := &n.blooms[len(n.blooms)-1]
	if n.inLast >= last.capacity {
		n.blooms = append(n.blooms, newBloom(2*last.capacity))
		last, n.inLast = &n.blooms[len(n.blooms)-1], 0
	}
	last.add(h)
	n.inLast++
	return true
}

// addScanned adds hashes read from the index.
func (n *newHashes) addScanned(hs []chunkHash) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := range hs {
		n.insert(&hs[i])
	}
}

// setReady marks the scan of the index done: from now on a hash missing
// from the filter is missing from the index.
func (n *newHashes) setReady() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.ready {
		n.ready = true
		close(n.readyCh)
	}
}

// unseen appends to dst the items whose hashes the filter has never seen:
// almost surely new chunks. A hash it has seen is in the index, being
// created by another put, freed, or one of the filter's false positives
// (about 1 %). Before the index scan has finished, a hash not seen yet
// may be in the index still.
func (n *newHashes) unseen(items []*putItem, dst []*putItem) []*putItem {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, it := range items {
		if !n.mayExist(&it.hash) {
			dst = append(dst, it)
		}
	}
	return dst
}

// claim decides, for each non-zero item, whether its lookup can be skipped
// (it.absent) and claims those hashes for the caller's transaction. If
// another transaction has claimed one of the items' hashes, it claims
// nothing and returns what to wait for instead. The caller must release a
// non-nil claim when its transaction has ended.
func (n *newHashes) claim(items []*putItem) (*hashClaim, []chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var wait []chan struct{}
	for _, it := range items {
		if c := n.creating[it.hash]; c != nil && !it.zero {
			wait = append(wait, c.done)
		}
	}
	if wait != nil {
		return nil, wait
	}
	var c *hashClaim
	for _, it := range items {
		it.absent = false
		if it.zero {
			continue
		}
		if n.insert(&it.hash) && n.ready {
			if c == nil {
				c = &hashClaim{done: make(chan struct{})}
			}
			n.creating[it.hash] = c
			it.absent = true
			n.skipped++
		}
	}
	return c, nil
}

// release ends c: its hashes are no longer being created (they are in the
// index, or their transaction failed and they stay in the filter only).
func (n *newHashes) release(c *hashClaim, items []*putItem) {
	if c == nil {
		return
	}
	n.mu.Lock()
	for _, it := range items {
		if it.absent && n.creating[it.hash] == c {
			delete(n.creating, it.hash)
		}
	}
	n.mu.Unlock()
	close(c.done)
}
