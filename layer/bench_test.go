package layer

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"strata/storage"
)

// buildSyntheticLayer writes a ready layer of size bytes whose chunks cycle
// through distinct stored chunks (1: one chunk repeated): a big map built
// without storing big data, through the same staging steps as an import.
func buildSyntheticLayer(tb testing.TB, m *Manager, size int64, distinct int) LayerID {
	tb.Helper()
	raw, err := m.newID()
	if err != nil {
		tb.Fatal(err)
	}
	id := LayerID(raw)
	if err := m.store.Update(func(tx *storage.Txn) error {
		return putLayerMeta(tx, id, &layerMeta{State: statePending, Size: size})
	}); err != nil {
		tb.Fatal(err)
	}
	lease := m.store.NewLease()
	defer lease.Release()
	rng := rand.New(rand.NewPCG(9, 9))
	// Put in batches as an import does, so the ids are minted in a row
	// (a pack's worth per transaction).
	cids := make([]storage.ChunkID, 0, distinct)
	for len(cids) < distinct {
		raws := make([][]byte, min(256, distinct-len(cids)))
		for i := range raws {
			raws[i] = make([]byte, m.chunkSize)
			fillRand(rng, raws[i])
		}
		ids, err := m.store.PutMany(raws, lease)
		if err != nil {
			tb.Fatal(err)
		}
		cids = append(cids, ids...)
	}
	nchunks := ceilDiv(size, m.chunkSize)
	staged := map[int64]uint64{}
	var batch []stagedLeaf
	for li := int64(0); li < ceilDiv(nchunks, fanout); li++ {
		lf := newLeaf()
		for j := int64(0); j < fanout && li*fanout+j < nchunks; j++ {
			lf.ids[j] = cids[(li*fanout+j)%int64(distinct)]
		}
		batch = append(batch, stagedLeaf{li, lf})
		if len(batch) == m.leavesPerTxn() || li == ceilDiv(nchunks, fanout)-1 {
			if err := m.stageLeaves(id, statePending, batch, staged); err != nil {
				tb.Fatal(err)
			}
			batch = nil
		}
	}
	dirs := map[int64]uint64{}
	if err := m.stageDirs(id, statePending, nil, staged, dirs); err != nil {
		tb.Fatal(err)
	}
	planned := plannedDirs(size, m.chunkSize, nil, dirs)
	if err := m.store.Update(func(tx *storage.Txn) error {
		lm, err := getLayerMeta(tx, id)
		if err != nil {
			return err
		}
		if err := finishDirs(tx, id, planned, dirs); err != nil {
			return err
		}
		lm.State, lm.Holders, lm.Dirs = stateReady, 1, planned
		return putLayerMeta(tx, id, lm)
	}); err != nil {
		tb.Fatal(err)
	}
	return id
}

func newBenchEnv(b *testing.B) *env {
	e := &env{t: b, dir: b.TempDir(), chunk: storage.DefaultOptions().ChunkSize, bench: true}
	e.open()
	b.Cleanup(e.close)
	return e
}

const benchImage = 64 << 20

// settle finishes background releases and lets Badger's compactions catch
// up, so a measurement does not pay for the setup's leftovers.
func settle(b *testing.B, e *env) {
	if err := e.m.drain(); err != nil {
		b.Fatal(err)
	}
	if err := e.store.Sync(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second)
}

func benchImageData() []byte {
	img := make([]byte, benchImage)
	fillRand(rand.New(rand.NewPCG(1, 1)), img)
	return img
}

// interleave runs op on every volume in turn, in rounds of 64 ops each,
// timing each round. On a shared 2-core machine background noise hits all
// sides alike this way, and the median round rate ignores the rounds a
// neighbour's burst stretched. It reports each volume's median ops/s and
// its ratio to the first volume's.
func interleave(b *testing.B, names []string, vols []Volume, op func(v Volume, off int64) error) {
	refs := make([]int, len(vols))
	refs[0] = -1
	interleaveRef(b, names, vols, refs, op)
}

