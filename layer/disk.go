package layer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"strata/storage"
)

// disk is a writable overlay over one immutable layer, in memory. One disk
// object serves every handle on it.
type disk struct {
	m      *Manager
	id     DiskID
	pooled bool
	size   atomic.Int64

	// mu is held shared by every mutation for its whole length and
	// exclusively by Snapshot, so the switch to a fresh overlay falls
	// between writes: a write acknowledged before Snapshot is in the
	// snapshot, none after it is.
	mu sync.RWMutex
	st atomic.Pointer[diskState]

	// locks serialize mutations of the same blocks (see rangeLocks).
	locks rangeLocks

	opens int // handles, under m.mu
}

type diskState struct {
	ov   *overlay
	base *layer // nil: empty base
}

// writeBatchBlocks bounds the blocks one write transaction carries (4 MiB);
// a bigger request is split, which a crash may tear like any unflushed write.
const writeBatchBlocks = 1024

// maxDeleteInRange bounds how many stale data blocks a trim deletes in its
// own transaction; beyond it they stay until the overlay is released (the
// range record hides them).
const maxDeleteInRange = 4096

// CreateDisk makes a disk of size bytes over base (0: an empty disk), in tx.
// pooled puts the overlay directly on base's layer, sharing its cache; a
// standard disk gets its own base. Both copy no data. size must be at least
// the base's size.
func (m *Manager) CreateDisk(tx *storage.Txn, base LayerID, size int64, pooled bool) (DiskID, error) {
	if size < 0 {
		return 0, fmt.Errorf("%w: disk size %d", ErrInvalid, size)
	}
	did, err := m.newID()
	if err != nil {
		return 0, err
	}
	ovid, err := m.newID()
	if err != nil {
		return 0, err
	}
	dm := &diskMeta{Size: size, Overlay: ovid, Pooled: pooled}
	if base != 0 {
		lm, err := visibleLayer(tx, base)
		if err != nil {
			return 0, err
		}
		if size < lm.Size {
			return 0, fmt.Errorf("%w: disk size %d below its base's %d", ErrInvalid, size, lm.Size)
		}
		if pooled {
			lm.Users++
			dm.Base = base
		} else {
			bid, err := m.newID()
			if err != nil {
				return 0, err
			}
			own := &layerMeta{State: stateReady, Size: lm.Size, Users: 1, Dirs: slices.Clone(lm.Dirs)}
			if lm.State == stateReady {
				// Share the map: one more reference per dir page, no
				// chunk counted again, no data copied.
				for _, d := range lm.Dirs {
					if d != 0 {
						if _, err := incPage(tx, d, 1); err != nil {
							return 0, err
						}
					}
				}
			} else {
				// The source is still sealing: the own base is a seal with
				// no overlay, finishing as a copy of the source's dirs.
				own.State, own.Parent, own.Dirs = stateSealing, base, nil
				lm.Users++
				m.mu.Lock()
				m.cloneWatch[LayerID(bid)] = 0
				m.mu.Unlock()
				m.kickReaper()
			}
			if err := putLayerMeta(tx, LayerID(bid), own); err != nil {
				return 0, err
			}
			dm.Base = LayerID(bid)
		}
		if err := putLayerMeta(tx, base, lm); err != nil {
			return 0, err
		}
	}
	return DiskID(did), setJSON(tx, key(pfxDisk, did), dm)
}

// DeleteDisk removes a disk, in tx; its overlay and base references are
// released in the background. ErrBusy while it is open.
func (m *Manager) DeleteDisk(tx *storage.Txn, id DiskID) error {
	m.mu.Lock()
	d := m.disks[id]
	busy := d != nil && d.opens > 0
	m.mu.Unlock()
	if busy {
		return fmt.Errorf("%w: disk %d is open", ErrBusy, id)
	}
	if d != nil {
		if !d.mu.TryLock() {
			return fmt.Errorf("%w: disk %d is being snapshotted", ErrBusy, id)
		}
		d.mu.Unlock()
	}
	dm, err := getDiskMeta(tx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: disk %d", ErrNotFound, id)
	}
	if err != nil {
		return err
	}
	if err := tx.Delete(key(pfxDisk, uint64(id))); err != nil {
		return err
	}
	if err := m.enqueueJob(tx, jobFreeOverlay, dm.Overlay); err != nil {
		return err
	}
	if err := m.useLayer(tx, dm.Base, -1); err != nil {
		return err
	}
	m.kickReaper()
	// Drop the cached object; if tx does not commit, the next open
	// reloads it from the store.
	m.mu.Lock()
	delete(m.disks, id)
	m.mu.Unlock()
	return nil
}

