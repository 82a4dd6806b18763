package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the stratad and strata binaries built once for all tests.
var binDir string

// repoRoot is the checkout the tests run in.
var repoRoot string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// Debian's tools first: libnbd's Python module loads only under
	// /usr/bin/python3, and mke2fs, e2fsck and debugfs live in sbin.
	os.Setenv("PATH", "/usr/bin:/usr/sbin:/sbin:/bin:"+os.Getenv("PATH"))
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	dir, err := os.MkdirTemp("", "strata-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Other uids (setpriv tests) must be able to run the CLI.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Built without -race: the daemon's own packages are race-tested in
	// their unit tests; here the binaries only need to be the real ones.
	build := exec.Command(goTool(), "build", "-buildvcs=false", "-o", dir+"/", "./cmd/stratad", "./cmd/strata")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries failed:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// goTool finds the go command of the toolchain running the tests.
func goTool() string {
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

// need fails the test when a peer tool is missing: the tests assume them
// (make test installs them) and must not pass by skipping.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run `make test-deps` (as root) to install the test tools", tool)
		}
	}
}

// sharedTempDir is a t.TempDir that other uids can traverse and write,
// for tests that run the CLI or NBD clients as another user.
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// daemon is a stratad process under test.
type daemon struct {
	dataDir, admin, nbd string
	args                []string

	cmd    *exec.Cmd
	logMu  sync.Mutex
	logs   bytes.Buffer
	ready  chan struct{}
	exited chan struct{}
	err    error // Wait's result, set before exited closes
}

// startDaemon runs stratad on dataDir and returns once it logs that it
// serves (the line comes after both sockets listen). The daemon is stopped
// with SIGTERM at the end of the test if still running.
func startDaemon(t *testing.T, dataDir string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{
		dataDir: dataDir,
		admin:   filepath.Join(dataDir, "admin.sock"),
		nbd:     filepath.Join(dataDir, "nbd.sock"),
		args:    extra,
	}
	d.start(t)
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			d.stop(t)
		}
	})
	return d
}

func (d *daemon) start(t *testing.T) {
	t.Helper()
	args := append([]string{"--data-dir", d.dataDir, "--log-format", "json", "--log-level", "debug"}, d.args...)
	d.cmd = exec.Command(filepath.Join(binDir, "stratad"), args...)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.ready, d.exited = make(chan struct{}), make(chan struct{})
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		readyOnce := false
		for sc.Scan() {
			line := sc.Text()
			d.logMu.Lock()
			d.logs.WriteString(line + "\n")
			d.logMu.Unlock()
			if !readyOnce && strings.Contains(line, `"msg":"serving"`) {
				readyOnce = true
				close(d.ready)
			}
		}
	}()
	go func() {
		<-lines // all output read before Wait closes the pipe
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	select {
	case <-d.ready:
	case <-d.exited:
		t.Fatalf("stratad exited before serving: %v\n%s", d.err, d.logText())
	case <-time.After(2 * time.Minute):
		t.Fatalf("stratad did not start serving within 2 minutes\n%s", d.logText())
	}
}

func (d *daemon) logText() string {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	return d.logs.String()
}

// stop sends SIGTERM and requires a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal stratad: %v", err)
	}
	select {
	case <-d.exited:
	case <-time.After(2 * time.Minute):
		_ = d.cmd.Process.Kill()
		<-d.exited
		t.Fatalf("stratad did not stop within 2 minutes of SIGTERM\n%s", d.logText())
	}
	if d.err != nil {
		t.Fatalf("stratad exited with %v after SIGTERM\n%s", d.err, d.logText())
	}
	if !strings.Contains(d.logText(), `"msg":"stopped"`) {
		t.Fatalf("stratad exited without logging a clean stop\n%s", d.logText())
	}
}

// kill ends the daemon with SIGKILL, as a crash would.
func (d *daemon) kill(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.exited
}

// result is one finished command.
type result struct {
	stdout, stderr string
	code           int
}

// run runs a command (as root, or as uid when uid >= 0) and returns its
// output and exit status.
func run(t *testing.T, uid int, name string, args ...string) result {
	t.Helper()
	if uid >= 0 {
		args = append([]string{"--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(uid), "--clear-groups", "--", name}, args...)
		name = "setpriv"
	}
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", name, err)
		}
		code = ee.ExitCode()
	}
	return result{out.String(), errb.String(), code}
}

