package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/api/apitypes"
)

// qemuIO is an interactive qemu-io session: commands go to its stdin and
// each answer is read up to the next prompt, so the test moves on exactly
// when qemu-io has finished a command (no sleeps).
type qemuIO struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  io.Reader
	done chan struct{}
}

const qemuIOPrompt = "qemu-io> "

func startQemuIO(t *testing.T, args ...string) *qemuIO {
	t.Helper()
	q := &qemuIO{t: t, cmd: exec.Command("qemu-io", args...), done: make(chan struct{})}
	var err error
	if q.in, err = q.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	q.cmd.Stdout, q.cmd.Stderr = pw, pw
	q.out = pr
	if err := q.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		q.cmd.Wait()
		pw.Close()
		close(q.done)
	}()
	t.Cleanup(func() {
		select {
		case <-q.done:
		default:
			q.cmd.Process.Kill()
			<-q.done
		}
	})
	q.read("start")
	return q
}

// read returns qemu-io's output up to its next prompt.
func (q *qemuIO) read(what string) string {
	q.t.Helper()
	got := make(chan string, 1)
	go func() {
		var buf bytes.Buffer
		b := make([]byte, 4096)
		for !strings.HasSuffix(buf.String(), qemuIOPrompt) {
			n, err := q.out.Read(b)
			buf.Write(b[:n])
			if err != nil {
				break
			}
		}
		got <- strings.TrimSuffix(buf.String(), qemuIOPrompt)
	}()
	select {
	case s := <-got:
		return s
	case <-time.After(2 * time.Minute):
		q.t.Fatalf("qemu-io: no answer to %q within 2 minutes", what)
		return ""
	}
}

// do runs one command and fails the test unless the output has want.
func (q *qemuIO) do(command, want string) {
	q.t.Helper()
	if _, err := io.WriteString(q.in, command+"\n"); err != nil {
		q.t.Fatalf("qemu-io %q: %v", command, err)
	}
	out := q.read(command)
	if !strings.Contains(out, want) || strings.Contains(out, "failed") || strings.Contains(out, "error") {
		q.t.Fatalf("qemu-io %q answered %q; want %q", command, out, want)
	}
}

// TestRestartClientReconnectsToItsExport keeps one NBD client (qemu's nbd
// driver, with reconnect-delay as a hypervisor would use) attached to a
// disk across a daemon restart: the data it wrote and flushed before
// SIGTERM is there after, and it goes on writing to the same export.
func TestRestartClientReconnectsToItsExport(t *testing.T) {
	need(t, "qemu-io")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	d.ok(t, -1, nil, "folder", "create", "vms")
	var disk apitypes.Disk
	d.ok(t, -1, &disk, "disk", "create", "--folder", "vms", "--size", "16M", "--name", "vm")

	q := startQemuIO(t, "--image-opts",
		"driver=nbd,server.type=unix,server.path="+d.nbd+",export="+disk.ExportName+",reconnect-delay=60")
	q.do("write -P 0x11 0 64k", "wrote 65536/65536 bytes at offset 0")
	q.do("flush", "")

	d.stop(t)
	d.start(t)

	q.do("read -P 0x11 0 64k", "read 65536/65536 bytes at offset 0")
	q.do("write -P 0x22 64k 64k", "wrote 65536/65536 bytes at offset 65536")
	q.do("flush", "")
	io.WriteString(q.in, "quit\n")
	<-q.done
	d.idle(t, disk.ExportName)

	// A fresh client sees both writes.
	must(t, "qemu-io", "-r", "-f", "raw", d.uri(disk.ExportName),
		"-c", "read -P 0x11 0 64k", "-c", "read -P 0x22 64k 64k", "-c", "read -P 0 128k 1M")
}

// TestKill9KeepsFlushedWritesAndReplacesStaleSockets crashes the daemon
// (SIGKILL) after a client's flushed writes: the next start finds the
// stale socket files and the lock of a dead process, takes over, and the
// writes are there.
func TestKill9KeepsFlushedWritesAndReplacesStaleSockets(t *testing.T) {
	need(t, "qemu-io")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	d.ok(t, -1, nil, "folder", "create", "crash")
	var disk apitypes.Disk
	d.ok(t, -1, &disk, "disk", "create", "--folder", "crash", "--size", "16M")
	// An explicit flush, then a FUA write (qemu-io also flushes at exit).
	d.nbdTool(t, -1, disk.ExportName, "qemu-io", "-f", "raw", d.uri(disk.ExportName),
		"-c", "write -P 0x33 0 1M", "-c", "flush", "-c", "write -f -P 0x44 4M 64k")

	d.kill(t)
	for _, sock := range []string{d.admin, d.nbd} {
		if _, err := os.Lstat(sock); err != nil {
			t.Fatalf("after SIGKILL the socket %s should be left behind (that is what start must cope with): %v", sock, err)
		}
	}
	d.start(t)
	d.nbdTool(t, -1, disk.ExportName, "qemu-io", "-r", "-f", "raw", d.uri(disk.ExportName),
		"-c", "read -P 0x33 0 1M", "-c", "read -P 0x44 4M 64k", "-c", "read -P 0 1M 3M")
}

