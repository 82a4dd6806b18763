package storage

import (
	"bytes"
	"sync"

	"github.com/zeebo/blake3"
)

// hashSize is the length of a chunk's identity hash.
const hashSize = 32

// chunkHash is the keyed BLAKE3 of a raw chunk: its identity for dedup.
type chunkHash [hashSize]byte

// hasher computes keyed BLAKE3. The key is the store's random secret, so
// nobody outside the store can craft a colliding chunk to plant data in
// another tenant's disk (dedup crosses folders).
type hasher struct {
	pool sync.Pool
}

func newHasher(secret []byte) (*hasher, error) {
	proto, err := blake3.NewKeyed(secret)
	if err != nil {
		return nil, err
	}
	h := &hasher{}
	h.pool.New = func() any { return proto.Clone() }
	return h, nil
}

func (h *hasher) sum(raw []byte) (out chunkHash) {
	b := h.pool.Get().(*blake3.Hasher)
	b.Reset()
	_, _ = b.Write(raw)
	b.Sum(out[:0])
	h.pool.Put(b)
	return out
}

// zeroBlock is compared against in isZero; bytes.Equal is vectorised, which
// is several times faster than a byte loop on the mostly-zero images we see.
var zeroBlock = make([]byte, MaxChunkSize)

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
