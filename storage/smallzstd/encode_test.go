package smallzstd

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// samples are inputs of the kinds a disk holds, at sizes that cross every
// boundary of the format's length fields: literals sections with headers
// of 1, 2 and 3 bytes, content sizes of 1 and 2 bytes, sequence counts
// of 1 and 2 bytes, raw blocks.
func samples() map[string][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	text := func(n int) []byte {
		words := []string{"the ", "disk ", "image ", "layer ", "chunk ", "store ", "of ", "a ", "zstd ", "frame\n"}
		var b []byte
		for len(b) < n {
			b = append(b, words[r.IntN(len(words))]...)
		}
		return b[:n]
	}
	records := func(n int) []byte {
		// Fixed-size records with counters: structure repeated at a
		// steady offset, as in inode tables and block bitmaps.
		b := make([]byte, n)
		for i := 0; i+16 <= n; i += 16 {
			b[i], b[i+1], b[i+8] = byte(i>>4), byte(i>>12), 0xEF
		}
		return b
	}
	mixed := func(n int) []byte {
		b := append(text(n/3), random(n/3)...)
		return append(b, make([]byte, n-len(b))...)
	}
	kinds := map[string]func(int) []byte{
		"random": random, "text": text, "records": records, "mixed": mixed,
		"zeros": func(n int) []byte { return make([]byte, n) },
	}
	s := map[string][]byte{"empty": {}, "one": {7}}
	for _, n := range []int{9, 13, 14, 31, 32, 33, 255, 256, 257, 1000, 4095, 4096, 4097, 16384, 65535, MaxInput} {
		for name, f := range kinds {
			s[fmt.Sprintf("%s-%d", name, n)] = f(n)
		}
	}
	// Many short matches: more than 127 sequences, and long runs.
	many := make([]byte, MaxInput)
	for i := range many {
		many[i] = byte(r.IntN(4))
	}
	s["many-sequences"] = many
	return s
}

func TestFramesDecodeToTheirInput(t *testing.T) {
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var e Encoder
	shrank := 0
	for name, src := range samples() {
		// Without a limit every input gets a frame.
		frame, ok := e.AppendFrame(nil, src, 1<<20)
		if !ok {
			t.Fatalf("%s: no frame without a limit", name)
		}
		got, err := dec.DecodeAll(frame, nil)
		if err != nil {
			t.Fatalf("%s (%d bytes, %d sequences): %v", name, len(src), len(e.seqs), err)
		}
		if !bytes.Equal(got, src) {
			t.Fatalf("%s: decoded %d bytes differ from the %d encoded", name, len(got), len(src))
		}
		if again, _ := e.AppendFrame(nil, src, 1<<20); !bytes.Equal(again, frame) {
			t.Fatalf("%s: a second frame of the same input differs", name)
		}
		if len(frame) < len(src) {
			shrank++
		}
	}
	if shrank < 40 {
		t.Fatalf("only %d samples shrank", shrank)
	}
}

func TestEveryLengthFormIsWritten(t *testing.T) {
	var e Encoder
	e.AppendFrame(nil, samples()["many-sequences"], 1<<20)
	if len(e.seqs) < 128 {
		t.Fatalf("%d sequences: the 2-byte count is not written", len(e.seqs))
	}
	var longLit, longMatch, repeat bool
	for _, name := range []string{"many-sequences", "mixed-65536", "records-4096"} {
		e.AppendFrame(nil, samples()[name], 1<<20)
		for _, s := range e.seqs {
			longLit = longLit || s.litLen >= 4096
			longMatch = longMatch || s.matchLen >= 4099
			repeat = repeat || s.offset == 0
		}
	}
	if !longLit || !longMatch || !repeat {
		t.Fatalf("long literals %v, long matches %v, repeat offsets %v: not every code is exercised", longLit, longMatch, repeat)
	}
}

func TestLimitIsKept(t *testing.T) {
	var e Encoder
	src := samples()["text-4096"]
	full, ok := e.AppendFrame(nil, src, 1<<20)
	if !ok {
		t.Fatal("no frame")
	}
	prefix := []byte("keep")
	if got, ok := e.AppendFrame(prefix, src, len(full)); !ok || !bytes.Equal(got[len(prefix):], full) || string(got[:4]) != "keep" {
		t.Fatalf("a limit of exactly the frame's size: ok %v", ok)
	}
	if got, ok := e.AppendFrame(prefix, src, len(full)-1); ok || !bytes.Equal(got, prefix) {
		t.Fatalf("a limit one byte short: ok %v, dst %q", ok, got)
	}
	if _, ok := e.AppendFrame(nil, samples()["random-4096"], 4096-4096/8); ok {
		t.Fatal("random bytes came under seven eighths of their size")
	}
}

// TestZstdToolDecodesFrames: the reference implementation's command-line
// tool (Debian's zstd package, installed by make test) decodes our
// frames, written one after another into a file.
func TestZstdToolDecodesFrames(t *testing.T) {
	tool, err := exec.LookPath("zstd")
	if err != nil {
		t.Fatal("zstd is not installed (make test installs it): ", err)
	}
	var e Encoder
	var file, want []byte
	for _, src := range samples() {
		var ok bool
		if file, ok = e.AppendFrame(file, src, 1<<20); !ok {
			t.Fatal("no frame without a limit")
		}
		want = append(want, src...)
	}
	path := filepath.Join(t.TempDir(), "frames.zst")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(tool, "-d", "-c", "-q", path).Output()
	if err != nil {
		t.Fatalf("zstd -d: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("zstd -d gave %d bytes, want %d", len(got), len(want))
	}
}

func FuzzFrames(f *testing.F) {
	for _, name := range []string{"text-1000", "records-4096", "mixed-4097", "zeros-33", "random-257"} {
		f.Add(samples()[name])
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		f.Fatal(err)
	}
	var e Encoder
	f.Fuzz(func(t *testing.T, src []byte) {
		if len(src) > MaxInput {
			src = src[:MaxInput]
		}
		frame, ok := e.AppendFrame(nil, src, 1<<20)
		if !ok {
			t.Fatal("no frame without a limit")
		}
		got, err := dec.DecodeAll(frame, nil)
		if err != nil || !bytes.Equal(got, src) {
			t.Fatalf("%d bytes: err %v, equal %v", len(src), err, bytes.Equal(got, src))
		}
	})
}
