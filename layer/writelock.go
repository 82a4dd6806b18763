package layer

import "sync"

// rangeLocks serialise mutations of overlapping block ranges of a disk (a
// read-modify-write of a partial block, a block write against a range
// record), so the index and the store agree on which came last, while
// mutations of disjoint ranges run side by side. A sequential copy sends
// many concurrent requests of 64 or more neighbouring blocks: locks striped
// by block number would give each of them every stripe and run them one
// at a time, so no two could share a group commit.
//
// Overlapping ranges are granted in arrival order: a new range waits for
// every range already held or waiting that it overlaps, and only for those,
// so waits never form a cycle and no range is passed over forever.
type rangeLocks struct {
	mu    sync.Mutex
	known []*lockedRange // held or waiting, in no particular order
}

type lockedRange struct {
	b0, b1 int64         // blocks [b0, b1]
	done   chan struct{} // closed on unlock
}

// lock locks blocks [b0, b1] and returns the function that unlocks them.
func (l *rangeLocks) lock(b0, b1 int64) (unlock func()) {
	r := &lockedRange{b0: b0, b1: b1, done: make(chan struct{})}
	var wait []chan struct{}
	l.mu.Lock()
	for _, o := range l.known {
		if o.b0 <= b1 && b0 <= o.b1 {
			wait = append(wait, o.done)
		}
	}
	l.known = append(l.known, r)
	l.mu.Unlock()
	for _, c := range wait {
		<-c
	}
	return func() { l.unlock(r) }
}

func (l *rangeLocks) unlock(r *lockedRange) {
	l.mu.Lock()
	for i, o := range l.known {
		if o == r {
			last := len(l.known) - 1
			l.known[i] = l.known[last]
			l.known[last] = nil
			l.known = l.known[:last]
			break
		}
	}
	l.mu.Unlock()
	close(r.done)
}
