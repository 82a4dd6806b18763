package imagefile

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// unitKind says where one allocation unit (qcow2 cluster, VMDK grain) of
// the logical disk comes from.
type unitKind uint8

const (
	unitZero       unitKind = iota // reads as zeros: unallocated or a zero cluster
	unitData                       // stored as is at host
	unitCompressed                 // clen compressed bytes at host
)

// unitMap is one unit's place in the file.
type unitMap struct {
	kind unitKind
	host int64
	clen int64
	idx  int64 // logical unit, for formats that check it (VMDK markers)
}

// unitFormat is what a table-mapped format (qcow2, VMDK) supplies to the
// shared reader: a lookup from logical unit to file position, and a way to
// inflate a compressed unit.
type unitFormat interface {
	// lookup maps unit idx. span >= 1 is how many units from idx share a
	// zero mapping because their whole table is absent (so walks can
	// skip); 1 otherwise.
	lookup(idx int64) (m unitMap, span int64, err error)
	// inflate decodes the compressed unit m into dst (len dst = unit).
	inflate(m unitMap, dst []byte) error
}

// unitReader turns a unitFormat into a logical io.ReaderAt and extent map.
type unitReader struct {
	r      io.ReaderAt
	file   int64 // file size
	size   int64 // virtual size
	unit   int64 // unit bytes
	format unitFormat
	cache  decodedCache
}

func (u *unitReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("imagefile: negative offset %d", off)
	}
	if off >= u.size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > u.size-off {
		p = p[:u.size-off]
		eof = io.EOF
	}
	done := 0
	var jobs []inflateJob
	for done < len(p) {
		pos := off + int64(done)
		idx := pos / u.unit
		within := pos % u.unit
		m, span, err := u.format.lookup(idx)
		if err != nil {
			return 0, err
		}
		switch m.kind {
		case unitZero:
			n := int(min(span*u.unit-within, int64(len(p)-done)))
			clear(p[done : done+n])
			done += n
		case unitData:
			// Coalesce units laid out one after another in the file into
			// one read: converted images are mostly contiguous.
			n := int(min(u.unit-within, int64(len(p)-done)))
			host := m.host + within
			for done+n < len(p) {
				next, _, err := u.format.lookup(idx + 1)
				if err != nil || next.kind != unitData || next.host != m.host+u.unit {
					break
				}
				idx++
				m = next
				n += int(min(u.unit, int64(len(p)-done-n)))
			}
			if err := readFull(u.r, u.file, p[done:done+n], host); err != nil {
				return 0, err
			}
			done += n
		case unitCompressed:
			n := int(min(u.unit-within, int64(len(p)-done)))
			jobs = append(jobs, inflateJob{idx: idx, m: m, dst: p[done : done+n], within: within})
			done += n
		}
	}
	if err := u.runInflates(jobs); err != nil {
		return 0, err
	}
	return done, eof
}

// inflateJob is one compressed unit (or the part of it) a read needs.
type inflateJob struct {
	idx    int64
	m      unitMap
	dst    []byte
	within int64
}

