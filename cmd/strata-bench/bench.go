package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"strata/layer"
)

// Server names, as printed.
const (
	serverStrata = "strata"
	serverQemu   = "qemu-nbd"
	// serverNbdkit is nbdkit's memory plugin holding the data set, an
	// optional reference: a well-known C server with the data in RAM (no
	// disk, no page cache, no format, nothing to decode). It is not a
	// ceiling: its sparse array serves sequential reads and writes slower
	// than strata here (docs/BENCHMARKS.md), but random reads near the
	// protocol's limit.
	serverNbdkit = "nbdkit"
)

// phaseKind says how a phase measures.
type phaseKind uint8

const (
	kindFio      phaseKind = iota // fio's nbd engine, time based
	kindCopyOut                   // nbdcopy export -> null:, timed
	kindCopyInto                  // nbdcopy --flush local file -> export, timed
)

// phase is one figure of the benchmark.
type phase struct {
	Name   string  // short id (flags, file names, JSON)
	Figure string  // what the table calls it
	Unit   string  // IOPS or MB/s
	Target float64 // the strata/qemu-nbd ratio we aim for
	Write  bool    // needs a fresh overlay; no cache drop before it
	kind   phaseKind
	fio    fioJobSpec // kindFio
}

// phases builds the five figures of issue 3 for the given settings.
func phases(runtime time.Duration, iodepth int) []phase {
	return []phase{
		{Name: "randread4k", Figure: "4K random read", Unit: "IOPS", Target: 1.3, kind: kindFio,
			fio: fioJobSpec{RW: "randread", BS: 4 << 10, IODepth: iodepth, Runtime: runtime}},
		{Name: "randwrite4k", Figure: "4K random write, fresh overlay", Unit: "IOPS", Target: 2, Write: true, kind: kindFio,
			fio: fioJobSpec{RW: "randwrite", BS: 4 << 10, IODepth: iodepth, Runtime: runtime}},
		{Name: "randread64k", Figure: "64K random read", Unit: "MB/s", Target: 1.2, kind: kindFio,
			fio: fioJobSpec{RW: "randread", BS: 64 << 10, IODepth: iodepth, Runtime: runtime}},
		{Name: "seqread", Figure: "seq read, holes skipped", Unit: "MB/s", Target: 2, kind: kindCopyOut},
		{Name: "seqwrite", Figure: "seq write incl. flush", Unit: "MB/s", Target: 1.5, Write: true, kind: kindCopyInto},
	}
}

// bench is one run: its work directory, its data set, its processes.
type bench struct {
	cfg   config
	dir   string
	procs *procs
	log   io.Writer // progress lines

	raw, seqSrc, storeDir, qemuRead string
	// writeStoreDir is a copy of the imported store for the write phases,
	// as qemu-nbd's write phases get overlays of their own: the read
	// phases then always read the store as imported, not one grown by
	// every earlier phase's writes (which would also, past
	// storage.Options.HugeReadLimit, change how it is mapped).
	writeStoreDir string
	size, seqSize int64
	img           layer.LayerID
	readDisk      layer.DiskID
	imported      importResult
	dropCaches    bool
	chunkSize     int // the store's, once imported
}

// sample is one measurement of one server in one phase.
type sample struct {
	Value float64 `json:"value"`
	CPU   float64 `json:"cpu_seconds"`
	// Work is what the CPU seconds bought: requests for IOPS figures,
	// MB for MB/s figures. CPU/Work compares the servers' efficiency
	// even when the machine is shared and throughput is noise.
	Work float64 `json:"work"`
	// ClientCPU is the client tool's (fio's or nbdcopy's) CPU seconds,
	// from its rusage when it exited; Wall is how long it ran. With CPU
	// they say how much of the machine the phase used.
	ClientCPU float64 `json:"client_cpu_seconds"`
	Wall      float64 `json:"wall_seconds"`
	// DiskReadMB is what the server read from the disk (page-cache
	// misses, through read calls or mmap): how cold the phase really was,
	// and how many bytes each server needs for the same data.
	DiskReadMB float64 `json:"disk_read_mb"`
}

