package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
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

// TestValueLogPrefaultKeepsValues: large SetRef commits populate the value
// log ahead of Badger's writer, across a file rotation (32 MiB files: the
// kernel may back a smaller file with one large folio, all of it resident
// at the first write), and every value reads back as written, before and
// after a reopen.
func TestValueLogPrefaultKeepsValues(t *testing.T) {
	if prefaultBroken.Load() {
		t.Skip("kernel without MADV_POPULATE_WRITE")
	}
	o := testOptions()
	o.ValueLogFileSize = 32 << 20
	dir := t.TempDir()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	const perTxn, txns = 300, 40 // 1.2 MB a commit: each starts a round
	firstFid := -1
	for n := 0; n < txns; n++ {
		err := s.Update(func(tx *Txn) error {
			for i := n * perTxn; i < (n+1)*perTxn; i++ {
				if err := tx.SetRef([]byte(fmt.Sprintf("k%08d", i)), recordValue(i)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if firstFid < 0 {
			firstFid = prefaulterOf(t, s).fid
		}
	}
	p := prefaulterOf(t, s)
	if p.fid <= firstFid {
		t.Fatalf("prefaulter still on value-log file %d: 49 MB over 32 MiB files should have moved to the next", p.fid)
	}
	if p.done <= p.est&^4095 {
		t.Fatalf("populated up to %d, not ahead of the estimated write offset %d", p.done, p.est)
	}
	check := func(s *Store, when string) {
		err := s.View(func(tx *Txn) error {
			for i := 0; i < txns*perTxn; i++ {
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
	check(s, "before reopen")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s, "after reopen")
}

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
	if p.running || p.done != 0 {
		t.Fatalf("small commits populated the value log (running %v, done %d)", p.running, p.done)
	}
	if p.pending < 50*4105 {
		t.Fatalf("small commits' bytes not counted toward the write offset: %d", p.pending)
	}
}
