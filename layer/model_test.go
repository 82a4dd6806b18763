package layer

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"strata/storage"
)

// modelDisk is a disk under test and the plain byte slice it must equal.
type modelDisk struct {
	id   DiskID
	v    Volume
	data []byte
}

type modelSnap struct {
	id   LayerID
	data []byte
}

// TestModelRandomOps runs seeded random writes, trims, write-zeroes and
// reads at unaligned offsets and lengths on several disks, with snapshots
// and disks made from snapshots (pooled and standard) in between, and
// checks every read against a plain in-memory copy; at the end every
// snapshot must still read exactly what it held when taken, sealed, and
// again after the store is reopened.
func TestModelRandomOps(t *testing.T) {
	for _, chunk := range []int{4 << 10, 64 << 10} {
		t.Run(sizeName(chunk), func(t *testing.T) { runModel(t, chunk, 7+uint64(chunk)) })
	}
}

func sizeName(n int) string {
	return string(rune('0'+n>>10/10%10)) + string(rune('0'+n>>10%10)) + "KiB"
}

func runModel(t *testing.T, chunk int, seed uint64) {
	ctx := context.Background()
	e := newEnv(t, chunk)
	rng := rand.New(rand.NewPCG(seed, 1))
	// A second stream decides the non-blocking reads, so adding them left
	// the sequence of operations (and what it has found before) unchanged.
	trng := rand.New(rand.NewPCG(seed, 2))
	tried, served := 0, 0
	// tryRead offers [off, off+n) of v to TryReadAt: if it serves the read
	// the bytes must be the model's, if it declines p must be untouched.
	tryRead := func(what string, v Volume, model []byte, off, n int64) {
		t.Helper()
		p := make([]byte, n)
		for i := range p {
			p[i] = 0xA5
		}
		tried++
		if !v.(tryReader).TryReadAt(p, off) {
			for _, c := range p {
				if c != 0xA5 {
					t.Fatalf("%s: TryReadAt [%d,+%d) declined but wrote to p", what, off, n)
				}
			}
			return
		}
		served++
		if !bytes.Equal(p, model[off:off+n]) {
			t.Fatalf("%s: TryReadAt [%d,+%d): %s", what, off, n, firstDiff(p, model[off:off+n]))
		}
	}
	ops := 2500
	if testing.Short() {
		ops = 600
	}
	const size = 1<<20 + 12345 // not block aligned: the last block is short
	// An image to start from, imported, so disks begin over real chunks.
	img := make([]byte, size-50000)
	for i := 0; i < len(img); i += 1 + rng.IntN(9000) {
		n := min(len(img)-i, rng.IntN(20000))
		fillRand(rng, img[i:i+n])
		i += n
	}
	imgID := e.importBytes(img)

	var disks []*modelDisk
	var snaps []*modelSnap
	newDisk := func(base LayerID, content []byte, pooled bool) {
		id := e.createDisk(base, size, pooled)
		d := &modelDisk{id: id, v: e.openDisk(id), data: make([]byte, size)}
		copy(d.data, content)
		disks = append(disks, d)
	}
	newDisk(0, nil, false)
	newDisk(imgID, img, true)
	newDisk(imgID, img, false)

	for op := 0; op < ops; op++ {
		d := disks[rng.IntN(len(disks))]
		off := rng.Int64N(size)
		n := min(size-off, 1+rng.Int64N(20000))
		if rng.IntN(4) == 0 { // aligned requests, as most clients send
			off &^= blockSize - 1
			n = min(size-off, (n+blockSize-1)&^(blockSize-1))
		}
		switch k := rng.IntN(100); {
		case k < 35:
			p := make([]byte, n)
			fillRand(rng, p)
			if rng.IntN(8) == 0 {
				clear(p) // zero data takes the zero-block path
			}
			if err := d.v.WriteAt(ctx, p, off, rng.IntN(100) == 0); err != nil {
				t.Fatal(err)
			}
			copy(d.data[off:], p)
		case k < 45:
			if err := d.v.Trim(ctx, off, n, false); err != nil {
				t.Fatal(err)
			}
			clear(d.data[off : off+n])
		case k < 55:
			if err := d.v.WriteZeroes(ctx, off, n, rng.IntN(2) == 0, false, false); err != nil {
				t.Fatal(err)
			}
			clear(d.data[off : off+n])
		case k < 85:
			if trng.IntN(2) == 0 {
				tryRead("disk", d.v, d.data, off, n)
			}
			p := make([]byte, n)
			if err := d.v.ReadAt(ctx, p, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, d.data[off:off+n]) {
				t.Fatalf("op %d: read disk %d [%d,+%d): %s", op, d.id, off, n, firstDiff(p, d.data[off:off+n]))
			}
		case k < 90:
			checkExtents(t, d.v, d.data, off, n)
		case k < 93 && len(snaps) < 24:
			sid, err := e.m.Snapshot(ctx, d.id)
			if err != nil {
				t.Fatal(err)
			}
			snaps = append(snaps, &modelSnap{id: sid, data: bytes.Clone(d.data)})
		case k >= 93:
			if len(snaps) > 0 && len(disks) < 8 {
				s := snaps[rng.IntN(len(snaps))]
				newDisk(s.id, s.data, rng.IntN(2) == 0)
			}
		}
	}
	checkAll := func(when string) {
		for _, d := range disks {
			if got := readAll(t, d.v); !bytes.Equal(got, d.data) {
				t.Fatalf("%s: disk %d: %s", when, d.id, firstDiff(got, d.data))
			}
			checkExtents(t, d.v, d.data, 0, size)
			for i := 0; i < 8; i++ {
				off := trng.Int64N(size)
				tryRead(when+": disk", d.v, d.data, off, min(size-off, 1+trng.Int64N(20000)))
			}
		}
		for _, s := range snaps {
			v, err := e.m.OpenLayer(s.id)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, v); !bytes.Equal(got, s.data) {
				t.Fatalf("%s: snapshot %d: %s", when, s.id, firstDiff(got, s.data))
			}
			for i := 0; i < 8; i++ {
				off := trng.Int64N(size)
				tryRead(when+": snapshot", v, s.data, off, min(size-off, 1+trng.Int64N(20000)))
			}
			v.Close()
		}
	}
	checkAll("before seals finish")
	// Some reads must have been served, or the checks above prove nothing.
	if served == 0 || served == tried {
		t.Fatalf("TryReadAt served %d of %d reads: expected some of each", served, tried)
	}
	t.Logf("TryReadAt served %d of %d reads before the seals finished", served, tried)
	for _, s := range snaps {
		if err := e.m.WaitSealed(ctx, s.id, nil); err != nil {
			t.Fatal(err)
		}
		info, err := e.m.LayerInfo(s.id)
		if err != nil || !info.Sealed || info.Size != size {
			t.Fatalf("layer info %+v, %v", info, err)
		}
	}
	checkAll("sealed")
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	e.audit()
	for _, d := range disks {
		d.v.Close()
	}
	e.reopen()
	for _, d := range disks {
		d.v = e.openDisk(d.id)
	}
	checkAll("after reopen")
	e.audit()
	if err := e.m.BackgroundError(); err != nil {
		t.Fatal(err)
	}
	_ = storage.ZeroChunk
}

func fillRand(rng *rand.Rand, p []byte) {
	for i := 0; i < len(p); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(p); j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
}

// checkExtents checks that the extents of [off, off+n) tile a prefix of the
// range and that every run reported as zero reads as zeros in the model.
func checkExtents(t *testing.T, v Volume, model []byte, off, n int64) {
	t.Helper()
	ext, err := v.Extents(context.Background(), off, n)
	if err != nil {
		t.Fatal(err)
	}
	pos := off
	for _, x := range ext {
		if x.Length <= 0 {
			t.Fatalf("empty extent in %+v", ext)
		}
		if x.Hole && !x.Zero {
			t.Fatalf("hole that is not zero at %d", pos)
		}
		if x.Zero {
			for i := pos; i < pos+x.Length; i++ {
				if model[i] != 0 {
					t.Fatalf("extent [%d,+%d) reported zero, byte %d is %#x", pos, x.Length, i, model[i])
				}
			}
		}
		pos += x.Length
	}
	if pos > off+n || (n > 0 && pos == off) {
		t.Fatalf("extents of [%d,+%d) cover up to %d", off, n, pos)
	}
}
