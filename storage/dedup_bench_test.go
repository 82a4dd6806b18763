package storage

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDedupByChunkSize is the measurement behind DefaultOptions().ChunkSize.
// It builds two ext4 images from the same files with mke2fs -d but
// different layouts (inode size and ratio, image size), imports both into a
// fresh store per chunk size, and reports how much of the second image's
// data was already stored, the import speed (wall clock and per CPU-second)
// and the block-map memory. It is a measurement, not a unit test, so it
// runs only on request:
//
//	STRATA_DEDUP_BENCH=1 go test -run TestDedupByChunkSize -v -timeout 30m ./storage/
//
// STRATA_DEDUP_SRC (colon-separated) overrides the source directories;
// STRATA_DEDUP_KEEP=dir keeps the images there and reuses them next time;
// STRATA_DEDUP_CHUNKS=4096,65536 picks the chunk sizes.
func TestDedupByChunkSize(t *testing.T) {
	if os.Getenv("STRATA_DEDUP_BENCH") == "" {
		t.Skip("measurement; set STRATA_DEDUP_BENCH=1 to run")
	}
	srcs := []string{"/usr/share/doc", "/usr/share/man", "/usr/lib/gcc", "/usr/lib/python3.11"}
	if v := os.Getenv("STRATA_DEDUP_SRC"); v != "" {
		srcs = strings.Split(v, ":")
	}
	dir := os.Getenv("STRATA_DEDUP_KEEP")
	if dir == "" {
		dir = t.TempDir()
	}
	img1 := filepath.Join(dir, "a.img")
	img2 := filepath.Join(dir, "b.img")
	if _, err := os.Stat(img2); err != nil {
		buildImagePair(t, dir, srcs, img1, img2)
	}
	fi1, _ := os.Stat(img1)
	fi2, _ := os.Stat(img2)
	t.Logf("images: %d MiB and %d MiB", fi1.Size()>>20, fi2.Size()>>20)

	sizes := []int{4 << 10, 16 << 10, 32 << 10, 64 << 10}
	if v := os.Getenv("STRATA_DEDUP_CHUNKS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			var n int
			fmt.Sscan(f, &n)
			sizes = append(sizes, n)
		}
	}
	stores := t.TempDir()
	t.Logf("%-6s %8s %8s %10s %10s %12s %12s %12s %6s", "chunk", "shared", "stored+",
		"MB/s img1", "MB/s img2", "MB/cpu-s 1", "MB/cpu-s 2", "map MiB/GiB", "ratio")
	for _, cs := range sizes {
		o := DefaultOptions()
		o.ChunkSize = cs
		o.GCInterval = 0
		s, err := Open(filepath.Join(stores, fmt.Sprintf("store%d", cs)), o)
		if err != nil {
			t.Fatal(err)
		}
		l := s.NewLease()
		run := func(img string) (ImportStats, float64, float64) {
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			start, cpu0 := time.Now(), cpuTime()
			st, err := s.Import(context.Background(), f, l, func(int64, ChunkID) error { return nil }, nil)
			if err != nil {
				t.Fatal(err)
			}
			mb := float64(st.LogicalBytes) / 1e6
			return st, mb / time.Since(start).Seconds(), mb / (cpuTime() - cpu0).Seconds()
		}
		st1, mbs1, cpu1 := run(img1)
		st2, mbs2, cpu2 := run(img2)
		// Shared: of the second image's non-zero data, the part already
		// in the store. Map memory: 8 bytes per allocated (non-zero) chunk,
		// per GiB of the image.
		nonzero2 := st2.NewChunks + st2.DedupChunks
		shared := float64(st2.DedupChunks) / float64(nonzero2)
		mapPerGiB := float64(8*(st1.NewChunks+st1.DedupChunks)) / (float64(st1.LogicalBytes) / (1 << 30)) / (1 << 20)
		grow := float64(st2.StoredBytes) / float64(st1.StoredBytes)
		ratio := float64(st1.NewChunks*int64(cs)) / float64(st1.StoredBytes)
		t.Logf("%-6s %7.1f%% %7.1f%% %10.0f %10.0f %12.0f %12.0f %12.2f %6.2f", fmt.Sprintf("%dK", cs>>10),
			100*shared, 100*grow, mbs1, mbs2, cpu1, cpu2, mapPerGiB, ratio)
		l.Release()
		s.Close()
	}
}

// buildImagePair copies srcs into a tree and makes two ext4 images of it
// whose layouts differ: inode size and bytes-per-inode change the size of
// the inode tables, and the image sizes differ, so file data lands at
// different offsets.
func buildImagePair(t *testing.T, dir string, srcs []string, img1, img2 string) {
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tree)
	for i, src := range srcs {
		dst := filepath.Join(tree, fmt.Sprintf("d%d", i))
		// cp may complain about unreadable or special files; the copy is
		// still a fine sample of real files.
		out, _ := exec.Command("cp", "-a", src, dst).CombinedOutput()
		if len(out) > 0 {
			t.Logf("cp %s: %.200s", src, out)
		}
	}
	out, err := exec.Command("du", "-sm", tree).Output()
	if err != nil {
		t.Fatal(err)
	}
	var mib int
	fmt.Sscan(string(out), &mib)
	t.Logf("source files: %d MiB", mib)
	mk := func(img string, sizeMiB int, args ...string) {
		cmd := exec.Command("mke2fs", append(args, "-d", tree, img, fmt.Sprintf("%dM", sizeMiB))...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mke2fs %v: %v\n%s", args, err, out)
		}
	}
	mk(img1, mib*13/10+100, "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-L", "a")
	mk(img2, mib*13/10+164, "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "128", "-i", "8192", "-L", "b")
}
