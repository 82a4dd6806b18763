package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"iter"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Badger appends values to its current value-log file through a shared
// mmap, from its single writer goroutine. The file is fresh (a sparse
// file), so every page it copies into first takes a page fault that
// allocates and zeroes a page-cache page. On the VMs we run on, what that
// costs depends on where the page comes from: a guest page frame the
// kernel has never used (or has reported free to the host) costs ~12 us
// on first touch, one it freed a moment ago ~1 us (measured here, 2 GiB
// written into a fresh file mapping 2 MiB at a time: 13.1 us a page when
// populated ahead alone, 2.1-2.9 us with the pages behind the writer
// written back and dropped as below). A stream of overlay writes grows the
// page cache by what it writes, so with free memory to spare every page of
// it was a fresh frame: populating ahead alone only moved those first
// touches from the writer to this goroutine, on the same two cores.
//
// vlogPrefaulter therefore does three things, after commits that sent
// values to the value log, on a goroutine of its own:
//   - it asks for the file's mapping to be backed by 2 MiB folios
//     (MADV_HUGEPAGE, see adviseHuge);
//   - ahead of the estimated write offset it populates pages (madvise
//     MADV_POPULATE_WRITE, one call for many pages), so the writer copies
//     into memory that is already there;
//   - behind it, it unmaps what was written and starts its writeback
//     (see writeBack), and further behind waits for that writeback and
//     drops the now clean pages from the page cache, so the kernel hands
//     their frames out again for the pages ahead instead of fresh ones.
//     When the writer moves to a new file, the rest of the old one is
//     dropped the same way;
//   - every flushEvery bytes dropped, it has the device flush the file on
//     another goroutine, so that Badger's sync of the file when it
//     leaves it finds little left to do (see flushDevice).
//
// BenchmarkSeqWrite (layer, 512 MiB in 256 KiB writes plus the flush),
// alternated with the populate-only version in the same session: 208-220
// -> 461-509 MB per CPU-second, 162-184 -> 346-427 MB/s.
//
// None of this can lose data or touch another mapping's: the prefaulter
// never reads or writes the mapping itself (it reads the file through a
// descriptor of its own), and every madvise it makes keeps data
// (populating a page or changing its folio size does not change it;
// paging out a dirty file page unmaps it and keeps it dirty), so a range
// Badger has just unmapped or remapped costs an error or a wasted call.
// Dropping goes through its own descriptor too, and the kernel drops only
// clean pages. Durability still comes from Store.Sync. The price: a read
// of a value written more than dropLag ago in a long stream goes to the
// disk.
type vlogPrefaulter struct {
	dir string // absolute, as /proc/self/maps names the files

	mu      sync.Mutex
	running bool
	pending uintptr // bytes committed to the value log since the last round

	cur vlogFile // the newest value-log file, as last seen
	// looked is cur.est when /proc/self/maps was last read; lookNow asks
	// for a read at the next round (a run starts for a store opened anew,
	// which maps its files anew). opened is that store's openSerial.
	looked  uintptr
	lookNow bool
	opened  uint64
}

// lookEvery bounds how far the estimate moves between reads of
// /proc/self/maps while it stays below the file size (reading it was 15 %
// of the prefaulter's time, pprof of strata-bench's seqwrite): the writer
// changes files only when it passes the size, or sooner if values the
// estimate does not count (chunk bodies) went to the same file.
const lookEvery = 64 << 20

// vlogFile is the prefaulter's view of one value-log file.
type vlogFile struct {
	fid           int
	path          string
	start, length uintptr  // its writable mapping
	fd            *os.File // opened while a run lasts, for sync_file_range
	est, done     uintptr  // estimated write offset; populated up to
	synced        uintptr  // writeback started up to
	dropped       uintptr  // written back and dropped from memory up to
	flushed       uintptr  // a device flush was started once dropped reached
}

// prefaultLead is how far ahead of the writer pages are populated: a few
// group commits (4 MiB each), so the writer does not catch up between
// rounds. Kept small because a populated page is dirty: a Store.Sync before
// Badger writes it writes a page of zeros, up to prefaultLead bytes extra
// per sync (and a page past the end of a file stays so until Badger
// truncates the file).
const prefaultLead = 16 << 20

