package layer

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
)

// TestConcurrentWritesReuseRecordBuffers: record buffers go back to a pool
// once their commit returns and are refilled by the next request at once.
// If the store kept a reference to a committed record instead of a copy,
// a later request's bytes would show up in an earlier request's blocks.
func TestConcurrentWritesReuseRecordBuffers(t *testing.T) {
	const (
		writers = 8
		reqSize = 75 * blockSize // not a power of two: a buffer has spare room
		rounds  = 6
		size    = writers * rounds * reqSize
	)
	ctx := context.Background()
	e := newEnv(t, 4096)
	id := e.createDisk(0, size, false)
	v := e.openDisk(id)
	pattern := func(w, r int) []byte {
		p := bytes.Repeat([]byte(fmt.Sprintf("w%d r%d ", w, r)), reqSize/6+1)[:reqSize]
		clear(p[blockSize : 2*blockSize]) // a zero block among data blocks
		return p
	}
	off := func(w, r int) int64 { return int64(r*writers+w) * reqSize }
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				if err := v.WriteAt(ctx, pattern(w, r), off(w, r), false); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	check := func(v Volume, when string) {
		got := make([]byte, reqSize)
		for w := 0; w < writers; w++ {
			for r := 0; r < rounds; r++ {
				if err := v.ReadAt(ctx, got, off(w, r)); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, pattern(w, r)) {
					t.Fatalf("%s: writer %d round %d reads other bytes than it wrote", when, w, r)
				}
			}
		}
	}
	check(v, "before reopen")
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	v.Close()
	e.reopen()
	v = e.openDisk(id)
	defer v.Close()
	check(v, "after reopen")
}

func TestRecordBufClasses(t *testing.T) {
	for _, n := range []int{1, 2, 3, 64, 65, 1000, writeBatchBlocks} {
		rb := getRecordBuf(n)
		if len(rb.b) < n*blockRecordSize {
			t.Fatalf("buffer for %d blocks holds %d bytes", n, len(rb.b))
		}
		for i := 0; i < n; i++ {
			rb.record(1, bData, make([]byte, blockSize))
		}
		rb.release()
	}
}

// TestWriteLargerThanOneTransaction: a request of more blocks than one
// transaction carries is committed in pieces, each with its own records.
func TestWriteLargerThanOneTransaction(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 4096)
	const size = 8 << 20
	v := e.openDisk(e.createDisk(0, size, false))
	defer v.Close()
	p := bytes.Repeat([]byte("0123456789abcdef"), (writeBatchBlocks+3)*blockSize/16+8)
	p = p[:(writeBatchBlocks+3)*blockSize+100]
	const off = 1000 // partial blocks at both ends
	if err := v.WriteAt(ctx, p, off, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p)+2*blockSize)
	if err := v.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, len(got))
	copy(want[off:], p)
	if !bytes.Equal(got, want) {
		t.Fatal("a request split over transactions reads back other bytes")
	}
}
