package main

import (
	"context"
	"errors"
	"fmt"

	"strata/layer"
	"strata/nbd"
)

// volumeBackend serves a layer.Volume as an nbd.Backend. The two
// interfaces have the same shape on purpose (nbd imports nothing of ours);
// this adapter converts extents and translates layer errors into the nbd
// errors that pick the client's errno. The original error stays wrapped
// for the logs.
type volumeBackend struct {
	v layer.Volume
}

var _ nbd.Backend = volumeBackend{}

func (b volumeBackend) Size() int64    { return b.v.Size() }
func (b volumeBackend) ReadOnly() bool { return b.v.ReadOnly() }

func (b volumeBackend) ReadAt(ctx context.Context, p []byte, off int64) error {
	return nbdError(b.v.ReadAt(ctx, p, off))
}

func (b volumeBackend) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return nbdError(b.v.WriteAt(ctx, p, off, fua))
}

func (b volumeBackend) Flush(ctx context.Context) error { return nbdError(b.v.Flush(ctx)) }

func (b volumeBackend) Trim(ctx context.Context, off, length int64, fua bool) error {
	return nbdError(b.v.Trim(ctx, off, length, fua))
}

func (b volumeBackend) WriteZeroes(ctx context.Context, off, length int64, mayTrim, fastOnly, fua bool) error {
	return nbdError(b.v.WriteZeroes(ctx, off, length, mayTrim, fastOnly, fua))
}

func (b volumeBackend) Extents(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	ext, err := b.v.Extents(ctx, off, length)
	if err != nil {
		return nil, nbdError(err)
	}
	out := make([]nbd.Extent, len(ext))
	for i, e := range ext {
		out[i] = nbd.Extent{Length: e.Length, Hole: e.Hole, Zero: e.Zero}
	}
	return out, nil
}

// Close releases the volume handle; the nbd server calls it when the
// connection that looked the export up ends (the last close of a disk
// flushes it).
func (b volumeBackend) Close() error { return b.v.Close() }

// newBackend wraps v; only a volume with block size constraints of its own
// advertises them, otherwise the server's defaults apply.
func newBackend(v layer.Volume) nbd.Backend {
	if _, ok := v.(nbd.BlockSizer); ok {
		return sizedBackend{volumeBackend{v}}
	}
	return volumeBackend{v}
}

// sizedBackend is a volumeBackend whose volume implements nbd.BlockSizer.
type sizedBackend struct{ volumeBackend }

func (b sizedBackend) BlockSizes() (minimum, preferred, maximum uint32) {
	return b.v.(nbd.BlockSizer).BlockSizes()
}

// nbdError is the one place layer errors become nbd errors.
func nbdError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, layer.ErrNotFast):
		return fmt.Errorf("%w: %w", nbd.ErrNotFast, err)
	case errors.Is(err, layer.ErrReadOnly):
		return fmt.Errorf("%w: %w", nbd.ErrPermission, err)
	case errors.Is(err, layer.ErrOutOfRange):
		return fmt.Errorf("%w: %w", nbd.ErrInvalid, err)
	case errors.Is(err, layer.ErrBusy):
		return fmt.Errorf("%w: %w", nbd.ErrPermission, err)
	default:
		return err
	}
}
