package storage

import (
	"encoding/binary"

	badger "github.com/dgraph-io/badger/v4"
)

// putScratch is the memory one put transaction builds its Badger entries
// in: keys and small values are cut from one slab, entries from one slice,
// and an import worker keeps it from batch to batch. Writing into fresh
// memory is slow (page faults; ~300 MB/s on the project's VM) and every
// allocation is later work for the garbage collector, so a batch of 256
// new chunks allocating five slices and an entry each was measurable.
//
// Badger keeps pointers to the keys, values and entries until the commit
// returns; reset may only run after that (tryPuts discards its transaction
// first).
type putScratch struct {
	slab    []byte
	entries []badger.Entry
	used    int // entries handed out
	created map[ChunkID]struct{}
	exist   []ChunkID
	packs   []packStage // the transaction's packs, buffers kept
	npacks  int
	bases   []ChunkID // bases of the packs staged with fresh markers
}

// packStage is one pack a put transaction builds, and its fresh marker's
// value (fresh.go).
type packStage struct {
	b     packBuilder
	facts []byte
}

// putSlabPerChunk is what a new chunk takes from the slab: hash key, id
// value, pack key (at most one per chunk), reference key, reference record.
const putSlabPerChunk = 1 + hashSize + 8 + 9 + 9 + refRecordSize

// reset readies the scratch for a transaction of n chunks.
func (p *putScratch) reset(n int) {
	if need := n*putSlabPerChunk + 64; cap(p.slab) < need {
		p.slab = make([]byte, 0, need)
	}
	p.slab = p.slab[:0]
	if cap(p.entries) < 3*n+1 {
		p.entries = make([]badger.Entry, 3*n+1)
	}
	clear(p.entries[:p.used])
	p.used = 0
	if p.created == nil {
		p.created = make(map[ChunkID]struct{}, n)
	}
	clear(p.created)
	p.exist = p.exist[:0]
	p.npacks = 0
	p.bases = p.bases[:0]
}

// pack returns the transaction's next pack, reset, with room for about
// capacity bytes of records and slots chunks' facts. Its buffers are the
// ones an earlier transaction used, if any: Badger is done with them once
// that commit returned.
func (p *putScratch) pack(capacity, slots int) *packStage {
	if p.npacks == len(p.packs) {
		p.packs = append(p.packs, packStage{})
	}
	ps := &p.packs[p.npacks]
	p.npacks++
	ps.b.reset(capacity)
	if cap(ps.facts) < slots*chunkFactsSize {
		ps.facts = make([]byte, 0, slots*chunkFactsSize)
	}
	ps.facts = ps.facts[:0]
	return ps
}

// take returns n bytes of the slab. A slab too small (only if the caller
// under-sized reset) gets a fresh one rather than growing in place: Badger
// still points into the old one.
func (p *putScratch) take(n int) []byte {
	if len(p.slab)+n > cap(p.slab) {
		p.slab = make([]byte, 0, max(n, cap(p.slab)))
	}
	b := p.slab[len(p.slab) : len(p.slab)+n]
	p.slab = p.slab[:len(p.slab)+n]
	return b
}

// idKey is idKey(ns, id) cut from the slab.
func (p *putScratch) idKey(ns byte, id ChunkID) []byte {
	k := p.take(9)
	k[0] = ns
	binary.BigEndian.PutUint64(k[1:], uint64(id))
	return k
}

// hashKey is hashKey(h) cut from the slab.
func (p *putScratch) hashKey(h *chunkHash) []byte {
	k := p.take(1 + hashSize)
	k[0] = nsHash
	copy(k[1:], h[:])
	return k
}

// idValue is an id as the hash index stores it.
func (p *putScratch) idValue(id ChunkID) []byte {
	v := p.take(8)
	binary.BigEndian.PutUint64(v, uint64(id))
	return v
}

// ref is rr marshalled into the slab.
func (p *putScratch) ref(rr *refRecord) []byte {
	b := p.take(refRecordSize)
	rr.marshalTo(b)
	return b
}

// set stages key = val in tx using an entry from the scratch.
func (p *putScratch) set(tx *badger.Txn, key, val []byte) error {
	if p.used == len(p.entries) {
		p.entries = append(p.entries, badger.Entry{})
		p.entries = p.entries[:cap(p.entries)]
		// The old backing array stays referenced by tx until commit;
		// nothing in it is reused before then.
	}
	e := &p.entries[p.used]
	p.used++
	e.Key, e.Value = key, val
	return tx.SetEntry(e)
}