// writebackLag and dropLag are how far behind the estimated write offset
// writeback starts and pages are dropped, in steps of at least evictStep.
// The gap between them gives the writeback time to finish, so dropping
// rarely waits; what is between dropLag and the writer stays cached for
// reads of recent writes. The page cache a stream keeps is then about
// prefaultLead + dropLag, and frames come back within that many bytes.
const (
	writebackLag = 8 << 20
	dropLag      = 32 << 20
	evictStep    = 2 << 20
)

// flushEvery is how much of a value-log file is written back between the
// device flushes the prefaulter starts (see flushDevice).
const flushEvery = 32 << 20

// prefaultMinCommit: only commits this big start a round. They mean a
// stream of large writes, where the writer's page faults are the limit;
// small commits (random 4 KiB writes, often with FUA) gain little and
// would pay the zero pages on their frequent syncs. Their bytes still
// move the estimate of the write offset.
const prefaultMinCommit = 1 << 20

const (
	madvPopulateWrite = 23 // MADV_POPULATE_WRITE, Linux 5.14
	madvPageout       = 21 // MADV_PAGEOUT, Linux 5.4
	madvHugepage      = 14 // MADV_HUGEPAGE
	madvNoHugepage    = 15 // MADV_NOHUGEPAGE

	syncRangeWaitBefore = 1 // SYNC_FILE_RANGE_WAIT_BEFORE
	syncRangeWrite      = 2 // SYNC_FILE_RANGE_WRITE
	syncRangeWaitAfter  = 4 // SYNC_FILE_RANGE_WAIT_AFTER

	fadvDontNeed = 4 // POSIX_FADV_DONTNEED
)

var (
	prefaulters     sync.Map      // absolute dir -> *vlogPrefaulter
	openSerials     atomic.Uint64 // numbers each Open, for vlogPrefaulter.opened
	prefaultBroken  atomic.Bool
	dropBroken      atomic.Bool
	errNoVlogMapped = errors.New("no value-log mapping")
)

// vlogEntryBytes is what an entry takes in the value log, or 0 if its
// value stays in the LSM tree: Badger's header (meta, user meta, varint
// key and value lengths, varint expiry 0), the key as stored (namespace
// byte included, keyLen bytes) with its 8-byte version, the value and a
// CRC32.
func (s *Store) vlogEntryBytes(keyLen int, val []byte) uintptr {
	if s.opts.InMemory || len(val) < vlogThreshold {
		return 0
	}
	klen := keyLen + 8
	header := 2 + uvarintLen(klen) + uvarintLen(len(val)) + 1
	return uintptr(header + klen + len(val) + 4)
}

func uvarintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

// vlogThreshold is badgerOptions' value threshold: Badger keeps values
// shorter than it in the LSM tree.
const vlogThreshold = 256

// prefaultVlog notes that a commit sent n bytes to the value log and makes
// sure a round of populating runs if the commit was big (n at least
// prefaultMinCommit) or is one of a stream of large values (bulk: the
// packs of imports and seals). Every put with packs is bulk, however
// small: an import batch that is mostly zeros or known chunks sends a
// small pack, and when only puts of 64 KiB of packs or more started a
// round, rounds lapsed between them (BenchmarkImportOSImage workers=2,
// builds alternated: 387 against 432 MB/s). The price: a seal's small
// last batch starts a round too, whose populated pages the next Sync
// writes as zeros, at most prefaultLead bytes.
func (s *Store) prefaultVlog(n uintptr, bulk bool) {
	if n == 0 || prefaultBroken.Load() {
		return
	}
	v, ok := prefaulters.Load(s.dir)
	if !ok {
		abs, err := mappedDir(s.dir)
		if err != nil {
			return
		}
		v, _ = prefaulters.LoadOrStore(s.dir, &vlogPrefaulter{dir: abs})
	}
	p := v.(*vlogPrefaulter)
	p.mu.Lock()
	p.pending += n
	if p.running || (n < prefaultMinCommit && !bulk) {
		p.mu.Unlock()
		return
	}
	p.running = true
	if p.opened != s.openSerial {
		// Reading /proc/self/maps at every run's start instead cost 2 %
		// of an import's CPU: its batches start a run each.
		p.opened = s.openSerial
		p.lookNow = true
	}
	p.mu.Unlock()
	go p.run(s)
}

