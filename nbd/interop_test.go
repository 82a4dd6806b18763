package nbd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Interop tests drive the server with the real peers: libnbd's nbdinfo,
// nbdcopy and nbdsh, and qemu's qemu-img and qemu-io. They fail (not skip)
// when a peer is missing: `make test` installs them.

func peerEnv() []string {
	// Debian's python3 first: libnbd's Python module (nbdsh) loads only there.
	return append(os.Environ(), "PATH=/usr/bin:/usr/sbin:/bin:"+os.Getenv("PATH"), "LIBNBD_DEBUG=0")
}

func runPeer(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runPeerErr(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runPeerErr(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath("/usr/bin/" + name)
	if err != nil {
		t.Fatalf("%s is not installed (make test-deps): %v", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = peerEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mixedDisk builds a sparse fixture: data runs, holes, and an allocated run
// of zeros, so that block status and hole chunks have something to show.
func mixedDisk(size int64) *memBackend {
	m := newMem(size)
	m.fill(0, pattern(1, 64<<10))
	m.fill(1<<20, pattern(2, 300<<10))
	m.fill(3<<20+512, pattern(3, 5000))  // unaligned: partial blocks
	m.fill(5<<20, make([]byte, 128<<10)) // allocated zeros
	m.fill(size-8192, pattern(4, 8192))
	return m
}

func TestNbdinfoJSONShowsAdvertisedFlagsAndBlockSizes(t *testing.T) {
	rw := mixedDisk(16 << 20)
	ro := mixedDisk(8 << 20)
	ro.readOnly = true
	ts := startServer(t, map[string]Backend{"disk/rw": rw, "image/ro": ro}, nil)

	type info struct {
		Protocol   string `json:"protocol"`
		Structured bool   `json:"structured"`
		Exports    []struct {
			Name        string   `json:"export-name"`
			Contexts    []string `json:"contexts"`
			ReadOnly    bool     `json:"is_read_only"`
			CanCache    bool     `json:"can_cache"`
			CanDF       bool     `json:"can_df"`
			CanFastZero bool     `json:"can_fast_zero"`
			CanFlush    bool     `json:"can_flush"`
			CanFUA      bool     `json:"can_fua"`
			CanMulti    bool     `json:"can_multi_conn"`
			CanTrim     bool     `json:"can_trim"`
			CanZero     bool     `json:"can_zero"`
			Size        int64    `json:"export-size"`
			BlockMin    int64    `json:"block_size_minimum"`
			BlockPref   int64    `json:"block_size_preferred"`
			BlockMax    int64    `json:"block_size_maximum"`
		} `json:"exports"`
	}
	for _, tc := range []struct {
		name     string
		size     int64
		readOnly bool
	}{{"disk/rw", 16 << 20, false}, {"image/ro", 8 << 20, true}} {
		out := runPeer(t, "nbdinfo", "--json", ts.uri(tc.name))
		var got info
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("nbdinfo json: %v\n%s", err, out)
		}
		if got.Protocol != "newstyle-fixed" || !got.Structured || len(got.Exports) != 1 {
			t.Fatalf("%s: %s", tc.name, out)
		}
		e := got.Exports[0]
		writable := !tc.readOnly
		checks := []struct {
			what      string
			got, want any
		}{
			{"name", e.Name, tc.name},
			{"size", e.Size, tc.size},
			{"read only", e.ReadOnly, tc.readOnly},
			{"contexts", strings.Join(e.Contexts, ","), "base:allocation"},
			{"can_flush", e.CanFlush, true},
			{"can_fua", e.CanFUA, true},
			{"can_cache", e.CanCache, true},
			{"can_df", e.CanDF, true},
			{"can_multi_conn", e.CanMulti, true},
			{"can_trim", e.CanTrim, writable},
			{"can_zero", e.CanZero, writable},
			{"can_fast_zero", e.CanFastZero, writable},
			{"block min", e.BlockMin, int64(1)},
			{"block preferred", e.BlockPref, int64(4096)},
			{"block max", e.BlockMax, int64(DefaultMaxPayload)},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: %s = %v, want %v", tc.name, c.what, c.got, c.want)
			}
		}
	}
}

func TestNbdinfoMapMatchesBackendExtents(t *testing.T) {
	m := mixedDisk(16 << 20)
	ts := startServer(t, map[string]Backend{"d": m}, nil)
	out := runPeer(t, "nbdinfo", "--map", ts.uri("d"))

	// Expected: the backend's own extents, with the flags nbdinfo prints.
	want, _ := m.Extents(context.Background(), 0, m.size)
	var wantLines []string
	var off int64
	for _, e := range want {
		typ := "0  data"
		if e.Hole {
			typ = "3  hole,zero"
		}
		wantLines = append(wantLines, fmt.Sprintf("%d %d %s", off, e.Length, typ))
		off += e.Length
	}
	var gotLines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			t.Fatalf("odd map line %q", l)
		}
		gotLines = append(gotLines, fmt.Sprintf("%s %s %s  %s", f[0], f[1], f[2], f[3]))
	}
	if strings.Join(gotLines, "\n") != strings.Join(wantLines, "\n") {
		t.Fatalf("nbdinfo --map:\n%s\nwant:\n%s", strings.Join(gotLines, "\n"), strings.Join(wantLines, "\n"))
	}
	if len(wantLines) < 8 {
		t.Fatalf("fixture too simple: %d extents", len(wantLines))
	}
}

func TestNbdinfoListShowsEveryExport(t *testing.T) {
	ts := startServer(t, map[string]Backend{"disk/a": newMem(1 << 20), "image/b": newMem(2 << 20)}, nil)
	out := runPeer(t, "nbdinfo", "--list", "--json", ts.uri(""))
	var got struct {
		Exports []struct {
			Name string `json:"export-name"`
			Desc string `json:"description"`
			Size int64  `json:"export-size"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	seen := map[string]int64{}
	for _, e := range got.Exports {
		seen[e.Name] = e.Size
		if e.Desc != "test export "+e.Name {
			t.Errorf("%s: description %q", e.Name, e.Desc)
		}
	}
	if seen["disk/a"] != 1<<20 || seen["image/b"] != 2<<20 || len(seen) != 2 {
		t.Fatalf("list: %v\n%s", seen, out)
	}
}

func TestQemuImgConvertReproducesExportByteForByte(t *testing.T) {
	m := mixedDisk(24 << 20)
	m.readOnly = true
	ts := startServer(t, map[string]Backend{"image/x": tryMem{m}}, nil)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(src, m.snapshot(), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst.raw")
	runPeer(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", ts.uri("image/x"), dst)
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, m.snapshot()) {
		t.Fatal("converted image differs from the export")
	}
	out := runPeer(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, ts.uri("image/x"))
	if !strings.Contains(out, "Images are identical") {
		t.Fatalf("qemu-img compare: %s", out)
	}
}

func TestQemuIoWritesReadsDiscardsZeroesAndFlushes(t *testing.T) {
	m := newMem(8 << 20)
	ts := startServer(t, map[string]Backend{"disk/q": tryMem{m}}, nil)
	cmds := []string{
		"write -P 0xab 0 64k",
		"write -P 0xcd 1M 1M",
		"write -f -P 0x11 3M 4k", // FUA
		"read -P 0xab 0 64k",
		"read -P 0xcd 1M 1M",
		"read -P 0x11 3M 4k",
		"discard 1M 512k",
		"read -P 0 1M 512k",
		"read -P 0xcd 1536k 512k",
		"write -z 0 32k",
		"read -P 0 0 32k",
		"read -P 0xab 32k 32k",
		"write -z -u 4M 1M", // may unmap
		"read -P 0 4M 1M",
		"flush",
	}
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	flushesBefore := m.flushes.Load()
	out := runPeer(t, "qemu-io", append(args, ts.uri("disk/q"))...)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed") {
		t.Fatalf("qemu-io:\n%s", out)
	}
	if n := strings.Count(out, "wrote "); n != 5 {
		t.Fatalf("expected 5 writes, got %d:\n%s", n, out)
	}
	if n := strings.Count(out, "read "); n != 8 {
		t.Fatalf("expected 8 verified reads, got %d:\n%s", n, out)
	}
	// The server's own view agrees with what qemu-io verified.
	snap := m.snapshot()
	if snap[1<<20] != 0 || snap[1536<<10] != 0xcd || snap[3<<20] != 0x11 || snap[40<<10] != 0xab {
		t.Fatal("backend content does not match the writes")
	}
	if m.flushes.Load() == flushesBefore {
		t.Fatal("flush did not reach the backend")
	}
}

func TestNbdcopyBothWaysWithMultiConn(t *testing.T) {
	src := mixedDisk(32 << 20)
	dst := newMem(32 << 20)
	ts := startServer(t, map[string]Backend{"src": src, "dst": tryMem{dst}}, nil)
	dir := t.TempDir()
	file := filepath.Join(dir, "out.raw")
	for _, conns := range []string{"1", "4"} {
		// Export to a file.
		os.Remove(file)
		runPeer(t, "nbdcopy", "--connections="+conns, "--requests=16", ts.uri("src"), file)
		got, err := os.ReadFile(file)
		if err != nil || !bytes.Equal(got, src.snapshot()) {
			t.Fatalf("nbdcopy --connections=%s export: content differs (%v)", conns, err)
		}
		// Import from the file into another export, over N connections.
		dst.reset()
		runPeer(t, "nbdcopy", "--connections="+conns, "--flush", file, ts.uri("dst"))
		if !bytes.Equal(dst.snapshot(), src.snapshot()) {
			t.Fatalf("nbdcopy --connections=%s import: content differs", conns)
		}
		// Server to server.
		dst.reset()
		runPeer(t, "nbdcopy", "--connections="+conns, ts.uri("src"), ts.uri("dst"))
		if !bytes.Equal(dst.snapshot(), src.snapshot()) {
			t.Fatalf("nbdcopy --connections=%s nbd->nbd: content differs", conns)
		}
	}
	// Holes stay holes: nbdcopy zeroes them with trim/zero, not data.
	ext, _ := dst.Extents(context.Background(), 10<<20, 1<<20)
	if len(ext) != 1 || !ext[0].Hole {
		t.Fatalf("hole region was written as data: %+v", ext)
	}
}

func TestNbdshStructuredRepliesBlockStatusFastZeroAndErrnos(t *testing.T) {
	rw := newMem(4 << 20)
	rw.fill(0, bytes.Repeat([]byte{0x5a}, 128<<10))
	ro := newMem(1 << 20)
	ro.fill(0, bytes.Repeat([]byte{0x5a}, 4096))
	ro.readOnly = true
	ro.writes.Store(0)
	ts := startServer(t, map[string]Backend{"rw": rw, "ro": ro}, nil)
	script, err := filepath.Abs("../testdata/nbd/nbdsh_checks.py")
	if err != nil {
		t.Fatal(err)
	}
	// Run the checks inside nbdsh itself (-n: no implicit handle).
	out := runPeer(t, "nbdsh", "-n", "-c", "import sys; sys.argv = ['nbdsh', '"+ts.sock+"']",
		"-c", "exec(open('"+script+"').read())")
	if !strings.Contains(out, "nbdsh-ok") {
		t.Fatalf("script: %s", out)
	}
	// The read-only export never saw a write.
	if ro.writes.Load() != 0 {
		t.Fatal("write reached a read-only backend")
	}
	// And nbdsh itself (the tool) loads the module and talks to us.
	out = runPeer(t, "nbdsh", "-u", ts.uri("ro"), "-c", "print(h.get_size())")
	if strings.TrimSpace(out) != strconv.Itoa(1<<20) {
		t.Fatalf("nbdsh: %q", out)
	}
}
