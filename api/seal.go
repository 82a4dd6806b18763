package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash"

	"strata/layer"
)

// checksumPrefix marks the hash algorithm of Image.Checksum.
const checksumPrefix = "sha256:"

func formatChecksum(h hash.Hash) string { return checksumPrefix + hex.EncodeToString(h.Sum(nil)) }

// hashBuf is the read size when hashing a volume.
const hashBuf = 1 << 20

// sealAndHash waits for a snapshot layer's seal (the first half of the
// progress) and then hashes its logical content (the second half), so a
// snapshot and the images made from it carry the same checksum an import
// of the same raw bytes would.
func (s *Service) sealAndHash(ctx context.Context, id layer.LayerID, ro *runningOp) (string, error) {
	ro.report("seal", 0, 0, 0)
	if err := s.layers.WaitSealed(ctx, id, func(f float64) { ro.report("seal", f/2, 0, 0) }); err != nil {
		return "", err
	}
	v, err := s.layers.OpenLayer(id)
	if err != nil {
		return "", err
	}
	defer v.Close()
	size := v.Size()
	h := sha256.New()
	buf := make([]byte, hashBuf)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil { // a cancel stops a long hash at once
			return "", err
		}
		n := int64(len(buf))
		if size-off < n {
			n = size - off
		}
		if err := v.ReadAt(ctx, buf[:n], off); err != nil {
			return "", err
		}
		h.Write(buf[:n])
		off += n
		ro.report("checksum", 0.5+float64(off)/float64(size)/2, off, size)
	}
	return formatChecksum(h), nil
}
