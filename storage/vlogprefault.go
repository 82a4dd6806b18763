package storage

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Badger appends values to its current value-log file through a shared
// mmap, from its single writer goroutine. The file is fresh (a sparse
// file), so every 4 KiB page it copies into first takes a page fault that
// allocates and zeroes a page-cache page: measured here, copying into a
// fresh mapping ran at 160-600 MB/s and into a populated one at 0.9-2 GB/s.
// For overlay writes (hundreds of MB/s of 4 KiB records) those faults are
// most of the writer's time, and every commit waits for the writer.
//
// vlogPrefaulter moves that work off the writer: after commits that sent
// values to the value log, a goroutine populates the pages just ahead of
// the write offset (madvise MADV_POPULATE_WRITE, one call for many pages),
// so the writer copies into memory that is already there. It never reads
// or writes the mapping itself, only asks the kernel about it (mincore,
// madvise), so a mapping Badger has just unmapped costs an error, not a
// crash; populating a page does not change its contents.
type vlogPrefaulter struct {
	dir string // absolute, as /proc/self/maps names the files

	mu      sync.Mutex
	running bool
	pending uintptr // bytes committed to the value log since the last round

	// The current file's mapping and where the writer is in it (an
	// estimate: the resident prefix when first seen, plus the bytes
	// committed since), and how far it is populated.
	fid           int
	start, length uintptr
	est, done     uintptr
}

// prefaultLead is how far ahead of the writer pages are populated: a few
// group commits (4 MiB each), so the writer does not catch up between
// rounds. Kept small because a populated page is dirty: a Store.Sync before
// Badger writes it writes a page of zeros, up to prefaultLead bytes extra
// per sync (and a page past the end of a file stays so until Badger
// truncates the file).
const prefaultLead = 16 << 20

// prefaultMinCommit: only commits this big start a round. They mean a
// stream of large writes, where the writer's page faults are the limit;
// small commits (random 4 KiB writes, often with FUA) gain little and
// would pay the zero pages on their frequent syncs. Their bytes still
// move the estimate of the write offset.
const prefaultMinCommit = 1 << 20

const madvPopulateWrite = 23 // MADV_POPULATE_WRITE, Linux 5.14

var (
	prefaulters     sync.Map // absolute dir -> *vlogPrefaulter
	prefaultBroken  atomic.Bool
	errNoVlogMapped = errors.New("no value-log mapping")
)

// vlogEntryBytes estimates what an entry takes in the value log (header,
// key with its namespace byte and version, value, checksum), or 0 if its
// value stays in the LSM tree.
func (s *Store) vlogEntryBytes(key, val []byte) uintptr {
	if s.opts.InMemory || len(val) <= vlogThreshold {
		return 0
	}
	return uintptr(len(key) + len(val) + 32)
}

// vlogThreshold is badgerOptions' value threshold.
const vlogThreshold = 256

// prefaultVlog notes that a commit sent n bytes to the value log and makes
// sure a round of populating runs.
func (s *Store) prefaultVlog(n uintptr) {
	if n == 0 || prefaultBroken.Load() {
		return
	}
	v, ok := prefaulters.Load(s.dir)
	if !ok {
		abs, err := filepath.Abs(s.dir)
		if err != nil {
			return
		}
		v, _ = prefaulters.LoadOrStore(s.dir, &vlogPrefaulter{dir: abs})
	}
	p := v.(*vlogPrefaulter)
	p.mu.Lock()
	p.pending += n
	if p.running || n < prefaultMinCommit {
		p.mu.Unlock()
		return
	}
	p.running = true
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
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		p.round(n, s.valueLogFileSize())
	}
}

func (s *Store) valueLogFileSize() uintptr {
	if s.opts.ValueLogFileSize > 0 {
		return uintptr(s.opts.ValueLogFileSize)
	}
	return 256 << 20
}

// round advances the estimate by n committed bytes and populates up to
// prefaultLead past it, within the file's useful length.
func (p *vlogPrefaulter) round(n, fileSize uintptr) {
	fid, start, length, err := p.currentMapping()
	if err != nil {
		return
	}
	if fid != p.fid || start != p.start || length != p.length {
		est, err := residentPrefix(start, length)
		if err != nil {
			return
		}
		p.fid, p.start, p.length, p.est, p.done = fid, start, length, est, est
	} else {
		p.est += n
	}
	const page = 4096
	limit := min(length, fileSize+8<<20) &^ (page - 1)
	from := max(p.done, p.est&^(page-1))
	to := min(p.est+prefaultLead, limit) &^ (page - 1)
	if to <= from {
		return
	}
	_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, start+from, to-from, madvPopulateWrite)
	switch errno {
	case 0:
		p.done = to
	case syscall.EINVAL:
		prefaultBroken.Store(true) // an older kernel: stop trying
	}
}

// currentMapping finds the writable mapping of the dir's newest value-log
// file in /proc/self/maps.
func (p *vlogPrefaulter) currentMapping() (fid int, start, length uintptr, err error) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, 0, 0, err
	}
	fid = -1
	prefix := []byte(p.dir + "/")
	for line := range bytes.Lines(maps) {
		i := bytes.Index(line, prefix)
		if i < 0 || !bytes.HasSuffix(bytes.TrimSpace(line), []byte(".vlog")) {
			continue
		}
		name := strings.TrimSuffix(string(bytes.TrimSpace(line[i+len(prefix):])), ".vlog")
		f, err := strconv.Atoi(name)
		if err != nil || f <= fid {
			continue
		}
		fields := strings.Fields(string(line[:i]))
		if len(fields) < 2 || !strings.HasPrefix(fields[1], "rw") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || b <= a {
			continue
		}
		fid, start, length = f, uintptr(a), uintptr(b-a)
	}
	if fid < 0 {
		return 0, 0, 0, errNoVlogMapped
	}
	return fid, start, length, nil
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
