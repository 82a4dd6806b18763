package imagefile

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzOpen feeds mutated qcow2, VMDK and VHD files to Open and, when they
// open, to Extents and ReadAt. Nothing may panic, every error must be one
// of the package's kinds, and the extents must tile the disk. The limits
// in Open keep each input's work and memory bounded by its size.
//
//	go test -run '^$' -fuzz FuzzOpen -fuzztime 60s -fuzzminimizetime 1x ./layer/imagefile/
//
// (-fuzzminimizetime 1x: minimizing a 128 KiB VMDK seed otherwise stalls
// the fuzzer for minutes.)
func FuzzOpen(f *testing.F) {
	seeds := [][]byte{
		tinyImage(f, 16<<10, "-O", "qcow2", "-o", "cluster_size=512"),
		tinyImage(f, 16<<10, "-O", "qcow2", "-o", "cluster_size=512,compat=0.10"),
		tinyImage(f, 16<<10, "-c", "-O", "qcow2", "-o", "cluster_size=512"),
		tinyImage(f, 16<<10, "-O", "vmdk", "-o", "subformat=streamOptimized"),
		tinyImage(f, 16<<10, "-O", "vmdk"),
		makeVHD(vhdSpec{disk: pattern(8<<10, 3), block: 512, diskType: vhdDynamic}),
		makeVHD(vhdSpec{disk: pattern(4<<10, 3), diskType: vhdFixed}),
		[]byte("# Disk DescriptorFile\nversion=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"x-flat.vmdk\" 0\n"),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := Open(bytes.NewReader(b), int64(len(b)), "")
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsafe) {
				t.Fatalf("Open: error of no known kind: %v", err)
			}
			return
		}
		size := img.Size()
		if size < 0 || size > MaxVirtualSize {
			t.Fatalf("Size() = %d", size)
		}
		ext, err := img.Extents()
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Extents: error of no known kind: %v", err)
		}
		if err == nil {
			var at int64
			for _, e := range ext {
				if e.Offset != at || e.Length <= 0 {
					t.Fatalf("extent %+v does not continue at %d", e, at)
				}
				at += e.Length
			}
			if at != size {
				t.Fatalf("extents end at %d, size %d", at, size)
			}
		}
		buf := make([]byte, 256<<10)
		for _, off := range []int64{0, size / 2, max(0, size-int64(len(buf))/2), size} {
			n, err := img.ReadAt(buf, off)
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("ReadAt(%d): error of no known kind: %v", off, err)
			}
			if err == nil && n != len(buf) || n > len(buf) {
				t.Fatalf("ReadAt(%d) = %d, nil", off, n)
			}
		}
	})
}