func (p *vlogPrefaulter) run(s *Store) {
	for {
		p.mu.Lock()
		n := p.pending
		p.pending = 0
		select {
		case <-s.stop:
			n = 0
		default:
		}
		if n == 0 {
			p.cur.closeFD()
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		p.round(s, n)
	}
}

func (s *Store) valueLogFileSize() uintptr {
	if s.opts.ValueLogFileSize > 0 {
		return uintptr(s.opts.ValueLogFileSize)
	}
	return 256 << 20
}

// round advances the estimate by n committed bytes, populates up to
// prefaultLead past it, then writes back and drops what lies behind it.
// It looks for the writer's file in /proc/self/maps when the writer may
// have changed files.
func (p *vlogPrefaulter) round(s *Store, n uintptr) {
	fileSize := s.valueLogFileSize()
	est := p.cur.est + n
	if p.cur.path != "" && !p.lookNow && est < fileSize && est < p.looked+lookEvery {
		p.cur.advance(n, fileSize)
		return
	}
	p.lookNow = false
	p.looked = est
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return
	}
	f, err := p.newestMapping(maps)
	if err != nil {
		return
	}
	if f.path == p.cur.path {
		// The same file, perhaps mapped anew: its contents are unchanged.
		if f.start != p.cur.start || f.length != p.cur.length {
			f.adviseHuge()
		}
		p.cur.start, p.cur.length = f.start, f.length
		p.cur.advance(n, fileSize)
		return
	}
	if f.openFD() != nil {
		return
	}
	resident, err := residentPrefix(f.start, f.length)
	if err != nil {
		f.closeFD()
		return
	}
	f.adviseHuge()
	prev := p.cur
	p.cur = f.anchored(writtenPrefix(f.fd, resident))
	p.looked = p.cur.est
	p.cur.advance(0, fileSize)
	if f.fid > prev.fid && prev.path != "" {
		prev.finish(maps) // the writer left it for good
		s.adviseReads(maps, p.dir, p.cur.path)
	}
	prev.closeFD()
}

// advance moves the estimate of the write offset by n bytes, populates
// ahead of it and drops behind it.
func (f *vlogFile) advance(n, fileSize uintptr) {
	f.est += n
	f.populate(fileSize)
	f.dropBehind()
}

// anchored is f, seen for the first time with est bytes written.
func (f vlogFile) anchored(est uintptr) vlogFile {
	f.est, f.done = est, est
	f.synced, f.dropped, f.flushed = 0, 0, 0
	return f
}

// writtenPrefix estimates how much of a value-log file Badger has written:
// up to the first page that reads as zeros, searched (binary) among the
// first resident bytes, which the kernel has in memory. The resident
// prefix alone overshoots: the writer's first fault reads ahead up to
// read_ahead_kb (8 MiB here) of the sparse file. Unwritten pages read as
// zeros; a written one may too (a value of zeros), which only makes the
// estimate low.
func writtenPrefix(fd *os.File, resident uintptr) uintptr {
	const page = 4096
	buf := make([]byte, page)
	n := sort.Search(int(resident/page), func(i int) bool {
		_, err := fd.ReadAt(buf, int64(i)*page)
		return err != nil || isZero(buf)
	})
	return uintptr(n) * page
}

// finish drops what is left of a file the writer has left, wherever
// Badger maps it now (it truncates and remaps a file it leaves, and the
// mapping keeps its advice). From now on the file is only read:
// adviseReads decides its advice with the other files'.
func (f *vlogFile) finish(maps []byte) {
	m, ok := mappingOf(maps, f.path)
	if !ok {
		return
	}
	f.start, f.length = m.start, m.length
	f.dropTo(f.length, true)
}

// adviseHuge asks for the mapping to be backed by 2 MiB page-cache
// folios, mapped whole (MADV_HUGEPAGE; the kernel then reads ahead a
// fault's surroundings as one 2 MiB folio): one fault, one populate step
// and one page-table entry per 2 MiB instead of per 4 KiB. On this VM the
// first touch of every page-table entry exits to the host, so the writer's
// copy into populated 4 KiB pages still ran at ~1.3 us a page.
func (f *vlogFile) adviseHuge() {
	madvise(f.start, f.length, madvHugepage)
}

