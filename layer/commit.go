package layer

import (
	"sync"

	"strata/storage"
)

// groupCommit merges the overlay writes of concurrent requests into shared
// store transactions. Badger starts a read-write transaction only after
// the commits before it are applied, so one transaction per request
// serialises a deep NBD queue on commit latency; here the first writer to
// arrive commits everything queued meanwhile, and the others wait for it.
// Writes to the same blocks are already ordered by the disk's range
// locks, so sharing a transaction changes no outcome.
type groupCommit struct {
	store   *storage.Store
	mu      sync.Mutex
	queue   []*commitReq
	leading bool
}

// kv is one overlay record to set (val != nil) or delete (val == nil).
type kv struct {
	key, val []byte
}

type commitReq struct {
	recs []kv
	done chan error
	lead chan struct{} // this request's writer is to commit the queue
}

// groupCommitMax bounds the records of one shared transaction (a request
// bigger than that still commits alone).
const groupCommitMax = writeBatchBlocks

// commit stores recs and returns once they are committed. The leader
// commits what is queued when it starts, then hands the lead to the first
// request queued meanwhile, so no writer commits for others forever.
func (g *groupCommit) commit(recs []kv) error {
	req := &commitReq{recs: recs, done: make(chan error, 1), lead: make(chan struct{}, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, req)
	if g.leading {
		g.mu.Unlock()
		select {
		case err := <-req.done:
			return err
		case <-req.lead:
		}
		g.mu.Lock()
	}
	g.leading = true
	batch := g.queue
	g.queue = nil
	g.mu.Unlock()
	for len(batch) > 0 {
		n, count := 0, 0
		for n < len(batch) && (n == 0 || count+len(batch[n].recs) <= groupCommitMax) {
			count += len(batch[n].recs)
			n++
		}
		err := g.store.Update(func(tx *storage.Txn) error {
			for _, r := range batch[:n] {
				for _, e := range r.recs {
					var err error
					if e.val != nil {
						err = tx.SetRef(e.key, e.val)
					} else {
						err = tx.Delete(e.key)
					}
					if err != nil {
						return err
					}
				}
			}
			return nil
		})
		for _, r := range batch[:n] {
			r.done <- err
		}
		batch = batch[n:]
	}
	g.mu.Lock()
	if len(g.queue) > 0 {
		g.queue[0].lead <- struct{}{}
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	return <-req.done
}
