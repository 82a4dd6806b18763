package layer

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"strata/storage"
)

// blockSize is the guest block: the unit overlays store, whatever the
// store's chunk size, so a 4 KiB write never copies up a larger chunk.
const (
	blockSize  = 4096
	blockShift = 12
)

// Block states in an overlay's index, and extent kinds in merged views: the
// values line up so an overlay state is also the extent kind it reports.
const (
	bNone = 0 // not in this overlay: look below
	bData = 1 // data block stored in the overlay
	bZero = 2 // written zeros (WriteZeroes without mayTrim): reads zeros, allocated
	bTrim = 3 // trimmed or zeroed with mayTrim: reads zeros, a hole
)

// ovPageBlocks blocks share one index page: 2 bits each, 256 bytes a page.
const ovPageBlocks = 1024

type ovPage [ovPageBlocks / 32]uint64

// overlay is the writable part of a disk, or the frozen part of a layer
// being sealed. Blocks live in the store (layer/o/<id><block>); the index
// (2 bits a block, pages allocated on first touch) lives in memory and is
// rebuilt from the store when loaded.
//
// Every mutation carries a sequence number so a reload can tell whether a
// block write or a range record (trim, write-zeroes) came last.
type overlay struct {
	id  uint64
	seq atomic.Uint64

	// imu guards the index bits and data. The page table is published
	// atomically as well, so the hot read path can see that a range has no
	// page without taking imu.
	imu   sync.RWMutex
	pages atomic.Pointer[[]*ovPage]
	data  int64 // data blocks in the index

	// A reader takes the index's states first and reads data blocks from
	// the store after, so a trim or a zero write committed in between
	// leaves it a record that is gone or no longer data. gen (bumped after
	// every index change) and pending (mutations between the start of their
	// commit and their index update) tell that race from corruption: see
	// mutate and readOver.
	gen     atomic.Uint64
	pending atomic.Int64

	// rmu keeps a retired overlay's blocks from being deleted under a
	// reader: readers hold it shared for the whole read; retire takes it
	// exclusively once the sealed map has replaced the overlay.
	rmu     sync.RWMutex
	retired bool
}

var errRetired = errors.New("layer: overlay retired")

// errRaced: a data block's record changed between the index lookup and the
// store read (a trim or write in flight); readOver reads again.
var errRaced = errors.New("layer: overlay block changed under a read")

// mutate commits kvs and then, if that worked, applies set to the index
// under imu. Readers that meet its records before its index update see it
// pending; those after see gen moved.
func (o *overlay) mutate(commit func([]kv) error, kvs []kv, set func()) error {
	o.pending.Add(1)
	err := commit(kvs)
	if err == nil {
		o.imu.Lock()
		set()
		o.imu.Unlock()
	}
	// gen before pending: a reader that sees pending back at zero then
	// sees gen moved.
	o.gen.Add(1)
	o.pending.Add(-1)
	return err
}

// raced reports whether the index may have changed since gen was g0: a
// record that disagrees with a snapshot of the index taken after g0 is
// then a race, not corruption.
func (o *overlay) raced(g0 uint64) bool {
	return o.pending.Load() > 0 || o.gen.Load() != g0
}

func newOverlay(id uint64) *overlay { return &overlay{id: id} }

// page returns index page pi or nil. Page pointers never change once set
// (pages are only added), so a table loaded once stays valid.
func (o *overlay) page(pi int64) *ovPage {
	t := o.pages.Load()
	if t == nil || pi >= int64(len(*t)) {
		return nil
	}
	return (*t)[pi]
}

// addPage returns page pi, creating it; imu must be held exclusively.
func (o *overlay) addPage(pi int64) *ovPage {
	if pg := o.page(pi); pg != nil {
		return pg
	}
	var t []*ovPage
	if old := o.pages.Load(); old != nil {
		t = *old
	}
	nt := make([]*ovPage, max(int64(len(t)), pi+1))
	copy(nt, t)
	pg := new(ovPage)
	nt[pi] = pg
	o.pages.Store(&nt)
	return pg
}

func (o *overlay) stateLocked(b int64) uint8 {
	pg := o.page(b / ovPageBlocks)
	if pg == nil {
		return bNone
	}
	i := b % ovPageBlocks
	return uint8(pg[i/32]>>(2*(i%32))) & 3
}

func (o *overlay) setLocked(b int64, s uint8) {
	pg := o.page(b / ovPageBlocks)
	if pg == nil {
		if s == bNone {
			return
		}
		pg = o.addPage(b / ovPageBlocks)
	}
	i := b % ovPageBlocks
	old := uint8(pg[i/32]>>(2*(i%32))) & 3
	if old == bData {
		o.data--
	}
	if s == bData {
		o.data++
	}
	pg[i/32] = pg[i/32]&^(3<<(2*(i%32))) | uint64(s)<<(2*(i%32))
}

