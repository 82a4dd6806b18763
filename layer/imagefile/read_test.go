package imagefile

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// conversion is one way qemu-img writes an image from a raw source.
type conversion struct {
	name   string
	format Format
	args   []string // qemu-img convert options after -f raw
	// post runs on the converted file (e.g. qemu-io to make zero clusters).
	post func(t *testing.T, path string)
	// sparse: the format records the 1 MiB hole, so Extents must show a
	// zero run.
	sparse bool
	// rounded: the format may round the size up (VHD's disk geometry).
	rounded bool
}

var conversions = []conversion{
	{name: "qcow2-v2", format: QCOW2, args: []string{"-O", "qcow2", "-o", "compat=0.10"}, sparse: true},
	{name: "qcow2-v3", format: QCOW2, args: []string{"-O", "qcow2", "-o", "compat=1.1"}, sparse: true},
	{name: "qcow2-v2-compressed", format: QCOW2, args: []string{"-c", "-O", "qcow2", "-o", "compat=0.10"}, sparse: true},
	{name: "qcow2-v3-compressed", format: QCOW2, args: []string{"-c", "-O", "qcow2", "-o", "compat=1.1"}, sparse: true},
	{name: "qcow2-zstd-compressed", format: QCOW2, args: []string{"-c", "-O", "qcow2", "-o", "compression_type=zstd"}, sparse: true},
	{name: "qcow2-512b-clusters", format: QCOW2, args: []string{"-O", "qcow2", "-o", "cluster_size=512"}, sparse: true},
	{name: "qcow2-2m-clusters", format: QCOW2, args: []string{"-O", "qcow2", "-o", "cluster_size=2M"}},
	{name: "qcow2-v3-zero-clusters", format: QCOW2, args: []string{"-O", "qcow2", "-o", "compat=1.1"}, sparse: true,
		// Zero flags on clusters that hold data in the file: qemu marks
		// them zero without freeing (the preallocated-zero case).
		post: func(t *testing.T, path string) {
			run(t, "qemu-io", "-f", "qcow2", "-c", "write -z 0 128k", "-c", "write -z 1M 64k", path)
		}},
	{name: "vmdk-monolithicSparse", format: VMDK, args: []string{"-O", "vmdk", "-o", "subformat=monolithicSparse"}, sparse: true},
	{name: "vmdk-streamOptimized", format: VMDK, args: []string{"-O", "vmdk", "-o", "subformat=streamOptimized"}, sparse: true},
	{name: "vmdk-streamOptimized-footer", format: VMDK, args: []string{"-O", "vmdk", "-o", "subformat=streamOptimized"}, sparse: true,
		// What a streaming writer (VMware's OVA export) leaves: the header
		// says "grain directory at the end", and a footer (after its
		// marker, before the end-of-stream marker) has the offset.
		post: func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			footer := append([]byte{}, b[:512]...)
			marker := make([]byte, 512)
			binary.LittleEndian.PutUint64(marker, 1)
			binary.LittleEndian.PutUint32(marker[12:], 3) // footer marker
			b = append(append(append(b, marker...), footer...), make([]byte, 512)...)
			binary.LittleEndian.PutUint64(b[56:], vmdkGDAtEnd)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	{name: "vhd-fixed", format: VHD, args: []string{"-O", "vpc", "-o", "subformat=fixed"}, rounded: true},
	{name: "vhd-fixed-force-size", format: VHD, args: []string{"-O", "vpc", "-o", "subformat=fixed,force_size=on"}},
	{name: "vhd-dynamic", format: VHD, args: []string{"-O", "vpc", "-o", "subformat=dynamic"}, sparse: true, rounded: true},
	{name: "vhd-dynamic-force-size", format: VHD, args: []string{"-O", "vpc", "-o", "subformat=dynamic,force_size=on"}, sparse: true},
}

// TestReadMatchesQemuConversions proves that every format qemu-img writes
// reads back as the raw bytes it was made from, that Detect names it and
// that Extents tells the truth about zeros.
func TestReadMatchesQemuConversions(t *testing.T) {
	dir := t.TempDir()
	src := pattern(patternSize(), 1)
	rawPath := writeFile(t, dir, "src.raw", src)
	for _, c := range conversions {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "img")
			run(t, "qemu-img", append(append([]string{"convert", "-f", "raw"}, c.args...), rawPath, out)...)
			want := src
			if c.post != nil {
				c.post(t, out)
				want = qemuRead(t, out, c.format)
			}
			checkImage(t, out, c.format, want, c.sparse, c.rounded)
		})
	}
}

