package imagefile

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// benchImage converts a 64 MiB pattern disk with qemu-img and opens it.
func benchImage(b *testing.B, args ...string) Image {
	b.Helper()
	dir := b.TempDir()
	rawPath := writeFile(b, dir, "src.raw", pattern(64<<20, 21))
	p := rawPath
	if len(args) > 0 {
		p = filepath.Join(dir, "img")
		run(b, "qemu-img", append(append([]string{"convert", "-f", "raw"}, args...), rawPath, p)...)
	}
	img, err := openFile(b, p, "")
	if err != nil {
		b.Fatal(err)
	}
	return img
}

// BenchmarkReadSequential reads whole images in 1 MiB blocks, the way the
// importer does. MB/s is of logical bytes.
//
//	go test -run '^$' -bench ReadSequential ./layer/imagefile/
func BenchmarkReadSequential(b *testing.B) {
	for _, c := range []struct {
		name string
		args []string
	}{
		{"raw", nil},
		{"qcow2", []string{"-O", "qcow2"}},
		{"qcow2-compressed", []string{"-c", "-O", "qcow2"}},
		{"qcow2-zstd", []string{"-c", "-O", "qcow2", "-o", "compression_type=zstd"}},
		{"vmdk-monolithicSparse", []string{"-O", "vmdk"}},
		{"vmdk-streamOptimized", []string{"-O", "vmdk", "-o", "subformat=streamOptimized"}},
		{"vhd-dynamic", []string{"-O", "vpc"}},
		{"vhd-fixed", []string{"-O", "vpc", "-o", "subformat=fixed"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			img := benchImage(b, c.args...)
			buf := make([]byte, 1<<20)
			b.SetBytes(img.Size())
			b.ResetTimer()
			for range b.N {
				for off := int64(0); off < img.Size(); off += int64(len(buf)) {
					if _, err := img.ReadAt(buf, off); err != nil && err != io.EOF {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkWriteQCOW2 exports a 64 MiB disk (a quarter zeros) to qcow2.
func BenchmarkWriteQCOW2(b *testing.B) {
	src := pattern(64<<20, 22)
	f, err := os.Create(filepath.Join(b.TempDir(), "out.qcow2"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(int64(len(src)))
	b.ResetTimer()
	for range b.N {
		if err := f.Truncate(0); err != nil {
			b.Fatal(err)
		}
		if err := WriteQCOW2(f, bytes.NewReader(src), int64(len(src)), nil); err != nil {
			b.Fatal(err)
		}
	}
}
