package layer

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
	"weak"

	"strata/storage"
)

// Manager owns every layer and disk of one store. Persistent state lives in
// the store (see keys.go); the manager keeps loaded maps, overlay indexes
// and the shared chunk cache in memory, and runs seals and releases in the
// background.
type Manager struct {
	store     *storage.Store
	opts      Options
	chunkSize int64
	cache     *chunkCache
	pages     pageCache
	commits   groupCommit // overlay writes of concurrent requests

	mu     sync.Mutex
	layers map[LayerID]*layer
	disks  map[DiskID]*disk
	seals  map[LayerID]bool // seal goroutines running
	closed bool

	// cloneWatch: own bases of standard disks made over a sealing layer in
	// a caller's txn; their seal starts once that txn shows up committed.
	cloneWatch map[LayerID]int

	idMu           sync.Mutex
	nextID, idTop  uint64
	sealSem        chan struct{}
	reapKick       chan struct{}
	reapMu         sync.Mutex // one release pass at a time
	ctx            context.Context
	cancel         context.CancelFunc
	wg             sync.WaitGroup
	backgroundErrs chan error // last background failure, for tests and logs
}

// idBatch ids are reserved per counter update, so allocating an id almost
// never touches the store (and never conflicts with a caller's txn).
const idBatch = 4096