// interleaveRef is interleave with each volume's ratio taken against
// vols[refs[i]] (none for -1).
func interleaveRef(b *testing.B, names []string, vols []Volume, refs []int, op func(v Volume, off int64) error) {
	const round = 64
	rng := rand.New(rand.NewPCG(2, 2))
	rates := make([][]float64, len(vols))
	b.ResetTimer()
	for n := 0; n < b.N; n += round {
		for i, v := range vols {
			start := time.Now()
			for k := 0; k < round; k++ {
				if err := op(v, rng.Int64N(v.Size()/blockSize)*blockSize); err != nil {
					b.Fatal(err)
				}
			}
			rates[i] = append(rates[i], round/time.Since(start).Seconds())
		}
	}
	med := make([]float64, len(vols))
	for i := range rates {
		slices.Sort(rates[i])
		med[i] = rates[i][len(rates[i])/2]
	}
	for i, name := range names {
		b.ReportMetric(med[i], name+"-ops/s")
		if refs[i] >= 0 {
			b.ReportMetric(100*med[i]/med[refs[i]], name+"-%")
		}
	}
}

// warm reads all of v twice: a chunk enters the cache on its second miss
// (a pooled disk's on its first).
func warm(b *testing.B, v Volume) {
	buf := make([]byte, 1<<20)
	for range 2 {
		for off := int64(0); off < v.Size(); off += int64(len(buf)) {
			if err := v.ReadAt(context.Background(), buf, off); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkRandom4K compares 4 KiB random writes on a fresh overlay over an
// imported image with those on a disk over an empty base, and 4 KiB random
// reads through a fresh overlay with reads of the flat image layer.
func BenchmarkRandom4K(b *testing.B) {
	ctx := context.Background()
	e := newBenchEnv(b)
	img := e.importBytes(benchImageData())
	settle(b, e)
	p := make([]byte, blockSize)
	fillRand(rand.New(rand.NewPCG(2, 2)), p)
	b.Run("write", func(b *testing.B) {
		empty := e.openDisk(e.createDisk(0, benchImage, false))
		defer empty.Close()
		over := e.openDisk(e.createDisk(img, benchImage, true))
		defer over.Close()
		interleave(b, []string{"empty", "overlay"}, []Volume{empty, over}, func(v Volume, off int64) error {
			return v.WriteAt(ctx, p, off, false)
		})
	})
	b.Run("read", func(b *testing.B) {
		flat, err := e.m.OpenLayer(img)
		if err != nil {
			b.Fatal(err)
		}
		over := e.openDisk(e.createDisk(img, benchImage, true))
		defer over.Close()
		warm(b, flat)
		buf := make([]byte, blockSize)
		interleave(b, []string{"flat", "overlay"}, []Volume{flat, over}, func(v Volume, off int64) error {
			return v.ReadAt(ctx, buf, off)
		})
	})
	// tryread: the nbd server's inline path, TryReadAt falling back to
	// ReadAt, against ReadAt on the flat layer, all in one interleave.
	b.Run("tryread", func(b *testing.B) {
		flat, err := e.m.OpenLayer(img)
		if err != nil {
			b.Fatal(err)
		}
		defer flat.Close()
		over := e.openDisk(e.createDisk(img, benchImage, true))
		defer over.Close()
		warm(b, flat)
		buf := make([]byte, blockSize)
		var tries, declined int
		interleave(b, []string{"flat-readat", "flat-try", "overlay-try"},
			[]Volume{flat, tryVolume{flat}, tryVolume{over}}, func(v Volume, off int64) error {
				tv, ok := v.(tryVolume)
				if !ok {
					return v.ReadAt(ctx, buf, off)
				}
				tries++
				if tv.Volume.(tryReader).TryReadAt(buf, off) {
					return nil
				}
				declined++
				return tv.ReadAt(ctx, buf, off)
			})
		b.ReportMetric(100*float64(declined)/float64(max(tries, 1)), "declined-%")
	})
}

// tryReader is nbd.TryReader, named here so the benchmark needs no nbd.
type tryReader interface {
	TryReadAt(p []byte, off int64) bool
}

// tryVolume marks a volume the benchmark reads through TryReadAt.
type tryVolume struct{ Volume }

// BenchmarkReadDepth reads 4 KiB at random from disks whose base is the
// n-th snapshot in a chain (each link: snapshot, disk on it, 64 random
// writes), all sealed, each against a disk on a flat image of the same
// bytes (depthN-% is depth N's reads per second over its twin's).
func BenchmarkReadDepth(b *testing.B) {
	ctx := context.Background()
	e := newBenchEnv(b)
	img := e.importBytes(benchImageData())
	id := e.createDisk(img, benchImage, false)
	rng := rand.New(rand.NewPCG(3, 3))
	p := make([]byte, blockSize)
	var names []string
	var vols []Volume
	var refs []int
	for depth := 1; depth <= 64; depth++ {
		v := e.openDisk(id)
		for j := 0; j < 64; j++ {
			fillRand(rng, p)
			if err := v.WriteAt(ctx, p, rng.Int64N(benchImage/blockSize)*blockSize, false); err != nil {
				b.Fatal(err)
			}
		}
		v.Close()
		sid, err := e.m.Snapshot(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.m.WaitSealed(ctx, sid, nil); err != nil {
			b.Fatal(err)
		}
		id = e.createDisk(sid, benchImage, false)
		if depth == 1 || depth == 16 || depth == 64 {
			// Its flat twin: the same bytes imported as an image of
			// their own, so it reads the very same chunks (dedup gives
			// them the same ids) through a one-layer map. The ratio then
			// measures the path, not which chunks are hot in the CPU's
			// caches: the original image shares most of its chunks with
			// the shallow layers, and a deep layer's own ones are colder.
			v := e.openDisk(e.createDisk(sid, benchImage, true))
			defer v.Close()
			twin := e.openDisk(e.createDisk(e.importBytes(readVolume(b, v)), benchImage, true))
			defer twin.Close()
			names = append(names, fmt.Sprintf("flat%d", depth), fmt.Sprintf("depth%d", depth))
			vols = append(vols, twin, v)
			refs = append(refs, -1, len(vols)-2)
		}
	}
	settle(b, e)
	for _, v := range vols {
		warm(b, v)
	}
	buf := make([]byte, blockSize)
	h0, m0 := e.m.cache.hits.Load(), e.m.cache.misses.Load()
	interleaveRef(b, names, vols, refs, func(v Volume, off int64) error { return v.ReadAt(ctx, buf, off) })
	b.ReportMetric(float64(e.m.cache.misses.Load()-m0)/float64(e.m.cache.hits.Load()-h0+e.m.cache.misses.Load()-m0), "miss-ratio")
}

// readVolume returns all of v's bytes.
func readVolume(b *testing.B, v Volume) []byte {
	data := make([]byte, v.Size())
	for off := int64(0); off < v.Size(); off += 1 << 20 {
		if err := v.ReadAt(context.Background(), data[off:min(off+1<<20, v.Size())], off); err != nil {
			b.Fatal(err)
		}
	}
	return data
}

// BenchmarkCreate100GiB times making a disk from a 100 GiB pooled image,
// a standard disk from it, and a snapshot of a live disk on it.
func BenchmarkCreate100GiB(b *testing.B) {
	ctx := context.Background()
	e := newBenchEnv(b)
	const size = 100 << 30
	img := buildSyntheticLayer(b, e.m, size, 1)
	if _, err := e.m.getLayer(img); err != nil {
		b.Fatal(err)
	}
	b.Run("pooled-disk", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			v := e.openDisk(e.createDisk(img, size, true))
			v.Close()
		}
	})
	b.Run("standard-disk", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			v := e.openDisk(e.createDisk(img, size, false))
			v.Close()
		}
	})
	b.Run("snapshot-live-disk", func(b *testing.B) {
		id := e.createDisk(img, size, true)
		v := e.openDisk(id)
		defer v.Close()
		p := make([]byte, blockSize)
		for i := 0; i < b.N; i++ {
			if err := v.WriteAt(ctx, p, int64(i)*blockSize, false); err != nil {
				b.Fatal(err)
			}
			if _, err := e.m.Snapshot(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMapMemory reports the heap a loaded, fully allocated block map
// takes per GiB of image, built through the staging steps of an import:
// ids=repeated has one chunk everywhere, ids=sequential gives each leaf
// 1024 ids minted in a row (fresh data of an import). Leaves with scattered
// ids: BenchmarkLeafMemory.
func BenchmarkMapMemory(b *testing.B) {
	for _, c := range []struct {
		name     string
		distinct int
	}{{"repeated", 1}, {"sequential", fanout}} {
		b.Run("ids="+c.name, func(b *testing.B) { benchMapMemory(b, c.distinct) })
	}
}

func benchMapMemory(b *testing.B, distinct int) {
	e := newBenchEnv(b)
	const size = 16 << 30
	id := buildSyntheticLayer(b, e.m, size, distinct)
	var perGiB float64
	for i := 0; i < b.N; i++ {
		e.m.mu.Lock()
		delete(e.m.layers, id)
		e.m.mu.Unlock()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		l, err := e.m.getLayer(id)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(l)
		perGiB = float64(after.HeapAlloc-before.HeapAlloc) / float64(size>>30)
	}
	b.ReportMetric(perGiB, "bytes/GiB")
	b.ReportMetric(perGiB/float64((1<<30)/e.m.chunkSize), "bytes/chunk")
}

// BenchmarkImport measures Import (storage's chunking pipeline plus this
// package's map building) of 128 MiB of mixed data: a quarter zeros, a
// quarter repeated, half random.
func BenchmarkImport(b *testing.B) {
	ctx := context.Background()
	e := newBenchEnv(b)
	const size = 128 << 20
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(5, 5))
	fillRand(rng, data[size/2:])
	for off := size / 4; off < size/2; off += 64 << 10 {
		copy(data[off:off+64<<10], data[size/2:])
	}
	b.SetBytes(size)
	var cpu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Vary one byte per chunk so each run stores fresh chunks.
		b.StopTimer()
		for off := size / 2; off < size; off += int(e.m.chunkSize) {
			data[off] = byte(i)
		}
		cpu0 := cpuTime()
		b.StartTimer()
		p, err := e.m.Import(ctx, bytes.NewReader(data), size, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += cpuTime() - cpu0
		b.StartTimer()
		p.Abort()
	}
	// MB per CPU-second: robust on a shared machine, where wall-clock
	// MB/s mostly measures the neighbours.
	b.ReportMetric(float64(b.N)*size/1e6/cpu.Seconds(), "MB/cpu-s")
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkParallelWrite4K writes 4 KiB blocks at random from many
// goroutines, as an NBD client with a deep queue does.
func BenchmarkParallelWrite4K(b *testing.B) {
	ctx := context.Background()
	e := newBenchEnv(b)
	v := e.openDisk(e.createDisk(0, benchImage, false))
	defer v.Close()
	b.SetParallelism(16)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		p := make([]byte, blockSize)
		fillRand(rng, p)
		for pb.Next() {
			if err := v.WriteAt(ctx, p, rng.Int64N(benchImage/blockSize)*blockSize, false); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// BenchmarkSeal measures sealing a snapshot whose overlay holds 32 MiB of
// random 4 KiB writes over an imported image (bytes/s of dirty data).
func BenchmarkSeal(b *testing.B) {
	ctx := context.Background()
	e := newBenchEnv(b)
	img := e.importBytes(benchImageData())
	const dirty = 32 << 20
	b.SetBytes(dirty)
	rng := rand.New(rand.NewPCG(6, 6))
	p := make([]byte, blockSize)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		id := e.createDisk(img, benchImage, true)
		v := e.openDisk(id)
		for k := 0; k < dirty/blockSize; k++ {
			fillRand(rng, p)
			if err := v.WriteAt(ctx, p, rng.Int64N(benchImage/blockSize)*blockSize, false); err != nil {
				b.Fatal(err)
			}
		}
		v.Close()
		b.StartTimer()
		sid, err := e.m.Snapshot(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.m.WaitSealed(ctx, sid, nil); err != nil {
			b.Fatal(err)
		}
	}
}
