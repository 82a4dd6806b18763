package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// prefaulterOf waits for s's prefaulter to finish its rounds and returns it.
func prefaulterOf(t *testing.T, s *Store) *vlogPrefaulter {
	t.Helper()
	v, ok := prefaulters.Load(s.dir)
	if !ok {
		t.Fatal("no prefaulter after large commits")
	}
	p := v.(*vlogPrefaulter)
	for {
		p.mu.Lock()
		running := p.running
		p.mu.Unlock()
		if !running {
			return p
		}
		runtime.Gosched()
	}
}

func recordValue(i int) []byte {
	v := bytes.Repeat([]byte(fmt.Sprintf("value %d ", i)), 4105/8+1)[:4105]
	binary.BigEndian.PutUint64(v, uint64(i))
	return v
}

// prefaultStore opens a store with value-log files of fileSize bytes for
// the prefaulter's tests, which need MADV_POPULATE_WRITE (Linux 5.14):
// without it the prefaulter stays off and there is nothing to test.
func prefaultStore(t *testing.T, fileSize int64) (*Store, string, Options) {
	t.Helper()
	if prefaultBroken.Load() {
		t.Skip("kernel without MADV_POPULATE_WRITE")
	}
	o := testOptions()
	o.ValueLogFileSize = fileSize
	s, dir := openIn(t, o)
	return s, dir, o
}

