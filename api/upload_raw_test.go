package api

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"strata/api/apitypes"
	"strata/layer"
	"strata/storage"
)

// uploadRawStream uploads data as a raw file of known size: the streamed
// path, no spool file.
func (e *env) uploadRawStream(key string, req UploadRequest, body io.Reader, size int64) (apitypes.Operation, error) {
	req.Format, req.Size = "raw", size
	return e.svc.UploadImage(context.Background(), root, key, req, body)
}

// TestRawUploadStreamsIntoAReadyImage: a raw upload of known size is
// imported as it arrives and its operation is finished when the call
// returns. The image reads back byte for byte, with the checksum and
// virtual size the spooled path gives the same bytes, and the spool
// directory stays empty.
func TestRawUploadStreamsIntoAReadyImage(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	data := pattern(3<<20+512, 9) // not a whole number of chunks
	op, err := e.uploadRawStream("", UploadRequest{FolderID: f.ID, Name: "streamed", Family: "deb"}, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !op.Done || op.Error != nil {
		t.Fatalf("streamed upload returned %+v, want a finished operation", op)
	}
	im := resp[apitypes.Image](t, op)
	if im.Status != apitypes.StatusReady || im.VirtualSize != int64(len(data)) || im.SourceFormat != "raw" {
		t.Fatalf("image %+v", im)
	}
	if im.Checksum != sha(data) {
		t.Fatalf("checksum %s, want %s", im.Checksum, sha(data))
	}
	if got := e.readExport(root, "image/"+im.ID); !bytes.Equal(got, data) {
		t.Fatal("the streamed image does not read back as uploaded")
	}
	spooled := e.upload(root, UploadRequest{FolderID: f.ID, Name: "spooled"}, data)
	if spooled.Checksum != im.Checksum || spooled.VirtualSize != im.VirtualSize {
		t.Fatalf("spooled %s/%d, streamed %s/%d", spooled.Checksum, spooled.VirtualSize, im.Checksum, im.VirtualSize)
	}
	if ents, err := os.ReadDir(e.svc.cfg.spoolDir()); err != nil || len(ents) != 0 {
		t.Fatalf("spool directory: %d entries (%v)", len(ents), err)
	}
	e.auditStore()
}

// TestRawUploadRefusals: a body claimed raw that is a qcow2 (magic at the
// start) or a fixed VHD (footer at the end), a body shorter than its
// announced size, and a size over the quota are refused; no image, no
// operation result and no layer are left, and the audit is clean.
func TestRawUploadRefusals(t *testing.T) {
	e := newEnv(t, Config{DefaultQuotas: map[string]int64{apitypes.QuotaImagesSize: 64 << 20}})
	f := e.folder("f1")
	raw := pattern(1<<20, 5)
	qcow, vhd := convertWithQemu(t, raw, "qcow2"), convertWithQemu(t, raw, "vpc", "-o", "subformat=fixed")
	before := e.layerIDs()
	for _, tc := range []struct {
		name string
		body io.Reader
		size int64
		want string
	}{
		{"qcow2 claimed raw", bytes.NewReader(qcow), int64(len(qcow)), apitypes.CodeInvalidArgument},
		{"fixed VHD claimed raw", bytes.NewReader(vhd), int64(len(vhd)), apitypes.CodeInvalidArgument},
		{"body shorter than its size", bytes.NewReader(raw), int64(len(raw)) + 4096, apitypes.CodeInvalidArgument},
		{"over the images size quota", failingReader{t}, 65 << 20, apitypes.CodeResourceExhausted},
	} {
		_, err := e.uploadRawStream("", UploadRequest{FolderID: f.ID, Name: "x"}, tc.body, tc.size)
		if got := code(err); got != tc.want {
			t.Errorf("%s: got %q (%v), want %s", tc.name, got, err, tc.want)
		}
	}
	if n := len(must(e.svc.ListImages(root, f.ID, 0, "", ""))(t).Images); n != 0 {
		t.Fatalf("%d images after refused uploads", n)
	}
	if left := e.newLiveLayers(before); len(left) != 0 {
		t.Errorf("layers %v left behind by refused uploads", left)
	}
	e.auditStore()
}

// TestRawUploadIdempotent: the same key twice makes one image; the second
// call returns the first call's operation and its layer is dropped.
func TestRawUploadIdempotent(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	data := pattern(1<<20, 7)
	first := must(e.uploadRawStream("k1", UploadRequest{FolderID: f.ID, Name: "once"}, bytes.NewReader(data), int64(len(data))))(t)
	before := e.layerIDs()
	again := must(e.uploadRawStream("k1", UploadRequest{FolderID: f.ID, Name: "once"}, bytes.NewReader(data), int64(len(data))))(t)
	if again.ID != first.ID {
		t.Fatalf("repeated key made operation %s, first was %s", again.ID, first.ID)
	}
	if n := len(must(e.svc.ListImages(root, f.ID, 0, "", ""))(t).Images); n != 1 {
		t.Fatalf("%d images, want 1", n)
	}
	if left := e.newLiveLayers(before); len(left) != 0 {
		t.Errorf("layers %v left behind by the repeated upload", left)
	}
	e.auditStore()
}

// newLiveLayers lists the layers made since before that are not being
// deleted: what a dropped import would leak. A layer the reaper has
// already removed is gone, which is fine.
func (e *env) newLiveLayers(before map[layer.LayerID]bool) []layer.LayerID {
	e.t.Helper()
	var out []layer.LayerID
	for id := range e.layerIDs() {
		if before[id] {
			continue
		}
		var lm struct {
			State string `json:"state"`
		}
		if err := e.store.View(func(tx *storage.Txn) error {
			b, err := tx.Get(binary.BigEndian.AppendUint64([]byte(rawLayerPrefix), uint64(id)))
			if errors.Is(err, storage.ErrNotFound) {
				lm.State = "gone"
				return nil
			}
			if err != nil {
				return err
			}
			return json.Unmarshal(b, &lm)
		}); err != nil {
			e.t.Fatal(err)
		}
		if lm.State != "deleting" && lm.State != "gone" {
			out = append(out, id)
		}
	}
	return out
}

// convertWithQemu writes raw to a file and converts it with qemu-img to
// format (extra options after), returning the result's bytes.
func convertWithQemu(t *testing.T, raw []byte, format string, opts ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.raw"), filepath.Join(dir, "out."+format)
	if err := os.WriteFile(in, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"convert", "-q", "-f", "raw", "-O", format}, opts...)
	if b, err := exec.Command("qemu-img", append(args, in, out)...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