// ResizeDisk grows a disk, in tx. Shrinking is refused.
func (m *Manager) ResizeDisk(tx *storage.Txn, id DiskID, size int64) error {
	dm, err := getDiskMeta(tx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: disk %d", ErrNotFound, id)
	}
	if err != nil {
		return err
	}
	if size < dm.Size {
		return fmt.Errorf("%w: disk %d cannot shrink from %d to %d", ErrInvalid, id, dm.Size, size)
	}
	d, err := m.getDisk(id)
	if err != nil {
		return err
	}
	d.mu.RLock() // not across a snapshot's switch
	defer d.mu.RUnlock()
	ov := d.st.Load().ov
	if ov.id != dm.Overlay {
		return fmt.Errorf("%w: disk %d changed under the resize", ErrBusy, id)
	}
	// If the overlay holds blocks past the recorded end (a resize whose
	// transaction never committed let a client write there), the new range
	// is trimmed in the same transaction so they stay hidden.
	b0, b1 := ceilDiv(dm.Size, blockSize), ceilDiv(size, blockSize)
	if b1 > b0 && !ov.emptyRange(b0, b1) {
		seq := ov.seq.Add(1)
		rec := append([]byte{bTrim}, be64(uint64(b0))...)
		if err := tx.Set(key(pfxRange, ov.id, seq), append(rec, be64(uint64(b1))...)); err != nil {
			return err
		}
		ov.imu.Lock()
		ov.setRangeLocked(b0, b1, bTrim)
		ov.imu.Unlock()
		ov.gen.Add(1) // no record goes: readers past the end are refused anyway
	}
	dm.Size = size
	if err := setJSON(tx, key(pfxDisk, uint64(id)), dm); err != nil {
		return err
	}
	// The handle grows at once; if tx then fails the record keeps the old
	// size, and the trim above, written again by the next resize, hides
	// anything written past it meanwhile.
	for {
		cur := d.size.Load()
		if cur >= size || d.size.CompareAndSwap(cur, size) {
			break
		}
	}
	return nil
}

// getDisk returns the in-memory disk, loading it from the store.
func (m *Manager) getDisk(id DiskID) (*disk, error) {
	m.startWatchedSeals()
	m.mu.Lock()
	d := m.disks[id]
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if d != nil {
		return d, nil
	}
	var dm *diskMeta
	err := m.store.View(func(tx *storage.Txn) (err error) {
		dm, err = getDiskMeta(tx, id)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: disk %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	ov, err := loadOverlay(m.store, dm.Overlay)
	if err != nil {
		return nil, err
	}
	var base *layer
	if dm.Base != 0 {
		if base, err = m.getLayer(dm.Base); err != nil {
			return nil, err
		}
	}
	d = &disk{m: m, id: id, pooled: dm.Pooled}
	d.size.Store(dm.Size)
	d.st.Store(&diskState{ov: ov, base: base})
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.disks[id]; old != nil {
		return old, nil
	}
	m.disks[id] = d
	return d, nil
}

// OpenDisk returns a read-write handle on a disk. Handles are shared: every
// open of the same disk sees the same data.
func (m *Manager) OpenDisk(id DiskID) (Volume, error) {
	d, err := m.getDisk(id)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.disks[id] != d {
		return nil, fmt.Errorf("%w: disk %d", ErrNotFound, id)
	}
	d.opens++
	return &diskHandle{d: d}, nil
}

// diskHandle is one open of a disk.
type diskHandle struct {
	d      *disk
	closed atomic.Bool
}

func (h *diskHandle) Size() int64    { return h.d.size.Load() }
func (h *diskHandle) ReadOnly() bool { return false }

// BlockSizes advertises 4 KiB as the preferred block: smaller writes work
// but read-modify-write their block. (nbd.BlockSizer)
func (h *diskHandle) BlockSizes() (minimum, preferred, maximum uint32) {
	return 1, blockSize, 32 << 20
}

func (h *diskHandle) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := h.check(off, int64(len(p))); err != nil {
		return err
	}
	return h.d.read(p, off)
}

func (h *diskHandle) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := h.check(off, int64(len(p))); err != nil {
		return err
	}
	d := h.d
	d.mu.RLock()
	err := d.write(p, off)
	d.mu.RUnlock()
	return d.after(err, fua)
}

