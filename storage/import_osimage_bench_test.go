package storage

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// osImageDirs are the files of this machine's own OS that make the image of
// BenchmarkImportOSImage: programs, shared libraries, data and settings, as
// a distribution's root filesystem holds them (about 1.7 GB on Debian 12).
var osImageDirs = []string{"/etc", "/usr/bin", "/usr/sbin", "/usr/share", "/usr/lib/x86_64-linux-gnu", "/usr/lib/python3.11"}

// BenchmarkImportOSImage imports an ext4 image of a real OS file tree (the
// machine's own /usr and /etc, copied and written by mke2fs -d) into a
// fresh store at the default chunk size: DESIGN's "typical OS image data,
// zeros included". The image is twice the files' size, so about half of it
// was never written, as in a distribution's cloud image (Debian 12's
// generic image holds about 1 GB in 2 GiB). BenchmarkImport's synthetic
// mix, with fewer zeros and 15 % incompressible data, is the harder case.
//
//	go test -run '^$' -bench BenchmarkImportOSImage -benchtime 3x -timeout 30m ./storage/
func BenchmarkImportOSImage(b *testing.B) {
	img := buildOSImage(b)
	fi, err := os.Stat(img)
	if err != nil {
		b.Fatal(err)
	}
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			o := DefaultOptions()
			o.Workers = workers
			o.GCInterval = 0
			b.SetBytes(fi.Size())
			var cpu time.Duration
			var st ImportStats
			for range b.N {
				b.StopTimer()
				s, err := Open(b.TempDir(), o)
				if err != nil {
					b.Fatal(err)
				}
				f, err := os.Open(img)
				if err != nil {
					b.Fatal(err)
				}
				l := s.NewLease()
				cpu0 := cpuTime()
				b.StartTimer()
				st, err = s.Import(context.Background(), f, l, func(int64, ChunkID) error { return nil }, nil)
				b.StopTimer()
				cpu += cpuTime() - cpu0
				if err != nil {
					b.Fatal(err)
				}
				l.Release()
				f.Close()
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)*float64(fi.Size())/1e6/cpu.Seconds(), "MB/cpu-s")
			b.ReportMetric(float64(st.ZeroChunks)*float64(o.ChunkSize)/float64(st.LogicalBytes), "zero-share")
			b.ReportMetric(float64(st.StoredBytes)/float64(st.LogicalBytes), "stored/raw")
		})
	}
}

// buildOSImage copies osImageDirs into a tree and writes an ext4 image of
// it, twice the tree's size, with mke2fs -d.
func buildOSImage(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	tree := filepath.Join(dir, "root")
	for _, src := range osImageDirs {
		if _, err := os.Stat(src); err != nil {
			continue
		}
		dst := filepath.Join(tree, src)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			b.Fatal(err)
		}
		// cp may complain about unreadable or special files; the copy is
		// still a fine sample of an OS's files.
		_, _ = exec.Command("cp", "-a", src, dst).CombinedOutput()
	}
	out, err := exec.Command("du", "-sm", tree).Output()
	if err != nil {
		b.Fatal(err)
	}
	var mib int
	fmt.Sscan(string(out), &mib)
	if mib < 64 {
		b.Fatalf("only %d MiB of OS files found under %v", mib, osImageDirs)
	}
	img := filepath.Join(dir, "os.img")
	mk := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", tree, img, fmt.Sprintf("%dM", 2*mib))
	if out, err := mk.CombinedOutput(); err != nil {
		b.Fatalf("mke2fs: %v\n%s", err, out)
	}
	if err := os.RemoveAll(tree); err != nil {
		b.Fatal(err)
	}
	b.Logf("OS image: %d MiB of files in a %d MiB ext4 image", mib, 2*mib)
	return img
}
