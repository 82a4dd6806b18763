package api

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"strata/api/apitypes"
)

// TestUploadFormatsGiveTheSameImage converts one raw image with qemu-img to
// each container format and uploads it: every import has the raw file's
// checksum and size, the detected format in its lineage, and adds no
// stored bytes after the first.
func TestUploadFormatsGiveTheSameImage(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	dir := t.TempDir()
	raw := pattern(1<<20, 6)
	rawPath := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(rawPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	first := e.upload(root, UploadRequest{FolderID: f.ID, Name: "raw"}, raw)
	for _, tc := range []struct {
		format string
		args   []string
	}{
		{"qcow2", []string{"-O", "qcow2"}},
		{"qcow2", []string{"-O", "qcow2", "-c"}}, // compressed clusters
		{"vmdk", []string{"-O", "vmdk", "-o", "subformat=streamOptimized"}},
		{"vhd", []string{"-O", "vpc", "-o", "subformat=dynamic,force_size=on"}},
	} {
		out := filepath.Join(dir, "disk."+tc.format)
		args := append(append([]string{"convert", "-q", "-f", "raw"}, tc.args...), rawPath, out)
		if b, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v: %s", args, err, b)
		}
		file, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		im := e.upload(root, UploadRequest{FolderID: f.ID}, file)
		if im.Checksum != first.Checksum || im.VirtualSize != first.VirtualSize || im.SourceFormat != tc.format {
			t.Errorf("%v: image %+v, want checksum %s size %d", tc.args, im, first.Checksum, first.VirtualSize)
		}
		if im.StorageSize != 0 {
			t.Errorf("%v: the import stored %d new bytes, want 0 (all chunks known)", tc.args, im.StorageSize)
		}
		if !bytes.Equal(e.readExport(root, im.ExportName), raw) {
			t.Errorf("%v: the image reads other bytes than the raw file", tc.args)
		}
	}
}

func TestExportsListsWhatCallerMayOpen(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	im := e.upload(root, UploadRequest{FolderID: f.ID}, pattern(8192, 1))
	d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, Size: 8192})
	sn := resp[apitypes.Snapshot](t, e.done(root, must(e.svc.CreateSnapshot(context.Background(), root, "", apitypes.CreateSnapshotRequest{DiskID: d.ID}))(t)))
	must(e.svc.SetAccessBindings(root, "", KindImages, im.ID, apitypes.SetAccessBindingsRequest{
		AccessBindings: []apitypes.AccessBinding{bind(apitypes.RoleImagesUser, alice), bind(apitypes.RoleViewer, bob)}}))(t)
	for _, tc := range []struct {
		who  string
		id   Identity
		want []string
	}{
		{"admin", root, []string{d.ExportName, im.ExportName, sn.ExportName}},
		{"images.user", alice, []string{im.ExportName}},
		{"viewer", bob, nil},
		{"nobody", dave, nil},
		{"anonymous", anon, nil},
	} {
		got := must(e.svc.Exports(tc.id))(t)
		slices.Sort(got)
		slices.Sort(tc.want)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: exports %v, want %v", tc.who, got, tc.want)
		}
	}
}
