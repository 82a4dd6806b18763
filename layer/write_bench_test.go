package layer

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSeqWrite copies 512 MiB into a fresh disk in 256 KiB requests
// from 16 writers and flushes, as `nbdcopy --flush file export` does
// (issue 3's sequential write figure, without the NBD transport). It
// reports MB/s including the flush and MB per CPU-second of the process.
func BenchmarkSeqWrite(b *testing.B) {
	const (
		total   = 512 << 20
		reqSize = 256 << 10
		writers = 16
	)
	ctx := context.Background()
	src := make([]byte, 8<<20)
	fillRand(rand.New(rand.NewPCG(3, 3)), src)
	var wall, cpu, flush time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e := newBenchEnv(b)
		v := e.openDisk(e.createDisk(0, total, false))
		settle(b, e)
		b.StartTimer()
		t0, c0 := time.Now(), cpuTime()
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					off := next.Add(reqSize) - reqSize
					if off >= total {
						return
					}
					p := src[off%int64(len(src)) : off%int64(len(src))+reqSize]
					if err := v.WriteAt(ctx, p, off, false); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		tf := time.Now()
		if err := v.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		wall += time.Since(t0)
		flush += time.Since(tf)
		cpu += cpuTime() - c0
		b.StopTimer()
		v.Close()
	}
	mb := float64(b.N) * total / 1e6
	b.ReportMetric(mb/wall.Seconds(), "MB/s")
	b.ReportMetric(mb/cpu.Seconds(), "MB/cpu-s")
	b.ReportMetric(flush.Seconds()/float64(b.N), "flush-s")
}
