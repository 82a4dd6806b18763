package nbdvolume

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"strata/layer"
	"strata/nbd"
)

func TestNBDErrorTranslation(t *testing.T) {
	for _, tc := range []struct {
		in   error
		want error
	}{
		{layer.ErrNotFast, nbd.ErrNotFast},
		{fmt.Errorf("zero: %w", layer.ErrNotFast), nbd.ErrNotFast},
		{layer.ErrReadOnly, nbd.ErrPermission},
		{layer.ErrOutOfRange, nbd.ErrInvalid},
		{layer.ErrBusy, nbd.ErrPermission},
	} {
		got := Error(tc.in)
		if !errors.Is(got, tc.want) || !errors.Is(got, tc.in) {
			t.Errorf("Error(%v) = %v; want it to match %v and keep the cause", tc.in, got, tc.want)
		}
	}
	if Error(nil) != nil {
		t.Error("nil must stay nil")
	}
	other := errors.New("disk on fire")
	if got := Error(other); got != other {
		t.Errorf("unknown errors pass through unchanged (EIO): %v", got)
	}
}

// fakeVolume records calls; just enough of layer.Volume for the adapter.
type fakeVolume struct {
	layer.Volume
	extents []layer.Extent
	closed  bool
}

func (f *fakeVolume) Extents(context.Context, int64, int64) ([]layer.Extent, error) {
	return f.extents, nil
}
func (f *fakeVolume) WriteZeroes(context.Context, int64, int64, bool, bool, bool) error {
	return layer.ErrNotFast
}
func (f *fakeVolume) Close() error { f.closed = true; return nil }

func TestBackendConvertsExtentsAndCloses(t *testing.T) {
	v := &fakeVolume{extents: []layer.Extent{{Length: 4096, Hole: true, Zero: true}, {Length: 8192}, {Length: 512, Zero: true}}}
	b := New(v, "strata disk/d1")
	if _, ok := b.(nbd.BlockSizer); ok {
		t.Fatal("a volume without block sizes must not advertise any")
	}
	got, err := b.Extents(context.Background(), 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []nbd.Extent{{Length: 4096, Hole: true, Zero: true}, {Length: 8192}, {Length: 512, Zero: true}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("extents %v, want %v", got, want)
	}
	if err := b.WriteZeroes(context.Background(), 0, 4096, false, true, false); !errors.Is(err, nbd.ErrNotFast) {
		t.Fatalf("fast zero refusal: %v", err)
	}
	if d := b.(nbd.Describer).Description(); d != "strata disk/d1" {
		t.Fatalf("description %q", d)
	}
	// Without support in the volume, no inline paths are advertised, and
	// a cache hint succeeds doing nothing.
	if _, ok := b.(nbd.TryWriter); ok {
		t.Fatal("a volume without TryWriteAt must not advertise it")
	}
	if _, ok := b.(nbd.TryReader); ok {
		t.Fatal("a volume without TryReadAt must not advertise it")
	}
	if err := b.(nbd.Cacher).Cache(context.Background(), 0, 4096); err != nil {
		t.Fatalf("Cache: %v", err)
	}
	b.(interface{ Close() error }).Close()
	if !v.closed {
		t.Fatal("closing the backend must close the volume handle")
	}
}

// fastVolume has every optional interface.
type fastVolume struct {
	fakeVolume
}

func (fastVolume) BlockSizes() (uint32, uint32, uint32) { return 512, 4096, 1 << 20 }
func (fastVolume) TryReadAt([]byte, int64) bool         { return true }
func (fastVolume) TryWriteAt([]byte, int64, bool) (bool, error) {
	return true, layer.ErrReadOnly
}

func TestBackendPassesOptionalInterfacesThrough(t *testing.T) {
	b := New(&fastVolume{}, "x")
	bs, ok := b.(nbd.BlockSizer)
	if !ok {
		t.Fatal("block sizes lost")
	}
	if lo, pref, hi := bs.BlockSizes(); lo != 512 || pref != 4096 || hi != 1<<20 {
		t.Fatalf("block sizes %d %d %d", lo, pref, hi)
	}
	if tr, ok := b.(nbd.TryReader); !ok || !tr.TryReadAt(make([]byte, 8), 0) {
		t.Fatal("TryReadAt lost")
	}
	tw, ok := b.(nbd.TryWriter)
	if !ok {
		t.Fatal("TryWriteAt lost")
	}
	if done, err := tw.TryWriteAt(nil, 0, false); !done || !errors.Is(err, nbd.ErrPermission) {
		t.Fatalf("TryWriteAt: %v %v (errors must be translated too)", done, err)
	}
	for _, v := range []layer.Volume{&fakeVolume{}, &fastVolume{}} {
		if _, ok := New(v, "x").(interface{ Close() error }); !ok {
			t.Fatalf("%T: the handle must stay closable", v)
		}
	}
}

// wrapped hides a volume's optional methods, as a Close-only wrapper does.
type wrapped struct {
	layer.Volume
	closed bool
}

func (w *wrapped) Unwrap() layer.Volume { return w.Volume }
func (w *wrapped) Close() error         { w.closed = true; return w.Volume.Close() }

func TestBackendSeesThroughUnwrap(t *testing.T) {
	w := &wrapped{Volume: &fastVolume{}}
	b := New(w, "x")
	if _, ok := b.(nbd.BlockSizer); !ok {
		t.Fatal("block sizes of the wrapped volume lost")
	}
	if _, ok := b.(nbd.TryReader); !ok {
		t.Fatal("TryReadAt of the wrapped volume lost")
	}
	b.(interface{ Close() error }).Close()
	if !w.closed {
		t.Fatal("Close must go through the wrapper")
	}
}