// TestOneWriterAtATimeAndPromptHandover: while one process has a disk open
// for writing, another is refused; once the first exits, the next writer
// gets the disk at once, even though the daemon is still closing the old
// connection when it asks.
func TestOneWriterAtATimeAndPromptHandover(t *testing.T) {
	need(t, "qemu-io")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	d.ok(t, -1, nil, "folder", "create", "w")
	var disk apitypes.Disk
	d.ok(t, -1, &disk, "disk", "create", "--folder", "w", "--size", "8M")

	first := startQemuIO(t, "-f", "raw", d.uri(disk.ExportName))
	first.do("write -P 0x61 0 64k", "wrote 65536/65536 bytes at offset 0")
	if r := run(t, -1, "qemu-io", "-f", "raw", d.uri(disk.ExportName), "-c", "write -P 0x62 0 64k"); r.code == 0 {
		t.Fatal("a second process opened a disk that already has a writer")
	}
	d.refused(t, disk.ExportName, "unixUser:0", apitypes.CodeFailedPrecondition)
	io.WriteString(first.in, "quit\n")
	<-first.done
	// No wait for the daemon here: the handover is its job.
	must(t, "qemu-io", "-f", "raw", d.uri(disk.ExportName), "-c", "read -P 0x61 0 64k", "-c", "write -P 0x62 64k 64k")
	d.idle(t, disk.ExportName)
	must(t, "qemu-io", "-r", "-f", "raw", d.uri(disk.ExportName), "-c", "read -P 0x61 0 64k", "-c", "read -P 0x62 64k 64k")
}

// TestStoreFiguresAcrossRestarts: a clean stop saves the store's chunk and
// byte figures, so the next start shows them at once; after SIGKILL the
// daemon recounts them in the background, says so in its log, leaves them
// out of /metrics meanwhile, and ends with the same figures.
func TestStoreFiguresAcrossRestarts(t *testing.T) {
	work := t.TempDir()
	d := startDaemon(t, filepath.Join(work, "data"))
	d.ok(t, -1, nil, "folder", "create", "figures")
	importText := func(name string, seed byte) {
		t.Helper()
		var b bytes.Buffer
		for i := 0; b.Len() < 4*mib; i++ {
			fmt.Fprintf(&b, "%s line %d of image %c\n", name, i, 'a'+seed)
		}
		file := filepath.Join(work, name+".raw")
		if err := os.WriteFile(file, b.Bytes()[:4*mib], 0o644); err != nil {
			t.Fatal(err)
		}
		d.ok(t, -1, nil, "image", "import", file, "--folder", "figures", "--name", name)
	}
	figures := func() [3]float64 {
		t.Helper()
		return [3]float64{d.metric(t, "strata_store_chunks"), d.metric(t, "strata_store_stored_bytes"),
			d.metric(t, "strata_store_referenced_raw_bytes")}
	}
	recounts := func() int { return strings.Count(d.logText(), "recounting the store's") }

	importText("first", 0)
	want := figures()
	if want[0] == 0 {
		t.Fatal("no chunks stored by the import")
	}
	d.stop(t)
	d.start(t)
	if got := figures(); got != want || d.metric(t, "strata_store_counting") != 0 || recounts() != 0 {
		t.Fatalf("after a clean restart: figures %v (want %v), %d recounts logged", got, want, recounts())
	}

	importText("second", 1)
	want = figures()
	d.kill(t)
	d.start(t)
	if recounts() != 1 {
		t.Fatalf("%d recounts logged after SIGKILL, want 1\n%s", recounts(), d.logText())
	}
	deadline := time.Now().Add(time.Minute)
	for {
		m := d.scrape(t)
		if counting, ok := m["strata_store_counting"]; !ok {
			t.Fatal("no strata_store_counting in /metrics")
		} else if counting == 0 {
			break
		}
		if _, ok := m["strata_store_chunks"]; ok {
			t.Fatal("partial figures in /metrics while recounting")
		}
		if time.Now().After(deadline) {
			t.Fatalf("still recounting a minute after start\n%s", d.logText())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := figures(); got != want {
		t.Fatalf("after SIGKILL and the recount: figures %v, want %v", got, want)
	}
}
