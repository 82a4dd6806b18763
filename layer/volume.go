package layer

import (
	"context"
	"fmt"
	"sync/atomic"

	"strata/storage"
)

// OpenLayer returns a read-only handle on an immutable layer.
func (m *Manager) OpenLayer(id LayerID) (Volume, error) {
	if err := m.store.View(func(tx *storage.Txn) error {
		_, err := visibleLayer(tx, id)
		return err
	}); err != nil {
		return nil, err
	}
	l, err := m.getLayer(id)
	if err != nil {
		return nil, err
	}
	l.pins.Add(1)
	return &layerHandle{m: m, l: l}, nil
}

// layerHandle is a read-only Volume over a layer (an image export).
type layerHandle struct {
	m      *Manager
	l      *layer
	closed atomic.Bool
}

func (h *layerHandle) Size() int64    { return h.l.size }
func (h *layerHandle) ReadOnly() bool { return true }

func (h *layerHandle) check(off, length int64) error {
	if h.closed.Load() {
		return ErrClosed
	}
	if off < 0 || length < 0 || off+length > h.l.size {
		return fmt.Errorf("%w: [%d, +%d) of layer %d (%d bytes)", ErrOutOfRange, off, length, h.l.id, h.l.size)
	}
	return nil
}

func (h *layerHandle) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := h.check(off, int64(len(p))); err != nil {
		return err
	}
	return h.m.readLayer(h.l, p, off)
}

func (h *layerHandle) WriteAt(context.Context, []byte, int64, bool) error { return ErrReadOnly }
func (h *layerHandle) Trim(context.Context, int64, int64, bool) error     { return ErrReadOnly }
func (h *layerHandle) WriteZeroes(context.Context, int64, int64, bool, bool, bool) error {
	return ErrReadOnly
}
func (h *layerHandle) Flush(context.Context) error { return nil }

// Close unpins the layer; a release waiting for it can then run.
func (h *layerHandle) Close() error {
	if !h.closed.Swap(true) && h.l.pins.Add(-1) == 0 {
		h.m.kickReaper()
	}
	return nil
}

func (h *layerHandle) Extents(ctx context.Context, off, length int64) ([]Extent, error) {
	if err := h.check(off, length); err != nil {
		return nil, err
	}
	if length == 0 {
		return nil, nil
	}
	length = min(length, maxExtentBlocks<<blockShift-(off&(blockSize-1)))
	b0 := off >> blockShift
	kinds := make([]uint8, (off+length-1)>>blockShift-b0+1)
	h.m.kindsLayer(h.l, b0, kinds)
	return extentsFrom(off, length, b0, kinds), nil
}
