package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// A trimmed fio 3.33 --output-format=json document, with the note fio
// prints before the JSON when an option is deprecated.
const fioSample = `fio: note: both iodepth >= 1 and synchronous I/O engine selected
{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "randread-4096",
      "groupid" : 0,
      "error" : 0,
      "job options" : { "ioengine" : "nbd", "rw" : "randread" },
      "read" : { "io_bytes" : 9839739, "bw_bytes" : 9839739, "iops" : 2402.28013, "runtime" : 3070, "total_ios" : 7375 },
      "write" : { "io_bytes" : 0, "bw_bytes" : 0, "iops" : 0.0, "runtime" : 0, "total_ios" : 0 }
    },
    {
      "jobname" : "randread-4096",
      "error" : 0,
      "read" : { "io_bytes" : 100000, "bw_bytes" : 1000, "iops" : 100.5, "total_ios" : 25 },
      "write" : { "io_bytes" : 36864, "bw_bytes" : 2000, "iops" : 3.0, "total_ios" : 9 }
    }
  ]
}
`

func TestParseFioSumsJobsAfterLeadingNotes(t *testing.T) {
	r, err := parseFio([]byte(fioSample))
	if err != nil {
		t.Fatal(err)
	}
	want := fioResult{ReadIOPS: 2402.28013 + 100.5, WriteIOPS: 3, ReadBW: 9839739 + 1000, WriteBW: 2000, ReadIOs: 7400, WriteIOs: 9,
		ReadBytes: 9839739 + 100000, WriteBytes: 36864}
	if math.Abs(r.ReadIOPS-want.ReadIOPS) > 1e-9 || r.WriteIOPS != want.WriteIOPS || r.ReadBW != want.ReadBW ||
		r.WriteBW != want.WriteBW || r.ReadIOs != want.ReadIOs || r.WriteIOs != want.WriteIOs ||
		r.ReadBytes != want.ReadBytes || r.WriteBytes != want.WriteBytes {
		t.Fatalf("parseFio = %+v, want %+v", r, want)
	}
}

