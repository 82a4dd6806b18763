package layer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"strata/storage"
)

// Pending is a layer whose chunks and map are written but that nobody can
// see until Commit runs inside the caller's transaction (the same one that
// adds, say, the image record).
type Pending struct {
	m     *Manager
	id    LayerID
	l     *layer
	stats storage.ImportStats
}

// Import reads a raw image of size bytes from r into a new pending layer.
// progress, when not nil, gets the bytes read so far. A stream shorter
// than size reads as zeros past its end; a longer one is an error.
func (m *Manager) Import(ctx context.Context, r io.Reader, size int64, progress func(int64)) (*Pending, error) {
	if size < 0 {
		return nil, fmt.Errorf("%w: image size %d", ErrInvalid, size)
	}
	raw, err := m.newID()
	if err != nil {
		return nil, err
	}
	id := LayerID(raw)
	if err := m.store.Update(func(tx *storage.Txn) error {
		return putLayerMeta(tx, id, &layerMeta{State: statePending, Size: size})
	}); err != nil {
		return nil, err
	}
	p := &Pending{m: m, id: id}
	if err := p.build(ctx, r, size, progress); err != nil {
		p.Abort()
		return nil, err
	}
	return p, nil
}

func (p *Pending) build(ctx context.Context, r io.Reader, size int64, progress func(int64)) error {
	m := p.m
	nchunks := ceilDiv(size, m.chunkSize)
	staged := map[int64]uint64{}
	lease := m.store.NewLease()
	defer lease.Release()
	// Full batches of leaves are staged by a goroutine of their own: one
	// staging transaction (about 12 leaves, 48 MiB of 4 KiB chunks, an
	// AddRef each) used to run inside emit, and the import stalled behind
	// it once its few MiB of buffers were full. One batch may wait in the
	// channel while the next fills, so memory stays at two batches.
	stageCh := make(chan []stagedLeaf, 1)
	stageDone := make(chan error, 1)
	var stageMu sync.Mutex
	var stageErr error
	go func() {
		var err error
		for batch := range stageCh {
			if err != nil {
				continue // drain after a failure; build returns it
			}
			if err = m.stageLeaves(p.id, statePending, batch, staged); err == nil {
				forgetLeaves(lease, batch)
			} else {
				stageMu.Lock()
				stageErr = err
				stageMu.Unlock()
			}
		}
		stageDone <- err
	}()
	stagerRunning := true
	waitStager := func() error {
		if !stagerRunning {
			return nil
		}
		stagerRunning = false
		close(stageCh)
		return <-stageDone
	}
	defer waitStager() // on every path, before the lease is released
	var batch []stagedLeaf
	var cur *leaf
	curLi := int64(-1)
	finish := func() error {
		if cur != nil {
			batch = append(batch, stagedLeaf{curLi, cur})
			cur = nil
		}
		if len(batch) >= m.leavesPerTxn() {
			stageMu.Lock()
			err := stageErr
			stageMu.Unlock()
			if err != nil {
				return err
			}
			stageCh <- batch
			batch = nil
		}
		return nil
	}
	emit := func(index int64, id storage.ChunkID) error {
		if index >= nchunks {
			if id == storage.ZeroChunk {
				return nil // zero padding past the declared size is harmless
			}
			return fmt.Errorf("%w: stream longer than the image size %d", ErrInvalid, size)
		}
		if id == storage.ZeroChunk {
			return nil
		}
		li := index / fanout
		if li != curLi {
			if err := finish(); err != nil {
				return err
			}
			cur, curLi = newLeaf(), li
		}
		cur.ids[index%fanout] = id
		return nil
	}
	stats, err := m.store.Import(ctx, r, lease, emit, progress)
	p.stats = stats
	if serr := waitStager(); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	if cur != nil {
		batch = append(batch, stagedLeaf{curLi, cur})
	}
	if err := m.stageLeaves(p.id, statePending, batch, staged); err != nil {
		return err
	}
	dirs := map[int64]uint64{}
	if err := m.stageDirs(p.id, statePending, nil, staged, dirs); err != nil {
		return err
	}
	planned := plannedDirs(size, m.chunkSize, nil, dirs)
	var bm *blockMap
	err = m.store.Update(func(tx *storage.Txn) error {
		lm, err := checkState(tx, p.id, statePending)
		if err != nil {
			return err
		}
		if err := finishDirs(tx, p.id, planned, dirs); err != nil {
			return err
		}
		lm.Dirs = planned
		if err := putLayerMeta(tx, p.id, lm); err != nil {
			return err
		}
		bm, err = m.loadMap(tx, size, planned)
		return err
	})
	if err != nil {
		return err
	}
	p.l = newSealedLayer(p.id, size, bm)
	return nil
}

// forgetLeaves lets the lease drop the chunks of staged leaves: their
// counts now hold them, and a long import's lease would otherwise keep an
// entry per chunk until it ends.
func forgetLeaves(lease *storage.Lease, batch []stagedLeaf) {
	var ids []storage.ChunkID
	for _, s := range batch {
		if s.l == nil {
			continue
		}
		for _, id := range s.l.ids {
			if id != storage.ZeroChunk {
				ids = append(ids, id)
			}
		}
	}
	lease.Forget(ids)
}

// Stats of the import that made the pending layer.
func (p *Pending) Stats() storage.ImportStats { return p.stats }

// ID is the id the layer will have once committed. (Addition to the
// contract, for logs and progress records.)
func (p *Pending) ID() LayerID { return p.id }

// Commit makes the layer visible with one holder, in tx.
func (p *Pending) Commit(tx *storage.Txn) (LayerID, error) {
	lm, err := getLayerMeta(tx, p.id)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && lm.State != statePending) {
		return 0, fmt.Errorf("%w: pending layer %d was aborted", ErrNotFound, p.id)
	}
	if err != nil {
		return 0, err
	}
	lm.State, lm.Holders = stateReady, 1
	if err := putLayerMeta(tx, p.id, lm); err != nil {
		return 0, err
	}
	// The in-memory layer can be known at once: lookups check the record,
	// which shows the layer only once tx commits.
	p.m.mu.Lock()
	if p.l != nil && p.m.layers[p.id] == nil {
		p.m.layers[p.id] = p.l
	}
	p.m.mu.Unlock()
	return p.id, nil
}

// Abort drops the pending layer; safe after Commit (then a no-op).
func (p *Pending) Abort() {
	_ = p.m.store.Update(func(tx *storage.Txn) error {
		lm, err := getLayerMeta(tx, p.id)
		if err != nil || lm.State != statePending {
			return nil // committed, or already dropped
		}
		return p.m.scheduleFree(tx, p.id, lm)
	})
}
