// Command strata-bench serves one data set with strata and with qemu-nbd,
// side by side in the same run, and measures both with the same clients
// (fio's nbd engine and nbdcopy) over Unix sockets: the NBD benchmark of
// issue 3.
//
// It writes a deterministic data set (about half holes; text, binary-ish
// and random data), imports it into a strata store as an image layer and
// makes a qcow2 overlay over the raw file for qemu-nbd. Each measurement
// starts its server in a process of its own (strata: this binary's hidden
// `serve` subcommand, the nbd package over a layer disk, in process; qemu:
// qemu-nbd with writeback cache and thread AIO), so the server's CPU
// seconds come from /proc. Write phases get a fresh disk (a fresh qcow2
// overlay). Phases alternate between the servers, each round reverses
// their order, and the table shows medians. --servers can add nbdkit's
// memory plugin, loaded with the same data, as a reference.
//
//	go run ./cmd/strata-bench --size 256M --runtime 3s   # quick
//	go run ./cmd/strata-bench                            # 4 GiB, 3 rounds of 10 s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// errUsage: bad flags.
var errUsage = errors.New("usage")

// config is the command line.
type config struct {
	Size       int64
	SeqSize    int64
	ChunkSize  int
	WorkDir    string
	Keep       bool
	Rounds     int
	Runtime    time.Duration
	IODepth    int
	Pause      time.Duration
	DropCaches bool
	Seed       uint64
	JSON       bool
	Phases     []string
	Servers    []string
	CPUProfile string
	Timeout    time.Duration
}

func (c config) runs(server string) bool { return slices.Contains(c.Servers, server) }