// populate makes the pages from the estimated write offset to
// prefaultLead past it present, within the file's useful length.
func (f *vlogFile) populate(fileSize uintptr) {
	const page = 4096
	limit := min(f.length, fileSize+8<<20) &^ (page - 1)
	from := max(f.done, f.est&^(page-1))
	to := min(f.est+prefaultLead, limit) &^ (page - 1)
	if to <= from {
		return
	}
	switch madvise(f.start+from, to-from, madvPopulateWrite) {
	case 0:
		f.done = to
	case syscall.EINVAL:
		prefaultBroken.Store(true) // an older kernel: stop trying
	}
}

// dropBehind starts writeback of what lies writebackLag behind the
// estimated write offset and drops what lies dropLag behind it.
func (f *vlogFile) dropBehind() {
	if f.est < writebackLag || dropBroken.Load() || f.openFD() != nil {
		return
	}
	if to := (f.est - writebackLag) &^ (evictStep - 1); to >= f.synced+evictStep {
		f.writeBack(to)
	}
	if f.est >= dropLag {
		f.dropTo((f.est-dropLag)&^(evictStep-1), false)
	}
}

// writeBack starts writeback of [f.synced, to). The pages are unmapped
// first (MADV_PAGEOUT: a dirty file page is unmapped, its dirt moved to
// the page, and kept): writeback of a page still mapped write-protects it
// in the page tables with a TLB flush on every CPU the process runs on,
// page by page, which cost more than the write itself (20 % of a
// sequential copy's CPU time, perf); unmapping a range flushes once.
func (f *vlogFile) writeBack(to uintptr) {
	if to <= f.synced {
		return
	}
	if madvise(f.start+f.synced, to-f.synced, madvPageout) == syscall.EINVAL {
		dropBroken.Store(true)
		return
	}
	if syncRange(f.fd, f.synced, to-f.synced, syncRangeWrite) == nil {
		f.synced = to
	}
}

// dropTo waits until the pages of [f.dropped, to) are written back and
// drops them from the page cache; the whole rest of the file if all.
func (f *vlogFile) dropTo(to uintptr, all bool) {
	if to < f.dropped+evictStep && !all || to <= f.dropped || dropBroken.Load() || f.openFD() != nil {
		return
	}
	f.writeBack(to)
	n := to - f.dropped
	if all {
		n = 0 // to the end of the file
	}
	if syncRange(f.fd, f.dropped, n, syncRangeWaitBefore|syncRangeWrite|syncRangeWaitAfter) != nil {
		return
	}
	if _, _, errno := syscall.Syscall6(syscall.SYS_FADVISE64, f.fd.Fd(), f.dropped, n, fadvDontNeed, 0, 0); errno != 0 {
		dropBroken.Store(true)
		return
	}
	f.dropped = to
	if !all && f.dropped >= f.flushed+flushEvery && flushDevice(f.path) {
		f.flushed = f.dropped
	}
}

// deviceFlushes tracks the flushDevice goroutines: the paths being
// synced (one goroutine a file at most), the goroutines running and the
// syncs that succeeded.
var deviceFlushes struct {
	running sync.Map
	wg      sync.WaitGroup
	done    atomic.Int64
}

// flushDevice starts an fdatasync of the file at path, through a
// descriptor of its own, on a goroutine of its own, unless one is running
// for that file already; it reports whether it started one.
//
// Badger syncs a value-log file when its writer leaves it (msync of the
// whole mapping, in the writer's goroutine), and every commit waits
// behind that sync. On this VM's disk a sync waits for every byte written
// since the device was last flushed, written back or not: 135-150 ms
// after 200 MiB written and written back, 7-14 ms after 8-16 MiB
// (fdatasync, measured here). Flushed as it fills, a file leaves Badger's
// sync little to do: an import of BenchmarkImportOSImage's image left
// three files, each sync 150 ms before and 27 ms after (strace -T).
func flushDevice(path string) bool {
	if _, busy := deviceFlushes.running.LoadOrStore(path, struct{}{}); busy {
		return false
	}
	deviceFlushes.wg.Add(1)
	go func() {
		defer deviceFlushes.wg.Done()
		defer deviceFlushes.running.Delete(path)
		fd, err := os.Open(path)
		if err != nil {
			return
		}
		defer fd.Close()
		if syscall.Fdatasync(int(fd.Fd())) == nil {
			deviceFlushes.done.Add(1)
		}
	}()
	return true
}

