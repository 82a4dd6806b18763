package layer

// This file is the non-blocking read (nbd.TryReader, same method shape,
// without importing nbd): the nbd server offers a small read to TryReadAt
// on the connection's reader goroutine and hands it to a worker's ReadAt
// only if TryReadAt declines. A 4 KiB read served from the shared cache
// then costs no thread wakeup.
//
// It follows the same path as ReadAt (disk overlay, then the layer, a
// sealing layer's frozen overlay, then its parent, then a sealed map) but
// declines instead of doing anything that can wait on I/O: an overlay data
// block (a store read), a chunk not in the cache (a store read, or waiting
// on another reader's), and an overlay being retired (its lock is held
// while the seal waits out readers that may be in the store).
//
// It plans before it writes: every piece of the request is resolved to a
// cached chunk's bytes or to zeros first, and p is filled only once the
// whole request is known to be servable, so a declined read leaves p
// untouched, as the nbd contract asks. A read inside one chunk of a sealed
// layer (most 4 KiB reads) skips the plan: its one piece is all there or
// not, and the plan's bookkeeping cost it about 7% against ReadAt.

// readPiece is n bytes at p[at:] from src; bytes past src (a short last
// chunk) and a nil src read as zeros.
type readPiece struct {
	at, n int
	src   []byte
}

// maxReadPieces bounds a plan; a request that needs more pieces (one per
// chunk, plus one per run of overlay states) is left to ReadAt. 128 KiB,
// the nbd server's largest inline read, is 33 4 KiB chunks.
const maxReadPieces = 64

// inlinePieces is how many pieces a plan holds without allocating: a 4 KiB
// read needs one or two. The plan lives on the caller's stack and is
// zeroed on every call, so it is kept small; a bigger read (32 KiB and up
// at 4 KiB chunks) spills to the heap.
const inlinePieces = 6

// readPlan is where each byte of a non-blocking read comes from.
type readPlan struct {
	n      int
	inline [inlinePieces]readPiece
	more   []readPiece // pieces past the inline ones
}

// add appends a piece, merging runs of zeros; false when the plan is full.
func (pl *readPlan) add(at, n int, src []byte) bool {
	if n <= 0 {
		return true
	}
	if src == nil && pl.n > 0 {
		if last := pl.last(); last.src == nil && last.at+last.n == at {
			last.n += n
			return true
		}
	}
	pc := readPiece{at: at, n: n, src: src}
	switch {
	case pl.n < inlinePieces:
		pl.inline[pl.n] = pc
	case pl.n < maxReadPieces:
		pl.more = append(pl.more, pc)
	default:
		return false
	}
	pl.n++
	return true
}

func (pl *readPlan) last() *readPiece {
	if pl.n <= inlinePieces {
		return &pl.inline[pl.n-1]
	}
	return &pl.more[pl.n-1-inlinePieces]
}

// fill copies the planned bytes into p.
func (pl *readPlan) fill(p []byte) {
	for _, pc := range pl.inline[:min(pl.n, inlinePieces)] {
		pc.fill(p)
	}
	for _, pc := range pl.more {
		pc.fill(p)
	}
}

func (pc *readPiece) fill(p []byte) {
	dst := p[pc.at : pc.at+pc.n]
	k := copy(dst, pc.src)
	clear(dst[k:])
}

// TryReadAt fills p with the disk's bytes at off and returns true if every
// 4 KiB block of the range is zeros in the overlay, or not in the overlay
// and a hole or a cached chunk below it; otherwise it returns false having
// written nothing, and ReadAt does the read. Errors (a closed handle, a
// range past the end) also return false: ReadAt reports them.
// (nbd.TryReader)
func (h *diskHandle) TryReadAt(p []byte, off int64) bool {
	if len(p) == 0 || h.check(off, int64(len(p))) != nil {
		return false
	}
	var pl readPlan
	// As in read: the disk's state is one atomic load, so the overlay and
	// its base are a pair a snapshot's switch cannot tear.
	st := h.d.st.Load()
	end := off + int64(len(p))
	if st.ov.absent(off>>blockShift, (end-1)>>blockShift) {
		if served, ok := h.d.m.tryChunk(st.base, p, off); ok {
			return served
		}
	}
	if !h.d.m.tryOver(&pl, st.ov, st.base, 0, len(p), off) {
		return false
	}
	pl.fill(p)
	return true
}

