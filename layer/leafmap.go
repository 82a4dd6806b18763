package layer

import (
	"math"

	"strata/storage"
)

// mapLeaf is a leaf page as a loaded map holds it: immutable, and shared
// by every layer whose map contains the page (see pageCache). The store
// mints chunk ids in sequence, so the ids of one leaf are mostly close
// together: they are kept as deltas from a base, 2 bytes an entry when the
// leaf's ids span less than 65535, 4 bytes when less than 2^32-1, and as
// full 8-byte ids otherwise. Delta 0 is a hole (storage.ZeroChunk); id =
// base + delta otherwise. Exactly one of d16, d32 and ids is set; each is
// its own allocation of a Go size class (2, 4 or 8 KiB), so a leaf costs
// 2, 4 or 8 bytes an entry plus this 48-byte header.
type mapLeaf struct {
	pid  uint64
	base uint64 // smallest non-zero id of the leaf, minus 1
	d16  *[fanout]uint16
	d32  *[fanout]uint32
	ids  *[fanout]storage.ChunkID
}

// packLeaf returns page pid's in-memory form for entries ids, in the
// narrowest width its ids fit.
func packLeaf(pid uint64, ids *[fanout]storage.ChunkID) *mapLeaf {
	l := &mapLeaf{pid: pid}
	lo, hi, ok := idRange(ids)
	if !ok {
		l.d16 = new([fanout]uint16) // all holes (never staged, but valid)
		return l
	}
	l.base = uint64(lo) - 1
	switch span := uint64(hi) - l.base; {
	case span <= math.MaxUint16:
		l.d16 = new([fanout]uint16)
		for i, id := range ids {
			l.d16[i] = uint16(l.delta(id))
		}
	case span <= math.MaxUint32:
		l.d32 = new([fanout]uint32)
		for i, id := range ids {
			l.d32[i] = uint32(l.delta(id))
		}
	default:
		l.base = 0
		l.ids = new([fanout]storage.ChunkID)
		*l.ids = *ids
	}
	return l
}

// idRange returns the smallest and largest non-zero ids of a leaf, and
// whether it has any.
func idRange(ids *[fanout]storage.ChunkID) (lo, hi storage.ChunkID, ok bool) {
	lo = math.MaxUint64
	for _, id := range ids {
		if id == storage.ZeroChunk {
			continue
		}
		lo, hi = min(lo, id), max(hi, id)
	}
	return lo, hi, hi != storage.ZeroChunk
}

// delta is the stored form of id: 0 for a hole, id - base otherwise.
func (l *mapLeaf) delta(id storage.ChunkID) uint64 {
	if id == storage.ZeroChunk {
		return 0
	}
	return uint64(id) - l.base
}

// at returns the id of entry i (taken modulo fanout) with no allocation:
// it is on every read's path.
func (l *mapLeaf) at(i int64) storage.ChunkID {
	i &= fanout - 1
	if l.d16 != nil {
		return l.expand(uint64(l.d16[i]))
	}
	if l.d32 != nil {
		return l.expand(uint64(l.d32[i]))
	}
	return l.ids[i]
}

// expand is the id of stored delta d: base + d, or a hole when d is 0
// (masked, not branched: holes and data mix within a leaf).
func (l *mapLeaf) expand(d uint64) storage.ChunkID {
	nonzero := (d | -d) >> 63 // 1 unless d is 0
	return storage.ChunkID((l.base + d) & -nonzero)
}

// unpack writes the leaf's entries into dst.
func (l *mapLeaf) unpack(dst *[fanout]storage.ChunkID) {
	for i := range dst {
		dst[i] = l.at(int64(i))
	}
}

// allocated counts the leaf's non-hole entries.
func (l *mapLeaf) allocated() int64 {
	var n int64
	for i := range int64(fanout) {
		if l.at(i) != storage.ZeroChunk {
			n++
		}
	}
	return n
}