// must runs a command as root and fails the test unless it succeeds.
func must(t *testing.T, name string, args ...string) string {
	t.Helper()
	r := run(t, -1, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// strata runs the CLI against d as uid (-1: root) with JSON output.
func (d *daemon) strata(t *testing.T, uid int, args ...string) result {
	t.Helper()
	full := append([]string{"--socket", d.admin, "-o", "json"}, args...)
	return run(t, uid, filepath.Join(binDir, "strata"), full...)
}

// ok runs the CLI as uid and decodes its JSON output into out (if not nil).
func (d *daemon) ok(t *testing.T, uid int, out any, args ...string) {
	t.Helper()
	r := d.strata(t, uid, args...)
	if r.code != 0 {
		t.Fatalf("strata %s (uid %d): exit %d: %s", strings.Join(args, " "), uid, r.code, r.stderr)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(r.stdout), out); err != nil {
			t.Fatalf("strata %s: output is not the expected JSON: %v\n%s", strings.Join(args, " "), err, r.stdout)
		}
	}
}

// fails runs the CLI as uid and requires it to fail with the API code.
func (d *daemon) fails(t *testing.T, uid int, code string, args ...string) string {
	t.Helper()
	r := d.strata(t, uid, args...)
	if r.code == 0 {
		t.Fatalf("strata %s (uid %d) succeeded; want %s\n%s", strings.Join(args, " "), uid, code, r.stdout)
	}
	if !strings.Contains(r.stderr, "strata: "+code+":") {
		t.Fatalf("strata %s (uid %d): want code %s, got exit %d: %s", strings.Join(args, " "), uid, code, r.code, r.stderr)
	}
	return r.stderr
}

// uri is the nbd+unix URI of an export.
func (d *daemon) uri(export string) string {
	return "nbd+unix:///" + export + "?socket=" + d.nbd
}

// metric reads one sample from /metrics on the admin socket: a name, with
// its labels as Prometheus prints them (sorted by label name).
func (d *daemon) metric(t *testing.T, name string) float64 {
	t.Helper()
	v, ok := d.sample(t, name)
	if !ok {
		t.Fatalf("metric %s not in /metrics", name)
	}
	return v
}

// sample reads one sample; ok is false when it is absent.
func (d *daemon) sample(t *testing.T, name string) (float64, bool) {
	t.Helper()
	v, ok := d.scrape(t)[name]
	return v, ok
}

// scrape reads /metrics once: every sample by its name and labels as
// Prometheus prints them.
func (d *daemon) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dd net.Dialer
		return dd.DialContext(ctx, "unix", d.admin)
	}}}
	resp, err := c.Get("http://strata/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		f, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = f
	}
	return out
}

// idle waits until no NBD connection is open on export. The daemon lets
// one process at a time write a disk and frees the slot only when the
// connection's handle is closed, which can trail the client's exit; the
// connection gauge drops after that close.
func (d *daemon) idle(t *testing.T, export string) {
	t.Helper()
	name := `strata_nbd_connections{export="` + export + `"}`
	deadline := time.Now().Add(time.Minute)
	for {
		n, ok := d.sample(t, name)
		if !ok || n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d NBD connections still open on %s a minute after their clients finished", int(n), export)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nbdTool runs an NBD client (as root, or as uid >= 0) that uses export and
// fails the test unless it succeeds; it returns once the daemon has closed
// the client's connections.
func (d *daemon) nbdTool(t *testing.T, uid int, export, name string, args ...string) string {
	t.Helper()
	r := run(t, uid, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s (uid %d): exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), uid, r.code, r.stdout, r.stderr)
	}
	d.idle(t, export)
	return r.stdout
}

// refused requires the daemon's log to show it refused export to peer with
// the API code, so a test of a refusal cannot pass for another reason.
func (d *daemon) refused(t *testing.T, export, peer, code string) {
	t.Helper()
	// The daemon logs before it answers, but its log reaches us through
	// a pipe and a goroutine: the line may still be on its way.
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, line := range strings.Split(d.logText(), "\n") {
			if strings.Contains(line, `"msg":"export refused"`) && strings.Contains(line, `"export":"`+export+`"`) &&
				strings.Contains(line, `"peer":"`+peer+`"`) && strings.Contains(line, `"error":"`+code+`:`) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refusal of %s to %s with %s in the daemon log:\n%s", export, peer, code, d.logText())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fileSum is the hex SHA-256 of a file.
func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
