package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"strata/api/apitypes"
)

const (
	mib     = 1 << 20
	imgSize = 64 * mib
)

// makeExt4 builds an ext4 image of testdata/e2e-files plus blob.bin, 4 MiB
// of seeded pseudo-random bytes that compression cannot hide, so stored
// byte counts mean something. It returns the image's path and the blob.
func makeExt4(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	files := filepath.Join(dir, "files")
	must(t, "cp", "-a", filepath.Join(repoRoot, "testdata", "e2e-files"), files)
	blob := make([]byte, 4*mib)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(blob); i += 8 {
		binary.LittleEndian.PutUint64(blob[i:], rng.Uint64())
	}
	if err := os.WriteFile(filepath.Join(files, "blob.bin"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, imgSize); err != nil {
		t.Fatal(err)
	}
	must(t, "mke2fs", "-q", "-F", "-t", "ext4", "-d", files, raw)
	return raw, blob
}

// TestStoryImportDiskSnapshotFamily is the user's whole job through the CLI:
// one ext4 image imported as raw, qcow2, VMDK and VHD (same checksum, no new
// chunks after the first), a pooled image refused by the default quota and
// accepted after raising it, three disks on it written over NBD by qemu-io
// and by a filesystem tool, a snapshot, an image from it in the family,
// a disk from that image checked by e2fsck and debugfs, latestByFamily, and
// disks that outlive their image. Then the daemon restarts and every disk
// still has its data.
func TestStoryImportDiskSnapshotFamily(t *testing.T) {
	need(t, "mke2fs", "qemu-img", "qemu-io", "nbdcopy", "e2fsck", "debugfs")
	work := t.TempDir()
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))

	raw, blob := makeExt4(t, work)
	rawSum := fileSum(t, raw)
	files := map[string]string{"raw": raw}
	for _, f := range []struct{ name, format, opts string }{
		{"qcow2", "qcow2", "compat=1.1"},
		{"vmdk", "vmdk", "subformat=monolithicSparse"},
		// force_size keeps the exact size; VHD otherwise rounds to a
		// CHS geometry and the checksum would differ.
		{"vhd", "vpc", "subformat=dynamic,force_size=on"},
	} {
		out := filepath.Join(work, "base."+f.name)
		must(t, "qemu-img", "convert", "-f", "raw", "-O", f.format, "-o", f.opts, raw, out)
		files[f.name] = out
	}

	var folder apitypes.Folder
	d.ok(t, -1, &folder, "folder", "create", "story")

	// Import the raw file first, then the same content in three containers.
	var first apitypes.Image
	d.ok(t, -1, &first, "image", "import", raw, "--folder", "story", "--name", "base-raw", "--family", "base")
	if first.Status != apitypes.StatusReady || first.VirtualSize != imgSize {
		t.Fatalf("raw import: status %s size %d, want READY %d", first.Status, first.VirtualSize, imgSize)
	}
	if !strings.HasSuffix(first.Checksum, rawSum) {
		t.Fatalf("raw import checksum %s, want sha256 of the file %s", first.Checksum, rawSum)
	}
	stored := d.metric(t, "strata_store_stored_bytes")
	if stored < 4*mib {
		t.Fatalf("stored bytes after the first import: %v; the image holds 4 MiB of random data", stored)
	}
	for _, format := range []string{"qcow2", "vmdk", "vhd"} {
		var img apitypes.Image
		d.ok(t, -1, &img, "image", "import", files[format], "--folder", "story", "--name", "base-"+format,
			"--family", "base", "--format", format)
		if img.Checksum != first.Checksum || img.VirtualSize != imgSize {
			t.Fatalf("%s import: checksum %s size %d, want %s %d", format, img.Checksum, img.VirtualSize, first.Checksum, imgSize)
		}
		if img.SourceFormat != format {
			t.Errorf("%s import: detected format %q", format, img.SourceFormat)
		}
	}
	after := d.metric(t, "strata_store_stored_bytes")
	t.Logf("stored bytes: %.0f after the raw import, %.0f after qcow2+vmdk+vhd of the same content", stored, after)
	if after-stored > stored/100 {
		t.Fatalf("re-importing identical content stored %.0f more bytes (first import %.0f); want ~0", after-stored, stored)
	}

	// A claimed format that is not the file's is refused.
	d.fails(t, -1, apitypes.CodeInvalidArgument, "image", "import", files["qcow2"], "--folder", "story",
		"--name", "wrong", "--format", "vmdk")

	// Pooled images are refused by the default quota, until raised.
	msg := d.fails(t, -1, apitypes.CodeResourceExhausted, "image", "import", raw, "--folder", "story",
		"--name", "base-pooled", "--family", "base", "--pooled")
	if !strings.Contains(msg, apitypes.QuotaDiskPoolsCount) {
		t.Errorf("quota refusal does not name %s: %s", apitypes.QuotaDiskPoolsCount, msg)
	}
	d.ok(t, -1, nil, "quota", "set", "--folder", "story", apitypes.QuotaDiskPoolsCount+"=1")
	var pooled apitypes.Image
	d.ok(t, -1, &pooled, "image", "import", raw, "--folder", "story", "--name", "base-pooled", "--family", "base", "--pooled")
	if !pooled.Pooled || pooled.Checksum != first.Checksum {
		t.Fatalf("pooled import: pooled=%v checksum %s", pooled.Pooled, pooled.Checksum)
	}

	// Three disks on the pooled image; the first larger than the image.
	var d1, d2, d3 apitypes.Disk
	d.ok(t, -1, &d1, "disk", "create", "--folder", "story", "--image", pooled.ID, "--name", "vm1", "--size", "80M")
	d.ok(t, -1, &d2, "disk", "create", "--folder", "story", "--image", pooled.ID, "--name", "vm2")
	d.ok(t, -1, &d3, "disk", "create", "--folder", "story", "--image", pooled.ID, "--name", "vm3")
	if d1.Size != 80*mib || d2.Size != imgSize {
		t.Fatalf("disk sizes %d, %d; want %d, %d", d1.Size, d2.Size, 80*mib, imgSize)
	}

	// qemu-io writes over NBD: d1 past the filesystem, d2 inside it.
	d.nbdTool(t, -1, d1.ExportName, "qemu-io", "-f", "raw", d.uri(d1.ExportName), "-c", "write -P 0xab 72M 64k")
	d.nbdTool(t, -1, d2.ExportName, "qemu-io", "-f", "raw", d.uri(d2.ExportName), "-c", "write -P 0xcd 1M 64k")
	d.nbdTool(t, -1, d2.ExportName, "qemu-io", "-f", "raw", d.uri(d2.ExportName), "-c", "read -P 0xcd 1M 64k")
	// The NBD traffic shows in /metrics, per export.
	if n := d.metric(t, `strata_nbd_bytes_total{export="`+d2.ExportName+`",op="write"}`); n != 64<<10 {
		t.Errorf("metrics: %v bytes written to %s, want %d", n, d2.ExportName, 64<<10)
	}
	if n := d.metric(t, `strata_nbd_ops_total{export="`+d2.ExportName+`",op="read"}`); n < 1 {
		t.Errorf("metrics: %v reads of %s", n, d2.ExportName)
	}
	if n := d.metric(t, "strata_api_operations_in_flight"); n != 0 {
		t.Errorf("metrics: %v operations in flight with none started", n)
	}
	if r := d.metric(t, "strata_store_dedup_ratio"); r < 5 {
		// Five images of the same content share every chunk.
		t.Errorf("metrics: dedup ratio %.2f after importing the same image five times", r)
	}

	// A real file into d1's filesystem: copy out, debugfs, copy back.
	newFile := filepath.Join(work, "newfile.txt")
	content := "written through NBD by the end-to-end test\n"
	if err := os.WriteFile(newFile, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	vm1 := filepath.Join(work, "vm1.raw")
	d.nbdTool(t, -1, d1.ExportName, "nbdcopy", d.uri(d1.ExportName), vm1)
	must(t, "debugfs", "-w", "-R", "write "+newFile+" /newfile", vm1)
	d.nbdTool(t, -1, d1.ExportName, "nbdcopy", vm1, d.uri(d1.ExportName))

	// Snapshot d1, make an image of it in the family, and a disk from that.
	var snap apitypes.Snapshot
	d.ok(t, -1, &snap, "snapshot", "create", "--disk", d1.ID, "--name", "vm1-snap")
	if snap.Status != apitypes.StatusReady || snap.DiskSize != 80*mib {
		t.Fatalf("snapshot: status %s disk size %d", snap.Status, snap.DiskSize)
	}
	// The image from it: started with --async (and an idempotency key,
	// so the repeated command returns the same operation), then waited for.
	var op, again apitypes.Operation
	create := []string{"image", "create", "--async", "--idempotency-key", "story-vm1-image", "--folder", "story",
		"--snapshot", snap.ID, "--name", "vm1-image", "--family", "base"}
	d.ok(t, -1, &op, create...)
	d.ok(t, -1, &again, create...)
	if op.ID == "" || again.ID != op.ID {
		t.Fatalf("idempotent retry returned operation %q, first was %q", again.ID, op.ID)
	}
	d.ok(t, -1, &op, "operation", "wait", op.ID)
	if !op.Done || op.Error != nil {
		t.Fatalf("operation %s: done %v error %+v", op.ID, op.Done, op.Error)
	}
	var fromSnap apitypes.Image
	if err := json.Unmarshal(op.Response, &fromSnap); err != nil || fromSnap.ID == "" {
		t.Fatalf("operation response %s: %v", op.Response, err)
	}
	var latest apitypes.Image
	d.ok(t, -1, &latest, "image", "latest", "--folder", "story", "--family", "base")
	if latest.ID != fromSnap.ID {
		t.Fatalf("latestByFamily returned %s (%s), want the image from the snapshot %s", latest.ID, latest.Name, fromSnap.ID)
	}
	// Export the new image as raw and qcow2; both hold its content.
	exRaw, exQcow := filepath.Join(work, "export.raw"), filepath.Join(work, "export.qcow2")
	d.ok(t, -1, nil, "image", "export", fromSnap.ID, exRaw)
	d.ok(t, -1, nil, "image", "export", fromSnap.ID, exQcow, "--format", "qcow2")
	if sum := fileSum(t, exRaw); !strings.HasSuffix(fromSnap.Checksum, sum) {
		t.Fatalf("raw export sha256 %s, image checksum %s", sum, fromSnap.Checksum)
	}
	must(t, "qemu-img", "check", "-f", "qcow2", exQcow)
	must(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", exRaw, exQcow)
	snapQcow := filepath.Join(work, "snap.qcow2")
	d.ok(t, -1, nil, "snapshot", "export", snap.ID, snapQcow, "--format", "qcow2")
	must(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", exRaw, snapQcow)

	// Windows images come from disks, not uploads, unless the daemon allows it.
	d.fails(t, -1, apitypes.CodeFailedPrecondition, "image", "import", raw, "--folder", "story", "--name", "win", "--os-type", "windows")

	var d4 apitypes.Disk
	d.ok(t, -1, &d4, "disk", "create", "--folder", "story", "--image", fromSnap.ID, "--name", "vm4")
	checkVM1Content := func(t *testing.T, d *daemon, export string) {
		t.Helper()
		out := filepath.Join(work, "check.raw")
		os.Remove(out)
		d.nbdTool(t, -1, export, "nbdcopy", d.uri(export), out)
		must(t, "e2fsck", "-fn", out)
		if got := must(t, "debugfs", "-R", "cat /newfile", out); got != content {
			t.Fatalf("/newfile in %s reads %q, want %q", export, got, content)
		}
		if got := must(t, "debugfs", "-R", "cat /hello.txt", out); got != "hello from strata\n" {
			t.Fatalf("/hello.txt in %s reads %q", export, got)
		}
		if got := must(t, "debugfs", "-R", "cat /blob.bin", out); got != string(blob) {
			t.Fatalf("/blob.bin in %s differs from the file put in the image", export)
		}
		d.nbdTool(t, -1, export, "qemu-io", "-r", "-f", "raw", d.uri(export), "-c", "read -P 0xab 72M 64k")
	}
	checkVM1Content(t, d, d4.ExportName)
	// Those reads went through the shared chunk cache, and /metrics shows it.
	if misses := d.metric(t, "strata_cache_misses_total"); misses <= 0 {
		t.Errorf("strata_cache_misses_total = %v after reading disks over NBD, want > 0", misses)
	}
	d.metric(t, "strata_cache_hits_total")

	// Delete the pooled image: the disks on it still read correctly.
	d.ok(t, -1, nil, "image", "delete", pooled.ID)
	d.fails(t, -1, apitypes.CodeNotFound, "image", "get", pooled.ID)
	want2, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	copy(want2[mib:mib+64<<10], bytes.Repeat([]byte{0xcd}, 64<<10))
	checkDisks := func(t *testing.T, d *daemon) {
		t.Helper()
		out := filepath.Join(work, "check2.raw")
		os.Remove(out)
		d.nbdTool(t, -1, d2.ExportName, "nbdcopy", d.uri(d2.ExportName), out)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want2) {
			t.Fatalf("%s does not read back the image with its qemu-io write", d2.ExportName)
		}
		os.Remove(out)
		d.nbdTool(t, -1, d3.ExportName, "nbdcopy", d.uri(d3.ExportName), out)
		if sum := fileSum(t, out); sum != rawSum {
			t.Fatalf("%s (never written) reads sha256 %s, want the image's %s", d3.ExportName, sum, rawSum)
		}
		checkVM1Content(t, d, d1.ExportName)
		checkVM1Content(t, d, d4.ExportName)
	}
	checkDisks(t, d)

	// A second daemon on the same data directory is refused, clearly.
	second := run(t, -1, filepath.Join(binDir, "stratad"), "--data-dir", d.dataDir)
	if second.code == 0 || !strings.Contains(second.stderr, "another stratad") {
		t.Fatalf("second stratad on the same data dir: exit %d: %s", second.code, second.stderr)
	}

	// An audit needs the daemon stopped, and says so.
	audit := func() result {
		return run(t, -1, filepath.Join(binDir, "stratad"), "audit", "--verify", "--data-dir", d.dataDir)
	}
	if r := audit(); r.code == 0 || !strings.Contains(r.stderr, "another stratad") {
		t.Fatalf("audit of a running daemon's store: exit %d: %s", r.code, r.stderr)
	}

	// Restart: SIGTERM, start again; clients find their exports and data.
	d.stop(t)
	if _, err := os.Stat(d.admin); !os.IsNotExist(err) {
		t.Errorf("admin socket left behind after a clean stop: %v", err)
	}
	// Every count matches the maps of the images, snapshots and disks
	// made above, and every chunk its checksum.
	if r := audit(); r.code != 0 || !strings.HasSuffix(r.stdout, "clean\n") || strings.Contains(r.stdout, "not checked") {
		t.Fatalf("audit after the story: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	d.start(t)
	checkDisks(t, d)
	d.ok(t, -1, &latest, "image", "latest", "--folder", "story", "--family", "base")
	if latest.ID != fromSnap.ID {
		t.Fatalf("after restart latestByFamily returned %s, want %s", latest.ID, fromSnap.ID)
	}
}
