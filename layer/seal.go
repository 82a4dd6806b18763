package layer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"strata/storage"
)

// Snapshot switches the disk atomically to a fresh overlay and returns the
// layer that will hold exactly the writes acknowledged before the call,
// with one holder. It is SnapshotWith with nothing else to commit.
func (m *Manager) Snapshot(ctx context.Context, id DiskID) (LayerID, error) {
	return m.SnapshotWith(ctx, id, nil)
}

// SnapshotWith switches the disk atomically to a fresh overlay and returns
// the layer that will hold exactly the writes acknowledged before the call,
// with one holder. The seal runs in the background (see WaitSealed); the
// layer reads correctly at once.
//
// The switch waits for writes in flight (they hold the disk's lock shared),
// then in one transaction creates the snapshot layer (sealing: the frozen
// overlay over the old base), points the disk at it with an empty overlay,
// runs within (when not nil) with the new layer's id so the caller's
// records of the layer (who holds it) commit with it, and syncs, so the
// snapshot survives a crash from the moment it returns.
//
// within may run more than once (storage.Store.Update retries on a
// conflict): it must write only through tx. If it fails, nothing commits:
// there is no new layer, the disk keeps its overlay, and its error is
// returned. A non-zero id with an error means the switch committed but the
// sync failed: the layer exists and the caller's records hold it.
func (m *Manager) SnapshotWith(ctx context.Context, id DiskID, within func(tx *storage.Txn, lid LayerID) error) (LayerID, error) {
	d, err := m.getDisk(id)
	if err != nil {
		return 0, err
	}
	lid, err := m.newID()
	if err != nil {
		return 0, err
	}
	ovid, err := m.newID()
	if err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	st := d.st.Load()
	size := d.size.Load()
	err = m.store.Update(func(tx *storage.Txn) error {
		if err := switchTxn(tx, id, st.ov.id, LayerID(lid), ovid, size); err != nil {
			return err
		}
		if within == nil {
			return nil
		}
		return within(tx, LayerID(lid))
	})
	if err != nil {
		return 0, err
	}
	// The switch is committed: memory follows before the sync so that it
	// agrees with the store whatever the sync does.
	l := newSealingLayer(LayerID(lid), size, st.ov, st.base)
	m.mu.Lock()
	m.layers[l.id] = l
	m.mu.Unlock()
	d.st.Store(&diskState{ov: newOverlay(ovid), base: l})
	m.startSeal(l)
	if err := m.store.Sync(); err != nil {
		return l.id, err
	}
	return l.id, nil
}

// switchTxn records a snapshot's switch in tx: a sealing layer lid (one
// holder) over the disk's old base and overlay ov, and the disk over lid
// with the fresh overlay ovid.
func switchTxn(tx *storage.Txn, id DiskID, ov uint64, lid LayerID, ovid uint64, size int64) error {
	dm, err := getDiskMeta(tx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: disk %d", ErrNotFound, id)
	}
	if err != nil {
		return err
	}
	if dm.Overlay != ov {
		return fmt.Errorf("%w: disk %d changed under its handle", ErrBusy, id)
	}
	// The disk's use of its old base passes to the snapshot layer (its
	// parent until sealed); the disk now uses the snapshot layer.
	lm := &layerMeta{State: stateSealing, Size: size, Holders: 1, Users: 1, Parent: dm.Base, Overlay: dm.Overlay}
	if err := putLayerMeta(tx, lid, lm); err != nil {
		return err
	}
	dm.Base, dm.Overlay, dm.Size = lid, ovid, size
	return setJSON(tx, key(pfxDisk, uint64(id)), dm)
}

// startSeal runs l's seal in the background unless it already runs.
func (m *Manager) startSeal(l *layer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.seals[l.id] || l.sealed() {
		return
	}
	m.seals[l.id] = true
	m.wg.Add(1)
	go m.sealLoop(l)
}

// cloneWatchTries is how many background passes (about a second apart) a
// watched layer may stay invisible before its creating txn counts as
// rolled back.
const cloneWatchTries = 30

// startWatchedSeals starts the seals of layers made sealing by a caller's
// transaction (a standard disk's own base over a snapshot still sealing)
// once that transaction has committed.
func (m *Manager) startWatchedSeals() {
	m.mu.Lock()
	ids := make([]LayerID, 0, len(m.cloneWatch))
	for id := range m.cloneWatch {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		l, err := m.getLayer(id)
		m.mu.Lock()
		switch {
		case err == nil:
			delete(m.cloneWatch, id)
		case m.cloneWatch[id] >= cloneWatchTries:
			delete(m.cloneWatch, id)
		default:
			m.cloneWatch[id]++
		}
		m.mu.Unlock()
		if err == nil {
			m.startSeal(l)
		}
	}
}

