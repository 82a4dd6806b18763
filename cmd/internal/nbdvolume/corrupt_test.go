package nbdvolume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"strata/layer"
	"strata/nbd"
	"strata/storage"
)

// oneExport serves one volume as export "v".
type oneExport struct{ open func() (layer.Volume, error) }

func (e oneExport) Lookup(_ context.Context, name string, _ nbd.Peer) (nbd.Backend, error) {
	if name != "v" {
		return nil, fmt.Errorf("%w: %q", nbd.ErrUnknownExport, name)
	}
	v, err := e.open()
	if err != nil {
		return nil, err
	}
	return New(v, "test"), nil
}

func (oneExport) List(context.Context, nbd.Peer) []nbd.ExportInfo {
	return []nbd.ExportInfo{{Name: "v"}}
}

// TestCorruptChunkIsEIOToQemu damages one stored chunk of an image and has
// qemu-io, a client we did not write, read a disk over it through the real
// store, layer and NBD server: the damaged chunk's read fails with an I/O
// error (never data), and the chunks around it read back their pattern.
func TestCorruptChunkIsEIOToQemu(t *testing.T) {
	qemuIO, err := exec.LookPath("qemu-io")
	if err != nil {
		t.Fatal("qemu-io not found: `make test` installs qemu-utils")
	}
	dir := t.TempDir()
	store, err := storage.Open(filepath.Join(dir, "store"), storage.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m, err := layer.Open(store, layer.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	const size = 1 << 20
	cs := int64(store.ChunkSize())
	data := bytes.Repeat([]byte{0xA5}, size)
	for i := range data {
		data[i] ^= byte(i / int(cs)) // distinct chunks: no dedup
	}
	ctx := context.Background()
	pend, err := m.Import(ctx, bytes.NewReader(data), size, nil)
	if err != nil {
		t.Fatal(err)
	}
	var img layer.LayerID
	var disk layer.DiskID
	if err := store.Update(func(tx *storage.Txn) error {
		if img, err = pend.Commit(tx); err != nil {
			return err
		}
		disk, err = m.CreateDisk(tx, img, size, false)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	bad := int64(5)
	id, err := m.ChunkAt(img, bad*cs)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.InjectCorruption(id, 3); err != nil {
		t.Fatal(err)
	}

	sock := filepath.Join(dir, "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &nbd.Server{Exports: oneExport{func() (layer.Volume, error) { return m.OpenDisk(disk) }}}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil && !errors.Is(err, nbd.ErrServerClosed) {
			t.Error(err)
		}
	}()

	qio := func(cmd string) (string, error) {
		out, err := exec.Command(qemuIO, "-f", "raw", "-c", cmd, "nbd+unix:///v?socket="+sock).CombinedOutput()
		return string(out), err
	}
	out, err := qio(fmt.Sprintf("read %d %d", bad*cs, cs))
	if err == nil && !strings.Contains(out, "Input/output error") {
		t.Fatalf("reading the damaged chunk succeeded:\n%s", out)
	}
	if !strings.Contains(out, "Input/output error") {
		t.Fatalf("reading the damaged chunk: want an I/O error, got (%v):\n%s", err, out)
	}
	for _, ci := range []int64{bad - 1, bad + 1} {
		pat := 0xA5 ^ byte(ci)
		out, err := qio(fmt.Sprintf("read -P 0x%x %d %d", pat, ci*cs, cs))
		if err != nil || strings.Contains(out, "error") || strings.Contains(out, "failed") {
			t.Fatalf("chunk %d next to the damaged one (%v):\n%s", ci, err, out)
		}
	}
}