func TestParseFioRejectsFailures(t *testing.T) {
	for name, in := range map[string]string{
		"no json":   "fio: engine nbd not loadable\n",
		"truncated": `{"jobs": [{"jobname": "x", "read": {"iops": 1`,
		"no jobs":   `{"jobs": []}`,
		"job error": `{"jobs": [{"jobname": "x", "error": 5, "read": {"iops": 10, "total_ios": 10}}]}`,
		"no io":     `{"jobs": [{"jobname": "x", "error": 0, "read": {"iops": 0, "total_ios": 0}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseFio([]byte(in)); !errors.Is(err, errFio) {
				t.Fatalf("parseFio(%q) error = %v, want errFio", in, err)
			}
		})
	}
}

func TestFioArgsNameTheEngineURIAndJSONOutput(t *testing.T) {
	args := fioArgs(fioJobSpec{RW: "randwrite", BS: 4096, IODepth: 32, Runtime: 3e9}, "nbd+unix:///disk?socket=/s", "/o.json")
	want := map[string]bool{"--ioengine=nbd": true, "--uri=nbd+unix:///disk?socket=/s": true, "--rw=randwrite": true,
		"--bs=4096": true, "--iodepth=32": true, "--runtime=3s": true, "--output-format=json": true, "--output=/o.json": true,
		"--time_based": true, "--direct=1": true}
	for _, a := range args {
		delete(want, a)
	}
	if len(want) != 0 {
		t.Fatalf("fioArgs %q lacks %v", args, want)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{7, 7, 1}, 7},
	} {
		in := append([]float64(nil), c.in...)
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		for i := range in {
			if in[i] != c.in[i] {
				t.Errorf("median reordered its input: %v", c.in)
			}
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
}

func TestRatioAndVerdict(t *testing.T) {
	r := phaseResult{phase: phase{Name: "x", Unit: "IOPS", Target: 1.3}}
	if _, ok := r.ratio(); ok {
		t.Fatal("ratio without samples")
	}
	for _, v := range []float64{10, 30, 20} {
		r.add(serverStrata, sample{Value: v, CPU: v / 10, Work: 100})
	}
	r.add(serverQemu, sample{Value: 10, CPU: 1, Work: 100})
	r.add(serverQemu, sample{Value: 20, CPU: 3, Work: 100})
	got, ok := r.ratio()
	if !ok || got != 20.0/15 {
		t.Fatalf("ratio = %v, %v; want %v", got, ok, 20.0/15)
	}
	j := r.json(2)
	if j.Met == nil || !*j.Met || j.Strata.Median != 20 || j.Qemu.Median != 15 {
		t.Fatalf("json = %+v", j)
	}
	// CPU per unit of work: strata's median 2/100, qemu-nbd's 2/100.
	if c, ok := r.costRatio(); !ok || c != 1 {
		t.Fatalf("costRatio = %v, %v; want 1", c, ok)
	}
	r.Qemu[0].Work = 0
	r.Qemu[1].Work = 0
	if _, ok := r.costRatio(); ok {
		t.Fatal("cost ratio without work")
	}
}

// reportResult is one phase with samples whose medians are known: strata
// CPU 3.00 s, client 1.00 s, machine share 3.5/(4 s x 2 cores) = 44 %;
// qemu-nbd CPU 1.00 s, client 0.50 s, share 1.5/(5 s x 2) = 15 %; nbdkit
// 2200 MB/s, so strata is at 50 % of it, qemu-nbd at 23 %.
func reportResult() phaseResult {
	r := phaseResult{phase: phase{Name: "seqread", Figure: "seq read", Unit: "MB/s", Target: 2}}
	for i, cpu := range []float64{2, 3, 4} {
		r.add(serverStrata, sample{Value: []float64{1000, 1200, 1100}[i], CPU: cpu, ClientCPU: []float64{1, 0.5, 1.5}[i],
			Wall: 4, Work: 2048, DiskReadMB: []float64{10, 20, 30}[i]})
	}
	r.add(serverQemu, sample{Value: 500, CPU: 1, ClientCPU: 0.25, Wall: 5, Work: 1024, DiskReadMB: 7})
	r.add(serverQemu, sample{Value: 500, CPU: 1, ClientCPU: 0.75, Wall: 5, Work: 1024, DiskReadMB: 9})
	r.add(serverNbdkit, sample{Value: 2000, CPU: 0.5, Wall: 1, Work: 2048})
	r.add(serverNbdkit, sample{Value: 2400, CPU: 0.5, Wall: 1, Work: 2048})
	return r
}

func TestTableShowsServerAndClientCPUAndMachineShare(t *testing.T) {
	var out bytes.Buffer
	if err := writeTable(&out, []phaseResult{reportResult()}, 3, 2); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	header := strings.Join(strings.Fields(lines[0]), " ")
	if want := "figure (median of 3) unit strata qemu-nbd ratio target nbdkit mem strata qemu cpu strata client cpu qemu client cpu/work s:q machine strata qemu disk strata qemu"; header != want {
		t.Fatalf("header %q, want %q", header, want)
	}
	row, ok := strings.CutPrefix(strings.TrimSpace(lines[1]), "seq read")
	if !ok {
		t.Fatalf("row %q does not start with the figure", lines[1])
	}
	want := []string{"MB/s", "1100", "500", "2.20x", ">=2.0x", "met", "2200", "50", "%", "23", "%", "3.00", "1.00", "1.00", "0.50", "1.50x", "44", "%", "15", "%", "20", "8"}
	if got := strings.Fields(row); !slices.Equal(got, want) {
		t.Fatalf("row %q, want %q", got, want)
	}
	if !strings.Contains(out.String(), "wall seconds x 2 cores") {
		t.Fatalf("footer does not name the core count:\n%s", out.String())
	}

	// Without nbdkit, its columns and its footnote are left out.
	r := reportResult()
	r.Nbdkit = nil
	out.Reset()
	if err := writeTable(&out, []phaseResult{r}, 3, 2); err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(out.String(), "\n")
	header = strings.Join(strings.Fields(lines[0]), " ")
	if want := "figure (median of 3) unit strata qemu-nbd ratio target cpu strata client cpu qemu client cpu/work s:q machine strata qemu disk strata qemu"; header != want {
		t.Fatalf("header without nbdkit %q, want %q", header, want)
	}
	if got := strings.Fields(lines[1]); len(got) != len(want)-5+2 || strings.Contains(out.String(), "nbdkit") {
		t.Fatalf("row without nbdkit %q:\n%s", got, out.String())
	}
}

// serverJSON is the part of a server's --json summary the tests read.
type serverJSON struct {
	CPU     float64  `json:"cpu_seconds_median"`
	Client  float64  `json:"client_cpu_seconds_median"`
	Share   *float64 `json:"machine_share_median"`
	Samples []struct {
		Client float64 `json:"client_cpu_seconds"`
		Wall   float64 `json:"wall_seconds"`
	} `json:"samples"`
}

func TestJSONHasClientCPUAndMachineShare(t *testing.T) {
	r := reportResult()
	var out bytes.Buffer
	if err := writeJSON(&out, report{Config: configJSON{Cores: 2}, Phases: []jsonPhase{r.json(2)}}); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Config struct {
			Cores int `json:"cores"`
		} `json:"config"`
		Phases []map[string]json.RawMessage `json:"phases"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Config.Cores != 2 || len(doc.Phases) != 1 {
		t.Fatalf("json %s", out.Bytes())
	}
	for key, want := range map[string]struct{ cpu, client, share, sample0 float64 }{
		"strata":   {3, 1, 3.5 / 8, 1},
		"qemu_nbd": {1, 0.5, 1.5 / 10, 0.25},
	} {
		var got serverJSON
		if err := json.Unmarshal(doc.Phases[0][key], &got); err != nil {
			t.Fatal(err)
		}
		if got.CPU != want.cpu || got.Client != want.client || got.Share == nil || math.Abs(*got.Share-want.share) > 1e-12 ||
			len(got.Samples) == 0 || got.Samples[0].Client != want.sample0 || got.Samples[0].Wall == 0 {
			t.Errorf("%s: %s", key, doc.Phases[0][key])
		}
	}
	var of, qemuOf float64
	if json.Unmarshal(doc.Phases[0]["strata_of_nbdkit"], &of) != nil || of != 0.5 ||
		json.Unmarshal(doc.Phases[0]["qemu_nbd_of_nbdkit"], &qemuOf) != nil || qemuOf != 500.0/2200 {
		t.Errorf("shares of nbdkit's: %s, %s", doc.Phases[0]["strata_of_nbdkit"], doc.Phases[0]["qemu_nbd_of_nbdkit"])
	}
}

func TestRoundOrderReversesEveryOtherRound(t *testing.T) {
	servers := []string{serverStrata, serverQemu, serverNbdkit}
	if got := roundOrder(servers, 0); !slices.Equal(got, servers) {
		t.Errorf("round 0: %v", got)
	}
	if got, want := roundOrder(servers, 1), []string{serverNbdkit, serverQemu, serverStrata}; !slices.Equal(got, want) {
		t.Errorf("round 1: %v, want %v", got, want)
	}
	if servers[0] != serverStrata {
		t.Error("roundOrder reordered its input")
	}
}

func TestParseFlagsServers(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	if err != nil || !slices.Equal(c.Servers, []string{serverStrata, serverQemu}) {
		t.Fatalf("default servers %v, %v", c.Servers, err)
	}
	c, err = parseFlags([]string{"-servers", "nbdkit, strata"}, io.Discard)
	if err != nil || !slices.Equal(c.Servers, []string{serverNbdkit, serverStrata}) {
		t.Fatalf("-servers nbdkit,strata: %v, %v", c.Servers, err)
	}
	for _, bad := range []string{"strata,strata", "qemu", ""} {
		if _, err := parseFlags([]string{"-servers", bad}, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("-servers %q: %v, want a usage error", bad, err)
		}
	}
}

// The client's CPU comes from its rusage, which holds the processes it
// waited for: a shell whose subshell burns CPU (bounded by iterations)
// reports at least what the shell's own `times` says its children used.
func TestRunReportsTheClientsCPUChildrenIncluded(t *testing.T) {
	script := `(i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done); times`
	out, cpu, err := newProcs().run(t.Context(), time.Minute, "sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	// times prints the shell's user and system time, then its children's.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("times printed %q", out)
	}
	var children float64
	for _, f := range strings.Fields(lines[1]) {
		var m int
		var sec float64
		if _, err := fmt.Sscanf(f, "%dm%fs", &m, &sec); err != nil {
			t.Fatalf("times field %q: %v", f, err)
		}
		children += float64(m)*60 + sec
	}
	if children <= 0 || cpu < children-1e-3 {
		t.Fatalf("run reported %.3f s CPU; the shell's children used %.3f s (%q)", cpu, children, out)
	}
	if _, cpu, err := newProcs().run(t.Context(), time.Minute, "sh", "-c", script+"; exit 3"); err == nil || cpu <= 0 {
		t.Fatalf("failing client: cpu %v, err %v; want its CPU and an error", cpu, err)
	}
}

func TestParseStatCPUCountsFromLastParen(t *testing.T) {
	// comm "a) (b c" has spaces and parentheses; utime 250, stime 50 ticks.
	line := "1234 (a) (b c) S 1 1234 1234 0 -1 4194560 100 0 7 0 250 50 0 0 20 0 3 0 100 1000 10\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil || got != 3.0 {
		t.Fatalf("parseStatCPU = %v, %v; want 3.0", got, err)
	}
	if _, err := parseStatCPU([]byte("1234 (x) S 1")); err == nil {
		t.Fatal("short line accepted")
	}
}