// TestReadExt4Image does the same with a real filesystem as the source,
// the shape of data an OS image has.
func TestReadExt4Image(t *testing.T) {
	dir := t.TempDir()
	files := filepath.Join(dir, "files")
	if err := os.MkdirAll(filepath.Join(files, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, files, "etc/hostname", []byte("strata\n"))
	writeFile(t, files, "big.bin", pattern(700<<10, 9))
	writeFile(t, files, "README", []byte("a few files in an ext4 image\n"))
	rawPath := filepath.Join(dir, "fs.raw")
	run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-d", files, rawPath, "8M")
	src, err := os.ReadFile(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conversions {
		if c.post != nil {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "img")
			run(t, "qemu-img", append(append([]string{"convert", "-f", "raw"}, c.args...), rawPath, out)...)
			checkImage(t, out, c.format, src, c.sparse, c.rounded)
		})
	}
}

// qemuRead converts an image back to raw with qemu-img: the reference
// reading of a file a test changed after conversion.
func qemuRead(t *testing.T, path string, f Format) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "ref.raw")
	qf := string(f)
	if f == VHD {
		qf = "vpc"
	}
	run(t, "qemu-img", "convert", "-f", qf, "-O", "raw", path, raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkImage opens path, reads it several ways and compares with want.
func checkImage(t *testing.T, path string, f Format, want []byte, sparse, rounded bool) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	st, _ := fh.Stat()
	got, err := Detect(fh, st.Size())
	if err != nil || got != f {
		t.Fatalf("Detect = %q, %v; want %q", got, err, f)
	}
	img, err := Open(fh, st.Size(), "")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if img.Format() != f {
		t.Fatalf("Format() = %q, want %q", img.Format(), f)
	}
	if _, err := Open(fh, st.Size(), f); err != nil {
		t.Fatalf("Open with the right claimed format: %v", err)
	}
	if img.Size() < int64(len(want)) || (!rounded && img.Size() != int64(len(want))) {
		t.Fatalf("Size() = %d, source is %d bytes", img.Size(), len(want))
	}
	// Large sequential blocks (the importer's way), then odd sizes that
	// straddle every unit boundary.
	data := readAll(t, img, 1<<20)
	checkSame(t, data, want)
	checkSame(t, readAll(t, img, 4096*3+512+7), want)
	checkExtents(t, img, data)
	if sparse {
		ext, _ := img.Extents()
		zero := false
		for _, e := range ext {
			zero = zero || e.Zero
		}
		if !zero {
			t.Errorf("a sparse format reported no zero run in %d extents", len(ext))
		}
	}
	checkReadEdges(t, img, data)
	checkConcurrentReads(t, img, data)
}

// checkReadEdges covers io.ReaderAt's rules at and past the end.
func checkReadEdges(t *testing.T, img Image, data []byte) {
	t.Helper()
	size := img.Size()
	buf := make([]byte, 100)
	if n, err := img.ReadAt(buf, size); n != 0 || err == nil {
		t.Errorf("ReadAt at Size: n=%d err=%v, want 0, io.EOF", n, err)
	}
	n, err := img.ReadAt(buf, size-10)
	if n != 10 || err == nil {
		t.Errorf("ReadAt across the end: n=%d err=%v, want 10, io.EOF", n, err)
	}
	if string(buf[:10]) != string(data[size-10:]) {
		t.Errorf("ReadAt across the end read the wrong bytes")
	}
	if _, err := img.ReadAt(buf, -1); err == nil {
		t.Errorf("ReadAt at -1 did not fail")
	}
}

// checkConcurrentReads reads random ranges from several goroutines (run
// with -race, it also proves the caches are guarded).
func checkConcurrentReads(t *testing.T, img Image, data []byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			buf := make([]byte, 200<<10)
			for range 20 {
				off := rng.Int64N(img.Size())
				n := rng.IntN(len(buf)) + 1
				got, err := img.ReadAt(buf[:n], off)
				want := data[off:min(off+int64(n), img.Size())]
				if got != len(want) || (err != nil && got != n && off+int64(n) <= img.Size()) {
					errs <- fmt.Errorf("ReadAt(%d, %d) = %d, %v", n, off, got, err)
					return
				}
				if string(buf[:got]) != string(want) {
					errs <- fmt.Errorf("ReadAt(%d, %d) returned the wrong bytes", n, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
