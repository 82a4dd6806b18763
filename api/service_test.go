package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"strata/api/apitypes"
	"strata/layer"
	"strata/storage"
)

// Test identities. Uids are far from the test process's own (an admin).
var (
	root  = Identity{UID: 0, GID: 0, PID: 1, Known: true}
	alice = Identity{UID: 20001, GID: 20001, PID: 101, Known: true}
	bob   = Identity{UID: 20002, GID: 20002, PID: 102, Known: true}
	carol = Identity{UID: 20003, GID: 20100, PID: 103, Known: true}
	dave  = Identity{UID: 20004, GID: 20004, PID: 104, Known: true}
	anon  = Identity{}
)

type env struct {
	t      *testing.T
	svc    *Service
	store  *storage.Store
	layers *layer.Manager
	dir    string
	cfg    Config
	// defaultChunks keeps the store's default chunk size (benchmarks).
	defaultChunks bool
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	dir := t.TempDir()
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = t.TempDir()
	}
	e := &env{t: t, dir: dir, cfg: cfg}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *env) open() { e.t.Helper(); e.openTB(e.t) }

func (e *env) openTB(t testing.TB) {
	t.Helper()
	opts := storage.DefaultOptions()
	if !e.defaultChunks {
		opts.ChunkSize = 4 << 10 // many chunks from small test images
	}
	opts.GCInterval = 0
	st, err := storage.Open(e.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	lm, err := layer.Open(st, layer.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(st, lm, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.store, e.layers, e.svc = st, lm, svc
}

func (e *env) close() { e.closeTB(e.t) }

func (e *env) closeTB(t testing.TB) {
	if e.svc == nil {
		return
	}
	if err := e.svc.Close(); err != nil {
		t.Error(err)
	}
	if err := e.layers.Close(); err != nil {
		t.Error(err)
	}
	if err := e.store.Close(); err != nil {
		t.Error(err)
	}
	e.svc = nil
}

// must returns v, failing the test on err: must(call())(t).
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// wantCode fails unless err has the code.
func wantCode(t *testing.T, err error, want string) {
	t.Helper()
	if got := code(err); got != want {
		t.Fatalf("got %q (%v), want %s", got, err, want)
	}
}

// done waits for an operation and fails on its error.
func (e *env) done(caller Identity, op apitypes.Operation) apitypes.Operation {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	op = must(e.svc.WaitOperation(ctx, caller, op.ID))(e.t)
	if op.Error != nil {
		e.t.Fatalf("operation %s (%s) failed: %s: %s", op.ID, op.Description, op.Error.Code, op.Error.Message)
	}
	return op
}

// failed waits for an operation and returns its error code.
func (e *env) failed(caller Identity, op apitypes.Operation) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	op = must(e.svc.WaitOperation(ctx, caller, op.ID))(e.t)
	if op.Error == nil {
		return ""
	}
	return op.Error.Code
}

func resp[T any](t *testing.T, op apitypes.Operation) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(op.Response, &v); err != nil {
		t.Fatalf("operation response %s: %v", op.Response, err)
	}
	return v
}

func (e *env) folder(name string) apitypes.Folder {
	e.t.Helper()
	op := must(e.svc.CreateFolder(root, "", apitypes.CreateFolderRequest{Name: name}))(e.t)
	return resp[apitypes.Folder](e.t, op)
}

// pattern is deterministic test content: size bytes, a seeded pattern
// in the first half, zeros after.
func pattern(size int, seed byte) []byte {
	b := make([]byte, size)
	for i := range size / 2 {
		b[i] = byte(i*7) ^ seed ^ byte(i>>12)
	}
	return b
}

func (e *env) upload(caller Identity, req UploadRequest, data []byte) apitypes.Image {
	e.t.Helper()
	op := must(e.svc.UploadImage(context.Background(), caller, "", req, bytes.NewReader(data)))(e.t)
	return resp[apitypes.Image](e.t, e.done(caller, op))
}

func (e *env) disk(caller Identity, req apitypes.CreateDiskRequest) apitypes.Disk {
	e.t.Helper()
	op := must(e.svc.CreateDisk(caller, "", req))(e.t)
	return resp[apitypes.Disk](e.t, e.done(caller, op))
}

// readExport reads a whole export through OpenExport.
func (e *env) readExport(caller Identity, name string) []byte {
	e.t.Helper()
	v := must(e.svc.OpenExport(context.Background(), name, caller))(e.t)
	defer v.Close()
	b := make([]byte, v.Size())
	if err := v.ReadAt(context.Background(), b, 0); err != nil {
		e.t.Fatal(err)
	}
	return b
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return checksumPrefix + hex.EncodeToString(h[:])
}

func TestUploadMakesReadyImageWithChecksum(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	data := pattern(1<<20, 1)
	im := e.upload(root, UploadRequest{FolderID: "f1", Name: "base", Family: "ubuntu", Labels: map[string]string{"env": "test"}}, data)
	if im.Status != apitypes.StatusReady || im.FolderID != f.ID || im.VirtualSize != 1<<20 || im.MinDiskSize != 1<<20 {
		t.Fatalf("image %+v", im)
	}
	if im.Checksum != sha(data) {
		t.Errorf("checksum %s, want %s", im.Checksum, sha(data))
	}
	if im.OS.Type != apitypes.OSLinux || im.SourceFormat != "raw" || im.ExportName != "image/"+im.ID {
		t.Errorf("image %+v", im)
	}
	if got := e.readExport(root, im.ExportName); !bytes.Equal(got, data) {
		t.Error("image export reads other bytes than were uploaded")
	}
	// The same bytes again add an image over deduplicated chunks.
	im2 := e.upload(root, UploadRequest{FolderID: f.ID, Name: "again"}, data)
	if im2.Checksum != im.Checksum {
		t.Errorf("same content, checksums %s and %s", im.Checksum, im2.Checksum)
	}
	if im2.StorageSize != 0 {
		t.Errorf("second import of the same bytes stored %d bytes, want 0", im2.StorageSize)
	}
	// A taken name is refused before the body is read.
	_, err := e.svc.UploadImage(context.Background(), root, "", UploadRequest{FolderID: f.ID, Name: "base"}, failingReader{t})
	wantCode(t, err, apitypes.CodeAlreadyExists)
}

// failingReader fails the test if the upload body is read at all.
type failingReader struct{ t *testing.T }

func (r failingReader) Read([]byte) (int, error) {
	r.t.Error("the body was read although the request was refused")
	return 0, os.ErrClosed
}

func TestImageSourcesValidation(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	im := e.upload(root, UploadRequest{FolderID: f.ID, Name: "base"}, pattern(64<<10, 2))
	d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, Size: 64 << 10})
	for _, tc := range []struct {
		name string
		req  apitypes.CreateImageRequest
		want string
	}{
		{"no source", apitypes.CreateImageRequest{FolderID: f.ID}, invalid},
		{"two sources", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, DiskID: d.ID}, invalid},
		{"three sources", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, DiskID: d.ID, SnapshotID: "snpx"}, invalid},
		{"bad name", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, Name: "Bad"}, invalid},
		{"bad family", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, Family: "x_y"}, invalid},
		{"bad label", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, Labels: map[string]string{"K": "v"}}, invalid},
		{"os differs from the source", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, OS: &apitypes.OS{Type: "WINDOWS"}}, invalid},
		{"minDiskSize below the size", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, MinDiskSize: 4096}, invalid},
		{"unknown source", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: "imgnope"}, apitypes.CodeNotFound},
		{"unknown folder", apitypes.CreateImageRequest{FolderID: "nope", ImageID: im.ID}, apitypes.CodeNotFound},
		{"no folder", apitypes.CreateImageRequest{ImageID: im.ID}, invalid},
		{"taken name", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, Name: "base"}, apitypes.CodeAlreadyExists},
		{"ok", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, Name: "copy"}, ""},
	} {
		_, err := e.svc.CreateImage(context.Background(), root, "", tc.req)
		if got := code(err); got != tc.want {
			t.Errorf("%s: got %q (%v), want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestUpdateImage(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	im := e.upload(root, UploadRequest{FolderID: f.ID, Name: "base", Family: "fam"}, pattern(64<<10, 3))
	e.upload(root, UploadRequest{FolderID: f.ID, Name: "other"}, pattern(64<<10, 4))
	for _, tc := range []struct {
		name string
		req  apitypes.UpdateImageRequest
		want string
	}{
		{"empty mask", apitypes.UpdateImageRequest{Name: "x"}, invalid},
		{"family is immutable", apitypes.UpdateImageRequest{UpdateMask: "family"}, invalid},
		{"os is immutable", apitypes.UpdateImageRequest{UpdateMask: "os.type"}, invalid},
		{"unknown field", apitypes.UpdateImageRequest{UpdateMask: "size"}, invalid},
		{"bad name", apitypes.UpdateImageRequest{UpdateMask: "name", Name: "-x"}, invalid},
		{"taken name", apitypes.UpdateImageRequest{UpdateMask: "name", Name: "other"}, apitypes.CodeAlreadyExists},
		{"minDiskSize too small", apitypes.UpdateImageRequest{UpdateMask: "minDiskSize", MinDiskSize: 4096}, invalid},
		{"ok", apitypes.UpdateImageRequest{UpdateMask: "name,description,labels,minDiskSize", Name: "renamed",
			Description: "d", Labels: map[string]string{"a": "b"}, MinDiskSize: 1 << 20}, ""},
	} {
		_, err := e.svc.UpdateImage(root, "", im.ID, tc.req)
		if got := code(err); got != tc.want {
			t.Errorf("%s: got %q (%v), want %q", tc.name, got, err, tc.want)
		}
	}
	got := must(e.svc.GetImage(root, im.ID))(t)
	if got.Name != "renamed" || got.Description != "d" || got.Labels["a"] != "b" || got.MinDiskSize != 1<<20 || got.Family != "fam" {
		t.Errorf("after update: %+v", got)
	}
	// The old name is free again, the new one taken.
	e.upload(root, UploadRequest{FolderID: f.ID, Name: "base"}, pattern(64<<10, 3))
	_, err := e.svc.CreateImage(context.Background(), root, "", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, Name: "renamed"})
	wantCode(t, err, apitypes.CodeAlreadyExists)
}

func TestWindowsImportPolicy(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	_, err := e.svc.UploadImage(context.Background(), root, "", UploadRequest{FolderID: f.ID, OSType: "windows"}, failingReader{t})
	wantCode(t, err, apitypes.CodeFailedPrecondition)
	if !strings.Contains(err.Error(), "from a disk or snapshot") {
		t.Errorf("message does not say what to do: %v", err)
	}
	// From a WINDOWS disk it is always allowed, and inherited.
	d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, Size: 64 << 10, OS: &apitypes.OS{Type: "WINDOWS"}})
	op := must(e.svc.CreateImage(context.Background(), root, "", apitypes.CreateImageRequest{FolderID: f.ID, DiskID: d.ID, Family: "win"}))(t)
	im := resp[apitypes.Image](t, e.done(root, op))
	if im.OS.Type != apitypes.OSWindows || im.SourceDiskID != d.ID || im.Status != apitypes.StatusReady {
		t.Errorf("image from a Windows disk: %+v", im)
	}
	d2 := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID})
	if d2.OS.Type != apitypes.OSWindows {
		t.Errorf("disk from a Windows image has os %s", d2.OS.Type)
	}
	// A daemon configured to allow it imports Windows images.
	e2 := newEnv(t, Config{AllowWindowsImport: true})
	f2 := e2.folder("f2")
	im2 := e2.upload(root, UploadRequest{FolderID: f2.ID, OSType: "WINDOWS"}, pattern(8192, 1))
	if im2.OS.Type != apitypes.OSWindows {
		t.Errorf("allowed Windows import has os %s", im2.OS.Type)
	}
}
