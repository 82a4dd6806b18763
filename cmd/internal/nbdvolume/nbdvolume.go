// Package nbdvolume serves a layer.Volume as an nbd.Backend: the one
// adapter between the two packages (nbd imports nothing of ours), shared by
// the daemon and the benchmark so both measure the same path. It converts
// extents, translates layer errors into the nbd errors that pick the
// client's errno, and passes the volume's optional fast paths through.
package nbdvolume

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
	v    layer.Volume
	desc string // NBD_INFO_DESCRIPTION, e.g. "strata disk/<id>"
}

var (
	_ nbd.Backend   = volumeBackend{}
	_ nbd.Cacher    = volumeBackend{}
	_ nbd.Describer = volumeBackend{}
)

func (b volumeBackend) Size() int64    { return b.v.Size() }
func (b volumeBackend) ReadOnly() bool { return b.v.ReadOnly() }

func (b volumeBackend) ReadAt(ctx context.Context, p []byte, off int64) error {
	return Error(b.v.ReadAt(ctx, p, off))
}

func (b volumeBackend) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return Error(b.v.WriteAt(ctx, p, off, fua))
}

func (b volumeBackend) Flush(ctx context.Context) error { return Error(b.v.Flush(ctx)) }

func (b volumeBackend) Trim(ctx context.Context, off, length int64, fua bool) error {
	return Error(b.v.Trim(ctx, off, length, fua))
}

func (b volumeBackend) WriteZeroes(ctx context.Context, off, length int64, mayTrim, fastOnly, fua bool) error {
	return Error(b.v.WriteZeroes(ctx, off, length, mayTrim, fastOnly, fua))
}

func (b volumeBackend) Extents(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	ext, err := b.v.Extents(ctx, off, length)
	if err != nil {
		return nil, Error(err)
	}
	out := make([]nbd.Extent, len(ext))
	for i, e := range ext {
		out[i] = nbd.Extent{Length: e.Length, Hole: e.Hole, Zero: e.Zero}
	}
	return out, nil
}

// Cache passes NBD_CMD_CACHE through when the volume can prefetch; it is
// a hint, so without support it succeeds doing nothing.
func (b volumeBackend) Cache(ctx context.Context, off, length int64) error {
	if c, ok := b.v.(nbd.Cacher); ok {
		return Error(c.Cache(ctx, off, length))
	}
	return nil
}

// Description names the export for nbdinfo and friends.
func (b volumeBackend) Description() string { return b.desc }

// Close releases the volume handle; the nbd server calls it when the
// connection that looked the export up ends (the last close of a disk
// flushes it).
func (b volumeBackend) Close() error { return b.v.Close() }

// New wraps v; desc is the export description nbdinfo shows. The nbd server changes its behaviour for backends
// with optional interfaces (block size constraints, reads and writes done
// inline on the connection's reader), so the adapter has exactly the ones
// the volume has: one small type per combination.
func New(v layer.Volume, desc string) nbd.Backend {
	b := volumeBackend{v, desc}
	// A wrapper (the api's handle that releases the disk's writer slot on
	// Close) may hide the layer volume's optional methods; Unwrap, by Go
	// convention, reaches them. Data and Close still go through v.
	inner := v
	if u, ok := v.(interface{ Unwrap() layer.Volume }); ok {
		inner = u.Unwrap()
	}
	bs, hasBS := inner.(nbd.BlockSizer)
	tr, hasTR := inner.(nbd.TryReader)
	tw, hasTW := inner.(nbd.TryWriter)
	switch {
	case hasBS && hasTR && hasTW:
		return struct {
			volumeBackend
			sizer
			tryReader
			tryWriter
		}{b, sizer{bs}, tryReader{tr}, tryWriter{tw}}
	case hasBS && hasTR:
		return struct {
			volumeBackend
			sizer
			tryReader
		}{b, sizer{bs}, tryReader{tr}}
	case hasBS && hasTW:
		return struct {
			volumeBackend
			sizer
			tryWriter
		}{b, sizer{bs}, tryWriter{tw}}
	case hasTR && hasTW:
		return struct {
			volumeBackend
			tryReader
			tryWriter
		}{b, tryReader{tr}, tryWriter{tw}}
	case hasBS:
		return struct {
			volumeBackend
			sizer
		}{b, sizer{bs}}
	case hasTR:
		return struct {
			volumeBackend
			tryReader
		}{b, tryReader{tr}}
	case hasTW:
		return struct {
			volumeBackend
			tryWriter
		}{b, tryWriter{tw}}
	}
	return b
}

// sizer passes the volume's block size constraints through.
type sizer struct{ bs nbd.BlockSizer }

func (s sizer) BlockSizes() (minimum, preferred, maximum uint32) { return s.bs.BlockSizes() }

// tryReader passes the volume's non-blocking read through.
type tryReader struct{ tr nbd.TryReader }

func (r tryReader) TryReadAt(p []byte, off int64) bool { return r.tr.TryReadAt(p, off) }

// tryWriter passes the volume's non-blocking write through.
type tryWriter struct{ tw nbd.TryWriter }

func (w tryWriter) TryWriteAt(p []byte, off int64, fua bool) (bool, error) {
	done, err := w.tw.TryWriteAt(p, off, fua)
	return done, Error(err)
}

// nbdError is the one place layer errors become nbd errors.
func Error(err error) error {
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