// commitRecords writes records [from, to) (k%08d -> recordValue) in one
// transaction: 4 KiB values, which go to the value log.
func commitRecords(t *testing.T, s *Store, from, to int) {
	t.Helper()
	err := s.Update(func(tx *Txn) error {
		for i := from; i < to; i++ {
			if err := tx.SetRef([]byte(fmt.Sprintf("k%08d", i)), recordValue(i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkRecords reads records [0, n) back (see commitRecords).
func checkRecords(t *testing.T, s *Store, n int, when string) {
	t.Helper()
	err := s.View(func(tx *Txn) error {
		for i := range n {
			v, err := tx.Get([]byte(fmt.Sprintf("k%08d", i)))
			if err != nil {
				return err
			}
			if !bytes.Equal(v, recordValue(i)) {
				return fmt.Errorf("value %d differs", i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
}

// TestValueLogPrefaultKeepsValues: large SetRef commits populate the value
// log ahead of Badger's writer and write back and drop what lies behind it,
// within a file and, across file rotations (40 MiB files), all of a file
// the writer left; every value reads back as written (from the disk where
// its page was dropped), before and after a reopen.
func TestValueLogPrefaultKeepsValues(t *testing.T) {
	s, dir, o := prefaultStore(t, 40<<20)
	const perTxn, txns = 300, 70 // 1.2 MB a commit: each starts a round
	firstFid := -1
	var maxDropped uintptr
	for n := 0; n < txns; n++ {
		commitRecords(t, s, n*perTxn, (n+1)*perTxn)
		p := prefaulterOf(t, s)
		if firstFid < 0 {
			firstFid = p.cur.fid
		}
		maxDropped = max(maxDropped, p.cur.dropped)
	}
	p := prefaulterOf(t, s)
	if p.cur.fid < firstFid+2 {
		t.Fatalf("prefaulter on value-log file %d, first %d: 86 MB over 40 MiB files should have moved two files on", p.cur.fid, firstFid)
	}
	if p.cur.done <= p.cur.est&^4095 {
		t.Fatalf("populated up to %d, not ahead of the estimated write offset %d", p.cur.done, p.cur.est)
	}
	if maxDropped < 4<<20 {
		t.Fatalf("dropped at most %d bytes of a file while writing 42 MB into it", maxDropped)
	}
	for fid := firstFid; fid < p.cur.fid; fid++ {
		if pct := residentPercent(t, p.dir, fid); pct > 10 {
			t.Errorf("value-log file %d, which the writer left, is %d%% in memory", fid, pct)
		}
		if fl := vmFlags(t, p.dir, fid); !fl["hg"] {
			t.Errorf("value-log file %d, which the writer left, no longer advised for 2 MiB folios (the store is far below HugeReadLimit): %v", fid, fl)
		}
	}
	if fl := vmFlags(t, p.dir, p.cur.fid); !fl["hg"] {
		t.Errorf("the writer's value-log file not advised for 2 MiB folios: %v", fl)
	}
	checkRecords(t, s, txns*perTxn, "before reopen")
	s = reopen(t, s, dir, o)
	checkRecords(t, s, txns*perTxn, "after reopen")
}

// TestValueLogFlushedAsItFills: while a stream fills a value-log file,
// the prefaulter has the device flush it every flushEvery bytes dropped,
// so that Badger's sync of the whole file when it leaves it (in its
// writer's goroutine) finds little left to write.
func TestValueLogFlushedAsItFills(t *testing.T) {
	s, _, _ := prefaultStore(t, 128<<20)
	before := deviceFlushes.done.Load()
	const perTxn, txns = 300, 90 // 1.2 MB a commit, 108 MB in one file
	for n := 0; n < txns; n++ {
		commitRecords(t, s, n*perTxn, (n+1)*perTxn)
	}
	p := prefaulterOf(t, s)
	deviceFlushes.wg.Wait()
	if p.cur.flushed < flushEvery {
		t.Fatalf("flushes started up to %d MiB of the file, dropped up to %d MiB: want one every %d MiB", p.cur.flushed>>20, p.cur.dropped>>20, flushEvery>>20)
	}
	if got := deviceFlushes.done.Load() - before; got < 1 {
		t.Fatalf("%d device flushes finished", got)
	}
}

// TestValueLogPrefaultFollowsPuts: chunk puts send packs of a few hundred
// KiB, under prefaultMinCommit, yet as a stream of large values they start
// rounds too: pages ahead of the writer are populated, the files it left
// are dropped, and every chunk reads back, before and after a reopen.
func TestValueLogPrefaultFollowsPuts(t *testing.T) {
	s, dir, o := prefaultStore(t, 16<<20)
	const perPut, puts = 48, 220 // 197 KB a put, 43 MB in all
	cs := s.ChunkSize()
	// Distinct chunks that do not compress, cheaply: slices of one random
	// block, each stamped with its number.
	block := randomChunk(rand.New(rand.NewPCG(73, 74)), 16*cs)
	chunk := func(i int) []byte {
		c := bytes.Clone(block[i%16*cs : (i%16+1)*cs])
		binary.LittleEndian.PutUint64(c, uint64(i))
		return c
	}
	l := s.NewLease()
	ids := make([]ChunkID, 0, perPut*puts)
	firstFid := -1
	for n := range puts {
		raws := make([][]byte, perPut)
		for i := range raws {
			raws[i] = chunk(n*perPut + i)
		}
		got, err := s.PutMany(raws, l)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
		if firstFid < 0 {
			firstFid = prefaulterOf(t, s).cur.fid
		}
	}
	p := prefaulterOf(t, s)
	if p.cur.fid < firstFid+2 {
		t.Fatalf("prefaulter on value-log file %d, first %d: 43 MB of packs over 16 MiB files should have moved two files on", p.cur.fid, firstFid)
	}
	if p.cur.done <= p.cur.est&^4095 {
		t.Fatalf("populated up to %d, not ahead of the estimated write offset %d", p.cur.done, p.cur.est)
	}
	for fid := firstFid; fid < p.cur.fid; fid++ {
		if pct := residentPercent(t, p.dir, fid); pct > 10 {
			t.Errorf("value-log file %d, which the writer left, is %d%% in memory", fid, pct)
		}
	}
	check := func(s *Store, when string) {
		buf := make([]byte, cs)
		for i, id := range ids {
			got, err := s.Get(id, buf)
			if err != nil {
				t.Fatalf("%s: chunk %d: %v", when, i, err)
			}
			if !bytes.Equal(got, chunk(i)) {
				t.Fatalf("%s: chunk %d differs", when, i)
			}
		}
	}
	check(s, "before reopen")
	l.Release()
	s = reopen(t, s, dir, o)
	check(s, "after reopen")
}

// residentPercent is how much of value-log file fid's mapping is in memory.
func residentPercent(t *testing.T, dir string, fid int) int {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	m, ok := mappingOf(maps, filepath.Join(dir, fmt.Sprintf("%06d.vlog", fid)))
	if !ok {
		t.Fatalf("value-log file %d not mapped", fid)
	}
	vec := make([]byte, m.length/4096)
	_, _, errno := syscall.Syscall(syscall.SYS_MINCORE, m.start, m.length, uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		t.Fatal(errno)
	}
	in := 0
	for _, v := range vec {
		in += int(v & 1)
	}
	return in * 100 / len(vec)
}

// vmFlags are the VmFlags of value-log file fid's writable mapping in
// /proc/self/smaps.
func vmFlags(t *testing.T, dir string, fid int) map[string]bool {
	t.Helper()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, fmt.Sprintf("%06d.vlog", fid))
	in := false
	for line := range bytes.Lines(smaps) {
		fields := strings.Fields(string(line))
		switch {
		case len(fields) >= 6 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			in = fields[len(fields)-1] == name && strings.HasPrefix(fields[1], "rw")
		case in && len(fields) > 0 && fields[0] == "VmFlags:":
			fl := map[string]bool{}
			for _, f := range fields[1:] {
				fl[f] = true
			}
			return fl
		}
	}
	t.Fatalf("value-log file %d not mapped", fid)
	return nil
}

// TestVlogEntryBytesIsBadgers: the estimate of the write offset adds up
// exactly what Badger appends: after a reopen (which truncates the value
// log to what was written), the file holds its header and the entries.
func TestVlogEntryBytesIsBadgers(t *testing.T) {
	o := testOptions()
	s, dir := openIn(t, o)
	var want uintptr
	err := s.Update(func(tx *Txn) error {
		for i, n := range []int{vlogThreshold, 300, 4105, 20000, 200000} {
			key, val := []byte(fmt.Sprintf("key %d", i)), bytes.Repeat([]byte{'v'}, n)
			want += s.vlogEntryBytes(1+len(key), val)
			if err := tx.SetRef(key, val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// New chunks: commitPuts counts the pack it sends.
	rng := rand.New(rand.NewPCG(71, 72))
	var items []*putItem
	for range 40 {
		raw := randomChunk(rng, s.ChunkSize())
		items = append(items, &putItem{raw: raw, hash: s.hash.sum(raw)})
	}
	res, err := s.commitPuts(items, nil, nil, new(putScratch))
	if err != nil {
		t.Fatal(err)
	}
	if res.vlogBytes == 0 {
		t.Fatal("a pack of 40 chunks counted nothing toward the value log")
	}
	want += res.vlogBytes
	if s.vlogEntryBytes(2, make([]byte, vlogThreshold-1)) != 0 {
		t.Error("a value under the threshold counted toward the value log")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no value-log file: %v", err)
	}
	var got int64
	for _, l := range logs {
		fi, err := os.Stat(l)
		if err != nil {
			t.Fatal(err)
		}
		got += fi.Size() - vlogHeaderBytes
	}
	if got != int64(want) {
		t.Fatalf("value log holds %d bytes of entries, estimate %d", got, want)
	}
}

// vlogHeaderBytes is Badger's value-log file header (key id, IV).
const vlogHeaderBytes = 20

// TestValueLogPrefaultSkipsSmallCommits: commits under prefaultMinCommit
// (random 4 KiB writes) start no round, so their syncs write no zero pages.
func TestValueLogPrefaultSkipsSmallCommits(t *testing.T) {
	s := openTest(t, testOptions())
	for n := 0; n < 50; n++ {
		err := s.Update(func(tx *Txn) error {
			return tx.SetRef([]byte(fmt.Sprintf("k%08d", n)), recordValue(n))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	v, ok := prefaulters.Load(s.dir)
	if !ok {
		t.Fatal("no prefaulter state after SetRef commits")
	}
	p := v.(*vlogPrefaulter)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running || p.cur.done != 0 {
		t.Fatalf("small commits populated the value log (running %v, done %d)", p.running, p.cur.done)
	}
	if p.pending < 50*4105 {
		t.Fatalf("small commits' bytes not counted toward the write offset: %d", p.pending)
	}
}

// TestValueLogReadAdviceFollowsLimit: value-log files are mapped for
// reading in 2 MiB folios while they add up to at most HugeReadLimit, and
// in 4 KiB pages once they pass it: as the writer leaves each file, and
// at Open.
func TestValueLogReadAdviceFollowsLimit(t *testing.T) {
	const fileSize, limit = 8 << 20, 40 << 20
	s, dir, o := prefaultStore(t, fileSize)
	o.HugeReadLimit = limit
	s = reopen(t, s, dir, o)
	const perTxn = 300 // 1.2 MB a commit: each starts a round
	// advice is the advice of every value-log file but the writer's:
	// "hg", "nh" or "" for none.
	advice := func(p *vlogPrefaulter, writer int) map[int]string {
		got := map[int]string{}
		for fid := 0; fid < writer; fid++ {
			if _, err := os.Stat(filepath.Join(p.dir, fmt.Sprintf("%06d.vlog", fid))); err != nil {
				continue
			}
			fl := vmFlags(t, p.dir, fid)
			switch {
			case fl["hg"] && fl["nh"]:
				t.Fatalf("value-log file %d advised both ways: %v", fid, fl)
			case fl["hg"]:
				got[fid] = "hg"
			case fl["nh"]:
				got[fid] = "nh"
			default:
				got[fid] = ""
			}
		}
		return got
	}
	n, firstFid := 0, -1
	var p *vlogPrefaulter
	// Fill the value log to just under the limit: the files the writer
	// left keep 2 MiB folios.
	for {
		commitRecords(t, s, n*perTxn, (n+1)*perTxn)
		n++
		p = prefaulterOf(t, s)
		if firstFid < 0 {
			firstFid = p.cur.fid
		}
		if p.cur.fid >= firstFid+2 {
			break
		}
	}
	if vlogTotal(t, p.dir) > limit {
		t.Fatalf("value log at %d bytes already, past the test's limit", vlogTotal(t, p.dir))
	}
	for fid, a := range advice(p, p.cur.fid) {
		if fid >= firstFid && a != "hg" {
			t.Errorf("under the limit: value-log file %d (left by the writer) advised %q, want hg", fid, a)
		}
	}
	// Past the limit, the next file the writer leaves turns every file
	// it left to 4 KiB pages. (Well past it: the writer's file counts
	// for twice its size until Close truncates it.)
	for vlogTotal(t, p.dir) <= limit+2*fileSize {
		commitRecords(t, s, n*perTxn, (n+1)*perTxn)
		n++
		p = prefaulterOf(t, s)
	}
	for at := p.cur.fid; p.cur.fid == at; n++ {
		commitRecords(t, s, n*perTxn, (n+1)*perTxn)
		p = prefaulterOf(t, s)
	}
	for fid, a := range advice(p, p.cur.fid) {
		if a != "nh" {
			t.Errorf("past the limit: value-log file %d advised %q, want nh", fid, a)
		}
	}
	// At Open the same, over the limit and under a larger one.
	s = reopen(t, s, dir, o)
	for fid, a := range advice(p, p.cur.fid+1) {
		if a != "nh" {
			t.Errorf("opened past the limit: value-log file %d advised %q, want nh", fid, a)
		}
	}
	o.HugeReadLimit = 0 // a quarter of memory
	s = reopen(t, s, dir, o)
	for fid, a := range advice(p, p.cur.fid+1) {
		if a != "hg" {
			t.Errorf("opened under the default limit: value-log file %d advised %q, want hg", fid, a)
		}
	}
	checkRecords(t, s, n*perTxn, "after the advice changed")
}

// vlogTotal is what the store's value-log files hold, as hugeReads counts.
func vlogTotal(t *testing.T, dir string) int64 {
	t.Helper()
	s := &Store{dir: dir}
	total, err := s.valueLogBytes()
	if err != nil {
		t.Fatal(err)
	}
	return total
}