func (m *Manager) sealLoop(l *layer) {
	defer func() {
		m.mu.Lock()
		delete(m.seals, l.id)
		m.mu.Unlock()
		m.kickReaper()
		m.wg.Done()
	}()
	if p := l.view.Load().parent; p != nil {
		select {
		case <-p.ready:
		case <-m.ctx.Done():
			return
		}
	}
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		select {
		case m.sealSem <- struct{}{}:
		case <-m.ctx.Done():
			return
		}
		err := m.seal(l)
		<-m.sealSem
		if err == nil || errors.Is(err, errAbandoned) || m.ctx.Err() != nil {
			return
		}
		m.reportBackground(fmt.Errorf("layer: seal of %d: %w", l.id, err))
		select {
		case <-time.After(backoff):
		case <-m.ctx.Done():
			return
		}
	}
}

// sealBatchChunks bounds the chunks one staging txn covers; mergeFanout
// is the merges in flight per seal worker (see mergeChunks).
const (
	sealBatchChunks = 64
	mergeFanout     = 4
)

// seal builds l's map from its parent's map and its frozen overlay: every
// chunk the overlay touches is merged (base bytes under dirty blocks),
// stored with Put under a lease (deduplicated), and the leaves and dirs
// that changed are rewritten; everything else is shared with the parent.
func (m *Manager) seal(l *layer) error {
	v := l.view.Load()
	if v.bm != nil {
		return nil
	}
	var pbm *blockMap
	if v.parent != nil {
		pbm = v.parent.view.Load().bm
		if pbm == nil {
			return fmt.Errorf("layer: parent %d of %d not sealed", v.parent.id, l.id)
		}
	}
	leaves, dirs, err := m.readStaged(l.id)
	if err != nil {
		return err
	}
	nchunks := ceilDiv(l.size, m.chunkSize)
	var touched []int64
	if v.frozen != nil {
		touched = v.frozen.touchedChunks(m.chunkSize)
	}
	l.sealTotal.Store(int64(len(touched)) + 1)
	lease := m.store.NewLease()
	defer lease.Release()

	// Leaves to rebuild are gathered into groups of about sealBatchChunks
	// chunks (and at most leavesPerTxn leaves: every entry of a rewritten
	// leaf is counted again); a group's chunks merge in parallel, then its
	// leaves are staged in one transaction.
	type leafWork struct {
		li  int64
		cis []int64
	}
	var group []leafWork
	gn := 0
	flush := func() error {
		if len(group) == 0 {
			return nil
		}
		if err := m.ctx.Err(); err != nil {
			return err
		}
		var all []int64
		for _, w := range group {
			all = append(all, w.cis...)
		}
		ids, err := m.mergeChunks(pbm, v.frozen, all, l.size, lease)
		if err != nil {
			return err
		}
		var batch []stagedLeaf
		k := 0
		for _, w := range group {
			lf := newLeaf()
			if p := pbm.leafOf(w.li); p != nil {
				p.unpack(lf.ids)
			}
			for _, ci := range w.cis {
				lf.ids[ci%fanout] = ids[k]
				k++
			}
			if *lf.ids == ([fanout]storage.ChunkID{}) {
				lf = nil
			}
			batch = append(batch, stagedLeaf{w.li, lf})
		}
		if err := m.stageLeaves(l.id, stateSealing, batch, leaves); err != nil {
			return err
		}
		lease.Forget(slices.DeleteFunc(ids, func(id storage.ChunkID) bool { return id == storage.ZeroChunk }))
		l.sealDone.Add(int64(len(all)))
		group, gn = nil, 0
		return nil
	}
	for i := 0; i < len(touched); {
		li := touched[i] / fanout
		j := i
		for j < len(touched) && touched[j]/fanout == li {
			j++
		}
		_, staged := leaves[li]
		_, dirDone := dirs[li/fanout]
		cis := slices.DeleteFunc(slices.Clone(touched[i:j]), func(ci int64) bool { return ci >= nchunks })
		if staged || dirDone || len(cis) == 0 {
			l.sealDone.Add(int64(j - i))
			i = j
			continue
		}
		group = append(group, leafWork{li, cis})
		gn += len(cis)
		if gn >= sealBatchChunks || len(group) >= m.leavesPerTxn() {
			if err := flush(); err != nil {
				return err
			}
		}
		i = j
	}
	if err := flush(); err != nil {
		return err
	}
	if err := m.stageDirs(l.id, stateSealing, pbm, leaves, dirs); err != nil {
		return err
	}
	planned := plannedDirs(l.size, m.chunkSize, pbm, dirs)
	var bm *blockMap
	if err := m.store.View(func(tx *storage.Txn) (err error) {
		bm, err = m.loadMap(tx, l.size, planned)
		return err
	}); err != nil {
		return err
	}
	// Readers move to the sealed map before the overlay's blocks can go:
	// the release of the overlay is queued only below, after the retire
	// has waited out every reader still inside it.
	l.view.Store(&layerView{bm: bm})
	if v.frozen != nil {
		v.frozen.rmu.Lock()
		v.frozen.retired = true
		v.frozen.rmu.Unlock()
	}
	for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		err = m.store.Update(func(tx *storage.Txn) error {
			lm, err := checkState(tx, l.id, stateSealing)
			if err != nil {
				return err
			}
			if err := finishDirs(tx, l.id, planned, dirs); err != nil {
				return err
			}
			if err := m.useLayer(tx, lm.Parent, -1); err != nil {
				return err
			}
			if lm.Overlay != 0 {
				if err := m.enqueueJob(tx, jobFreeOverlay, lm.Overlay); err != nil {
					return err
				}
			}
			lm.State, lm.Dirs, lm.Parent, lm.Overlay = stateReady, planned, 0, 0
			return putLayerMeta(tx, l.id, lm)
		})
		if err == nil || errors.Is(err, errAbandoned) || m.ctx.Err() != nil {
			break
		}
		// The map is already in use in memory: finish the record rather
		// than start over.
		m.reportBackground(fmt.Errorf("layer: finishing seal of %d: %w", l.id, err))
		time.Sleep(backoff)
	}
	if err != nil {
		return err
	}
	l.sealDone.Store(l.sealTotal.Load())
	close(l.ready)
	m.kickReaper()
	return nil
}

