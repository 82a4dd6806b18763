package layer

import (
	"bytes"
	"context"
	"math/rand"
	"testing"

	"strata/storage"
)

// TestCacheAdmitsOnSecondMiss: through an image handle, the first read of a
// chunk is a miss the cache passes by, the second a miss it keeps, the
// third a hit, and the counters say so; every read returns the chunk.
func TestCacheAdmitsOnSecondMiss(t *testing.T) {
	e := newEnv(t, 4096)
	data := make([]byte, 64<<10)
	rand.New(rand.NewSource(7)).Read(data)
	img := e.importBytes(data)
	e.reopen() // a cold cache, whatever the import left in it
	v, err := e.m.OpenLayer(img)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	before := e.m.CacheStats()
	p := make([]byte, 4096)
	for round := range 3 {
		if err := v.ReadAt(context.Background(), p, 8192); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, data[8192:12288]) {
			t.Fatalf("round %d: read wrong bytes", round)
		}
		if round == 0 && e.m.cache.cachedBytes() != 0 {
			t.Fatal("a chunk read once was kept")
		}
	}
	got := e.m.CacheStats()
	if misses := got.Misses - before.Misses; misses != 2 {
		t.Errorf("misses: %d, want 2 (first and second read of the chunk)", misses)
	}
	if passed := got.Passed - before.Passed; passed != 1 {
		t.Errorf("passed: %d, want 1 (the first read only)", passed)
	}
	if hits := got.Hits - before.Hits; hits != 1 {
		t.Errorf("hits: %d, want 1 (third read of the chunk)", hits)
	}
	if n := e.m.cache.cachedBytes(); n != 4096 {
		t.Errorf("cache holds %d bytes, want one chunk", n)
	}
}

// TestScanPassesTheCache reads a standard disk's base once: in whole
// chunks of several request sizes over the first half (decoded in place),
// and in unaligned requests over the second (parts of chunks through
// scratch). Every byte is right, and the aligned scan leaves nothing in
// the cache (the unaligned one keeps the chunks two requests share: read
// twice). A pooled disk over the same image keeps every chunk it reads.
func TestScanPassesTheCache(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 4096)
	const size = 1 << 20
	data := make([]byte, size)
	rand.New(rand.NewSource(9)).Read(data)
	clear(data[64<<10 : 80<<10]) // a hole
	img := e.importBytes(data)
	e.reopen()
	std := e.openDisk(e.createDisk(img, size, false))
	scan := func(from, to int64, sizes []int) {
		t.Helper()
		off := from
		for i := 0; off < to; i++ {
			n := min(int64(sizes[i%len(sizes)]), to-off)
			p := bytes.Repeat([]byte{0xEE}, int(n))
			if err := std.ReadAt(ctx, p, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, data[off:off+n]) {
				t.Fatalf("read [%d,+%d): %s", off, n, firstDiff(p, data[off:off+n]))
			}
			off += n
		}
	}
	scan(0, size/2, []int{4096, 64 << 10, 8192, 128 << 10})
	if n := e.m.cache.cachedBytes(); n != 0 {
		t.Fatalf("a scan of a standard disk left %d bytes in the cache", n)
	}
	scan(size/2, size, []int{3000, 12345, 100, 70000})
	if err := std.Close(); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	pooled := e.openDisk(e.createDisk(img, size, true))
	defer pooled.Close()
	p := make([]byte, size)
	if err := pooled.ReadAt(ctx, p, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, data) {
		t.Fatal("pooled disk read wrong bytes")
	}
	if n, want := e.m.cache.cachedBytes(), int64(size-16<<10); n != want {
		t.Fatalf("a pooled disk's first read left %d bytes in the cache, want %d", n, want)
	}
}

// The doorkeeper admits an id on its second miss, and a run of
// consecutive ids (one import's chunks, read in a scan) shares a cache
// line without the ids forgetting one another.
func TestDoorkeeperRemembersARunOfConsecutiveIDs(t *testing.T) {
	d := newDoorkeeper(1 << 16)
	const base = storage.ChunkID(4096)
	for id := base; id < base+doorLine; id++ {
		if d.again(id) {
			t.Fatalf("first miss of %d admitted", id)
		}
	}
	for id := base; id < base+doorLine; id++ {
		if !d.again(id) {
			t.Fatalf("second miss of %d not admitted", id)
		}
	}
	// Where the run landed: eight slots of one aligned line.
	lines := map[int]int{}
	for i := range d.slots {
		if v := storage.ChunkID(d.slots[i].Load()); v >= base && v < base+doorLine {
			lines[i/doorLine]++
		}
	}
	if len(lines) != 1 {
		t.Fatalf("a run of %d ids spread over lines %v", doorLine, lines)
	}
}
