package storage

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestDecodeWritesOnlyTheChunk: decode fills exactly the chunk's bytes of
// dst, whatever dst's capacity. The zstd decoder's fast path may write up
// to 15 bytes past a frame's end; a caller's buffer past the chunk (the
// rest of a read, say) must never see them.
func TestDecodeWritesOnlyTheChunk(t *testing.T) {
	c, err := newCodec(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
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
