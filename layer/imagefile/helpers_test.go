package imagefile

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// run runs a real tool and fails the test with its output when it fails.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// patternSize is the raw test disk: not a multiple of any cluster, grain or
// block size, so every format has a partial last unit.
func patternSize() int64 {
	return 6<<20 + 3584
}

// pattern builds a disk of 16 KiB pieces of random data, compressible
// text, zeros and nearly-zero blocks, with a long zero hole
// and data up to the last byte.
func pattern(size int64, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	const piece = 16 << 10
	for off := int64(0); off < size; off += piece {
		p := b[off:min(off+piece, size)]
		if off >= 2<<20 && off < 4<<20+512<<10 {
			continue // a 2.5 MiB hole: whole zero clusters, grains and VHD blocks
		}
		switch rng.IntN(5) {
		case 0:
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
		case 1:
			for i := 0; i < len(p); {
				i += copy(p[i:], "strata stores logical disks, not containers. ")
			}
		case 2: // zeros
		case 3:
			p[rng.IntN(len(p))] = 1
		case 4:
			for i := range p[:len(p)/2] {
				p[i] = byte(rng.Uint32())
			}
		}
	}
	// The last bytes are data so a truncated tail would show.
	copy(b[size-16:], "end of the disk!")
	return b
}

// writeFile writes b to dir/name and returns its path.
func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// openFile opens path as an image with the claimed format.
func openFile(t testing.TB, path string, claimed Format) (Image, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return Open(f, st.Size(), claimed)
}

// readAll reads the whole image in blocks of bs bytes.
func readAll(t testing.TB, img Image, bs int) []byte {
	t.Helper()
	out := make([]byte, img.Size())
	for off := int64(0); off < img.Size(); off += int64(bs) {
		end := min(off+int64(bs), img.Size())
		n, err := img.ReadAt(out[off:end], off)
		if err != nil && !(end == img.Size() && n == int(end-off)) {
			t.Fatalf("ReadAt(%d, %d): n=%d err=%v", end-off, off, n, err)
		}
		if n != int(end-off) {
			t.Fatalf("ReadAt(%d, %d): short read %d", end-off, off, n)
		}
	}
	return out
}

// checkSame compares logical bytes with the raw source. VHD rounds the
// size up to its disk geometry, so got may be longer: the rest is zeros.
func checkSame(t testing.TB, got, want []byte) {
	t.Helper()
	if len(got) < len(want) {
		t.Fatalf("image is %d bytes, source %d", len(got), len(want))
	}
	if i := firstDiff(got[:len(want)], want); i >= 0 {
		t.Fatalf("byte %d differs: got %#x want %#x", i, got[i], want[i])
	}
	if !allZero(got[len(want):]) {
		t.Fatalf("the %d bytes past the source size are not zero", len(got)-len(want))
	}
}

func firstDiff(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i += 4096 {
		e := min(i+4096, len(a), len(b))
		if !bytes.Equal(a[i:e], b[i:e]) {
			for j := i; j < e; j++ {
				if a[j] != b[j] {
					return j
				}
			}
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// checkExtents asserts the extents tile [0, Size) in order and that every
// zero run really reads as zeros.
func checkExtents(t testing.TB, img Image, data []byte) {
	t.Helper()
	ext, err := img.Extents()
	if err != nil {
		t.Fatalf("Extents: %v", err)
	}
	var at int64
	for i, e := range ext {
		if e.Offset != at || e.Length <= 0 {
			t.Fatalf("extent %d %+v does not continue at %d", i, e, at)
		}
		if e.Zero && !allZero(data[e.Offset:e.Offset+e.Length]) {
			t.Fatalf("extent %d %+v is marked zero but holds data", i, e)
		}
		at += e.Length
	}
	if at != img.Size() {
		t.Fatalf("extents end at %d, size is %d", at, img.Size())
	}
}