// Open loads layer and disk state from the store, drops layers of imports
// that never committed, and resumes unfinished seals.
func Open(store *storage.Store, opts Options) (*Manager, error) {
	def := DefaultOptions()
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = def.CacheBytes
	}
	if opts.SealWorkers <= 0 {
		opts.SealWorkers = runtime.GOMAXPROCS(0)
	}
	m := &Manager{
		store:          store,
		opts:           opts,
		chunkSize:      int64(store.ChunkSize()),
		commits:        groupCommit{store: store},
		cache:          newChunkCache(store, opts.CacheBytes),
		pages:          pageCache{m: make(map[uint64]weak.Pointer[mapLeaf])},
		layers:         make(map[LayerID]*layer),
		disks:          make(map[DiskID]*disk),
		seals:          make(map[LayerID]bool),
		cloneWatch:     make(map[LayerID]int),
		sealSem:        make(chan struct{}, opts.SealWorkers),
		reapKick:       make(chan struct{}, 1),
		backgroundErrs: make(chan error, 1),
	}
	if m.chunkSize < blockSize || m.chunkSize%blockSize != 0 {
		return nil, fmt.Errorf("%w: chunk size %d is not a multiple of %d", ErrInvalid, m.chunkSize, blockSize)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())

	// Imports that never committed are dropped; seals resume.
	var pending, sealing []LayerID
	err := store.View(func(tx *storage.Txn) error {
		return tx.Iterate(pfxLayer, func(k, v []byte) error {
			id := LayerID(keyID(pfxLayer, k, 0))
			var lm layerMeta
			if err := getJSON(tx, k, &lm); err != nil {
				return err
			}
			switch lm.State {
			case statePending:
				pending = append(pending, id)
			case stateSealing:
				sealing = append(sealing, id)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for _, id := range pending {
		if err := store.Update(func(tx *storage.Txn) error {
			lm, err := getLayerMeta(tx, id)
			if err != nil {
				return err
			}
			return m.scheduleFree(tx, id, lm)
		}); err != nil {
			return nil, err
		}
	}
	m.wg.Add(1)
	go m.reapLoop()
	for _, id := range sealing {
		l, err := m.getLayer(id)
		if err != nil {
			m.Close()
			return nil, err
		}
		m.startSeal(l)
	}
	return m, nil
}

// Close waits for seals to reach a resumable point and releases memory. It
// does not close the store.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	m.layers = map[LayerID]*layer{}
	m.disks = map[DiskID]*disk{}
	m.mu.Unlock()
	return nil
}

// newID returns a fresh id for a layer, disk, overlay, page or job (one
// space for all, so ids never collide across kinds).
func (m *Manager) newID() (uint64, error) {
	m.idMu.Lock()
	defer m.idMu.Unlock()
	if m.nextID >= m.idTop {
		var top uint64
		err := m.store.Update(func(tx *storage.Txn) error {
			n, err := getU64(tx, keyCounter)
			if errors.Is(err, storage.ErrNotFound) {
				n, err = 1, nil
			}
			if err != nil {
				return err
			}
			top = n + idBatch
			return tx.Set(keyCounter, be64(top))
		})
		if err != nil {
			return 0, err
		}
		m.nextID, m.idTop = top-idBatch, top
	}
	id := m.nextID
	m.nextID++
	return id, nil
}

// getLayer returns the in-memory layer, loading it (and, for a sealing
// layer, the layers under it) from the store.
func (m *Manager) getLayer(id LayerID) (*layer, error) {
	m.mu.Lock()
	l := m.layers[id]
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if l != nil {
		return l, nil
	}
	var lm *layerMeta
	var bm *blockMap
	err := m.store.View(func(tx *storage.Txn) error {
		var err error
		if lm, err = getLayerMeta(tx, id); err != nil {
			return err
		}
		if !lm.visible() {
			return storage.ErrNotFound
		}
		if lm.State == stateReady {
			bm, err = m.loadMap(tx, lm.Size, lm.Dirs)
		}
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: layer %d", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	if bm != nil {
		l = newSealedLayer(id, lm.Size, bm)
	} else {
		var parent *layer
		if lm.Parent != 0 {
			if parent, err = m.getLayer(lm.Parent); err != nil {
				return nil, err
			}
		}
		var frozen *overlay
		if lm.Overlay != 0 {
			if frozen, err = loadOverlay(m.store, lm.Overlay); err != nil {
				return nil, err
			}
		}
		l = newSealingLayer(id, lm.Size, frozen, parent)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.layers[id]; old != nil {
		return old, nil
	}
	m.layers[id] = l
	return l, nil
}

// visibleLayer reads a layer's record and checks it is visible.
func visibleLayer(tx *storage.Txn, id LayerID) (*layerMeta, error) {
	lm, err := getLayerMeta(tx, id)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !lm.visible()) {
		return nil, fmt.Errorf("%w: layer %d", ErrNotFound, id)
	}
	return lm, err
}

// RetainLayer adds a holder (an image or snapshot record) to a layer, in tx.
func (m *Manager) RetainLayer(tx *storage.Txn, id LayerID) error {
	lm, err := visibleLayer(tx, id)
	if err != nil {
		return err
	}
	lm.Holders++
	return putLayerMeta(tx, id, lm)
}

// ReleaseLayer drops a holder, in tx. A layer with no holders and no disks
// on it is deleted and its references released (in the background, in
// resumable steps).
func (m *Manager) ReleaseLayer(tx *storage.Txn, id LayerID) error {
	lm, err := visibleLayer(tx, id)
	if err != nil {
		return err
	}
	if lm.Holders <= 0 {
		return fmt.Errorf("%w: layer %d has no holder to release", ErrInvalid, id)
	}
	lm.Holders--
	return m.putOrFree(tx, id, lm)
}

// putOrFree stores lm, or schedules the layer's release when nothing holds
// or uses it any more.
func (m *Manager) putOrFree(tx *storage.Txn, id LayerID, lm *layerMeta) error {
	if lm.Holders+lm.Users <= 0 {
		return m.scheduleFree(tx, id, lm)
	}
	return putLayerMeta(tx, id, lm)
}

// useLayer adds delta to a layer's users (disks, layers sealing over it).
func (m *Manager) useLayer(tx *storage.Txn, id LayerID, delta int64) error {
	if id == 0 {
		return nil
	}
	lm, err := getLayerMeta(tx, id)
	if err != nil {
		return fmt.Errorf("layer %d: %w", id, err)
	}
	lm.Users += delta
	if lm.Users < 0 {
		return fmt.Errorf("%w: layer %d users below zero", ErrCorruptMeta, id)
	}
	return m.putOrFree(tx, id, lm)
}

// LayerInfo returns the layer's description.
func (m *Manager) LayerInfo(id LayerID) (LayerInfo, error) {
	var lm *layerMeta
	if err := m.store.View(func(tx *storage.Txn) (err error) {
		lm, err = visibleLayer(tx, id)
		return err
	}); err != nil {
		return LayerInfo{}, err
	}
	l, err := m.getLayer(id)
	if err != nil {
		return LayerInfo{}, err
	}
	u, err := m.layerUsage(l)
	if err != nil {
		return LayerInfo{}, err
	}
	return LayerInfo{ID: id, Size: lm.Size, Sealed: l.sealed(), Usage: u}, nil
}

// WaitSealed blocks until the layer's seal is done (at once for imported
// layers), reporting progress in [0,1].
func (m *Manager) WaitSealed(ctx context.Context, id LayerID, progress func(float64)) error {
	l, err := m.getLayer(id)
	if err != nil {
		return err
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-l.ready:
			if progress != nil {
				progress(1)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-m.ctx.Done():
			return ErrClosed
		case <-t.C:
			if progress != nil {
				if tot := l.sealTotal.Load(); tot > 0 {
					progress(min(float64(l.sealDone.Load())/float64(tot), 0.99))
				}
			}
		}
	}
}

// reportBackground keeps the last background failure for BackgroundError.
func (m *Manager) reportBackground(err error) {
	select {
	case m.backgroundErrs <- err:
	default:
	}
}

// BackgroundError returns (and clears) the last error a background seal or
// release hit, or nil. Background work retries on its next pass; this is
// for logs and tests. (Addition to the contract.)
func (m *Manager) BackgroundError() error {
	select {
	case err := <-m.backgroundErrs:
		return err
	default:
		return nil
	}
}
