package layer

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
)

// TestReadDuringTrim reads blocks while they are written, trimmed and
// overwritten with zeros, over and over. A read takes the overlay's index
// first and the blocks' records after, so it can find a record that a trim
// has just deleted, or that a zero write has just replaced; that is a race
// with a concurrent mutation, which must read as either side of it, never
// as ErrCorruptMeta. Every block read must be whole: all ones or all zeros.
func TestReadDuringTrim(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 4<<10)
	const n = 8 * blockSize
	id := e.createDisk(0, 4*n, false)
	v := e.openDisk(id)
	defer v.Close()
	ones := bytes.Repeat([]byte{1}, n)
	zero := make([]byte, blockSize)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 2)
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, n)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := v.ReadAt(ctx, p, 0); err != nil {
					errs <- err
					return
				}
				for b := 0; b < n; b += blockSize {
					blk := p[b : b+blockSize]
					if !bytes.Equal(blk, ones[:blockSize]) && !isZero(blk) {
						errs <- fmt.Errorf("block %d is torn", b/blockSize)
						return
					}
				}
			}
		}()
	}
	ops := 200 // without the race handling, it failed within 10
	if testing.Short() {
		ops = 80
	}
	for i := 0; i < ops; i++ {
		if err := v.WriteAt(ctx, ones, 0, false); err != nil {
			t.Fatal(err)
		}
		var err error
		switch i % 3 {
		case 0:
			err = v.Trim(ctx, 0, n, false)
		case 1:
			err = v.WriteZeroes(ctx, 0, n, false, false, false)
		default:
			for b := int64(0); b < n && err == nil; b += blockSize {
				err = v.WriteAt(ctx, zero, b, false) // a zero block record replaces the data one
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			t.Fatalf("op %d: %v", i, err)
		default:
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
