package layer

import (
	"math"
	"math/rand/v2"
	"testing"

	"strata/storage"
)

// leafWidth names the form packLeaf chose: 16, 32 or 64 bits an entry.
func leafWidth(l *mapLeaf) int {
	switch {
	case l.d16 != nil && l.d32 == nil && l.ids == nil:
		return 16
	case l.d32 != nil && l.d16 == nil && l.ids == nil:
		return 32
	case l.ids != nil && l.d16 == nil && l.d32 == nil:
		return 64
	}
	return 0 // not exactly one form: a bug
}

// randomLeaf fills a leaf with ids drawn from [lo, lo+span] and a share of
// holes, and puts lo and lo+span themselves in so the span is exact.
func randomLeaf(rng *rand.Rand, lo, span uint64, holes float64) *[fanout]storage.ChunkID {
	var ids [fanout]storage.ChunkID
	for i := range ids {
		if rng.Float64() < holes {
			continue
		}
		ids[i] = storage.ChunkID(lo + rng.Uint64N(span+1))
	}
	ids[rng.IntN(fanout/2)] = storage.ChunkID(lo)
	ids[fanout/2+rng.IntN(fanout/2)] = storage.ChunkID(lo + span)
	return &ids
}

func TestMapLeafPacksExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []struct {
		name      string
		lo, span  uint64
		holes     float64
		wantWidth int
	}{
		{"sequential fresh ids", 1_000_000, fanout - 1, 0, 16},
		{"lowest id 1", 1, 500, 0.3, 16},
		{"span 65534: widest 16-bit", 77, math.MaxUint16 - 1, 0.5, 16},
		{"span 65535: needs 32-bit", 77, math.MaxUint16, 0.5, 32},
		{"scattered 32-bit ids", 5, 1 << 31, 0.1, 32},
		{"span 2^32-2: widest 32-bit", 9, math.MaxUint32 - 1, 0, 32},
		{"span 2^32-1: falls back to 64-bit", 9, math.MaxUint32, 0, 64},
		{"scattered 64-bit ids", 1, math.MaxUint64 - 1, 0.2, 64},
		{"ids near the top", math.MaxUint64 - 40_000, 40_000, 0.2, 16},
		{"mostly holes", 1 << 40, 1 << 20, 0.99, 32},
		{"one repeated id", 42, 0, 0, 16},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ids := randomLeaf(rng, c.lo, c.span, c.holes)
			l := packLeaf(7, ids)
			if got := leafWidth(l); got != c.wantWidth {
				t.Fatalf("width %d, want %d", got, c.wantWidth)
			}
			checkLeaf(t, l, ids)
		})
	}
}

func TestMapLeafHolesAndZeroChunk(t *testing.T) {
	var ids [fanout]storage.ChunkID
	l := packLeaf(1, &ids)
	if leafWidth(l) == 0 {
		t.Fatal("all-hole leaf has no form")
	}
	checkLeaf(t, l, &ids)
	// Zero-chunk entries are holes whatever the other ids are.
	for i := range ids {
		if i%3 != 0 {
			ids[i] = storage.ChunkID(1<<33 + i)
		}
	}
	ids[5] = storage.ZeroChunk
	checkLeaf(t, packLeaf(1, &ids), &ids)
}

// TestMapLeafRebuild follows a seal: a new leaf starts from the parent's
// entries, changes some (to new ids, holes, or ids far away) and is packed
// again; the parent's packed form must not change.
func TestMapLeafRebuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	orig := randomLeaf(rng, 1000, 3000, 0.2)
	parent := packLeaf(1, orig)
	for round, far := range []uint64{2000, 1 << 20, 1 << 40} {
		lf := newLeaf()
		parent.unpack(lf.ids)
		for range 50 {
			lf.ids[rng.IntN(fanout)] = storage.ChunkID(1000 + rng.Uint64N(far))
			lf.ids[rng.IntN(fanout)] = storage.ZeroChunk
		}
		checkLeaf(t, packLeaf(uint64(round+2), lf.ids), lf.ids)
		checkLeaf(t, parent, orig)
	}
}

func TestBlockMapGetAcrossLeaves(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	want := []*[fanout]storage.ChunkID{
		randomLeaf(rng, 10, 100, 0.1),
		nil, // hole leaf
		randomLeaf(rng, 1<<20, 1<<30, 0.1),
		randomLeaf(rng, 1, 1<<50, 0.1),
	}
	bm := &blockMap{nchunks: int64(len(want)) * fanout, leaves: make([]*mapLeaf, len(want))}
	for li, ids := range want {
		if ids != nil {
			bm.leaves[li] = packLeaf(uint64(li+1), ids)
		}
	}
	for ci := range int64(len(want))*fanout + 2*fanout {
		var exp storage.ChunkID
		if li := ci / fanout; li < int64(len(want)) && want[li] != nil {
			exp = want[li][ci%fanout]
		}
		if got := bm.get(ci); got != exp {
			t.Fatalf("get(%d) = %d, want %d", ci, got, exp)
		}
	}
	var nilMap *blockMap
	if got := nilMap.get(3); got != storage.ZeroChunk {
		t.Fatalf("nil map get = %d", got)
	}
}

func checkLeaf(t *testing.T, l *mapLeaf, ids *[fanout]storage.ChunkID) {
	t.Helper()
	var n int64
	for i, id := range ids {
		if got := l.at(int64(i)); got != id {
			t.Fatalf("entry %d: %d, want %d", i, got, id)
		}
		if id != storage.ZeroChunk {
			n++
		}
	}
	if got := l.allocated(); got != n {
		t.Fatalf("allocated %d, want %d", got, n)
	}
	var back [fanout]storage.ChunkID
	l.unpack(&back)
	if back != *ids {
		t.Fatal("unpack differs from the packed entries")
	}
	if l.pid == 0 {
		t.Fatal("page id lost")
	}
}
