package imagefile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exportQCOW2 writes src (size bytes) with extents to a qcow2 file.
func exportQCOW2(t *testing.T, src []byte, extents []Extent) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "export.qcow2")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := WriteQCOW2(f, bytes.NewReader(src), int64(len(src)), extents); err != nil {
		t.Fatalf("WriteQCOW2: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestWriteQCOW2IsCleanAndIdentical proves an exported qcow2 passes
// qemu-img check, compares identical to its source under qemu-img
// compare, reads back through Open, and leaves zero runs unallocated.
func TestWriteQCOW2IsCleanAndIdentical(t *testing.T) {
	src := pattern(patternSize(), 2)
	holeExtents := []Extent{
		{Offset: 0, Length: 2 << 20},
		{Offset: 2 << 20, Length: 2<<20 + 512<<10, Zero: true},
		{Offset: 4<<20 + 512<<10, Length: int64(len(src)) - (4<<20 + 512<<10)},
	}
	cases := []struct {
		name    string
		src     []byte
		extents []Extent
		// maxData bounds the allocated clusters qemu-img map reports.
		maxData int64
	}{
		{name: "no-extents", src: src, maxData: int64(len(src)) - 2<<20},
		{name: "with-zero-extents", src: src, extents: holeExtents, maxData: int64(len(src)) - 2<<20},
		{name: "all-zero-disk", src: make([]byte, 3<<20), maxData: 0},
		{name: "empty-disk", src: nil, maxData: 0},
		{name: "one-sector", src: []byte(strings.Repeat("x", 512)), maxData: 64 << 10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := exportQCOW2(t, c.src, c.extents)
			check := run(t, "qemu-img", "check", "-f", "qcow2", out)
			if !strings.Contains(check, "No errors were found") {
				t.Fatalf("qemu-img check:\n%s", check)
			}
			rawPath := writeFile(t, t.TempDir(), "src.raw", c.src)
			cmp := run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", rawPath, out)
			if !strings.Contains(cmp, "Images are identical") {
				t.Fatalf("qemu-img compare:\n%s", cmp)
			}
			img, err := openFile(t, out, QCOW2)
			if err != nil {
				t.Fatalf("Open of the export: %v", err)
			}
			if img.Size() != int64(len(c.src)) {
				t.Fatalf("Size() = %d, want %d", img.Size(), len(c.src))
			}
			data := readAll(t, img, 1<<20)
			checkSame(t, data, c.src)
			checkExtents(t, img, data)
			ext, _ := img.Extents()
			var alloc int64
			for _, e := range ext {
				if !e.Zero {
					alloc += e.Length
				}
			}
			if alloc > c.maxData {
				t.Errorf("%d bytes allocated, want at most %d: zero clusters were written", alloc, c.maxData)
			}
		})
	}
}

// TestWriteQCOW2OddSize: a size that is not a multiple of 512 rounds up,
// and the tail reads as zeros.
func TestWriteQCOW2OddSize(t *testing.T) {
	src := pattern(100<<10+77, 3)
	out := exportQCOW2(t, src, nil)
	if check := run(t, "qemu-img", "check", "-f", "qcow2", out); !strings.Contains(check, "No errors were found") {
		t.Fatalf("qemu-img check:\n%s", check)
	}
	img, err := openFile(t, out, "")
	if err != nil {
		t.Fatal(err)
	}
	if img.Size() != 100<<10+512 {
		t.Fatalf("Size() = %d, want %d", img.Size(), 100<<10+512)
	}
	checkSame(t, readAll(t, img, 1<<20), src)
}

// TestWriteQCOW2FromImportedImage: a qcow2 read through Open and exported
// with its own extents is identical to the original (the export path of
// an imported image).
func TestWriteQCOW2FromImportedImage(t *testing.T) {
	dir := t.TempDir()
	src := pattern(patternSize(), 4)
	rawPath := writeFile(t, dir, "src.raw", src)
	in := filepath.Join(dir, "in.vmdk")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", rawPath, in)
	img, err := openFile(t, in, VMDK)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := img.Extents()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.qcow2")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteQCOW2(f, img, img.Size(), ext); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cmp := run(t, "qemu-img", "compare", "-f", "vmdk", "-F", "qcow2", in, out)
	if !strings.Contains(cmp, "Images are identical") {
		t.Fatalf("qemu-img compare:\n%s", cmp)
	}
}

// TestWriteQCOW2RejectsBadExtents: an extent with a negative offset or
// length is a caller bug, reported rather than written around.
func TestWriteQCOW2RejectsBadExtents(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "x.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, e := range []Extent{{Offset: -1, Length: 10}, {Offset: 0, Length: -5}} {
		if err := WriteQCOW2(f, bytes.NewReader(make([]byte, 4096)), 4096, []Extent{e}); err == nil {
			t.Errorf("extent %+v accepted", e)
		}
	}
}

// TestWriteRawRoundTrip: WriteRaw of an image is its logical bytes, and a
// source that ends early is an error, not a short file.
func TestWriteRawRoundTrip(t *testing.T) {
	src := pattern(1<<20+4096+100, 5)
	var out bytes.Buffer
	if err := WriteRaw(&out, bytes.NewReader(src), int64(len(src))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), src) {
		t.Fatal("WriteRaw output differs from the source")
	}
	out.Reset()
	if err := WriteRaw(&out, bytes.NewReader(src[:1000]), int64(len(src))); err == nil {
		t.Fatal("WriteRaw of a short source did not fail")
	}
}

// sparseDisk is a large logical disk with a few data pieces, read without
// materialising it.
type sparseDisk struct {
	size   int64
	pieces map[int64][]byte // offset -> data
}

func (d *sparseDisk) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for o, b := range d.pieces {
		lo, hi := max(o, off), min(o+int64(len(b)), off+int64(len(p)))
		if lo < hi {
			copy(p[lo-off:hi-off], b[lo-o:hi-o])
		}
	}
	return len(p), nil
}

// TestWriteQCOW2ManyTables: a 3 GiB disk with data in six L2 ranges (one
// per 512 MiB) and an extent map saying the rest is zeros exports clean
// and identical, without reading the zeros.
func TestWriteQCOW2ManyTables(t *testing.T) {
	d := &sparseDisk{size: 3 << 30, pieces: map[int64][]byte{}}
	var ext []Extent
	at := int64(0)
	for i := int64(0); i < 6; i++ {
		off := i*(512<<20) + i*4096*7
		d.pieces[off] = pattern(200<<10, uint64(i))
		ext = append(ext, Extent{Offset: at, Length: off - at, Zero: true}, Extent{Offset: off, Length: 200 << 10})
		at = off + 200<<10
	}
	ext = append(ext, Extent{Offset: at, Length: d.size - at, Zero: true})
	dir := t.TempDir()
	out := filepath.Join(dir, "big.qcow2")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteQCOW2(f, d, d.size, ext); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if check := run(t, "qemu-img", "check", "-f", "qcow2", out); !strings.Contains(check, "No errors were found") {
		t.Fatalf("qemu-img check:\n%s", check)
	}
	// The raw reference is a sparse file: qemu-img compare skips its holes.
	rawPath := filepath.Join(dir, "big.raw")
	rf, err := os.Create(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := rf.Truncate(d.size); err != nil {
		t.Fatal(err)
	}
	for o, b := range d.pieces {
		if _, err := rf.WriteAt(b, o); err != nil {
			t.Fatal(err)
		}
	}
	rf.Close()
	if cmp := run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", rawPath, out); !strings.Contains(cmp, "Images are identical") {
		t.Fatalf("qemu-img compare:\n%s", cmp)
	}
}