// openFD opens f's file for writeback if it is not open yet.
func (f *vlogFile) openFD() error {
	if f.fd != nil {
		return nil
	}
	fd, err := os.Open(f.path)
	if err != nil {
		return err
	}
	f.fd = fd
	return nil
}

func (f *vlogFile) closeFD() {
	if f.fd != nil {
		f.fd.Close()
		f.fd = nil
	}
}

// syncRange is sync_file_range(2) on fd; an fd or flags the kernel does
// not take stop all dropping (EINVAL, EBADF, ENOSYS, ESPIPE).
func syncRange(fd *os.File, off, n uintptr, flags int) error {
	_, _, errno := syscall.Syscall6(syscall.SYS_SYNC_FILE_RANGE, fd.Fd(), off, n, uintptr(flags), 0, 0)
	switch errno {
	case 0:
		return nil
	case syscall.EINVAL, syscall.EBADF, syscall.ENOSYS, syscall.ESPIPE:
		dropBroken.Store(true)
	}
	return errno
}

func madvise(addr, n, advice uintptr) syscall.Errno {
	_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, addr, n, advice)
	return errno
}

// newestMapping finds the writable mapping of the dir's newest value-log
// file in maps (the text of /proc/self/maps).
func (p *vlogPrefaulter) newestMapping(maps []byte) (vlogFile, error) {
	best := vlogFile{fid: -1}
	for f := range vlogMappings(maps, p.dir) {
		if f.fid > best.fid {
			best = f
		}
	}
	if best.fid < 0 {
		return vlogFile{}, errNoVlogMapped
	}
	return best, nil
}

// vlogMappings yields the writable mappings of the value-log files in dir
// (as mappedDir names it) found in maps, path included.
func vlogMappings(maps []byte, dir string) iter.Seq[vlogFile] {
	return func(yield func(vlogFile) bool) {
		prefix := []byte(dir + "/")
		for line := range bytes.Lines(maps) {
			i := bytes.Index(line, prefix)
			if i < 0 {
				continue
			}
			if f, ok := parseVlogMapping(line, i+len(prefix)); ok {
				f.path = string(bytes.TrimSpace(line[i:]))
				if !yield(f) {
					return
				}
			}
		}
	}
}

// mappingOf finds the writable mapping of the value-log file at path.
func mappingOf(maps []byte, path string) (vlogFile, bool) {
	name := []byte(path)
	for line := range bytes.Lines(maps) {
		i := bytes.Index(line, name)
		if i < 0 || len(bytes.TrimSpace(line[i:])) != len(name) {
			continue
		}
		f, ok := parseVlogMapping(line, i+len(name)-len(filepath.Base(path)))
		f.path = path
		return f, ok
	}
	return vlogFile{}, false
}

// parseVlogMapping reads the fid and the address range of one line of
// /proc/self/maps whose file name (a value-log file, NNNNNN.vlog) starts
// at byte i, if the mapping is writable.
func parseVlogMapping(line []byte, i int) (vlogFile, bool) {
	base := string(bytes.TrimSpace(line[i:]))
	name, ok := strings.CutSuffix(base, ".vlog")
	if !ok {
		return vlogFile{}, false
	}
	fid, err := strconv.Atoi(name)
	fields := strings.Fields(string(line[:i]))
	if err != nil || len(fields) < 2 || !strings.HasPrefix(fields[1], "rw") {
		return vlogFile{}, false
	}
	lo, hi, ok := strings.Cut(fields[0], "-")
	a, err1 := strconv.ParseUint(lo, 16, 64)
	b, err2 := strconv.ParseUint(hi, 16, 64)
	if !ok || err1 != nil || err2 != nil || b <= a {
		return vlogFile{}, false
	}
	return vlogFile{fid: fid, start: uintptr(a), length: uintptr(b - a)}, true
}

// residentPrefix is the length of the mapping's leading run of pages in
// memory: for a value-log file seen for the first time, about what Badger
// has written to it.
func residentPrefix(start, length uintptr) (uintptr, error) {
	const page = 4096
	vec := make([]byte, (length+page-1)/page)
	_, _, errno := syscall.Syscall(syscall.SYS_MINCORE, start, length, uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return 0, errno
	}
	for i, v := range vec {
		if v&1 == 0 {
			return uintptr(i) * page, nil
		}
	}
	return length, nil
}