func (h *diskHandle) Flush(ctx context.Context) error {
	if h.closed.Load() {
		return ErrClosed
	}
	return h.d.m.store.Sync()
}

func (h *diskHandle) Trim(ctx context.Context, off, length int64, fua bool) error {
	if err := h.check(off, length); err != nil {
		return err
	}
	return h.d.zero(off, length, bTrim, false, fua)
}

func (h *diskHandle) WriteZeroes(ctx context.Context, off, length int64, mayTrim, fastOnly, fua bool) error {
	if err := h.check(off, length); err != nil {
		return err
	}
	kind := uint8(bZero)
	if mayTrim {
		kind = bTrim
	}
	return h.d.zero(off, length, kind, fastOnly, fua)
}

func (h *diskHandle) Extents(ctx context.Context, off, length int64) ([]Extent, error) {
	if err := h.check(off, length); err != nil {
		return nil, err
	}
	if length == 0 {
		return nil, nil
	}
	length = min(length, maxExtentBlocks<<blockShift-(off&(blockSize-1)))
	b0 := off >> blockShift
	kinds := make([]uint8, (off+length-1)>>blockShift-b0+1)
	st := h.d.st.Load()
	st.ov.kindsOver(b0, kinds)
	h.d.m.kindsLayer(st.base, b0, kinds)
	return extentsFrom(off, length, b0, kinds), nil
}

// Close drops this handle; the last Close of a disk flushes it.
func (h *diskHandle) Close() error {
	if h.closed.Swap(true) {
		return nil
	}
	m := h.d.m
	m.mu.Lock()
	h.d.opens--
	last := h.d.opens == 0
	m.mu.Unlock()
	if last {
		return m.store.Sync()
	}
	return nil
}

func (h *diskHandle) check(off, length int64) error {
	if h.closed.Load() {
		return ErrClosed
	}
	if off < 0 || length < 0 || off+length > h.d.size.Load() {
		return fmt.Errorf("%w: [%d, +%d) of disk %d (%d bytes)", ErrOutOfRange, off, length, h.d.id, h.d.size.Load())
	}
	return nil
}

// after makes a successful FUA mutation durable.
func (d *disk) after(err error, fua bool) error {
	if err == nil && fua {
		err = d.m.store.Sync()
	}
	return err
}

// read fills p from the overlay, then the base layer.
func (d *disk) read(p []byte, off int64) error {
	for {
		st := d.st.Load()
		err := st.ov.readOver(d.m.store, p, off, func(q []byte, o int64) error {
			return d.m.readLayerFor(st.base, q, o, d.admit())
		})
		if errors.Is(err, errRetired) {
			continue // a snapshot moved this overlay away and sealed it: re-read
		}
		return err
	}
}

// admit is the cache admission policy of the disk's reads: a pooled disk's
// image is read by many disks at once, so its chunks are kept on their
// first miss; another disk's on their second (see admitMode).
func (d *disk) admit() admitMode {
	if d.pooled {
		return admitFirst
	}
	return admitSecond
}

