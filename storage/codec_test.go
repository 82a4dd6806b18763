package storage

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// testCodec is a codec at the default level, closed when the test ends.
func testCodec(t *testing.T) *codec {
	t.Helper()
	c, err := newCodec(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

// TestDecodeWritesOnlyTheChunk: decode fills exactly the chunk's bytes of
// dst, whatever dst's capacity. The zstd decoder's fast path may write up
// to 15 bytes past a frame's end; a caller's buffer past the chunk (the
// rest of a read, say) must never see them.
func TestDecodeWritesOnlyTheChunk(t *testing.T) {
	c := testCodec(t)
	rng := rand.New(rand.NewPCG(61, 62))
	for _, raw := range [][]byte{textChunk(rng, 4096), textChunk(rng, 1000), randomChunk(rng, 4096)} {
		rec := c.encode(raw, nil)
		buf := bytes.Repeat([]byte{0xaa}, 2*4096)
		out, err := c.decode(rec, buf[:0])
		if err != nil || !bytes.Equal(out, raw) {
			t.Fatalf("decode of a %d-byte chunk (codec %d): %v", len(raw), rec[0], err)
		}
		if &out[0] != &buf[0] {
			t.Fatalf("decode did not use dst")
		}
		for i, b := range buf[len(raw):] {
			if b != 0xaa {
				t.Fatalf("decode of a %d-byte chunk (codec %d) wrote byte %d past it", len(raw), rec[0], i)
			}
		}
	}
}

// TestLowSavingChunksAreStoredRaw: a chunk is stored compressed only when
// zstd saves at least an eighth of it; below that it is stored raw, and
// both read back exactly.
func TestLowSavingChunksAreStoredRaw(t *testing.T) {
	c := testCodec(t)
	rng := rand.New(rand.NewPCG(63, 64))
	for _, tc := range []struct {
		zeros int // leading zero bytes in an otherwise random 4 KiB chunk
		want  byte
	}{
		{0, codecRaw},
		{256, codecRaw},   // saves about 6 %
		{1024, codecZstd}, // saves about 25 %
		{4000, codecZstd},
	} {
		raw := randomChunk(rng, 4096)
		clear(raw[:tc.zeros])
		rec := c.encode(raw, nil)
		if rec[0] != tc.want {
			t.Errorf("%d zero bytes: codec %d (record %d bytes), want %d", tc.zeros, rec[0], len(rec), tc.want)
		}
		if rec[0] == codecZstd && len(rec)-recordHeader > len(raw)-len(raw)/minSaving {
			t.Errorf("%d zero bytes: kept a frame of %d bytes", tc.zeros, len(rec)-recordHeader)
		}
		out, err := c.decode(rec, nil)
		if err != nil || !bytes.Equal(out, raw) {
			t.Fatalf("%d zero bytes: read back %v", tc.zeros, err)
		}
	}
}

// TestEveryLevelReadsBack: records written at any level read back through
// a codec of any other, as a store's chunks do after its level changes;
// level 1 (smallzstd) compresses text as well.
func TestEveryLevelReadsBack(t *testing.T) {
	rng := rand.New(rand.NewPCG(65, 66))
	raws := [][]byte{textChunk(rng, 4096), textChunk(rng, 777), randomChunk(rng, 4096), make([]byte, 4096), textChunk(rng, MaxChunkSize)}
	reader := testCodec(t)
	for level := 1; level <= 5; level++ {
		c, err := newCodec(level, 1)
		if err != nil {
			t.Fatal(err)
		}
		for i, raw := range raws {
			rec := c.encode(raw, nil)
			if i == 0 && rec[0] != codecZstd {
				t.Errorf("level %d stored 4 KiB of text raw", level)
			}
			for _, d := range []*codec{c, reader} {
				out, err := d.decode(rec, nil)
				if err != nil || !bytes.Equal(out, raw) {
					t.Fatalf("level %d, chunk %d: read back %v", level, i, err)
				}
			}
		}
		c.close()
	}
}