func (bm *blockMap) leafOf(li int64) *mapLeaf {
	if bm == nil || li >= int64(len(bm.leaves)) {
		return nil
	}
	return bm.leaves[li]
}

// mergeBatch is how many merged chunks one store transaction puts: they
// share one pack, so they get consecutive ids (2-byte deltas in the leaf
// maps) and one commit.
const mergeBatch = 32

// mergeChunks merges chunks cis (see mergeChunk) in batches of mergeBatch
// on mergeFanout goroutines per seal worker, each batch put with one
// PutMany: a put commits a store transaction, so a merge waits on the
// commit about as long as it computes (hash, compress); several batches in
// flight keep the cores busy.
func (m *Manager) mergeChunks(pbm *blockMap, ov *overlay, cis []int64, size int64, lease *storage.Lease) ([]storage.ChunkID, error) {
	ids := make([]storage.ChunkID, len(cis))
	batches := ceilDiv(int64(len(cis)), mergeBatch)
	errs := make([]error, batches)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := int64(0); w < min(int64(mergeFanout*m.opts.SealWorkers), batches); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var bufs [][]byte
			for {
				k := next.Add(1) - 1
				if k >= batches {
					return
				}
				lo, hi := k*mergeBatch, min((k+1)*mergeBatch, int64(len(cis)))
				errs[k] = m.mergeBatch(pbm, ov, cis[lo:hi], ids[lo:hi], size, lease, &bufs)
			}
		}()
	}
	wg.Wait()
	return ids, errors.Join(errs...)
}

// mergeBatch merges chunks cis into ids (see mergeChunk) and puts the
// non-zero ones with one PutMany. bufs is the worker's reusable buffers.
func (m *Manager) mergeBatch(pbm *blockMap, ov *overlay, cis []int64, ids []storage.ChunkID, size int64, lease *storage.Lease, bufs *[][]byte) error {
	raws := (*bufs)[:0]
	var at []int // ids index of each raw
	for i, ci := range cis {
		// The buffer of the next slot, kept from earlier batches (slots
		// past len keep theirs) or made once.
		if len(raws) == cap(raws) {
			raws = append(raws, nil)[:len(raws)]
		}
		slot := raws[:len(raws)+1]
		if int64(cap(slot[len(raws)])) < m.chunkSize {
			slot[len(raws)] = make([]byte, m.chunkSize)
		}
		raw, err := m.mergeChunk(pbm, ov, ci, size, slot[len(raws)])
		if err != nil {
			return err
		}
		if raw == nil {
			ids[i] = storage.ZeroChunk
			continue
		}
		raws = append(raws, raw)
		at = append(at, i)
	}
	*bufs = raws[:0]
	if len(raws) == 0 {
		return nil
	}
	put, err := m.store.PutMany(raws, lease)
	if err != nil {
		return err
	}
	for j, i := range at {
		ids[i] = put[j]
	}
	return nil
}

// mergeChunk returns the bytes of chunk ci of a layer of size bytes, in
// buf (ChunkSize long): the base chunk's bytes with the overlay's blocks
// over them; nil when the overlay trimmed or zeroed the whole chunk (no
// read, no put).
func (m *Manager) mergeChunk(pbm *blockMap, ov *overlay, ci, size int64, buf []byte) ([]byte, error) {
	off := ci * m.chunkSize
	n := min(m.chunkSize, size-off)
	if ov.zeroCovered(off>>blockShift, ceilDiv(off+n, blockSize)) {
		return nil, nil
	}
	buf = buf[:n]
	if err := m.readMap(pbm, buf, off); err != nil {
		return nil, err
	}
	if err := ov.readOver(m.store, buf, off, func([]byte, int64) error { return nil }); err != nil {
		return nil, err
	}
	return buf, nil
}