// configJSON is the config as --json reports it.
type configJSON struct {
	Size       int64    `json:"size_bytes"`
	ChunkSize  int      `json:"chunk_size"`
	SeqSize    int64    `json:"seq_write_bytes"`
	Rounds     int      `json:"rounds"`
	Runtime    string   `json:"runtime"`
	IODepth    int      `json:"iodepth"`
	Pause      string   `json:"pause"`
	Seed       uint64   `json:"seed"`
	Servers    []string `json:"servers"`
	DropCaches bool     `json:"drop_caches"`
	Cores      int      `json:"cores"` // runtime.NumCPU(), for the machine share
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(serveMain(os.Args[2:]))
	}
	os.Exit(benchMain(os.Args[1:], os.Stdout, os.Stderr))
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("strata-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: strata-bench [flags]\n\n"+
			"Serves one data set with strata and with qemu-nbd in the same run and\n"+
			"measures both with fio (nbd engine) and nbdcopy over Unix sockets.\n"+
			"--servers can add nbdkit's memory plugin holding the same data, as a\n"+
			"reference with nothing to read from disk or decode. Needs fio, nbdcopy,\n"+
			"qemu-img and qemu-nbd on PATH (and nbdkit for it).\n\nflags:\n")
		fs.PrintDefaults()
	}
	c := config{}
	size := fs.String("size", "4G", "data set size (K, M, G suffixes are binary)")
	seqSize := fs.String("seq-write-size", "", "bytes written in the sequential write phase (default: a quarter of --size)")
	chunk := fs.String("chunk-size", "", "strata store chunk size, 4K to 64K (default: the store's default)")
	fs.StringVar(&c.WorkDir, "workdir", "/var/tmp", "where to make the run's temporary directory")
	fs.BoolVar(&c.Keep, "keep", false, "keep the temporary directory (data set, store, logs, fio output)")
	fs.IntVar(&c.Rounds, "rounds", 3, "rounds; medians are reported")
	fs.DurationVar(&c.Runtime, "runtime", 10*time.Second, "duration of each fio phase")
	fs.IntVar(&c.IODepth, "iodepth", 32, "fio queue depth")
	fs.DurationVar(&c.Pause, "pause", 2*time.Second, "pause after sync (and dropping caches) before each phase")
	fs.BoolVar(&c.DropCaches, "drop-caches", true, "drop the page cache before read phases (needs root): reads then start cold for both servers")
	fs.Uint64Var(&c.Seed, "seed", 1, "data set seed")
	fs.BoolVar(&c.JSON, "json", false, "print the results as JSON on stdout (progress still goes to stderr)")
	phs := fs.String("phases", "randread4k,randwrite4k,randread64k,seqread,seqwrite", "phases to run, comma separated")
	srv := fs.String("servers", serverStrata+","+serverQemu, "servers to measure, comma separated: strata, qemu-nbd, nbdkit (memory plugin, a reference)")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "directory for CPU profiles of each strata serve process (go tool pprof)")
	fs.DurationVar(&c.Timeout, "timeout", 45*time.Minute, "give up (and clean up) after this long")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return c, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	var err error
	if c.Size, err = parseSize(*size); err != nil {
		return c, fmt.Errorf("%w: --size: %w", errUsage, err)
	}
	if c.Size < 16<<20 {
		return c, fmt.Errorf("%w: --size must be at least 16M", errUsage)
	}
	if *chunk != "" {
		n, err := parseSize(*chunk)
		if err != nil || n < 4<<10 || n > 64<<10 || n&(n-1) != 0 {
			return c, fmt.Errorf("%w: --chunk-size must be a power of two from 4K to 64K", errUsage)
		}
		c.ChunkSize = int(n)
	}
	c.SeqSize = c.Size / 4
	if *seqSize != "" {
		if c.SeqSize, err = parseSize(*seqSize); err != nil {
			return c, fmt.Errorf("%w: --seq-write-size: %w", errUsage, err)
		}
	}
	if c.SeqSize <= 0 || c.SeqSize > c.Size {
		return c, fmt.Errorf("%w: --seq-write-size must be between 1 and --size", errUsage)
	}
	if c.Rounds < 1 || c.IODepth < 1 || c.Runtime < time.Second {
		return c, fmt.Errorf("%w: --rounds and --iodepth at least 1, --runtime at least 1s", errUsage)
	}
	known := map[string]bool{}
	for _, p := range phases(c.Runtime, c.IODepth) {
		known[p.Name] = true
	}
	for _, p := range splitList(*phs) {
		if !known[p] {
			return c, fmt.Errorf("%w: unknown phase %q", errUsage, p)
		}
		c.Phases = append(c.Phases, p)
	}
	for _, s := range splitList(*srv) {
		if s != serverStrata && s != serverQemu && s != serverNbdkit {
			return c, fmt.Errorf("%w: unknown server %q (strata, qemu-nbd, nbdkit)", errUsage, s)
		}
		if slices.Contains(c.Servers, s) {
			return c, fmt.Errorf("%w: server %q given twice", errUsage, s)
		}
		c.Servers = append(c.Servers, s)
	}
	if len(c.Phases) == 0 || len(c.Servers) == 0 {
		return c, fmt.Errorf("%w: no phases or no servers", errUsage)
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseSize reads "4G", "256M", "512MiB", "1048576": binary multiples.
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if t != "" {
		if i := strings.IndexByte("KMGT", t[len(t)-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func benchMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "strata-bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.Timeout, fmt.Errorf("--timeout %v passed", cfg.Timeout))
	defer cancel()
	if err := runBench(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "strata-bench: %v\n", err)
		return 1
	}
	return 0
}

func runBench(ctx context.Context, cfg config, stdout, stderr io.Writer) (err error) {
	start := time.Now()
	var tools []string
	tools = append(tools, "sync", "fio", "nbdcopy")
	if cfg.runs(serverQemu) {
		tools = append(tools, "qemu-img", "qemu-nbd")
	}
	if cfg.runs(serverNbdkit) {
		tools = append(tools, "nbdkit")
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is needed: %w", t, err)
		}
	}
	if cfg.CPUProfile != "" {
		if err := os.MkdirAll(cfg.CPUProfile, 0o755); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp(cfg.WorkDir, "strata-bench-")
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, dir: dir, procs: newProcs(), log: stderr,
		size: cfg.Size, seqSize: cfg.SeqSize, dropCaches: cfg.DropCaches && os.Geteuid() == 0}
	defer func() {
		b.procs.stopAll()
		if cfg.Keep {
			fmt.Fprintf(stderr, "kept %s\n", dir)
		} else if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if cfg.DropCaches && !b.dropCaches {
		fmt.Fprintln(stderr, "not root: page cache is not dropped before read phases")
	}
	if err := b.setup(ctx); err != nil {
		return err
	}
	var phs []phase
	for _, p := range phases(cfg.Runtime, cfg.IODepth) {
		if slices.Contains(cfg.Phases, p.Name) {
			phs = append(phs, p)
		}
	}
	results, err := b.run(ctx, phs)
	if err != nil {
		return err
	}
	cores := runtime.NumCPU()
	if cfg.JSON {
		rep := report{
			Config: configJSON{Size: cfg.Size, ChunkSize: b.chunkSize, SeqSize: cfg.SeqSize, Rounds: cfg.Rounds,
				Runtime: cfg.Runtime.String(), IODepth: cfg.IODepth, Pause: cfg.Pause.String(),
				Seed: cfg.Seed, Servers: cfg.Servers, DropCaches: b.dropCaches, Cores: cores},
			Seconds: time.Since(start).Seconds(),
		}
		if cfg.runs(serverStrata) {
			rep.Import = &b.imported
		}
		for i := range results {
			rep.Phases = append(rep.Phases, results[i].json(cores))
		}
		return writeJSON(stdout, rep)
	}
	fmt.Fprintf(stdout, "\nstrata vs qemu-nbd: %s data set (seed %d), strata chunks %s, %d rounds, fio %v at qd %d, seq write %s, drop_caches %v, %.0fs\n\n",
		fmtBytes(cfg.Size), cfg.Seed, fmtBytes(int64(b.chunkSize)), cfg.Rounds, cfg.Runtime, cfg.IODepth, fmtBytes(cfg.SeqSize), b.dropCaches,
		time.Since(start).Seconds())
	return writeTable(stdout, results, cfg.Rounds, cores)
}
