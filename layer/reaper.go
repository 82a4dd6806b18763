package layer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"strata/storage"
)

// Releases run in the background as jobs (layer/j/<id>), each done in
// bounded transactions that delete what they have processed, so a crash
// resumes where it stopped and nothing is released twice. A job is queued in
// the same transaction as the change that makes its target unreachable.
const (
	jobFreeLayer   = 1 // drop a layer's dirs, staged pages, overlay and parent use
	jobFreeLeaf    = 2 // delete a leaf page and its chunk references
	jobFreeDir     = 3 // delete a dir page and its leaf page references
	jobFreeOverlay = 4 // delete an overlay's blocks and range records
)

// releaseBatch bounds the keys one release transaction touches, far below
// Badger's transaction limits.
const releaseBatch = 1024

func (m *Manager) enqueueJob(tx *storage.Txn, kind byte, arg uint64) error {
	jid, err := m.newID()
	if err != nil {
		return err
	}
	v := append([]byte{kind}, be64(arg)...)
	return tx.Set(key(pfxJob, jid), v)
}

// scheduleFree marks a layer deleting (invisible) and queues its release.
func (m *Manager) scheduleFree(tx *storage.Txn, id LayerID, lm *layerMeta) error {
	lm.State = stateDeleting
	if err := putLayerMeta(tx, id, lm); err != nil {
		return err
	}
	m.kickReaper()
	return m.enqueueJob(tx, jobFreeLayer, uint64(id))
}

// decPage drops one reference to a page, queueing its release at zero.
func (m *Manager) decPage(tx *storage.Txn, pid uint64, kind byte) error {
	if pid == 0 {
		return nil
	}
	n, err := incPage(tx, pid, -1)
	if err != nil || n > 0 {
		return err
	}
	return m.enqueueJob(tx, kind, pid)
}

func (m *Manager) kickReaper() {
	select {
	case m.reapKick <- struct{}{}:
	default:
	}
}

func (m *Manager) reapLoop() {
	defer m.wg.Done()
	// A short period: the pass is one prefix scan when idle, and watched
	// seals (startWatchedSeals) start within it.
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.reapKick:
		case <-t.C:
		}
		if err := m.reap(); err != nil && m.ctx.Err() == nil {
			m.reportBackground(err)
		}
		m.startWatchedSeals()
	}
}

type job struct {
	id   uint64
	kind byte
	arg  uint64
}

