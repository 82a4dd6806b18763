package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// flatBackend is a preallocated, pre-touched in-memory disk with striped
// locks: its cost per request is a memcpy, so benchmarks measure the server.
type flatBackend struct {
	data  []byte
	locks [64]sync.RWMutex
}

const flatStripe = 1 << 20

func newFlat(size int64) *flatBackend {
	f := &flatBackend{data: make([]byte, size)}
	p := pattern(3, flatStripe)
	for off := 0; off < len(f.data); off += flatStripe {
		copy(f.data[off:], p)
	}
	return f
}

func (f *flatBackend) stripe(off int64) *sync.RWMutex { return &f.locks[(off/flatStripe)%64] }
func (f *flatBackend) Size() int64                    { return int64(len(f.data)) }
func (f *flatBackend) ReadOnly() bool                 { return false }
func (f *flatBackend) Flush(context.Context) error    { return nil }

func (f *flatBackend) ReadAt(_ context.Context, p []byte, off int64) error {
	for len(p) > 0 {
		n := min(len(p), int(flatStripe-off%flatStripe))
		l := f.stripe(off)
		l.RLock()
		copy(p[:n], f.data[off:])
		l.RUnlock()
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (f *flatBackend) WriteAt(_ context.Context, p []byte, off int64, _ bool) error {
	for len(p) > 0 {
		n := min(len(p), int(flatStripe-off%flatStripe))
		l := f.stripe(off)
		l.Lock()
		copy(f.data[off:], p[:n])
		l.Unlock()
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (f *flatBackend) zero(off, length int64) {
	for length > 0 {
		n := min(length, flatStripe-off%flatStripe)
		l := f.stripe(off)
		l.Lock()
		clear(f.data[off : off+n])
		l.Unlock()
		off, length = off+n, length-n
	}
}

func (f *flatBackend) Trim(_ context.Context, off, length int64, _ bool) error {
	f.zero(off, length)
	return nil
}

func (f *flatBackend) WriteZeroes(_ context.Context, off, length int64, _, _, _ bool) error {
	f.zero(off, length)
	return nil
}

func (f *flatBackend) Extents(_ context.Context, off, length int64) ([]Extent, error) {
	return []Extent{{Length: length}}, nil
}

// benchPipelined drives one connection with qd requests in flight over a
// Unix socket, like fio's nbd engine at iodepth 32, and measures the whole
// request path: parse, dispatch, backend copy, reply, batching.
func benchPipelined(b *testing.B, typ uint16, size int, qd int) {
	const export = 256 << 20
	sock := filepath.Join(b.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	var writes atomic.Int64
	srv := &Server{Exports: &mapExports{m: map[string]Backend{"d": newFlat(export)}}}
	go srv.Serve(countingListener{l, &writes})
	defer srv.Close()
	rc := dialRaw(b, "unix", sock)
	rc.greet(3)
	rc.goExport("d", false, false)
	payload := pattern(7, size)
	rng := rand.New(rand.NewPCG(1, 2))
	slots := export / size
	var hdr [simpleReplySize]byte
	data := make([]byte, size)
	b.SetBytes(int64(size))
	writes.Store(0)
	b.ResetTimer()
	sent, done := 0, 0
	for done < b.N {
		for sent < b.N && sent-done < qd {
			off := uint64(rng.IntN(slots) * size)
			if typ == cmdWrite {
				rc.queue(0, cmdWrite, uint64(sent), off, uint32(size), payload)
			} else {
				rc.queue(0, typ, uint64(sent), off, uint32(size), nil)
			}
			sent++
		}
		rc.flush()
		if _, err := io.ReadFull(rc.br, hdr[:]); err != nil {
			b.Fatal(err)
		}
		if binary.BigEndian.Uint32(hdr[4:]) != 0 {
			b.Fatal("error reply")
		}
		if typ == cmdRead {
			if _, err := io.ReadFull(rc.br, data); err != nil {
				b.Fatal(err)
			}
		}
		done++
	}
	// Write syscalls per reply: below 1 means replies were batched.
	b.ReportMetric(float64(writes.Load())/float64(b.N), "writes/reply")
}

// countingListener counts the server's write calls on accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

func BenchmarkRead4KQD32(b *testing.B)  { benchPipelined(b, cmdRead, 4<<10, 32) }
func BenchmarkWrite4KQD32(b *testing.B) { benchPipelined(b, cmdWrite, 4<<10, 32) }
func BenchmarkRead64KQD32(b *testing.B) { benchPipelined(b, cmdRead, 64<<10, 32) }
func BenchmarkRead1MQD8(b *testing.B)   { benchPipelined(b, cmdRead, 1<<20, 8) }
func BenchmarkWrite1MQD8(b *testing.B)  { benchPipelined(b, cmdWrite, 1<<20, 8) }
func BenchmarkRead4KQD1(b *testing.B)   { benchPipelined(b, cmdRead, 4<<10, 1) }

// BenchmarkFioVsNbdkitMemory runs fio's nbd engine (iodepth 32) against this
// server over an in-memory export and against `nbdkit memory`, interleaved,
// and reports both and the ratio. It needs fio and nbdkit, and takes about
// NBD_FIO_SECONDS (default 3) x 8 runs. NBD_FIO_JOBS (e.g. "seqread-1m")
// picks jobs by name.
//
//	go test ./nbd -run '^$' -bench FioVsNbdkit -benchtime 1x
func BenchmarkFioVsNbdkitMemory(b *testing.B) {
	const size = 1 << 30
	secs := os.Getenv("NBD_FIO_SECONDS")
	if secs == "" {
		secs = "3"
	}
	ts := startServer(b, map[string]Backend{"": newFlat(size)}, nil)

	kitSock := filepath.Join(ts.dir, "nbdkit.sock")
	kit := exec.Command("/usr/sbin/nbdkit", "-f", "-U", kitSock, "memory", fmt.Sprint(size))
	if _, err := os.Stat("/usr/sbin/nbdkit"); err != nil {
		kit.Path = "/usr/bin/nbdkit"
	}
	if err := kit.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { kit.Process.Kill(); kit.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(kitSock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("nbdkit did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ours := "nbd+unix:///?socket=" + ts.sock
	theirs := "nbd+unix:///?socket=" + kitSock
	// Fill nbdkit with the same kind of data so reads are not of holes.
	img := filepath.Join(ts.dir, "fill.raw")
	fill := bytes.Repeat(pattern(3, flatStripe), size/flatStripe)
	if err := os.WriteFile(img, fill, 0o600); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("/usr/bin/nbdcopy", img, theirs).CombinedOutput(); err != nil {
		b.Fatalf("nbdcopy: %v %s", err, out)
	}
	os.Remove(img)

	jobs := []struct {
		name, rw, bs string
		unit         string
	}{
		{"randread-4k", "randread", "4k", "iops"},
		{"randwrite-4k", "randwrite", "4k", "iops"},
		{"randread-64k", "randread", "64k", "MB/s"},
		{"seqread-1m", "read", "1m", "MB/s"},
	}
	// Throughput swings with the machine's load; server CPU time per I/O
	// does much less, so it is reported too (ours: this process's rusage,
	// which during the run is the server; nbdkit's: /proc/<pid>/stat).
	for i := 0; i < b.N; i++ {
		for _, j := range jobs {
			if only := os.Getenv("NBD_FIO_JOBS"); only != "" && !strings.Contains(only, j.name) {
				continue
			}
			c0 := selfCPU()
			a := runFio(b, ours, j.rw, j.bs, secs)
			a.cpu = selfCPU() - c0
			k0 := procCPU(b, kit.Process.Pid)
			k := runFio(b, theirs, j.rw, j.bs, secs)
			k.cpu = procCPU(b, kit.Process.Pid) - k0
			pick := func(r fioResult) float64 {
				if j.unit == "iops" {
					return r.iops
				}
				return r.bw / 1e6
			}
			b.ReportMetric(pick(a), j.name+"-strata-"+j.unit)
			b.ReportMetric(pick(k), j.name+"-nbdkit-"+j.unit)
			b.ReportMetric(pick(a)/pick(k), j.name+"-ratio")
			b.Logf("%-13s strata %8.0f %s (%5.1f us CPU/IO)  nbdkit-memory %8.0f %s (%5.1f us CPU/IO)  ratio %.2f",
				j.name, pick(a), j.unit, a.cpuPerIO(), pick(k), j.unit, k.cpuPerIO(), pick(a)/pick(k))
		}
	}
}

type fioResult struct {
	iops, bw float64
	ios      float64
	cpu      time.Duration
}

func (r fioResult) cpuPerIO() float64 { return float64(r.cpu.Microseconds()) / max(r.ios, 1) }

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU reads utime+stime of pid from /proc (clock ticks of 10 ms).
func procCPU(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the parenthesized command name; utime, stime are 14, 15.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func runFio(b *testing.B, uri, rw, bs, secs string) fioResult {
	b.Helper()
	cmd := exec.Command("/usr/bin/fio", "--name=j", "--ioengine=nbd", "--uri="+uri, "--rw="+rw, "--bs="+bs,
		"--iodepth=32", "--runtime="+secs, "--time_based", "--output-format=json", "--size=1g")
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("fio %s %s: %v\n%s", rw, bs, err, out)
	}
	var r struct {
		Jobs []struct {
			Read, Write struct {
				IOPS float64 `json:"iops"`
				BW   float64 `json:"bw_bytes"`
				IOs  float64 `json:"total_ios"`
			}
		} `json:"jobs"`
	}
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Jobs) == 0 {
		b.Fatalf("fio output: %v\n%s", err, out)
	}
	j := r.Jobs[0]
	return fioResult{iops: j.Read.IOPS + j.Write.IOPS, bw: j.Read.BW + j.Write.BW, ios: j.Read.IOs + j.Write.IOs}
}
