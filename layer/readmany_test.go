package layer

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestMultiChunkReadsFetchEachChunkOnce has four disks on one pooled image
// read it at once, in multi-chunk reads of different sizes and alignments,
// through a fresh cache that holds the whole image: every read returns the
// image's bytes, and each distinct chunk is read from the store exactly
// once, whichever reader's batch fetched it and however many waited on it.
func TestMultiChunkReadsFetchEachChunkOnce(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 4096)
	const chunks = 96
	img := make([]byte, chunks*4096)
	fillRand(rand.New(rand.NewPCG(7, 7)), img)
	clear(img[10*4096 : 12*4096]) // a hole: read as zeros, never fetched
	id := e.importBytes(img)
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	e.m.cache = newChunkCache(e.store, 64<<20)
	var vols []Volume
	for range 4 {
		v := e.openDisk(e.createDisk(id, int64(len(img)), true))
		defer v.Close()
		vols = append(vols, v)
	}
	sizes := []int{64 << 10, 3 * 4096, 4096 + 512, 128 << 10}
	var wg sync.WaitGroup
	errs := make(chan error, len(vols))
	for i, v := range vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, sizes[i])
			// Each reader starts at another place and wraps around,
			// shifted by 512 bytes for the unaligned size.
			start := int64(i*len(img)/len(vols)) &^ 4095
			if i == 2 {
				start += 512
			}
			for n := int64(0); n < int64(len(img)); n += int64(len(buf)) {
				off := (start + n) % int64(len(img))
				q := buf[:min(int64(len(buf)), int64(len(img))-off)]
				if err := v.ReadAt(ctx, q, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(q, img[off:off+int64(len(q))]) {
					t.Errorf("reader %d: bytes at %d differ from the image", i, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	distinct := int64(chunks - 2)
	if got := e.m.cache.misses.Load(); got != distinct {
		t.Fatalf("store reads = %d, want %d (one per distinct chunk)", got, distinct)
	}
}