// reap runs queued release jobs until none is left that can run now.
func (m *Manager) reap() error {
	m.reapMu.Lock()
	defer m.reapMu.Unlock()
	for m.ctx.Err() == nil {
		var jobs []job
		err := m.store.View(func(tx *storage.Txn) error {
			return tx.Iterate(pfxJob, func(k, v []byte) error {
				if len(v) != 9 {
					return fmt.Errorf("%w: job record", ErrCorruptMeta)
				}
				jobs = append(jobs, job{keyID(pfxJob, k, 0), v[0], binary.BigEndian.Uint64(v[1:])})
				if len(jobs) >= 256 {
					return errStop
				}
				return nil
			})
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
		ran := 0
		for _, j := range jobs {
			done, err := m.runJob(j)
			if err != nil {
				return fmt.Errorf("layer: release job %d: %w", j.id, err)
			}
			if done {
				ran++
			}
		}
		if ran == 0 {
			return nil
		}
	}
	return nil
}

// drain runs release jobs until the queue is empty (tests, benchmarks).
func (m *Manager) drain() error {
	deadline := time.Now().Add(time.Minute)
	for {
		if err := m.reap(); err != nil {
			return err
		}
		n := 0
		if err := m.store.View(func(tx *storage.Txn) error {
			return tx.Iterate(pfxJob, func(_, _ []byte) error { n++; return nil })
		}); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		m.mu.Lock()
		busy := len(m.seals) > 0
		for _, l := range m.layers {
			busy = busy || l.pins.Load() > 0
		}
		m.mu.Unlock()
		if !busy || time.Now().After(deadline) {
			return fmt.Errorf("layer: %d release jobs cannot run", n)
		}
		time.Sleep(10 * time.Millisecond) // a seal is stopping or an export closing; a release waits for it
	}
}

// runJob does one job to completion, or reports false if it must wait.
func (m *Manager) runJob(j job) (bool, error) {
	jk := key(pfxJob, j.id)
	switch j.kind {
	case jobFreeLeaf:
		return true, m.store.Update(func(tx *storage.Txn) error {
			b, err := tx.Get(key(pfxLeaf, j.arg))
			if err == nil {
				ids := make([]uint64, fanout)
				if err := decodeIDs(b, ids); err != nil {
					return err
				}
				deltas := map[storage.ChunkID]int64{}
				for _, id := range ids {
					if id != 0 {
						deltas[storage.ChunkID(id)]--
					}
				}
				for id, d := range deltas {
					if err := tx.AddRef(id, d); err != nil {
						return err
					}
				}
				if err := tx.Delete(key(pfxLeaf, j.arg)); err != nil {
					return err
				}
			} else if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			return tx.Delete(jk)
		})
	case jobFreeDir:
		return true, m.store.Update(func(tx *storage.Txn) error {
			ids, err := readDir(tx, j.arg)
			if err == nil {
				for _, pid := range ids {
					if err := m.decPage(tx, pid, jobFreeLeaf); err != nil {
						return err
					}
				}
				if err := tx.Delete(key(pfxDir, j.arg)); err != nil {
					return err
				}
			} else if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			return tx.Delete(jk)
		})
	case jobFreeOverlay:
		for more := true; more; {
			if err := m.store.Update(func(tx *storage.Txn) (err error) {
				if more, err = deleteOverlayStep(tx, j.arg, releaseBatch); err != nil || more {
					return err
				}
				return tx.Delete(jk)
			}); err != nil {
				return false, err
			}
		}
		return true, nil
	case jobFreeLayer:
		return m.freeLayer(j)
	}
	return false, fmt.Errorf("%w: job kind %d", ErrCorruptMeta, j.kind)
}

func (m *Manager) freeLayer(j job) (bool, error) {
	id := LayerID(j.arg)
	m.mu.Lock()
	sealing := m.seals[id]
	pinned := m.layers[id] != nil && m.layers[id].pins.Load() > 0
	m.mu.Unlock()
	if sealing || pinned {
		// The seal notices the layer is deleting and stops; an export
		// closes. Either kicks the reaper again.
		return false, nil
	}
	// Staged pages of an unfinished import or seal.
	for _, pfx := range []struct {
		p    []byte
		kind byte
	}{{key(pfxStageLf, j.arg), jobFreeLeaf}, {key(pfxStageDr, j.arg), jobFreeDir}} {
		for more := true; more; {
			err := m.store.Update(func(tx *storage.Txn) error {
				var keys [][]byte
				var pids []uint64
				more = false
				err := tx.Iterate(pfx.p, func(k, v []byte) error {
					if len(keys) >= releaseBatch {
						more = true
						return errStop
					}
					if len(v) != 8 {
						return fmt.Errorf("%w: staged page", ErrCorruptMeta)
					}
					keys = append(keys, slices.Clone(k))
					pids = append(pids, binary.BigEndian.Uint64(v))
					return nil
				})
				if err != nil && !errors.Is(err, errStop) {
					return err
				}
				for i, k := range keys {
					if err := tx.Delete(k); err != nil {
						return err
					}
					if err := m.decPage(tx, pids[i], pfx.kind); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return false, err
			}
		}
	}
	err := m.store.Update(func(tx *storage.Txn) error {
		lm, err := getLayerMeta(tx, id)
		if errors.Is(err, storage.ErrNotFound) {
			return tx.Delete(jk(j))
		}
		if err != nil {
			return err
		}
		if lm.State != stateDeleting {
			return fmt.Errorf("%w: layer %d queued for release in state %s", ErrCorruptMeta, id, lm.State)
		}
		for _, d := range lm.Dirs {
			if err := m.decPage(tx, d, jobFreeDir); err != nil {
				return err
			}
		}
		if lm.Overlay != 0 {
			if err := m.enqueueJob(tx, jobFreeOverlay, lm.Overlay); err != nil {
				return err
			}
		}
		if err := m.useLayer(tx, lm.Parent, -1); err != nil {
			return err
		}
		for _, k := range [][]byte{key(pfxLayer, j.arg), jk(j)} {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	m.mu.Lock()
	delete(m.layers, id)
	m.mu.Unlock()
	return true, nil
}

func jk(j job) []byte { return key(pfxJob, j.id) }