// TryReadAt fills p with the layer's bytes at off and returns true if every
// chunk the range touches is a hole or in the cache (and, for a layer
// still sealing, no block of the range is data in its frozen overlay);
// otherwise it returns false having written nothing. (nbd.TryReader)
func (h *layerHandle) TryReadAt(p []byte, off int64) bool {
	if len(p) == 0 || h.check(off, int64(len(p))) != nil {
		return false
	}
	if served, ok := h.m.tryChunk(h.l, p, off); ok {
		return served
	}
	var pl readPlan
	if !h.m.tryLayer(&pl, h.l, 0, len(p), off) {
		return false
	}
	pl.fill(p)
	return true
}

// tryChunk serves the common read, inside one chunk of a sealed layer,
// straight from the cache: no plan (the one piece is either all there or
// not). ok is false when the read is not of that shape; the caller plans
// it.
func (m *Manager) tryChunk(l *layer, p []byte, off int64) (served, ok bool) {
	if l == nil {
		return false, false
	}
	v := l.view.Load()
	cs := m.chunkSize
	ci := off / cs
	co := off - ci*cs
	if v.bm == nil || co+int64(len(p)) > cs || off+int64(len(p)) > l.size {
		return false, false
	}
	id := v.bm.get(ci)
	if id == 0 {
		clear(p)
		return true, true
	}
	data, hit := m.cache.peek(id)
	if !hit {
		return false, true
	}
	k := 0
	if co < int64(len(data)) {
		k = copy(p, data[co:])
	}
	clear(p[k:])
	return true, true
}

// tryLayer plans n bytes at p[at:] from layer l (nil: the empty layer) at
// off, as readLayer reads them.
func (m *Manager) tryLayer(pl *readPlan, l *layer, at, n int, off int64) bool {
	if l == nil || off >= l.size {
		return pl.add(at, n, nil)
	}
	if end := off + int64(n); end > l.size {
		inside := int(l.size - off)
		if !pl.add(at+inside, n-inside, nil) {
			return false
		}
		n = inside
		// The zeros were planned out of order; fill does not care.
	}
	v := l.view.Load()
	if v.bm != nil {
		return m.tryMap(pl, v.bm, at, n, off)
	}
	if v.frozen == nil {
		return m.tryLayer(pl, v.parent, at, n, off)
	}
	return m.tryOver(pl, v.frozen, v.parent, at, n, off)
}

// tryMap plans n bytes at p[at:] from a sealed map: holes as zeros, chunks
// from the cache, false at the first chunk not cached.
func (m *Manager) tryMap(pl *readPlan, bm *blockMap, at, n int, off int64) bool {
	cs := m.chunkSize
	for n > 0 {
		ci := off / cs
		co := off - ci*cs
		k := int(min(int64(n), cs-co))
		var src []byte
		if id := bm.get(ci); id != 0 {
			data, ok := m.cache.peek(id)
			if !ok {
				return false
			}
			if co < int64(len(data)) {
				src = data[co:]
			}
		}
		if !pl.add(at, k, src) {
			return false
		}
		at += k
		n -= k
		off += int64(k)
	}
	return true
}

// tryOver plans n bytes at p[at:] from overlay o over layer below, as
// readOver reads them, declining on any data block of o.
func (m *Manager) tryOver(pl *readPlan, o *overlay, below *layer, at, n int, off int64) bool {
	end := off + int64(n)
	b0, b1 := off>>blockShift, (end-1)>>blockShift
	if o.absent(b0, b1) {
		return m.tryLayer(pl, below, at, n, off)
	}
	// The retire takes rmu exclusively and waits for readers that may be
	// in the store: never wait for it. A retired overlay has been replaced
	// by its sealed map; ReadAt re-reads the view.
	if !o.rmu.TryRLock() {
		return false
	}
	defer o.rmu.RUnlock()
	if o.retired {
		return false
	}
	var stBuf [maxReadPieces]uint8
	nb := b1 - b0 + 1
	if nb > maxReadPieces {
		return false // past the nbd server's inline reads: ReadAt will do
	}
	st := stBuf[:nb]
	// imu is held only around index updates, never across I/O.
	o.states(b0, st)
	for i := 0; i < len(st); {
		j := i + 1
		for j < len(st) && st[j] == st[i] {
			j++
		}
		lo := max(off, (b0+int64(i))<<blockShift)
		hi := min(end, (b0+int64(j))<<blockShift)
		pat, pn := at+int(lo-off), int(hi-lo)
		switch st[i] {
		case bNone:
			if !m.tryLayer(pl, below, pat, pn, lo) {
				return false
			}
		case bZero, bTrim:
			if !pl.add(pat, pn, nil) {
				return false
			}
		default: // bData: a store read
			return false
		}
		i = j
	}
	return true
}
