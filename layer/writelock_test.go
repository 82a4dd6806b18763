package layer

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// count reports how many ranges l holds or has waiting.
func (l *rangeLocks) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.known)
}

func TestRangeLocksDisjointRangesDoNotWait(t *testing.T) {
	var l rangeLocks
	// Neighbouring requests of a sequential copy: all held at once (a
	// wait here would deadlock the test).
	var unlocks []func()
	for b := int64(0); b < 64*64; b += 64 {
		unlocks = append(unlocks, l.lock(b, b+63))
	}
	if n := l.count(); n != 64 {
		t.Fatalf("%d ranges held, want 64", n)
	}
	for _, u := range unlocks {
		u()
	}
	if n := l.count(); n != 0 {
		t.Fatalf("%d ranges left after unlock, want 0", n)
	}
}

func TestRangeLocksOverlapWaitsInArrivalOrder(t *testing.T) {
	var l rangeLocks
	unlockA := l.lock(0, 10)
	var order []string
	var mu sync.Mutex
	got := func(name string, b0, b1 int64, done chan<- struct{}) {
		u := l.lock(b0, b1)
		mu.Lock()
		order = append(order, name)
		mu.Unlock()
		u()
		close(done)
	}
	bDone, cDone := make(chan struct{}), make(chan struct{})
	go got("B", 10, 20, bDone) // overlaps A at block 10
	for l.count() < 2 {
		runtime.Gosched()
	}
	go got("C", 15, 15, cDone) // overlaps only B, which is waiting
	for l.count() < 3 {
		runtime.Gosched()
	}
	mu.Lock()
	if len(order) != 0 {
		t.Fatalf("%v got their ranges while A held block 10", order)
	}
	mu.Unlock()
	unlockA()
	<-bDone
	<-cDone
	if len(order) != 2 || order[0] != "B" || order[1] != "C" {
		t.Fatalf("order %v, want [B C]: C arrived after B and overlaps it", order)
	}
}

func TestRangeLocksExclusive(t *testing.T) {
	var l rangeLocks
	const blocks = 256
	var owner [blocks]atomic.Int32
	var wg sync.WaitGroup
	var bad atomic.Int64
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < 500; i++ {
				b0 := rng.Int64N(blocks)
				b1 := min(blocks-1, b0+rng.Int64N(40))
				u := l.lock(b0, b1)
				for b := b0; b <= b1; b++ {
					if owner[b].Add(1) != 1 {
						bad.Add(1)
					}
				}
				runtime.Gosched()
				for b := b0; b <= b1; b++ {
					owner[b].Add(-1)
				}
				u()
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d blocks held by two writers at once", n)
	}
	if n := l.count(); n != 0 {
		t.Fatalf("%d ranges left, want 0", n)
	}
}