// setRangeLocked sets [b0, b1) to s, a whole page at a time where it can.
func (o *overlay) setRangeLocked(b0, b1 int64, s uint8) {
	var fill uint64
	for i := 0; i < 32; i++ {
		fill |= uint64(s) << (2 * i)
	}
	for b := b0; b < b1; {
		if b%ovPageBlocks == 0 && b+ovPageBlocks <= b1 {
			pg := o.page(b / ovPageBlocks)
			if pg == nil {
				pg = o.addPage(b / ovPageBlocks)
			} else {
				for i := 0; i < ovPageBlocks; i++ {
					if uint8(pg[i/32]>>(2*(i%32)))&3 == bData {
						o.data--
					}
				}
			}
			for i := range pg {
				pg[i] = fill
			}
			if s == bData {
				o.data += ovPageBlocks
			}
			b += ovPageBlocks
			continue
		}
		o.setLocked(b, s)
		b++
	}
}

// states copies the states of blocks [b0, b0+len(dst)).
func (o *overlay) states(b0 int64, dst []uint8) {
	o.imu.RLock()
	defer o.imu.RUnlock()
	for i := range dst {
		b := b0 + int64(i)
		if o.page(b/ovPageBlocks) == nil {
			// Skip the rest of an absent page at once.
			n := min(int64(len(dst)-i), ovPageBlocks-b%ovPageBlocks)
			clear(dst[i : i+int(n)])
			continue
		}
		dst[i] = o.stateLocked(b)
	}
}

// emptyRange reports whether no block of [b0, b1) is in the overlay.
func (o *overlay) emptyRange(b0, b1 int64) bool {
	o.imu.RLock()
	defer o.imu.RUnlock()
	for b := b0; b < b1; b++ {
		if b%ovPageBlocks == 0 && o.page(b/ovPageBlocks) == nil {
			b += ovPageBlocks - 1
			continue
		}
		if o.stateLocked(b) != bNone {
			return false
		}
	}
	return true
}

// zeroCovered reports whether every block of [b0, b1) is written zeros or
// trimmed: the bytes below do not matter.
func (o *overlay) zeroCovered(b0, b1 int64) bool {
	o.imu.RLock()
	defer o.imu.RUnlock()
	for b := b0; b < b1; b++ {
		if s := o.stateLocked(b); s != bZero && s != bTrim {
			return false
		}
	}
	return true
}

// absent reports whether no index page covers blocks [b0, b1].
func (o *overlay) absent(b0, b1 int64) bool {
	for pi := b0 / ovPageBlocks; pi <= b1/ovPageBlocks; pi++ {
		if o.page(pi) != nil {
			return false
		}
	}
	return true
}

func (o *overlay) dataBlocks() int64 {
	o.imu.RLock()
	defer o.imu.RUnlock()
	return o.data
}

// touchedChunks lists, in order, the chunk indices (of chunkSize) that hold
// any block of the overlay.
func (o *overlay) touchedChunks(chunkSize int64) []int64 {
	o.imu.RLock()
	defer o.imu.RUnlock()
	var out []int64
	t := o.pages.Load()
	if t == nil {
		return nil
	}
	for pi, pg := range *t {
		if pg == nil {
			continue
		}
		for i := 0; i < ovPageBlocks; i++ {
			if uint8(pg[i/32]>>(2*(i%32)))&3 == bNone {
				continue
			}
			ci := (int64(pi)*ovPageBlocks + int64(i)) * blockSize / chunkSize
			if len(out) == 0 || out[len(out)-1] != ci {
				out = append(out, ci)
			}
		}
	}
	return out
}

// readOver fills p with the bytes at off: this overlay's blocks where it has
// them, below for the rest (below gets sub-slices and their offsets). It
// returns errRetired if the overlay was sealed away; the caller re-reads its
// view.
func (o *overlay) readOver(store *storage.Store, p []byte, off int64, below func([]byte, int64) error) error {
	if len(p) == 0 {
		return nil
	}
	end := off + int64(len(p))
	b0, b1 := off>>blockShift, (end-1)>>blockShift
	if o.absent(b0, b1) {
		// The common case on a fresh overlay: no lock, no index work. Right
		// even if the overlay is being retired: it has nothing here.
		return below(p, off)
	}
	o.rmu.RLock()
	defer o.rmu.RUnlock()
	if o.retired {
		return errRetired
	}
	for {
		g0 := o.gen.Load()
		err := o.readOverOnce(store, p, off, below, g0)
		if !errors.Is(err, errRaced) {
			return err
		}
		// The mutation that raced us has committed; its index update, and
		// the gen bump after it, follow at once (no I/O in between).
		for o.gen.Load() == g0 {
			runtime.Gosched()
		}
	}
}

