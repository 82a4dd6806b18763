package nbd

import (
	"math/bits"
	"sync"
)

// Buffers are pooled by power-of-two size class because writing into freshly
// allocated memory runs at ~300 MB/s on the target machines (page faults and
// zeroing), an order of magnitude below memcpy: a server that allocates per
// request is capped by that, one that reuses buffers is not.
const (
	minClassShift = 12 // 4 KiB
	maxClassShift = 26 // 64 MiB, above any MaxPayload we advertise
)

var bufPools [maxClassShift + 1]sync.Pool

// Buffers of 64 KiB and more are first kept in a free list per class,
// which garbage collection does not empty: a sync.Pool drops what it holds
// every second cycle, the heap then shrinks, and the next large read
// writes into fresh memory again, the very cost the pool is for (a 256 KiB
// buffer is 64 first touches). A list keeps up to retainBytes of its class
// (at least one buffer), the working set of a few busy connections; what
// comes back beyond it goes to the sync.Pool.
const (
	retainMinShift = 16
	retainBytes    = 32 << 20
)

var freeLists [maxClassShift + 1]freeList

// freeList is a stack of buffers of one class.
type freeList struct {
	mu   sync.Mutex
	bufs []*[]byte
}

func (f *freeList) get() *[]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.bufs)
	if n == 0 {
		return nil
	}
	b := f.bufs[n-1]
	f.bufs[n-1] = nil
	f.bufs = f.bufs[:n-1]
	return b
}

// put keeps b unless the list holds limit buffers already.
func (f *freeList) put(b *[]byte, limit int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bufs) >= limit {
		return false
	}
	f.bufs = append(f.bufs, b)
	return true
}

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return minClassShift
	}
	return bits.Len(uint(n - 1))
}

// getBuf returns a buffer of length n (n > 0) from the pool.
func getBuf(n int) *[]byte {
	c := classOf(n)
	if c > maxClassShift {
		b := make([]byte, n)
		return &b
	}
	if c >= retainMinShift {
		if b := freeLists[c].get(); b != nil {
			*b = (*b)[:n]
			return b
		}
	}
	if v := bufPools[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// putBuf returns a buffer obtained from getBuf.
func putBuf(b *[]byte) {
	c := cap(*b)
	if c&(c-1) != 0 || c < 1<<minClassShift {
		return
	}
	shift := bits.Len(uint(c)) - 1
	if shift > maxClassShift {
		return
	}
	if shift >= retainMinShift && freeLists[shift].put(b, max(1, retainBytes>>shift)) {
		return
	}
	bufPools[shift].Put(b)
}

// byteBudget bounds the bytes of request and reply data a connection holds
// at once. Only the connection's reader acquires, so a plain condition
// variable suffices and there is no fairness question.
type byteBudget struct {
	mu     sync.Mutex
	cond   sync.Cond
	limit  int64
	used   int64
	closed bool
}

func newByteBudget(limit int64) *byteBudget {
	b := &byteBudget{limit: limit}
	b.cond.L = &b.mu
	return b
}

// acquire waits until n bytes fit. It returns false if the budget was
// closed while waiting (the connection is ending).
func (b *byteBudget) acquire(n int64) bool {
	if n == 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed && b.used > 0 && b.used+n > b.limit {
		b.cond.Wait()
	}
	if b.closed {
		return false
	}
	b.used += n
	return true
}

func (b *byteBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.cond.Signal()
}

func (b *byteBudget) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Broadcast()
}
