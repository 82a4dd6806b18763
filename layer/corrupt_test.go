package layer

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"strata/storage"
)

// TestCorruptChunkIsAnErrorOnEveryReadPath damages one stored chunk and
// reads it every way a read can reach it: a whole chunk and part of one
// decoded straight into the caller's buffer (a standard disk's first
// miss), a multi-chunk read around it, a second miss the cache would keep,
// and a pooled disk's read through a flight. Each fails with
// storage.ErrCorrupt, nothing damaged is cached, and the chunks next to it
// still read right.
func TestCorruptChunkIsAnErrorOnEveryReadPath(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 4096)
	const size = 256 << 10
	data := make([]byte, size)
	fillRand(rand.New(rand.NewPCG(21, 21)), data)
	img := e.importBytes(data)
	l, err := e.m.getLayer(img)
	if err != nil {
		t.Fatal(err)
	}
	const bad = 10 // chunk index
	id := l.view.Load().bm.get(bad)
	if err := e.store.InjectCorruption(id, 77); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	std := e.openDisk(e.createDisk(img, size, false))
	defer std.Close()
	pooled := e.openDisk(e.createDisk(img, size, true))
	defer pooled.Close()
	reads := []struct {
		name string
		v    Volume
		off  int64
		n    int
	}{
		{"whole chunk, first miss", std, bad * 4096, 4096},
		{"part of the chunk, first miss", std, bad*4096 + 100, 1000},
		{"across it", std, (bad - 2) * 4096, 5 * 4096},
		{"whole chunk, second miss", std, bad * 4096, 4096},
		{"pooled disk", pooled, bad * 4096, 4096},
		{"pooled disk, across it", pooled, (bad - 1) * 4096, 3 * 4096},
	}
	for _, r := range reads {
		p := make([]byte, r.n)
		err := r.v.ReadAt(ctx, p, r.off)
		if !errors.Is(err, storage.ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", r.name, err)
		}
	}
	for _, ci := range []int64{bad - 1, bad + 1} {
		p := make([]byte, 4096)
		if err := std.ReadAt(ctx, p, ci*4096); err != nil {
			t.Fatalf("chunk %d next to the damaged one: %v", ci, err)
		}
		if !bytes.Equal(p, data[ci*4096:(ci+1)*4096]) {
			t.Fatalf("chunk %d next to the damaged one read wrong bytes", ci)
		}
	}
	if _, ok := e.m.cache.peek(id); ok {
		t.Fatal("the damaged chunk is in the cache")
	}
}
