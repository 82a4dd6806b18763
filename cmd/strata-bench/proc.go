package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// errServerExited: a server process ended before it was asked to.
var errServerExited = errors.New("server exited early")

// procs tracks every process the benchmark starts, so that each is stopped
// on every path out: normal end, error, interrupt. Children also get
// SIGKILL from the kernel if this process dies (Pdeathsig).
type procs struct {
	mu   sync.Mutex
	live map[*proc]struct{}
}

func newProcs() *procs { return &procs{live: map[*proc]struct{}{}} }

func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// run runs a client tool to completion within timeout (and ctx) and
// returns its combined output and the CPU seconds it used; a failure
// carries the output's tail.
func (p *procs) run(ctx context.Context, timeout time.Duration, name string, args ...string) ([]byte, float64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = childAttr()
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	cpu := childCPU(cmd.ProcessState)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		return out.Bytes(), cpu, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail(out.Bytes(), 800))
	}
	return out.Bytes(), cpu, nil
}

// childCPU is the user+system seconds of a process that has been waited
// for: its threads, and every descendant it waited for itself (the kernel
// fills wait's rusage with RUSAGE_BOTH), so fio's forked job processes
// count. Zero when the process never started.
func childCPU(ps *os.ProcessState) float64 {
	if ps == nil {
		return 0
	}
	return (ps.UserTime() + ps.SystemTime()).Seconds()
}

// tail returns the last n bytes of b as a string, for error messages.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// proc is a long-running server process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has been waited for
	err  error         // Wait's result, set before done closes
}

// start launches prog as a server called name, with stdout and stderr in
// logPath.
func (p *procs) start(name, logPath, prog string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close() // the child has its own descriptor
	cmd := exec.Command(prog, args...)
	cmd.SysProcAttr = childAttr()
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	pr := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	p.mu.Lock()
	p.live[pr] = struct{}{}
	p.mu.Unlock()
	go func() {
		pr.err = cmd.Wait()
		close(pr.done)
	}()
	return pr, nil
}

// stop asks the process to end (SIGTERM), waits up to grace, then kills
// it. It returns the process's exit error when it was not a clean exit
// after SIGTERM.
func (p *procs) stop(pr *proc, grace time.Duration) error {
	defer func() {
		p.mu.Lock()
		delete(p.live, pr)
		p.mu.Unlock()
	}()
	select {
	case <-pr.done:
		return fmt.Errorf("%s: %w: %v: %s", pr.name, errServerExited, pr.err, pr.logTail())
	default:
	}
	_ = pr.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-pr.done:
	case <-t.C:
		_ = pr.cmd.Process.Kill()
		<-pr.done
		return fmt.Errorf("%s did not stop within %v after SIGTERM; killed", pr.name, grace)
	}
	if pr.err != nil {
		var ee *exec.ExitError
		// Ending by the SIGTERM we sent is a clean stop (qemu-nbd does).
		if errors.As(pr.err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
				return nil
			}
		}
		return fmt.Errorf("%s: %w: %s", pr.name, pr.err, pr.logTail())
	}
	return nil
}

// stopAll stops whatever is still running (error and interrupt paths).
func (p *procs) stopAll() {
	p.mu.Lock()
	var all []*proc
	for pr := range p.live {
		all = append(all, pr)
	}
	p.mu.Unlock()
	for _, pr := range all {
		_ = p.stop(pr, 10*time.Second)
	}
}

func (pr *proc) logTail() string {
	b, _ := os.ReadFile(pr.log)
	return tail(b, 1500)
}

// waitNBD waits until sock accepts a connection and greets with the NBD
// magic, or the process ends, or timeout passes. Polling is the only way
// to learn that qemu-nbd is ready; the strata child is probed the same way
// so both sides are treated alike.
func waitNBD(ctx context.Context, pr *proc, sock string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if greets(sock) {
			return nil
		}
		select {
		case <-pr.done:
			return fmt.Errorf("%s: %w before serving: %v: %s", pr.name, errServerExited, pr.err, pr.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no NBD greeting on %s within %v: %s", pr.name, sock, timeout, pr.logTail())
		}
	}
}

func greets(sock string) bool {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var magic [8]byte
	n := 0
	for n < len(magic) {
		m, err := c.Read(magic[n:])
		if err != nil {
			return false
		}
		n += m
	}
	return string(magic[:]) == "NBDMAGIC"
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports (the kernel fixes it for user space).
const clockTicks = 100

// procStat is what the benchmark reads from /proc about a server.
type procStat struct {
	CPU       float64 // user+system seconds, all threads (/proc/<pid>/stat)
	ReadBytes int64   // bytes it made the kernel fetch from disk (/proc/<pid>/io)
}

// readProcStat reads pid's CPU time and disk reads so far.
func readProcStat(pid int) (procStat, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return procStat{}, err
	}
	cpu, err := parseStatCPU(b)
	if err != nil {
		return procStat{}, err
	}
	b, err = os.ReadFile(dir + "/io")
	if err != nil {
		return procStat{}, err
	}
	rb, err := parseIOReadBytes(b)
	if err != nil {
		return procStat{}, err
	}
	return procStat{CPU: cpu, ReadBytes: rb}, nil
}

// parseStatCPU takes utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from its last ')'.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat line %.80q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc stat line %.80q", b)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc stat times: %w", err)
	}
	return float64(ut+st) / clockTicks, nil
}

// parseIOReadBytes takes read_bytes from /proc/<pid>/io: what the process
// caused to be read from storage, page-cache hits excluded. It counts
// reads through mmap too (Badger's value log), which page-fault counters
// miss: a fault on a page already under readahead counts as minor.
func parseIOReadBytes(b []byte) (int64, error) {
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "read_bytes:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc io read_bytes: %w", err)
			}
			return n, nil
		}
	}
	return 0, errors.New("/proc io: no read_bytes line")
}
