package layer

import (
	"context"
	"math/rand/v2"
	"testing"
)

// coldImageData is an image whose 4 KiB chunks are distinct and compress
// about 2:1 (half random, half a repeated byte), like a guest's files, so a
// store read pays for a zstd frame as it does on a real imported image.
func coldImageData() []byte {
	img := make([]byte, benchImage)
	rng := rand.New(rand.NewPCG(3, 3))
	for off := 0; off < len(img); off += 4096 {
		fillRand(rng, img[off:off+2048])
		b := byte(off >> 12)
		for i := off + 2048; i < off+4096; i++ {
			img[i] = b
		}
	}
	return img
}

// BenchmarkColdRead reads a disk over an imported image through a cache of
// a sixteenth of the image, so nearly every read goes to the store: the NBD
// read path for an image larger than the cache. rand4k and rand64k read at
// random aligned offsets, seq64k sweeps the disk in order.
func BenchmarkColdRead(b *testing.B) {
	ctx := context.Background()
	e := newBenchEnv(b)
	img := e.importBytes(coldImageData())
	settle(b, e)
	e.m.cache = newChunkCache(e.store, benchImage/16)
	d := e.openDisk(e.createDisk(img, benchImage, true))
	defer d.Close()
	for _, c := range []struct {
		name string
		size int64
		seq  bool
	}{{"rand4k", 4 << 10, false}, {"rand64k", 64 << 10, false}, {"seq64k", 64 << 10, true}} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, c.size)
			rng := rand.New(rand.NewPCG(4, 4))
			slots := benchImage / c.size
			h0, m0 := e.m.cache.hits.Load(), e.m.cache.misses.Load()
			b.SetBytes(c.size)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				slot := int64(i) % slots
				if !c.seq {
					slot = rng.Int64N(slots)
				}
				if err := d.ReadAt(ctx, buf, slot*c.size); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			hits, misses := e.m.cache.hits.Load()-h0, e.m.cache.misses.Load()-m0
			b.ReportMetric(float64(misses)/float64(max(hits+misses, 1)), "miss-ratio")
		})
	}
}
