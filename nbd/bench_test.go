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
	"runtime"
	"runtime/debug"
	"runtime/pprof"
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

// TryReadAt never blocks on I/O: the data is in memory.
func (f *flatBackend) TryReadAt(p []byte, off int64) bool {
	f.ReadAt(context.Background(), p, off)
	return true
}

// TryWriteAt never blocks on I/O either.
func (f *flatBackend) TryWriteAt(p []byte, off int64, fua bool) (bool, error) {
	return true, f.WriteAt(context.Background(), p, off, fua)
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
	cpu0 := selfCPU()
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
	// CPU of the whole process (client and server) per request: steadier
	// than the wall time on a shared machine.
	b.ReportMetric(float64((selfCPU()-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-us/op")
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

// writeBuffers counts a vectored write as one: it is one writev.
func (c countingConn) writeBuffers(v *net.Buffers) (int64, error) {
	c.n.Add(1)
	return v.WriteTo(c.Conn)
}

func BenchmarkRead4KQD32(b *testing.B)  { benchPipelined(b, cmdRead, 4<<10, 32) }
func BenchmarkWrite4KQD32(b *testing.B) { benchPipelined(b, cmdWrite, 4<<10, 32) }
func BenchmarkRead64KQD32(b *testing.B) { benchPipelined(b, cmdRead, 64<<10, 32) }
func BenchmarkRead1MQD8(b *testing.B)   { benchPipelined(b, cmdRead, 1<<20, 8) }
func BenchmarkWrite1MQD8(b *testing.B)  { benchPipelined(b, cmdWrite, 1<<20, 8) }
func BenchmarkRead4KQD1(b *testing.B)   { benchPipelined(b, cmdRead, 4<<10, 1) }

// BenchmarkFioVsNbdkitMemory runs fio's nbd engine (iodepth 32) against this
// server over an in-memory export, against `nbdkit memory` (the protocol
// ceiling of a C server) and against `qemu-nbd` serving a raw file on tmpfs
// with writeback cache, interleaved, and logs each figure, the server's CPU
// time per I/O and our ratio to each. It needs fio, nbdkit and qemu-nbd, and
// takes about NBD_FIO_SECONDS (default 3) x 12 runs. NBD_FIO_JOBS (e.g.
// "seqread-1m") picks jobs by name; NBD_FIO_CPUPROFILE=prefix writes a CPU
// profile of our server per job.
//
//	go test ./nbd -run '^$' -bench FioVsNbdkit -benchtime 1x -v
func BenchmarkFioVsNbdkitMemory(b *testing.B) {
	const size = 1 << 30
	secs := os.Getenv("NBD_FIO_SECONDS")
	if secs == "" {
		secs = "3"
	}
	ts := startServer(b, map[string]Backend{"": newFlat(size)}, nil)

	// The same kind of data everywhere, so reads are not of holes.
	shm, err := os.MkdirTemp("/dev/shm", "nbdbench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	img := filepath.Join(shm, "disk.raw")
	if err := os.WriteFile(img, bytes.Repeat(pattern(3, flatStripe), size/flatStripe), 0o600); err != nil {
		b.Fatal(err)
	}
	kitSock := filepath.Join(ts.dir, "nbdkit.sock")
	kit := startPeerServer(b, kitSock, "/usr/bin/nbdkit", "-f", "-U", kitSock, "memory", fmt.Sprint(size))
	if out, err := exec.Command("/usr/bin/nbdcopy", img, "nbd+unix:///?socket="+kitSock).CombinedOutput(); err != nil {
		b.Fatalf("nbdcopy: %v %s", err, out)
	}
	qemuSock := filepath.Join(ts.dir, "qemu.sock")
	qemu := startPeerServer(b, qemuSock, "/usr/bin/qemu-nbd", "-f", "raw", "-t", "-x", "", "--cache=writeback", "-k", qemuSock, img)

	// Settle the setup's garbage (a GiB) so that no GC cycle is charged
	// to the first measurement.
	runtime.GC()
	debug.FreeOSMemory()

	servers := []struct {
		name string
		uri  string
		cpu  func() time.Duration
	}{
		{"strata", "nbd+unix:///?socket=" + ts.sock, selfCPU},
		{"nbdkit-memory", "nbd+unix:///?socket=" + kitSock, func() time.Duration { return procCPU(b, kit) }},
		{"qemu-nbd-tmpfs", "nbd+unix:///?socket=" + qemuSock, func() time.Duration { return procCPU(b, qemu) }},
	}
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
	// swings less, so it is reported too (ours: this process's rusage,
	// which during the run is the server; the others': /proc/<pid>/stat).
	for i := 0; i < b.N; i++ {
		for _, j := range jobs {
			if only := os.Getenv("NBD_FIO_JOBS"); only != "" && !strings.Contains(only, j.name) {
				continue
			}
			pick := func(r fioResult) float64 {
				if j.unit == "iops" {
					return r.iops
				}
				return r.bw / 1e6
			}
			line := fmt.Sprintf("%-13s", j.name)
			var ours float64
			for si, sv := range servers {
				prof := si == 0 && os.Getenv("NBD_FIO_CPUPROFILE") != ""
				if prof {
					// Profile only our server while fio drives it.
					f, err := os.Create(os.Getenv("NBD_FIO_CPUPROFILE") + "." + j.name)
					if err != nil {
						b.Fatal(err)
					}
					pprof.StartCPUProfile(f)
				}
				c0 := sv.cpu()
				r := runFio(b, sv.uri, j.rw, j.bs, secs)
				r.cpu = sv.cpu() - c0
				if prof {
					pprof.StopCPUProfile()
				}
				v := pick(r)
				b.ReportMetric(v, j.name+"-"+sv.name+"-"+j.unit)
				line += fmt.Sprintf("  %s %7.0f %s (%4.0f us CPU/IO)", sv.name, v, j.unit, r.cpuPerIO())
				if si == 0 {
					ours = v
				} else {
					line += fmt.Sprintf(" x%.2f", ours/v)
				}
			}
			b.Log(line)
		}
	}
}

// startPeerServer starts a server process that listens on sock and stops
// it when the benchmark ends; it returns the pid.
func startPeerServer(b *testing.B, sock string, path string, args ...string) int {
	b.Helper()
	cmd := exec.Command(path, args...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			return cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s did not start", path)
		}
		time.Sleep(20 * time.Millisecond)
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