// write stores p at off in the overlay, whole 4 KiB blocks at a time: a
// partial block is merged with the disk's current bytes of that block
// (its own overlay block or the base's), never with a shared chunk in
// place. Called with d.mu held shared.
func (d *disk) write(p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	st := d.st.Load()
	end := off + int64(len(p))
	b0, b1 := off>>blockShift, (end-1)>>blockShift
	unlock := d.locks.lock(b0, b1)
	defer unlock()
	w := newBlockWriter(d, st, b1-b0+1)
	defer w.release()
	size := d.size.Load()
	var buf [blockSize]byte
	for b := b0; b <= b1; b++ {
		bs := b << blockShift
		be := min(bs+blockSize, size)
		lo, hi := max(off, bs), min(end, be)
		blk := p[lo-off : hi-off]
		if lo > bs || hi < be {
			// Partial block: merge with the current bytes of this block.
			clear(buf[:])
			if err := d.readState(st, buf[:be-bs], bs); err != nil {
				return err
			}
			copy(buf[lo-bs:], blk)
			blk = buf[:be-bs]
		}
		if err := w.add(b, blk); err != nil {
			return err
		}
	}
	return w.flush()
}

// readState reads through a fixed state (the one a write is using).
func (d *disk) readState(st *diskState, p []byte, off int64) error {
	return st.ov.readOver(d.m.store, p, off, func(q []byte, o int64) error {
		return d.m.readLayer(st.base, q, o)
	})
}

// zero makes [off, off+length) read as zeros: whole blocks by one range
// record (metadata only), partial blocks at either end by a block write.
func (d *disk) zero(off, length int64, kind uint8, fastOnly, fua bool) error {
	if length == 0 {
		return d.after(nil, fua)
	}
	size := d.size.Load()
	end := off + length
	a0, a1 := ceilDiv(off, blockSize), end>>blockShift
	if end == size {
		a1 = ceilDiv(end, blockSize) // the disk's last, short block is whole here
	}
	var head, tail int64
	if a1 <= a0 {
		head, a1 = length, a0 // no whole block inside
	} else {
		head, tail = a0<<blockShift-off, max(0, end-a1<<blockShift)
	}
	if fastOnly && (head > 0 || tail > 0) {
		return fmt.Errorf("%w: [%d, +%d) is not 4 KiB aligned", ErrNotFast, off, length)
	}
	d.mu.RLock()
	err := d.zeroLocked(off, end, a0, a1, head, tail, kind)
	d.mu.RUnlock()
	return d.after(err, fua)
}

func (d *disk) zeroLocked(off, end, a0, a1, head, tail int64, kind uint8) error {
	if head > 0 {
		if err := d.write(make([]byte, head), off); err != nil {
			return err
		}
	}
	if tail > 0 {
		if err := d.write(make([]byte, tail), a1<<blockShift); err != nil {
			return err
		}
	}
	if a1 <= a0 {
		return nil
	}
	st := d.st.Load()
	ov := st.ov
	unlock := d.locks.lock(a0, a1-1)
	defer unlock()
	seq := ov.seq.Add(1)
	// Data blocks the range covers are deleted with it (up to a bound).
	var stale []int64
	ov.imu.RLock()
	for b := a0; b < a1 && len(stale) < maxDeleteInRange; b++ {
		if b%ovPageBlocks == 0 && ov.page(b/ovPageBlocks) == nil {
			b += ovPageBlocks - 1
			continue
		}
		if ov.stateLocked(b) == bData {
			stale = append(stale, b)
		}
	}
	ov.imu.RUnlock()
	rec := make([]byte, 17)
	rec[0] = kind
	copy(rec[1:], be64(uint64(a0)))
	copy(rec[9:], be64(uint64(a1)))
	kvs := []kv{{key(pfxRange, ov.id, seq), rec}}
	for _, b := range stale {
		kvs = append(kvs, kv{key: key(pfxBlock, ov.id, uint64(b))})
	}
	return ov.mutate(d.m.commits.commit, kvs, func() { ov.setRangeLocked(a0, a1, kind) })
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
