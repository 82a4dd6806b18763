package layer

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestTryReadAt checks, case by case, that TryReadAt serves exactly the
// reads it can serve from memory (cached chunks, holes, zeroed overlay
// blocks, the zeros past a base's end) with the bytes ReadAt gives, and
// declines, leaving p untouched, wherever a store read would be needed
// (a chunk not cached, an overlay data block) or ReadAt has an error to
// report.
func TestTryReadAt(t *testing.T) {
	ctx := context.Background()
	const cs = 64 << 10
	e := newEnv(t, cs)
	rng := rand.New(rand.NewPCG(11, 1))
	img := make([]byte, 16*cs)
	fillRand(rng, img)
	clear(img[3*cs : 4*cs]) // chunk 3 is a hole
	imgID := e.importBytes(img)
	diskID := e.createDisk(imgID, int64(len(img))+2*cs, true)
	e.reopen() // a cold cache, whatever the import left in it

	lv, err := e.m.OpenLayer(imgID)
	if err != nil {
		t.Fatal(err)
	}
	defer lv.Close()
	dv := e.openDisk(diskID)
	defer dv.Close()
	// Chunks 0 and 1 cached (an image's chunk is kept on its second miss);
	// 2 and up not.
	for range 2 {
		if err := lv.ReadAt(ctx, make([]byte, 2*cs), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Overlay: a data block in chunk 1, zeroed blocks 2-3 in chunk 0, a
	// trimmed block in chunk 2 (not cached: the trim hides it).
	if err := dv.WriteAt(ctx, bytes.Repeat([]byte{7}, blockSize), 20*blockSize, false); err != nil {
		t.Fatal(err)
	}
	if err := dv.WriteZeroes(ctx, 2*blockSize, 2*blockSize, false, false, false); err != nil {
		t.Fatal(err)
	}
	if err := dv.Trim(ctx, 2*cs, blockSize, false); err != nil {
		t.Fatal(err)
	}
	closed := e.openDisk(diskID)
	closed.Close()

	cases := []struct {
		name string
		v    Volume
		off  int64
		n    int
		want bool
	}{
		{"layer cached", lv, 0, blockSize, true},
		{"layer cached unaligned", lv, 100, 3000, true},
		{"layer across two cached chunks", lv, cs - blockSize, 2 * blockSize, true},
		{"layer uncached", lv, 2 * cs, blockSize, false},
		{"layer cached then uncached", lv, 2*cs - blockSize, 2 * blockSize, false},
		{"layer hole", lv, 3 * cs, cs, true},
		{"layer past end", lv, int64(len(img)) - 10, 20, false},
		{"disk base cached", dv, 0, blockSize, true},
		{"disk zeroed blocks", dv, 2 * blockSize, 2 * blockSize, true},
		{"disk zeroed and base", dv, blockSize, 4 * blockSize, true},
		{"disk base next to data block", dv, 19 * blockSize, blockSize, true},
		{"disk data block", dv, 20 * blockSize, blockSize, false},
		{"disk data block partly", dv, 20*blockSize - 10, 20, false},
		{"disk trimmed over uncached", dv, 2 * cs, blockSize, true},
		{"disk trimmed then uncached", dv, 2 * cs, 2 * blockSize, false},
		{"disk base hole", dv, 3*cs + 5, 7000, true},
		{"disk past the base", dv, int64(len(img)), cs, true},
		{"disk across the base's end", dv, int64(len(img)) - blockSize, 2 * blockSize, false},
		{"disk out of range", dv, dv.Size() - 10, 20, false},
		{"disk closed", closed, 0, blockSize, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := bytes.Repeat([]byte{0xAA}, c.n)
			got := c.v.(tryReader).TryReadAt(p, c.off)
			if got != c.want {
				t.Fatalf("TryReadAt [%d,+%d) = %v, want %v", c.off, c.n, got, c.want)
			}
			if !got {
				if !bytes.Equal(p, bytes.Repeat([]byte{0xAA}, c.n)) {
					t.Fatal("declined, but wrote to p")
				}
				return
			}
			want := make([]byte, c.n)
			if err := c.v.ReadAt(ctx, want, c.off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, want) {
				t.Fatalf("TryReadAt [%d,+%d): %s", c.off, c.n, firstDiff(p, want))
			}
		})
	}
	// Chunk 15 (the base's last) is not cached; once read twice it is, and
	// the read across the base's end is served.
	for range 2 {
		if err := lv.ReadAt(ctx, make([]byte, 1), int64(len(img))-1); err != nil {
			t.Fatal(err)
		}
	}
	p := make([]byte, 2*blockSize)
	if !dv.(tryReader).TryReadAt(p, int64(len(img))-blockSize) {
		t.Fatal("read across the base's end declined with its last chunk cached")
	}
	if !bytes.Equal(p[:blockSize], img[len(img)-blockSize:]) || !isZero(p[blockSize:]) {
		t.Fatal("read across the base's end: wrong bytes")
	}
}

// blockPattern fills a 4 KiB block with bytes that name the block and a
// version, so a reader can tell a whole block from a torn one.
func blockPattern(p []byte, b int64, ver uint64) {
	binary.LittleEndian.PutUint64(p, uint64(b))
	binary.LittleEndian.PutUint64(p[8:], ver)
	for i := 16; i < len(p); i++ {
		p[i] = byte(ver*31 + uint64(i)/16)
	}
}

// checkBlock reports whether p (one block) is zeros or blockPattern of b.
func checkBlock(p []byte, b int64) bool {
	if isZero(p) {
		return true
	}
	if int64(binary.LittleEndian.Uint64(p)) != b {
		return false
	}
	want := make([]byte, len(p))
	blockPattern(want, b, binary.LittleEndian.Uint64(p[8:]))
	return bytes.Equal(p, want)
}

// TestTryReadAtConcurrent runs TryReadAt on a disk and on its snapshots
// while a writer writes, trims and snapshots it and seals run: every block
// a read returns must be whole (zeros or one version of that block), and
// the race detector checks the locking.
func TestTryReadAtConcurrent(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 16<<10)
	const blocks = 256
	img := make([]byte, blocks*blockSize)
	for b := int64(0); b < blocks; b++ {
		blockPattern(img[b*blockSize:(b+1)*blockSize], b, 0)
	}
	imgID := e.importBytes(img)
	diskID := e.createDisk(imgID, int64(len(img)), true)
	dv := e.openDisk(diskID)
	defer dv.Close()
	if err := dv.ReadAt(ctx, make([]byte, len(img)), 0); err != nil {
		t.Fatal(err) // warm the cache: most tries should be served
	}
	ops := 400
	if testing.Short() {
		ops = 150
	}

	var (
		mu    sync.Mutex
		snaps []Volume
		done  = make(chan struct{})
		wg    sync.WaitGroup
		fails = make(chan string, 4)
	)
	reader := func(seed uint64) {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 3))
		p := make([]byte, 4*blockSize)
		for {
			select {
			case <-done:
				return
			default:
			}
			v := dv
			mu.Lock()
			if len(snaps) > 0 && rng.IntN(2) == 0 {
				v = snaps[rng.IntN(len(snaps))]
			}
			mu.Unlock()
			b0 := rng.Int64N(blocks - 3)
			if !v.(tryReader).TryReadAt(p, b0*blockSize) {
				continue
			}
			for i := int64(0); i < 4; i++ {
				if !checkBlock(p[i*blockSize:(i+1)*blockSize], b0+i) {
					fails <- "torn or misplaced block"
					return
				}
			}
		}
	}
	wg.Add(2)
	go reader(1)
	go reader(2)

	rng := rand.New(rand.NewPCG(5, 5))
	blk := make([]byte, blockSize)
	for op := 0; op < ops; op++ {
		b := rng.Int64N(blocks)
		switch k := rng.IntN(10); {
		case k < 6:
			blockPattern(blk, b, uint64(op+1))
			if err := dv.WriteAt(ctx, blk, b*blockSize, false); err != nil {
				t.Fatal(err)
			}
		case k < 8:
			n := min(blocks-b, 1+rng.Int64N(4))
			if err := dv.Trim(ctx, b*blockSize, n*blockSize, false); err != nil {
				t.Fatal(err)
			}
		default:
			sid, err := e.m.Snapshot(ctx, diskID)
			if err != nil {
				t.Fatal(err)
			}
			v, err := e.m.OpenLayer(sid)
			if err != nil {
				t.Fatal(err)
			}
			// Read the snapshot whole so its chunks (new ones, once
			// sealed) come into the cache for the readers.
			if err := v.ReadAt(ctx, make([]byte, len(img)), 0); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			snaps = append(snaps, v)
			mu.Unlock()
		}
	}
	close(done)
	wg.Wait()
	close(fails)
	for f := range fails {
		t.Error(f)
	}
	for _, v := range snaps {
		v.Close()
	}
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
}
