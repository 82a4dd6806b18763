package layer

import (
	"bytes"
	"context"
	"math/rand"
	"testing"
)

// TestCacheStatsCountMissThenHit: the first read of a chunk is a miss, the
// same read again is a hit, and the counters say so.
func TestCacheStatsCountMissThenHit(t *testing.T) {
	e := newEnv(t, 4096)
	data := make([]byte, 64<<10)
	rand.New(rand.NewSource(7)).Read(data)
	img := e.importBytes(data)
	v, err := e.m.OpenLayer(img)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	before := e.m.CacheStats()
	p := make([]byte, 4096)
	for round := 0; round < 2; round++ {
		if err := v.ReadAt(context.Background(), p, 8192); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, data[8192:12288]) {
			t.Fatalf("round %d: read wrong bytes", round)
		}
	}
	got := e.m.CacheStats()
	if misses := got.Misses - before.Misses; misses != 1 {
		t.Errorf("misses: %d, want 1 (first read of the chunk)", misses)
	}
	if hits := got.Hits - before.Hits; hits != 1 {
		t.Errorf("hits: %d, want 1 (second read of the chunk)", hits)
	}
}