// runInflates decodes the compressed units of one read, in parallel when
// there are several: inflating is the slow part of reading a compressed
// image, and the importer reads 1 MiB (16 qcow2 clusters) at a time.
func (u *unitReader) runInflates(jobs []inflateJob) error {
	do := func(j inflateJob) error {
		if j.within == 0 && int64(len(j.dst)) == u.unit {
			return u.format.inflate(j.m, j.dst) // whole unit: straight into p
		}
		return u.readCompressed(j.idx, j.m, j.dst, j.within)
	}
	workers := min(len(jobs), runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for _, j := range jobs {
			if err := do(j); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		errMu sync.Mutex
		first error
	)
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(jobs)) {
					return
				}
				if err := do(jobs[i]); err != nil {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// readCompressed copies part of compressed unit idx into dst, through a
// small cache so that reads smaller than a unit inflate it once.
func (u *unitReader) readCompressed(idx int64, m unitMap, dst []byte, within int64) error {
	if u.cache.copyOut(idx, dst, within) {
		return nil
	}
	buf := make([]byte, u.unit)
	if err := u.format.inflate(m, buf); err != nil {
		return err
	}
	copy(dst, buf[within:])
	u.cache.put(idx, buf)
	return nil
}

func (u *unitReader) Extents() ([]Extent, error) {
	var b extentBuilder
	units := ceilDiv(u.size, u.unit)
	for idx := int64(0); idx < units; {
		m, span, err := u.format.lookup(idx)
		if err != nil {
			return nil, err
		}
		span = max(1, min(span, units-idx))
		b.add(idx*u.unit, span*u.unit, m.kind == unitZero)
		idx += span
	}
	return b.finish(u.size), nil
}

// decodedCache keeps the last few inflated units.
type decodedCache struct {
	mu   sync.Mutex
	idx  [4]int64
	data [4][]byte
	next int
}

func (c *decodedCache) copyOut(idx int64, dst []byte, within int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, d := range c.data {
		if d != nil && c.idx[i] == idx {
			copy(dst, d[within:])
			return true
		}
	}
	return false
}

func (c *decodedCache) put(idx int64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idx[c.next], c.data[c.next] = idx, data
	c.next = (c.next + 1) % len(c.data)
}

// tableCache keeps recently used decoded tables (qcow2 L2, VMDK grain
// tables) by file offset. A sequential import touches one table for many
// units, so a handful of entries is plenty.
type tableCache struct {
	mu    sync.Mutex
	tick  uint64
	bytes int64
	items map[int64]*tableItem
}

type tableItem struct {
	entries []uint64
	used    uint64
}

// The cache holds at most tableCacheItems tables and tableCacheBytes of
// entries: 128 qcow2 L2 tables at 64 KiB clusters (64 GiB of disk), while
// a hostile file with 2 MiB clusters cannot pin more than the byte cap.
const (
	tableCacheItems = 1024
	tableCacheBytes = 8 << 20
)

func (c *tableCache) get(off int64, load func() ([]uint64, error)) ([]uint64, error) {
	c.mu.Lock()
	if it, ok := c.items[off]; ok {
		c.tick++
		it.used = c.tick
		c.mu.Unlock()
		return it.entries, nil
	}
	c.mu.Unlock()
	// Loaded outside the lock: two readers may load the same table, which
	// costs a read but never blocks readers of other tables.
	e, err := load()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.items == nil {
		c.items = make(map[int64]*tableItem)
	}
	if _, ok := c.items[off]; ok {
		return e, nil // another reader loaded it meanwhile
	}
	size := int64(len(e)) * 8
	for len(c.items) > 0 && (len(c.items) >= tableCacheItems || c.bytes+size > tableCacheBytes) {
		var oldest int64
		var oldestUsed uint64 = ^uint64(0)
		for k, it := range c.items {
			if it.used < oldestUsed {
				oldest, oldestUsed = k, it.used
			}
		}
		c.bytes -= int64(len(c.items[oldest].entries)) * 8
		delete(c.items, oldest)
	}
	c.tick++
	c.bytes += size
	c.items[off] = &tableItem{entries: e, used: c.tick}
	return e, nil
}

// extentBuilder merges adjacent runs of the same kind and caps the list.
type extentBuilder struct {
	out []Extent
}

func (b *extentBuilder) add(off, length int64, zero bool) {
	if length <= 0 {
		return
	}
	if n := len(b.out); n > 0 {
		last := &b.out[n-1]
		if last.Offset+last.Length == off && (last.Zero == zero || n >= maxExtents) {
			// Past maxExtents everything folds into the last run as data:
			// claiming data is always safe, claiming zeros is not.
			last.Length += length
			if last.Zero != zero {
				last.Zero = false
			}
			return
		}
	}
	b.out = append(b.out, Extent{Offset: off, Length: length, Zero: zero})
}

// finish clips the list to size (units may overhang the virtual size).
func (b *extentBuilder) finish(size int64) []Extent {
	for len(b.out) > 0 {
		last := &b.out[len(b.out)-1]
		if last.Offset >= size {
			b.out = b.out[:len(b.out)-1]
			continue
		}
		if last.Offset+last.Length > size {
			last.Length = size - last.Offset
		}
		break
	}
	return b.out
}

// readFull reads len(p) bytes at off of a file of fileSize bytes, and calls
// a short file what it is: a truncated image.
func readFull(r io.ReaderAt, fileSize int64, p []byte, off int64) error {
	if off < 0 || off > fileSize || int64(len(p)) > fileSize-off {
		return fmt.Errorf("%w: the file is truncated: it is %d bytes but data is expected at %d..%d; upload the complete file",
			ErrInvalid, fileSize, off, off+int64(len(p)))
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if errors.Is(err, io.EOF) || err == nil {
		return fmt.Errorf("%w: the file is truncated: it ends at %d but data is expected at %d..%d; upload the complete file",
			ErrInvalid, off+int64(n), off, off+int64(len(p)))
	}
	return fmt.Errorf("imagefile: reading %d bytes at %d: %w", len(p), off, err)
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// checkDistinct refuses two table entries pointing at the same table: no
// valid image shares one, and a hostile one could make a small file
// describe a huge map.
func checkDistinct(offs []int64, what string) error {
	s := make([]int64, 0, len(offs))
	for _, o := range offs {
		if o != 0 {
			s = append(s, o)
		}
	}
	slices.Sort(s)
	for i := 1; i < len(s); i++ {
		if s[i] == s[i-1] {
			return fmt.Errorf("%w: two entries share the %s at file offset %d; the file is corrupt", ErrInvalid, what, s[i])
		}
	}
	return nil
}