// readOverOnce is one pass of readOver over the index as of gen g0 or
// later; errRaced if a data block's record changed since.
func (o *overlay) readOverOnce(store *storage.Store, p []byte, off int64, below func([]byte, int64) error, g0 uint64) error {
	end := off + int64(len(p))
	b0, b1 := off>>blockShift, (end-1)>>blockShift
	st := make([]uint8, b1-b0+1)
	o.states(b0, st)
	var data []int64
	for i := 0; i < len(st); {
		j := i + 1
		for j < len(st) && st[j] == st[i] {
			j++
		}
		lo := max(off, (b0+int64(i))<<blockShift)
		hi := min(end, (b0+int64(j))<<blockShift)
		switch st[i] {
		case bNone:
			if err := below(p[lo-off:hi-off], lo); err != nil {
				return err
			}
		case bZero, bTrim:
			clear(p[lo-off : hi-off])
		case bData:
			for b := b0 + int64(i); b < b0+int64(j); b++ {
				data = append(data, b)
			}
		}
		i = j
	}
	if len(data) == 0 {
		return nil
	}
	return store.View(func(tx *storage.Txn) error {
		for _, b := range data {
			v, err := tx.Get(key(pfxBlock, o.id, uint64(b)))
			if err != nil {
				if errors.Is(err, storage.ErrNotFound) && o.raced(g0) {
					return errRaced // trimmed since the index was read
				}
				return fmt.Errorf("%w: overlay %d block %d: %v", ErrCorruptMeta, o.id, b, err)
			}
			if len(v) != 9+blockSize || v[8] != bData {
				if o.raced(g0) {
					return errRaced // written zeros since the index was read
				}
				return fmt.Errorf("%w: overlay %d block %d: bad record", ErrCorruptMeta, o.id, b)
			}
			lo := max(off, b<<blockShift)
			hi := min(end, (b+1)<<blockShift)
			copy(p[lo-off:hi-off], v[9+lo-b<<blockShift:])
		}
		return nil
	})
}

// kindsOver fills the unknown (0) entries of kinds for blocks from b0 with
// this overlay's states, leaving bNone blocks for the layer below.
func (o *overlay) kindsOver(b0 int64, kinds []uint8) {
	st := make([]uint8, len(kinds))
	o.states(b0, st)
	for i, s := range st {
		if kinds[i] == 0 {
			kinds[i] = s
		}
	}
}

// loadOverlay rebuilds an overlay's index from the store: block records and
// range records applied in sequence order.
func loadOverlay(store *storage.Store, id uint64) (*overlay, error) {
	o := newOverlay(id)
	type blk struct {
		b    int64
		seq  uint64
		kind uint8
	}
	type rng struct {
		seq        uint64
		kind       uint8
		start, end int64
	}
	var blocks []blk
	var ranges []rng
	var maxSeq uint64
	err := store.View(func(tx *storage.Txn) error {
		bp := key(pfxBlock, id)
		if err := tx.Iterate(bp, func(k, v []byte) error {
			if len(v) < 9 || len(k) != len(bp)+8 {
				return fmt.Errorf("%w: overlay %d block record", ErrCorruptMeta, id)
			}
			s := binary.BigEndian.Uint64(v)
			blocks = append(blocks, blk{int64(binary.BigEndian.Uint64(k[len(bp):])), s, v[8]})
			maxSeq = max(maxSeq, s)
			return nil
		}); err != nil {
			return err
		}
		rp := key(pfxRange, id)
		return tx.Iterate(rp, func(k, v []byte) error {
			if len(v) != 17 || len(k) != len(rp)+8 {
				return fmt.Errorf("%w: overlay %d range record", ErrCorruptMeta, id)
			}
			s := binary.BigEndian.Uint64(k[len(rp):])
			ranges = append(ranges, rng{s, v[0], int64(binary.BigEndian.Uint64(v[1:])), int64(binary.BigEndian.Uint64(v[9:]))})
			maxSeq = max(maxSeq, s)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	// Ranges in key order are in sequence order; a later one overrides.
	for _, r := range ranges {
		o.setRangeLocked(r.start, r.end, r.kind)
	}
	byStart := slices.Clone(ranges)
	slices.SortFunc(byStart, func(a, b rng) int { return cmp.Compare(a.start, b.start) })
	for _, bl := range blocks {
		newer := false
		for _, r := range byStart {
			if r.start > bl.b {
				break
			}
			if bl.b < r.end && r.seq > bl.seq {
				newer = true
				break
			}
		}
		if !newer {
			o.setLocked(bl.b, bl.kind)
		}
	}
	o.seq.Store(maxSeq)
	return o, nil
}

// deleteOverlayStep deletes up to n of an overlay's records and reports
// whether any were left to delete.
func deleteOverlayStep(tx *storage.Txn, id uint64, n int) (more bool, err error) {
	var keys [][]byte
	for _, p := range [][]byte{key(pfxBlock, id), key(pfxRange, id)} {
		err := tx.Iterate(p, func(k, _ []byte) error {
			if len(keys) >= n {
				more = true
				return errStop
			}
			keys = append(keys, slices.Clone(k))
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return false, err
		}
	}
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return false, err
		}
	}
	return more || len(keys) > 0, nil
}

var errStop = errors.New("stop")
