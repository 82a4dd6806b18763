package layer

import (
	"errors"
	"fmt"
	"sync/atomic"

	"strata/storage"
)

// layer is an immutable layer in memory. Its view is either a complete
// block map (sealed) or, while a snapshot's seal runs, the frozen overlay
// over the parent layer; the seal swaps the view atomically, so readers
// never see a half-built map.
type layer struct {
	id    LayerID
	size  int64
	view  atomic.Pointer[layerView]
	ready chan struct{} // closed once view.bm is set

	sealDone, sealTotal atomic.Int64 // progress of a running seal, in chunks

	// pins counts open read-only handles: a layer whose last holder goes
	// while it is exported is released only after the export closes.
	pins atomic.Int64
}

type layerView struct {
	bm     *blockMap // sealed
	frozen *overlay  // sealing: the snapshot's writes (nil for a clone)
	parent *layer    // sealing: the layer under them (nil: empty)
}

func newSealedLayer(id LayerID, size int64, bm *blockMap) *layer {
	l := &layer{id: id, size: size, ready: make(chan struct{})}
	l.view.Store(&layerView{bm: bm})
	close(l.ready)
	return l
}

func newSealingLayer(id LayerID, size int64, frozen *overlay, parent *layer) *layer {
	l := &layer{id: id, size: size, ready: make(chan struct{})}
	l.view.Store(&layerView{frozen: frozen, parent: parent})
	return l
}

func (l *layer) sealed() bool { return l.view.Load().bm != nil }

// readLayer fills p from layer l (nil: the empty layer) at off. Bytes past
// the layer's end read as zeros. Chunks it reads enter the cache on their
// second miss (admitSecond).
func (m *Manager) readLayer(l *layer, p []byte, off int64) error {
	return m.readLayerFor(l, p, off, admitSecond)
}

// readLayerFor is readLayer with the cache admission policy of the reader.
func (m *Manager) readLayerFor(l *layer, p []byte, off int64, mode admitMode) error {
	if l == nil || off >= l.size {
		clear(p)
		return nil
	}
	if end := off + int64(len(p)); end > l.size {
		clear(p[l.size-off:])
		p = p[:l.size-off]
	}
	for {
		v := l.view.Load()
		if v.bm != nil {
			return m.readMapFor(v.bm, p, off, mode)
		}
		below := func(q []byte, o int64) error { return m.readLayerFor(v.parent, q, o, mode) }
		if v.frozen == nil {
			return below(p, off)
		}
		err := v.frozen.readOver(m.store, p, off, below)
		if errors.Is(err, errRetired) {
			continue // the seal finished under us: its map is in view now
		}
		return err
	}
}

// readMap fills p from a sealed map: one lookup per chunk, whatever the
// layer's depth in its snapshot history. A read of several chunks gathers
// them and lets the cache fetch its misses in one store transaction.
// Chunks enter the cache on their second miss.
func (m *Manager) readMap(bm *blockMap, p []byte, off int64) error {
	return m.readMapFor(bm, p, off, admitSecond)
}

// readMapFor is readMap with the reader's cache admission policy.
func (m *Manager) readMapFor(bm *blockMap, p []byte, off int64, mode admitMode) error {
	cs := m.chunkSize
	if int64(len(p)) > cs-off%cs {
		return m.readMapMany(bm, p, off, mode)
	}
	ci := off / cs
	id := bm.get(ci)
	if id == 0 {
		clear(p)
		return nil
	}
	one := [1]chunkRead{{id: id, co: off - ci*cs, dst: p}}
	return m.cache.fill(one[:], mode)
}

// readMapMany is readMap for a read that spans chunks.
func (m *Manager) readMapMany(bm *blockMap, p []byte, off int64, mode admitMode) error {
	cs := m.chunkSize
	rs := getReads(int((int64(len(p))+cs-1)/cs + 1))
	defer putReads(rs)
	reads := *rs
	for len(p) > 0 {
		ci := off / cs
		co := off - ci*cs
		n := min(int64(len(p)), cs-co)
		if id := bm.get(ci); id == 0 {
			clear(p[:n])
		} else {
			reads = append(reads, chunkRead{id: id, co: co, dst: p[:n]})
		}
		p = p[n:]
		off += n
	}
	if len(reads) == 0 {
		return nil
	}
	return m.cache.fill(reads, mode)
}

// kindsLayer fills the unknown entries of kinds (blocks from b0) with what
// layer l holds there: data, or hole for chunks the map does not have.
func (m *Manager) kindsLayer(l *layer, b0 int64, kinds []uint8) {
	if l == nil {
		return
	}
	v := l.view.Load()
	if v.bm == nil {
		if v.frozen != nil {
			v.frozen.kindsOver(b0, kinds)
		}
		m.kindsLayer(v.parent, b0, kinds)
		return
	}
	for i := range kinds {
		if kinds[i] != 0 {
			continue
		}
		off := (b0 + int64(i)) << blockShift
		if off >= l.size {
			continue
		}
		if v.bm.get(off/m.chunkSize) != 0 {
			kinds[i] = bData
		}
	}
}

// maxExtentBlocks bounds one Extents call (the contract lets it cover a
// prefix): 1 GiB of 4 KiB blocks, 256 KiB of scratch.
const maxExtentBlocks = 1 << 18

// extentsFrom turns per-block kinds for [off, off+length) into merged runs.
func extentsFrom(off, length int64, b0 int64, kinds []uint8) []Extent {
	var out []Extent
	end := off + length
	for i := 0; i < len(kinds); {
		j := i + 1
		for j < len(kinds) && kinds[j] == kinds[i] {
			j++
		}
		lo := max(off, (b0+int64(i))<<blockShift)
		hi := min(end, (b0+int64(j))<<blockShift)
		k := kinds[i]
		if hi > lo {
			out = append(out, Extent{Length: hi - lo, Hole: k == bTrim || k == bNone, Zero: k != bData})
		}
		i = j
	}
	return out
}

// ChunkAt returns the id of the chunk that holds byte off of layer id
// (storage.ZeroChunk or 0 for zeros and holes), for diagnostics and fault
// injection. ErrOutOfRange past the layer's end; an error while the layer
// is still sealing (it has no map yet).
func (m *Manager) ChunkAt(id LayerID, off int64) (storage.ChunkID, error) {
	l, err := m.getLayer(id)
	if err != nil {
		return 0, err
	}
	if off < 0 || off >= l.size {
		return 0, fmt.Errorf("%w: byte %d of layer %d (%d bytes)", ErrOutOfRange, off, id, l.size)
	}
	bm := l.view.Load().bm
	if bm == nil {
		return 0, fmt.Errorf("layer: layer %d is still sealing", id)
	}
	return bm.get(off / m.chunkSize), nil
}
