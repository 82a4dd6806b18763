package layer

import (
	"errors"
	"fmt"
	"sync"
	"weak"

	"strata/storage"
)

// A block map is stored as a fixed three-level tree so that layers can
// share it piecewise:
//
//	layer record: Dirs []pageID        (one entry per 1024 leaves)
//	dir page:     1024 leaf page ids   (refcounted)
//	leaf page:    1024 chunk ids       (refcounted; each entry holds one
//	                                    chunk reference in storage)
//
// A leaf page's chunk references are counted once per page, not once per
// layer: a layer that shares a page adds one to the page's count, not to
// its chunks'. So a new layer over an unchanged map costs one increment per
// dir page (25 for 100 GiB at 4 KiB chunks), and a seal rewrites only the
// leaves and dirs its dirty blocks touch. Page id 0 is a hole: all zero.
const (
	fanout     = 1024
	fanoutBits = 10
)

// leaf is a leaf page being built (by import or seal): all 1024 entries,
// 8 bytes each, written in place. Once stored it is packed into a mapLeaf,
// the form a loaded map holds (leafmap.go).
type leaf struct {
	pid uint64
	ids *[fanout]storage.ChunkID
}

func newLeaf() *leaf { return &leaf{ids: new([fanout]storage.ChunkID)} }

// blockMap is a sealed layer's complete map in memory: 2, 4 or 8 bytes per
// entry of each non-hole leaf (see mapLeaf), nothing for hole leaves, plus
// one pointer per 1024 chunks.
type blockMap struct {
	nchunks int64
	leaves  []*mapLeaf // by leaf index; nil = hole
	dirs    []uint64
}

func (bm *blockMap) get(ci int64) storage.ChunkID {
	li := ci >> fanoutBits
	if bm == nil || li >= int64(len(bm.leaves)) {
		return storage.ZeroChunk
	}
	if l := bm.leaves[li]; l != nil {
		return l.at(ci)
	}
	return storage.ZeroChunk
}

func (bm *blockMap) leafPID(li int64) uint64 {
	if bm == nil || li >= int64(len(bm.leaves)) || bm.leaves[li] == nil {
		return 0
	}
	return bm.leaves[li].pid
}

func (bm *blockMap) dirPID(di int64) uint64 {
	if bm == nil || di >= int64(len(bm.dirs)) {
		return 0
	}
	return bm.dirs[di]
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// pageCache shares decoded leaves between layers by page id. Entries are
// weak: a leaf lives as long as some loaded layer's map points at it.
type pageCache struct {
	mu sync.Mutex
	m  map[uint64]weak.Pointer[mapLeaf]
}

func (pc *pageCache) lookup(pid uint64) *mapLeaf {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if w, ok := pc.m[pid]; ok {
		if l := w.Value(); l != nil {
			return l
		}
		delete(pc.m, pid)
	}
	return nil
}

func (pc *pageCache) add(l *mapLeaf) *mapLeaf {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if w, ok := pc.m[l.pid]; ok {
		if old := w.Value(); old != nil {
			return old
		}
	}
	pc.m[l.pid] = weak.Make(l)
	return l
}

// loadLeaf reads leaf page pid (from memory if some layer holds it).
func (m *Manager) loadLeaf(tx *storage.Txn, pid uint64) (*mapLeaf, error) {
	if l := m.pages.lookup(pid); l != nil {
		return l, nil
	}
	b, err := tx.Get(key(pfxLeaf, pid))
	if err != nil {
		return nil, fmt.Errorf("layer: leaf page %d: %w", pid, err)
	}
	var raw [fanout]uint64
	if err := decodeIDs(b, raw[:]); err != nil {
		return nil, err
	}
	var ids [fanout]storage.ChunkID
	for i, v := range raw {
		ids[i] = storage.ChunkID(v)
	}
	return m.pages.add(packLeaf(pid, &ids)), nil
}

func readDir(tx *storage.Txn, pid uint64) ([]uint64, error) {
	b, err := tx.Get(key(pfxDir, pid))
	if err != nil {
		return nil, fmt.Errorf("layer: dir page %d: %w", pid, err)
	}
	ids := make([]uint64, fanout)
	return ids, decodeIDs(b, ids)
}

// loadMap builds the in-memory map of a ready layer from its dir pages.
func (m *Manager) loadMap(tx *storage.Txn, size int64, dirs []uint64) (*blockMap, error) {
	nchunks := ceilDiv(size, m.chunkSize)
	bm := &blockMap{nchunks: nchunks, dirs: dirs, leaves: make([]*mapLeaf, ceilDiv(nchunks, fanout))}
	for di, dpid := range dirs {
		if dpid == 0 {
			continue
		}
		lpids, err := readDir(tx, dpid)
		if err != nil {
			return nil, err
		}
		for j, lpid := range lpids {
			li := int64(di)*fanout + int64(j)
			if lpid == 0 || li >= int64(len(bm.leaves)) {
				continue
			}
			if bm.leaves[li], err = m.loadLeaf(tx, lpid); err != nil {
				return nil, err
			}
		}
	}
	return bm, nil
}

// writeLeaf stores a new leaf page with one reference (its owner's) and
// counts its chunks, aggregated per id so a map of one repeated chunk costs
// one AddRef.
func writeLeaf(tx *storage.Txn, l *leaf) error {
	ids := make([]uint64, fanout)
	deltas := make(map[storage.ChunkID]int64)
	for i, id := range l.ids {
		ids[i] = uint64(id)
		if id != storage.ZeroChunk {
			deltas[id]++
		}
	}
	if err := tx.Set(key(pfxLeaf, l.pid), encodeIDs(ids)); err != nil {
		return err
	}
	if err := tx.Set(key(pfxRefcount, l.pid), be64(1)); err != nil {
		return err
	}
	for id, d := range deltas {
		if err := tx.AddRef(id, d); err != nil {
			return err
		}
	}
	return nil
}

// incPage adds delta to a page's count and returns the new count. The
// caller frees a page whose count reaches 0.
func incPage(tx *storage.Txn, pid uint64, delta int64) (int64, error) {
	n, err := getU64(tx, key(pfxRefcount, pid))
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return 0, fmt.Errorf("%w: page %d has no count", ErrCorruptMeta, pid)
		}
		return 0, err
	}
	c := int64(n) + delta
	if c < 0 {
		return 0, fmt.Errorf("%w: page %d count below zero", ErrCorruptMeta, pid)
	}
	if c == 0 {
		return 0, tx.Delete(key(pfxRefcount, pid))
	}
	return c, tx.Set(key(pfxRefcount, pid), be64(uint64(c)))
}
