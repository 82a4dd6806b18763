package layer

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"strata/storage"
)

// leafPatterns are the id layouts of the leaf benchmarks, from the common
// to the worst: fill writes leaf li's entries (0 = hole).
var leafPatterns = []struct {
	name string
	fill func(rng *rand.Rand, li int64, ids *[fanout]storage.ChunkID)
}{
	// An import's fresh data: ids minted in a row.
	{"sequential", func(_ *rand.Rand, li int64, ids *[fanout]storage.ChunkID) {
		for i := range ids {
			ids[i] = storage.ChunkID(1 + li*fanout + int64(i))
		}
	}},
	// Fresh ids, a quarter zeros, and one chunk in eight a dedup hit on
	// any older chunk of a store of a billion chunks.
	{"import-mixed", func(rng *rand.Rand, li int64, ids *[fanout]storage.ChunkID) {
		next := storage.ChunkID(1e9 + li*fanout)
		for i := range ids {
			switch r := rng.IntN(8); {
			case r < 2:
				ids[i] = storage.ZeroChunk
			case r == 2:
				ids[i] = storage.ChunkID(1 + rng.Uint64N(1e9))
			default:
				ids[i], next = next, next+1
			}
		}
	}},
	// Every entry anywhere among 2^32-2 ids.
	{"scattered-32bit", func(rng *rand.Rand, _ int64, ids *[fanout]storage.ChunkID) {
		for i := range ids {
			ids[i] = storage.ChunkID(1 + rng.Uint64N(1<<32-2))
		}
	}},
	// Every entry anywhere among 2^62 ids: the 8-byte fallback.
	{"scattered-64bit", func(rng *rand.Rand, _ int64, ids *[fanout]storage.ChunkID) {
		for i := range ids {
			ids[i] = storage.ChunkID(1 + rng.Uint64N(1<<62))
		}
	}},
}

// packedMap builds the in-memory map of nleaves leaves of a pattern.
func packedMap(fill func(*rand.Rand, int64, *[fanout]storage.ChunkID), nleaves int64) (*blockMap, int64) {
	rng := rand.New(rand.NewPCG(11, 12))
	bm := &blockMap{nchunks: nleaves * fanout, leaves: make([]*mapLeaf, nleaves)}
	var allocated int64
	var ids [fanout]storage.ChunkID
	for li := range nleaves {
		fill(rng, li, &ids)
		bm.leaves[li] = packLeaf(uint64(li+1), &ids)
		allocated += bm.leaves[li].allocated()
	}
	return bm, allocated
}

// BenchmarkLeafMemory reports the heap of the leaves of a 16 GiB map at
// 4 KiB chunks (4096 leaves) per allocated chunk, for each id layout.
func BenchmarkLeafMemory(b *testing.B) {
	const nleaves = 16 << 30 / (4 << 10) / fanout
	for _, p := range leafPatterns {
		b.Run("ids="+p.name, func(b *testing.B) {
			var perChunk float64
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				bm, allocated := packedMap(p.fill, nleaves)
				runtime.GC()
				runtime.ReadMemStats(&after)
				runtime.KeepAlive(bm)
				perChunk = float64(after.HeapAlloc-before.HeapAlloc) / float64(allocated)
			}
			b.ReportMetric(perChunk, "bytes/chunk")
		})
	}
}

// BenchmarkMapGet measures one map lookup (the read path's) at random
// chunks of a 16 GiB map, for each id layout (so each leaf width).
func BenchmarkMapGet(b *testing.B) {
	const nleaves = 4096
	for _, p := range leafPatterns {
		b.Run("ids="+p.name, func(b *testing.B) {
			bm, _ := packedMap(p.fill, nleaves)
			cis := make([]int64, 1<<16)
			rng := rand.New(rand.NewPCG(13, 14))
			for i := range cis {
				cis[i] = rng.Int64N(nleaves * fanout)
			}
			var sink storage.ChunkID
			b.ResetTimer()
			for i := range b.N {
				sink += bm.get(cis[i&(len(cis)-1)])
			}
			runtime.KeepAlive(sink)
		})
	}
}