// Reads go through Badger's mappings of the value-log files too: a chunk
// read touches its pack's pages there. In a mapping of 4 KiB pages a read
// fault reads around it (read_ahead_kb, 8 MiB here) but maps at most 16
// pages, and on this VM the first touch of every page-table entry exits to
// the host. A mapping advised for 2 MiB folios (MADV_HUGEPAGE) takes one
// fault and one entry per 2 MiB. strata-bench, strata alone, one round
// each, alternated twice, 4 GiB data set (1.8 GB of value log):
// 4 KiB random reads 30.8-38.9k -> 48.0-52.2k IOPS, 64 KiB random reads
// 1060-1351 -> 1563 MB/s, the sequential read 1495-1559 -> 1845-1878 MB/s
// and 3.4-3.6 -> 2.7 CPU-s; the bytes read from the disk did not grow
// (1770-1790 -> 1624 MB: the folios read around less than 8 MiB).
//
// The price is what a miss reads: in such a mapping a fault on a page not
// in memory reads two 2 MiB folios, however random the reads before it,
// where a plain mapping stops reading around after about a hundred misses
// that the reads around them did not save. While the whole value log
// fits in a share of memory that costs at most reading the store into the
// page cache sooner; beyond that, random reads of a large store would
// read 4 MiB for every 4 KiB chunk they miss. So the advice holds while
// the value-log files add up to at most Options.HugeReadLimit (a quarter
// of memory by default), is given at Open and checked again whenever
// Badger's writer leaves a file.

// hugeReads says whether the store's value-log files are small enough to
// be mapped for reading in 2 MiB folios.
func (s *Store) hugeReads() bool {
	limit := s.opts.HugeReadLimit
	if limit < 0 || !transparentHugepages() {
		return false
	}
	if limit == 0 {
		var si syscall.Sysinfo_t
		if syscall.Sysinfo(&si) != nil {
			return false
		}
		limit = int64(si.Totalram) * int64(si.Unit) / 4
	}
	total, err := s.valueLogBytes()
	return err == nil && total <= limit
}

// valueLogBytes is what the store's value-log files hold.
func (s *Store) valueLogBytes() (int64, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".vlog") {
			continue
		}
		// What the file holds on the disk: Badger sizes the writer's
		// file to twice ValueLogFileSize, sparse, and the prefaulter
		// fills it up to prefaultLead past the writer, so that file
		// counts for somewhat more than Badger has written to it.
		if fi, err := e.Info(); err == nil {
			size := fi.Size()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				size = min(size, st.Blocks*512)
			}
			total += size
		}
	}
	return total, nil
}

// adviseReads advises every value-log mapping in maps (the text of
// /proc/self/maps) of the store in dir (as mappedDir names it) but the
// writer's (path writer, which the prefaulter advises for 2 MiB folios as
// it writes) for 2 MiB folios or against them, as hugeReads says. Advice
// keeps data, so a mapping Badger has just changed costs at most a
// wasted call.
func (s *Store) adviseReads(maps []byte, dir, writer string) {
	advice := uintptr(madvNoHugepage)
	if s.hugeReads() {
		advice = madvHugepage
	}
	for f := range vlogMappings(maps, dir) {
		if f.path != writer {
			madvise(f.start, f.length, advice)
		}
	}
}

// adviseReadsAtOpen is adviseReads for a store just opened: Badger has
// mapped its files anew, and no writer has been seen yet.
func (s *Store) adviseReadsAtOpen() {
	dir, err := mappedDir(s.dir)
	if err != nil {
		return
	}
	if maps, err := os.ReadFile("/proc/self/maps"); err == nil {
		s.adviseReads(maps, dir, "")
	}
}

// transparentHugepages says whether the kernel may back a mapping advised
// MADV_HUGEPAGE with 2 MiB folios. With the setting at "never" it does
// not, but a fault there still reads 4 MiB around it.
func transparentHugepages() bool {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	return err == nil && !bytes.Contains(b, []byte("[never]"))
}

// mappedDir is dir as /proc/self/maps names the files in it: absolute,
// with symbolic links resolved.
func mappedDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}