// setup writes the data set, imports it into strata's store and makes the
// qcow2 overlay qemu-nbd reads through.
func (b *bench) setup(ctx context.Context) error {
	b.raw = filepath.Join(b.dir, "base.raw")
	b.seqSrc = filepath.Join(b.dir, "seqwrite.src")
	b.storeDir = filepath.Join(b.dir, "store")
	b.writeStoreDir = filepath.Join(b.dir, "store-w")
	b.qemuRead = filepath.Join(b.dir, "read.qcow2")

	t := time.Now()
	layout, err := writeFile(b.raw, b.size, b.cfg.Seed, true)
	if err != nil {
		return fmt.Errorf("data set: %w", err)
	}
	if _, err := writeFile(b.seqSrc, b.seqSize, b.cfg.Seed+1, false); err != nil {
		return fmt.Errorf("sequential write source: %w", err)
	}
	alloc := AllocatedBytes(layout)
	fmt.Fprintf(b.log, "data set: %s, %s allocated (%.0f %%), %d extents, seed %d; write source %s; %.1fs\n",
		fmtBytes(b.size), fmtBytes(alloc), 100*float64(alloc)/float64(b.size), len(layout), b.cfg.Seed,
		fmtBytes(b.seqSize), time.Since(t).Seconds())
	if err := ctx.Err(); err != nil {
		return err
	}

	if b.cfg.runs(serverStrata) {
		t = time.Now()
		b.img, b.readDisk, b.imported, err = importDataSet(ctx, b.storeDir, b.raw, b.cfg.ChunkSize)
		if err != nil {
			return fmt.Errorf("strata import: %w", err)
		}
		if err := reopenStore(b.storeDir); err != nil {
			return fmt.Errorf("strata reopen: %w", err)
		}
		if err := copyDir(b.storeDir, b.writeStoreDir); err != nil {
			return fmt.Errorf("strata store copy for the write phases: %w", err)
		}
		b.chunkSize = b.imported.ChunkSize
		st := b.imported.Store
		fmt.Fprintf(b.log, "strata import: %.1fs (%.0f MB/s), %s chunks: %d stored, %s raw in %s (%.2fx); layer %d, read disk %d\n",
			time.Since(t).Seconds(), float64(b.size)/1e6/b.imported.Seconds, fmtBytes(int64(b.chunkSize)),
			st.Chunks, fmtBytes(st.RawBytes), fmtBytes(st.StoredBytes), st.CompressionRatio(), b.img, b.readDisk)
	}
	if b.cfg.runs(serverQemu) {
		if err := b.qcow2Overlay(ctx, b.qemuRead); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, size int64, seed uint64, holes bool) ([]Extent, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	layout, err := WriteDataSet(f, size, seed, holes)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return layout, err
}

// qcow2Overlay makes a fresh qcow2 overlay over the raw data set.
func (b *bench) qcow2Overlay(ctx context.Context, path string) error {
	_ = os.Remove(path)
	_, _, err := b.procs.run(ctx, time.Minute, "qemu-img", "create", "-q", "-f", "qcow2", "-b", b.raw, "-F", "raw", path)
	return err
}

// server is one server process serving export "disk" for one phase.
type server struct {
	p       *proc
	uri     string
	cleanup func()
}

// start launches one server for one phase: over the untouched read disk
// (or read overlay) for read phases, over a fresh disk (overlay) for
// write phases. A new process per phase keeps the CPU accounting per
// phase and starts both servers equally cold.
func (b *bench) start(ctx context.Context, name string, ph phase, round int) (*server, error) {
	tag := fmt.Sprintf("%s-r%d", ph.Name, round+1)
	switch name {
	case serverStrata:
		sock := filepath.Join(b.dir, "strata.sock")
		store := b.storeDir
		if ph.Write {
			store = b.writeStoreDir
		}
		args := []string{"serve", "--store", store, "--socket", sock}
		if ph.Write {
			args = append(args, "--fresh-from", strconv.FormatUint(uint64(b.img), 10))
		} else {
			args = append(args, "--disk", strconv.FormatUint(uint64(b.readDisk), 10))
		}
		if b.cfg.CPUProfile != "" {
			args = append(args, "--cpuprofile", filepath.Join(b.cfg.CPUProfile, "strata-"+tag+".pprof"))
		}
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		p, err := b.procs.start(serverStrata, filepath.Join(b.dir, "strata-"+tag+".log"), self, args...)
		if err != nil {
			return nil, err
		}
		s := &server{p: p, uri: nbdURI(sock), cleanup: func() {}}
		if err := waitNBD(ctx, p, sock, 2*time.Minute); err != nil {
			_ = b.procs.stop(p, 20*time.Second)
			return nil, err
		}
		return s, nil
	case serverQemu:
		sock := filepath.Join(b.dir, "qemu.sock")
		_ = os.Remove(sock)
		img := b.qemuRead
		cleanup := func() {}
		if ph.Write {
			img = filepath.Join(b.dir, "overlay-"+tag+".qcow2")
			if err := b.qcow2Overlay(ctx, img); err != nil {
				return nil, err
			}
			cleanup = func() { _ = os.Remove(img) }
		}
		p, err := b.procs.start(serverQemu, filepath.Join(b.dir, "qemu-"+tag+".log"), "qemu-nbd",
			"--cache=writeback", "--aio=threads", "-f", "qcow2", "--socket="+sock,
			"-x", exportName, "--shared=8", "--persistent", img)
		if err != nil {
			cleanup()
			return nil, err
		}
		if err := waitNBD(ctx, p, sock, time.Minute); err != nil {
			_ = b.procs.stop(p, 10*time.Second)
			cleanup()
			return nil, err
		}
		return &server{p: p, uri: nbdURI(sock), cleanup: cleanup}, nil
	case serverNbdkit:
		sock := filepath.Join(b.dir, "nbdkit.sock")
		_ = os.Remove(sock)
		p, err := b.procs.start(serverNbdkit, filepath.Join(b.dir, "nbdkit-"+tag+".log"), "nbdkit",
			"--foreground", "--unix="+sock, "memory", "size="+strconv.FormatInt(b.size, 10))
		if err != nil {
			return nil, err
		}
		if err := waitNBD(ctx, p, sock, time.Minute); err != nil {
			_ = b.procs.stop(p, 10*time.Second)
			return nil, err
		}
		// Load the data set (nbdcopy skips the file's holes), before
		// the measurement and outside its CPU count.
		s := &server{p: p, uri: nbdURI(sock), cleanup: func() {}}
		if _, _, err := b.procs.run(ctx, 10*time.Minute, "nbdcopy", b.raw, s.uri); err != nil {
			_ = b.procs.stop(p, 10*time.Second)
			return nil, fmt.Errorf("loading nbdkit's memory: %w", err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("unknown server %q", name)
}

func nbdURI(sock string) string { return "nbd+unix:///" + exportName + "?socket=" + sock }

// settle prepares the machine for a phase: dirty pages written out (this
// VM's write-back otherwise lands in the middle of the next phase), the
// page cache dropped before reads when we may, the sequential write's
// source file read into the page cache before that phase, then a short
// pause.
func (b *bench) settle(ctx context.Context, ph phase) error {
	if _, _, err := b.procs.run(ctx, 5*time.Minute, "sync"); err != nil {
		return err
	}
	if !ph.Write && b.dropCaches {
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
			fmt.Fprintf(b.log, "drop_caches: %v (continuing without)\n", err)
			b.dropCaches = false
		}
	}
	if ph.kind == kindCopyInto {
		// The read phases before it dropped the source from the page
		// cache: without this, whichever server went first also waited
		// for nbdcopy to read the source from disk (measured: strata
		// 138-149 MB/s first, 221-231 MB/s second in the same runs).
		if err := warmFile(b.seqSrc); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.cfg.Pause):
	}
	return nil
}

// warmFile reads path once, so the next reader finds it in the page cache.
func warmFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// measure runs one phase against one server and returns the figure and
// the server's CPU seconds during the measurement alone (not its start-up
// or its shutdown).
func (b *bench) measure(ctx context.Context, name string, ph phase, round int) (smp sample, err error) {
	s, err := b.start(ctx, name, ph, round)
	if err != nil {
		return smp, err
	}
	defer s.cleanup()
	stopped := false
	defer func() {
		if !stopped {
			_ = b.procs.stop(s.p, 20*time.Second)
		}
	}()
	if err := b.settle(ctx, ph); err != nil {
		return smp, err
	}
	pid := s.p.cmd.Process.Pid
	if name == serverStrata && b.cfg.CPUProfile != "" {
		// Start the serve child's profile now (see serve).
		if err := s.p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			return smp, err
		}
	}
	st0, err := readProcStat(pid)
	if err != nil {
		return smp, err
	}
	tag := fmt.Sprintf("%s-%s-r%d", name, ph.Name, round+1)
	if smp, err = b.runClient(ctx, ph, s.uri, tag); err != nil {
		return smp, err
	}
	st1, err := readProcStat(pid)
	if err != nil {
		return smp, err
	}
	smp.CPU = st1.CPU - st0.CPU
	smp.DiskReadMB = float64(st1.ReadBytes-st0.ReadBytes) / 1e6
	stopped = true
	if err := b.procs.stop(s.p, 30*time.Second); err != nil {
		return smp, fmt.Errorf("stopping %s after %s: %w", name, ph.Name, err)
	}
	return smp, nil
}

// runClient runs the phase's client tool against uri and returns the
// figure, the work done, the tool's CPU seconds and the wall seconds it
// ran.
func (b *bench) runClient(ctx context.Context, ph phase, uri, tag string) (smp sample, err error) {
	t := time.Now()
	switch ph.kind {
	case kindFio:
		var r fioResult
		r, smp.ClientCPU, err = b.runFio(ctx, ph.fio, uri, tag)
		smp.Value, smp.Work = fioFigure(ph, r)
	case kindCopyOut:
		_, smp.ClientCPU, err = b.procs.run(ctx, 10*time.Minute, "nbdcopy", uri, "null:")
		smp.Work = float64(b.size) / 1e6
	case kindCopyInto:
		_, smp.ClientCPU, err = b.procs.run(ctx, 10*time.Minute, "nbdcopy", "--flush", b.seqSrc, uri)
		smp.Work = float64(b.seqSize) / 1e6
	}
	smp.Wall = time.Since(t).Seconds()
	if ph.kind != kindFio {
		smp.Value = smp.Work / smp.Wall
	}
	return smp, err
}

// roundOrder is the order of the servers in round r: as given in even
// rounds, reversed in odd ones.
func roundOrder(servers []string, r int) []string {
	order := slices.Clone(servers)
	if r%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// fioFigure picks the phase's figure and its work from fio's result.
func fioFigure(ph phase, r fioResult) (value, work float64) {
	switch {
	case ph.Unit == "IOPS" && ph.Write:
		return r.WriteIOPS, float64(r.WriteIOs)
	case ph.Unit == "IOPS":
		return r.ReadIOPS, float64(r.ReadIOs)
	case ph.Write:
		return r.WriteBW / 1e6, float64(r.WriteBytes) / 1e6
	default:
		return r.ReadBW / 1e6, float64(r.ReadBytes) / 1e6
	}
}

// run measures every phase for every round, reversing the servers' order
// from round to round so none always inherits another's leftovers (dirty
// pages, warm CPU caches).
func (b *bench) run(ctx context.Context, phs []phase) ([]phaseResult, error) {
	results := make([]phaseResult, len(phs))
	for i, ph := range phs {
		results[i] = phaseResult{phase: ph}
	}
	for r := range b.cfg.Rounds {
		for i, ph := range phs {
			for _, name := range roundOrder(b.cfg.Servers, r) {
				smp, err := b.measure(ctx, name, ph, r)
				if err != nil {
					return results, fmt.Errorf("round %d, %s, %s: %w", r+1, ph.Name, name, err)
				}
				fmt.Fprintf(b.log, "round %d  %-12s %-9s %10s %-4s  cpu %.2fs  client cpu %.2fs  wall %.1fs  disk read %.0f MB\n",
					r+1, ph.Name, name, fmtValue(smp.Value, ph.Unit), ph.Unit, smp.CPU, smp.ClientCPU, smp.Wall, smp.DiskReadMB)
				results[i].add(name, smp)
			}
		}
	}
	return results, nil
}