func TestParseIOReadBytes(t *testing.T) {
	in := "rchar: 26747\nwchar: 1200\nsyscr: 40\nsyscw: 12\nread_bytes: 97329152\nwrite_bytes: 4096\ncancelled_write_bytes: 0\n"
	if got, err := parseIOReadBytes([]byte(in)); err != nil || got != 97329152 {
		t.Fatalf("parseIOReadBytes = %d, %v", got, err)
	}
	if _, err := parseIOReadBytes([]byte("rchar: 1\n")); err == nil {
		t.Fatal("missing read_bytes accepted")
	}
	self, err := readProcStat(os.Getpid())
	if err != nil || self.CPU < 0 || self.ReadBytes < 0 {
		t.Fatalf("readProcStat(self) = %+v, %v", self, err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4G": 4 << 30, "256M": 256 << 20, "512MiB": 512 << 20, "64k": 64 << 10, "1048576": 1 << 20, "2GB": 2 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1M", "0", "1.5G", "3X", "99999999T"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestLayoutCoversTheSizeAlignedAndAboutHalfAllocated(t *testing.T) {
	for _, size := range []int64{64 << 20, 256 << 20, 4 << 30} {
		for seed := uint64(1); seed <= 3; seed++ {
			l := Layout(size, seed, true)
			var off int64
			kinds := map[Kind]int64{}
			for _, e := range l {
				if e.Off != off || e.Len <= 0 || e.Len > extentMax || e.Off%extentAlign != 0 {
					t.Fatalf("size %d seed %d: bad extent %+v at %d", size, seed, e, off)
				}
				off += e.Len
				kinds[e.Kind] += e.Len
			}
			if off != size {
				t.Fatalf("size %d seed %d: extents cover %d", size, seed, off)
			}
			share := float64(AllocatedBytes(l)) / float64(size)
			if share < 0.45 || share > 0.55 {
				t.Errorf("size %d seed %d: allocated share %.3f, want about one half", size, seed, share)
			}
			for k := KindHole; k <= KindRandom; k++ {
				if kinds[k] == 0 {
					t.Errorf("size %d seed %d: no %v extents", size, seed, k)
				}
			}
		}
	}
	if dense := Layout(64<<20, 1, false); AllocatedBytes(dense) != 64<<20 {
		t.Errorf("dense layout has holes")
	}
}

func digest(t *testing.T, r io.Reader) [32]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

func TestDataSetIsDeterministicPerSeed(t *testing.T) {
	const size = 16 << 20
	a := digest(t, newDataSetReader(size, 7, true))
	if b := digest(t, newDataSetReader(size, 7, true)); a != b {
		t.Fatal("same seed, different data set")
	}
	if c := digest(t, newDataSetReader(size, 8, true)); a == c {
		t.Fatal("different seeds, same data set")
	}
}

func TestWriteDataSetMatchesTheStreamAndLeavesHolesSparse(t *testing.T) {
	const size = 32 << 20
	path := filepath.Join(t.TempDir(), "base.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	layout, err := WriteDataSet(f, size, 3, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, bytes.NewReader(data)) != digest(t, newDataSetReader(size, 3, true)) {
		t.Fatal("file differs from the streamed data set")
	}
	for _, e := range layout {
		if e.Kind == KindHole && !allZero(data[e.Off:e.Off+e.Len]) {
			t.Fatalf("hole %+v holds data", e)
		}
		if e.Kind != KindHole && allZero(data[e.Off:e.Off+e.Len]) {
			t.Fatalf("data extent %+v is all zeros", e)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	// Allocated blocks: the data extents, plus a little filesystem slack.
	if used, alloc := st.Blocks*512, AllocatedBytes(layout); used > alloc+alloc/20 {
		t.Fatalf("file uses %d bytes on disk for %d allocated: holes were written", used, alloc)
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// The content kinds must differ the way the benchmark claims: text shrinks
// a lot under zstd, binary some, random not at all.
func TestContentKindsCompressAsAdvertised(t *testing.T) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	g := newGenerator(1)
	ratio := func(k Kind) float64 {
		buf := make([]byte, extentMax)
		var in, out int
		for i := range 8 {
			g.fill(buf, Extent{Off: int64(i) * extentMax, Len: extentMax, Kind: k})
			in += len(buf)
			out += len(enc.EncodeAll(buf, nil))
		}
		return float64(in) / float64(out)
	}
	text, bin, rnd := ratio(KindText), ratio(KindBinary), ratio(KindRandom)
	if text < 2.5 || bin < 1.1 || bin > text || rnd > 1.01 {
		t.Fatalf("compression ratios text %.2f, binary %.2f, random %.2f", text, bin, rnd)
	}
	t.Logf("zstd fastest: text %.2fx, binary %.2fx, random %.2fx", text, bin, rnd)
}

func BenchmarkFill(b *testing.B) {
	g := newGenerator(1)
	buf := make([]byte, extentMax)
	for k := KindText; k <= KindRandom; k++ {
		b.Run(k.String(), func(b *testing.B) {
			b.SetBytes(extentMax)
			for i := 0; b.Loop(); i++ {
				g.fill(buf, Extent{Off: int64(i) * extentMax, Len: extentMax, Kind: k})
			}
		})
	}
}

func TestCopyDirCopiesEveryFileAndRefusesSubdirectories(t *testing.T) {
	src := t.TempDir()
	want := map[string]string{"000001.vlog": "values", "MANIFEST": "manifest"}
	for name, body := range want {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if err := copyDir(src, dst); err != nil {
		t.Fatal(err)
	}
	for name, body := range want {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || string(got) != body {
			t.Errorf("%s: %q, %v; want %q", name, got, err, body)
		}
	}
	if err := copyDir(src, dst); err == nil {
		t.Error("copied over an existing directory")
	}
	if err := os.Mkdir(filepath.Join(src, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := copyDir(src, filepath.Join(t.TempDir(), "copy")); err == nil {
		t.Error("copied a directory with a subdirectory")
	}
}
