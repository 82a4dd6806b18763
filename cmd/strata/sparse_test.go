package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSparseFileKeepsContentAndLeavesHoles: a stream of data and zero runs
// of odd lengths, written in pieces of odd sizes, reads back the same; the
// zero blocks take no disk space; a trailing zero run still counts in the
// length.
func TestSparseFileKeepsContentAndLeavesHoles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var want []byte
	for range 40 {
		run := make([]byte, 1+rng.IntN(64<<10))
		if rng.IntN(2) == 0 {
			for i := range run {
				run[i] = byte(1 + rng.IntN(255))
			}
		}
		want = append(want, run...)
	}
	// Trailing zeros up to a block boundary: whole zero blocks at the
	// end, which only finish can count.
	want = append(want, make([]byte, 1<<20+(sparseBlock-len(want)%sparseBlock)%sparseBlock)...)
	path := filepath.Join(t.TempDir(), "out.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &sparseFile{f: f}
	// Pieces of random sizes, but the last 64 KiB (aligned zero blocks)
	// in one piece: written whole, nothing of it lands in the file.
	for rest := want; len(rest) > 0; {
		n := min(len(rest)-64<<10, 1+rng.IntN(100<<10))
		if n <= 0 {
			n = len(rest)
		}
		if m, err := s.Write(rest[:n]); err != nil || m != n {
			t.Fatalf("Write: %d of %d, %v", m, n, err)
		}
		rest = rest[n:]
	}
	if err := s.finish(); err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("file of %d bytes differs from the %d-byte stream", len(got), len(want))
	}
	var data int64
	for off := 0; off+sparseBlock <= len(want); off += sparseBlock {
		if !bytes.Equal(want[off:off+sparseBlock], zeroBlock[:]) {
			data += sparseBlock
		}
	}
	// Allowed: the partial blocks at the edges of data runs, and file
	// system metadata blocks.
	allocated := fi.Sys().(*syscall.Stat_t).Blocks * 512
	if allocated > data+int64(2*40*sparseBlock)+64<<10 {
		t.Fatalf("%d bytes allocated for %d bytes of non-zero blocks in %d: zero blocks were written", allocated, data, len(want))
	}
}
