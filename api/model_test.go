package api

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"strata/api/apitypes"
	"strata/storage"
)

func TestPooledImageNeedsQuota(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("prod")
	data := pattern(256<<10, 5)
	_, err := e.svc.UploadImage(context.Background(), root, "", UploadRequest{FolderID: f.ID, Name: "golden", Pooled: true}, failingReader{t})
	wantCode(t, err, apitypes.CodeResourceExhausted)
	if !strings.Contains(err.Error(), "strata quota set --folder prod compute.diskPools.count=1") {
		t.Errorf("refusal does not say how to raise the quota: %v", err)
	}
	q := must(e.svc.GetQuotas(root, f.ID))(t)
	if got := quotaOf(q, apitypes.QuotaDiskPoolsCount); got.Limit != 0 || got.Usage != 0 {
		t.Errorf("diskPools quota %+v, want limit 0 usage 0", got)
	}
	// Only daemon admins raise quotas; a folder admin may not.
	must(e.svc.SetAccessBindings(root, "", KindFolders, f.ID, apitypes.SetAccessBindingsRequest{
		AccessBindings: []apitypes.AccessBinding{bind(apitypes.RoleAdmin, alice)}}))(t)
	_, err = e.svc.SetQuotas(alice, "", f.ID, apitypes.SetQuotasRequest{Limits: map[string]int64{apitypes.QuotaDiskPoolsCount: 1}})
	wantCode(t, err, apitypes.CodePermissionDenied)
	_, err = e.svc.SetQuotas(root, "", f.ID, apitypes.SetQuotasRequest{Limits: map[string]int64{"compute.bogus": 1}})
	wantCode(t, err, invalid)
	must(e.svc.SetQuotas(root, "", "prod", apitypes.SetQuotasRequest{Limits: map[string]int64{apitypes.QuotaDiskPoolsCount: 1}}))(t)

	im := e.upload(root, UploadRequest{FolderID: f.ID, Name: "golden", Pooled: true}, data)
	if !im.Pooled {
		t.Fatalf("image not pooled: %+v", im)
	}
	q = must(e.svc.GetQuotas(root, f.ID))(t)
	if got := quotaOf(q, apitypes.QuotaDiskPoolsCount); got.Usage != 1 {
		t.Errorf("diskPools usage %d, want 1", got.Usage)
	}
	// The second pooled image passes the limit again.
	_, err = e.svc.CreateImage(context.Background(), root, "", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, Pooled: true})
	wantCode(t, err, apitypes.CodeResourceExhausted)
	// Disks on it are pooled overlays and read its data.
	var disks []apitypes.Disk
	for range 3 {
		d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID})
		if !d.Pooled || d.Size != int64(len(data)) {
			t.Fatalf("disk on a pooled image: %+v", d)
		}
		disks = append(disks, d)
	}
	for _, d := range disks {
		if !bytes.Equal(e.readExport(root, d.ExportName), data) {
			t.Errorf("disk %s does not read the image's data", d.ID)
		}
	}
}

func quotaOf(q apitypes.QuotaList, name string) apitypes.Quota {
	for _, x := range q.Quotas {
		if x.Name == name {
			return x
		}
	}
	return apitypes.Quota{}
}

func TestCountQuotas(t *testing.T) {
	e := newEnv(t, Config{DefaultQuotas: map[string]int64{apitypes.QuotaImagesCount: 2, apitypes.QuotaDisksCount: 1, apitypes.QuotaSnapshotsCount: 1}})
	f := e.folder("f1")
	im := e.upload(root, UploadRequest{FolderID: f.ID}, pattern(8192, 1))
	must(e.svc.CreateImage(context.Background(), root, "", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID}))(t)
	_, err := e.svc.CreateImage(context.Background(), root, "", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID})
	wantCode(t, err, apitypes.CodeResourceExhausted)
	d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, Size: 8192})
	_, err = e.svc.CreateDisk(root, "", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 8192})
	wantCode(t, err, apitypes.CodeResourceExhausted)
	e.done(root, must(e.svc.CreateSnapshot(context.Background(), root, "", apitypes.CreateSnapshotRequest{DiskID: d.ID}))(t))
	_, err = e.svc.CreateSnapshot(context.Background(), root, "", apitypes.CreateSnapshotRequest{DiskID: d.ID})
	wantCode(t, err, apitypes.CodeResourceExhausted)
	// Size quota: images.size counts virtual bytes.
	must(e.svc.SetQuotas(root, "", f.ID, apitypes.SetQuotasRequest{Limits: map[string]int64{apitypes.QuotaImagesCount: 10, apitypes.QuotaImagesSize: 3 * 8192}}))(t)
	must(e.svc.CreateImage(context.Background(), root, "", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID}))(t)
	_, err = e.svc.CreateImage(context.Background(), root, "", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID})
	wantCode(t, err, apitypes.CodeResourceExhausted)
}

func TestLatestByFamily(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	g := e.folder("f2")
	first := e.upload(root, UploadRequest{FolderID: f.ID, Name: "v1", Family: "ubuntu"}, pattern(8192, 1))
	_, err := e.svc.LatestByFamily(root, f.ID, "debian")
	wantCode(t, err, apitypes.CodeNotFound)
	_, err = e.svc.LatestByFamily(root, g.ID, "ubuntu")
	wantCode(t, err, apitypes.CodeNotFound)
	_, err = e.svc.LatestByFamily(root, f.ID, "Bad_Family")
	wantCode(t, err, invalid)
	if got := must(e.svc.LatestByFamily(root, f.ID, "ubuntu"))(t); got.ID != first.ID {
		t.Fatalf("latest %s, want %s", got.ID, first.ID)
	}
	var ids []string
	for _, n := range []string{"v2", "v3", "v4"} {
		op := must(e.svc.CreateImage(context.Background(), root, "", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: first.ID, Name: n, Family: "ubuntu"}))(t)
		ids = append(ids, resp[apitypes.Image](t, op).ID)
		// Another family in between changes nothing.
		must(e.svc.CreateImage(context.Background(), root, "", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: first.ID, Family: "debian"}))(t)
		if got := must(e.svc.LatestByFamily(root, "f1", "ubuntu"))(t); got.ID != ids[len(ids)-1] {
			t.Fatalf("after %s: latest %s (%s), want %s", n, got.ID, got.Name, ids[len(ids)-1])
		}
	}
	must(e.svc.DeleteImage(root, "", ids[2]))(t)
	if got := must(e.svc.LatestByFamily(root, f.ID, "ubuntu"))(t); got.ID != ids[1] {
		t.Errorf("after deleting the newest: latest %s, want %s", got.ID, ids[1])
	}
	// A CREATING image of the family, newer than all, is not the latest.
	if err := e.svc.update(func(tx *storage.Txn) error {
		r, _, err := e.svc.addImage(tx, root, &imageSpec{folder: f.ID, family: "ubuntu", osType: apitypes.OSLinux}, apitypes.StatusCreating, false)
		if err != nil {
			return err
		}
		return putJSON(tx, pfxImage+r.ID, r)
	}); err != nil {
		t.Fatal(err)
	}
	if got := must(e.svc.LatestByFamily(root, f.ID, "ubuntu"))(t); got.ID != ids[1] {
		t.Errorf("latest %s (%s), want the newest READY one %s", got.ID, got.Status, ids[1])
	}
	// An image made from a disk becomes the latest once READY.
	d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, Size: 8192})
	op := must(e.svc.CreateImage(context.Background(), root, "", apitypes.CreateImageRequest{FolderID: f.ID, DiskID: d.ID, Family: "ubuntu", Name: "v5"}))(t)
	v5 := resp[apitypes.Image](t, e.done(root, op))
	if got := must(e.svc.LatestByFamily(root, f.ID, "ubuntu"))(t); got.ID != v5.ID {
		t.Errorf("latest %s, want the image from the disk %s", got.ID, v5.ID)
	}
}

func TestIdempotencyKey(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	op1 := must(e.svc.CreateDisk(root, "key-1", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 8192, Name: "d"}))(t)
	op2 := must(e.svc.CreateDisk(root, "key-1", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 8192, Name: "d"}))(t)
	if op1.ID != op2.ID {
		t.Errorf("retry made operation %s, want %s", op2.ID, op1.ID)
	}
	list := must(e.svc.ListDisks(root, f.ID, 0, "", ""))(t)
	if len(list.Disks) != 1 {
		t.Errorf("%d disks after a retried create, want 1", len(list.Disks))
	}
	// Another caller's key is another namespace.
	must(e.svc.SetAccessBindings(root, "", KindFolders, f.ID, apitypes.SetAccessBindingsRequest{
		AccessBindings: []apitypes.AccessBinding{bind(apitypes.RoleEditor, alice)}}))(t)
	op3 := must(e.svc.CreateDisk(alice, "key-1", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 8192, Name: "e"}))(t)
	if op3.ID == op1.ID {
		t.Error("another caller's request with the same key returned the first caller's operation")
	}
	// A retried upload returns the first operation without reading the body.
	data := pattern(8192, 9)
	up1 := must(e.svc.UploadImage(context.Background(), root, "up", UploadRequest{FolderID: f.ID, Name: "img"}, bytes.NewReader(data)))(t)
	e.done(root, up1)
	up2 := must(e.svc.UploadImage(context.Background(), root, "up", UploadRequest{FolderID: f.ID, Name: "img"}, failingReader{t}))(t)
	if up2.ID != up1.ID || !up2.Done {
		t.Errorf("retried upload: %+v, want done operation %s", up2, up1.ID)
	}
	// Snapshots and images from disks too: one snapshot per key.
	sd := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, Size: 8192})
	s1 := must(e.svc.CreateSnapshot(context.Background(), root, "snap", apitypes.CreateSnapshotRequest{DiskID: sd.ID}))(t)
	s2 := must(e.svc.CreateSnapshot(context.Background(), root, "snap", apitypes.CreateSnapshotRequest{DiskID: sd.ID}))(t)
	i1 := must(e.svc.CreateImage(context.Background(), root, "img", apitypes.CreateImageRequest{FolderID: f.ID, DiskID: sd.ID}))(t)
	i2 := must(e.svc.CreateImage(context.Background(), root, "img", apitypes.CreateImageRequest{FolderID: f.ID, DiskID: sd.ID}))(t)
	if s1.ID != s2.ID || i1.ID != i2.ID {
		t.Errorf("retried snapshot %s/%s, image from disk %s/%s", s1.ID, s2.ID, i1.ID, i2.ID)
	}
	e.done(root, s1)
	e.done(root, i1)
	if n := len(must(e.svc.ListSnapshots(root, f.ID, 0, "", ""))(t).Snapshots); n != 1 {
		t.Errorf("%d snapshots after a retried create, want 1", n)
	}
	// A failed request stores nothing under its key: the retry runs.
	_, err := e.svc.CreateDisk(root, "key-2", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 8192, Name: "d"})
	wantCode(t, err, apitypes.CodeAlreadyExists)
	must(e.svc.CreateDisk(root, "key-2", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 8192, Name: "d2"}))(t)
	_, err = e.svc.CreateDisk(root, strings.Repeat("k", 200), apitypes.CreateDiskRequest{FolderID: f.ID, Size: 8192})
	wantCode(t, err, invalid)
}

func TestDeleteImageLeavesDisksWorking(t *testing.T) {
	e := newEnv(t, Config{DefaultQuotas: map[string]int64{apitypes.QuotaDiskPoolsCount: 1}})
	f := e.folder("f1")
	for _, pooled := range []bool{false, true} {
		data := pattern(128<<10, 7)
		im := e.upload(root, UploadRequest{FolderID: f.ID, Pooled: pooled}, data)
		d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID, Size: 256 << 10})
		// Write into the disk so it differs from the image.
		v := must(e.svc.OpenExport(context.Background(), d.ExportName, alice.withUID(0)))(t)
		if err := v.WriteAt(context.Background(), []byte("written"), 4096, true); err != nil {
			t.Fatal(err)
		}
		v.Close()
		must(e.svc.DeleteImage(root, "", im.ID))(t)
		_, err := e.svc.GetImage(root, im.ID)
		wantCode(t, err, apitypes.CodeNotFound)
		want := append(bytes.Clone(data), make([]byte, 128<<10)...)
		copy(want[4096:], "written")
		if got := e.readExport(root, d.ExportName); !bytes.Equal(got, want) {
			t.Errorf("pooled=%v: the disk reads other data after its image was deleted", pooled)
		}
		// A new disk from a deleted image is refused.
		_, err = e.svc.CreateDisk(root, "", apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID})
		wantCode(t, err, apitypes.CodeNotFound)
		must(e.svc.DeleteDisk(root, "", d.ID))(t)
	}
}

func (id Identity) withUID(uid uint32) Identity { id.UID = uid; return id }

func TestDiskSizesAndGrow(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	im := e.upload(root, UploadRequest{FolderID: f.ID, MinDiskSize: 64 << 10}, pattern(10000, 1))
	if im.VirtualSize != 10000 || im.MinDiskSize != 64<<10 {
		t.Fatalf("image %+v", im)
	}
	for _, tc := range []struct {
		name string
		req  apitypes.CreateDiskRequest
		want string
		size int64
	}{
		{"empty without size", apitypes.CreateDiskRequest{FolderID: f.ID}, invalid, 0},
		{"unaligned size", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 1000}, invalid, 0},
		{"both sources", apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID, SnapshotID: "x"}, invalid, 0},
		{"below minDiskSize", apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID, Size: 16 << 10}, invalid, 0},
		{"os with a source", apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID, OS: &apitypes.OS{Type: "LINUX"}}, invalid, 0},
		{"default size", apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID}, "", 64 << 10},
		{"larger", apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID, Size: 1 << 20}, "", 1 << 20},
		{"empty", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 1 << 20}, "", 1 << 20},
	} {
		op, err := e.svc.CreateDisk(root, "", tc.req)
		if got := code(err); got != tc.want {
			t.Errorf("%s: got %q (%v), want %q", tc.name, got, err, tc.want)
			continue
		}
		if err == nil {
			if d := resp[apitypes.Disk](t, op); d.Size != tc.size {
				t.Errorf("%s: size %d, want %d", tc.name, d.Size, tc.size)
			}
		}
	}
	d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID, Name: "grow"})
	_, err := e.svc.UpdateDisk(root, "", d.ID, apitypes.UpdateDiskRequest{UpdateMask: "size", Size: 32 << 10})
	wantCode(t, err, invalid)
	_, err = e.svc.UpdateDisk(root, "", d.ID, apitypes.UpdateDiskRequest{UpdateMask: "os"})
	wantCode(t, err, invalid)
	must(e.svc.UpdateDisk(root, "", d.ID, apitypes.UpdateDiskRequest{UpdateMask: "size", Size: 2 << 20}))(t)
	got := must(e.svc.GetDisk(root, d.ID))(t)
	if got.Size != 2<<20 {
		t.Errorf("grown disk size %d", got.Size)
	}
	v := must(e.svc.OpenExport(context.Background(), d.ExportName, root))(t)
	if v.Size() != 2<<20 {
		t.Errorf("grown disk volume size %d", v.Size())
	}
	v.Close()
}

func TestOneWriterPerDisk(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, Size: 64 << 10})
	must(e.svc.SetAccessBindings(root, "", KindFolders, f.ID, apitypes.SetAccessBindingsRequest{
		AccessBindings: []apitypes.AccessBinding{bind(apitypes.RoleEditor, alice), bind(apitypes.RoleEditor, bob)}}))(t)
	v1 := must(e.svc.OpenExport(context.Background(), d.ExportName, alice))(t)
	// The same process may open more connections (multi-conn).
	v2 := must(e.svc.OpenExport(context.Background(), d.ExportName, alice))(t)
	_, err := e.svc.OpenExport(context.Background(), d.ExportName, bob)
	wantCode(t, err, apitypes.CodeFailedPrecondition)
	_, err = e.svc.DeleteDisk(root, "", d.ID)
	wantCode(t, err, apitypes.CodeFailedPrecondition)
	v1.Close()
	_, err = e.svc.OpenExport(context.Background(), d.ExportName, bob)
	wantCode(t, err, apitypes.CodeFailedPrecondition)
	v2.Close()
	v3 := must(e.svc.OpenExport(context.Background(), d.ExportName, bob))(t)
	v3.Close()
	must(e.svc.DeleteDisk(root, "", d.ID))(t)
	for _, name := range []string{d.ExportName, "disk/", "nope/x", "image/imgnope", "snapshot/x", "disk"} {
		_, err := e.svc.OpenExport(context.Background(), name, root)
		wantCode(t, err, apitypes.CodeNotFound)
	}
	_, err = e.svc.OpenExport(context.Background(), "disk/x", anon)
	wantCode(t, err, apitypes.CodeUnauthenticated)
}

func TestSnapshotWhileWriting(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, Size: 256 << 10, Name: "live"})
	ctx := context.Background()
	v := must(e.svc.OpenExport(ctx, d.ExportName, root))(t)
	defer v.Close()
	before := pattern(256<<10, 3)
	if err := v.WriteAt(ctx, before, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	op := must(e.svc.CreateSnapshot(ctx, root, "", apitypes.CreateSnapshotRequest{DiskID: d.ID, Name: "s1"}))(t)
	// Writes after the request are not in the snapshot.
	if err := v.WriteAt(ctx, bytes.Repeat([]byte{0xee}, 64<<10), 0, true); err != nil {
		t.Fatal(err)
	}
	sn := resp[apitypes.Snapshot](t, e.done(root, op))
	if sn.Status != apitypes.StatusReady || sn.DiskSize != 256<<10 || sn.SourceDiskID != d.ID || sn.FolderID != f.ID {
		t.Fatalf("snapshot %+v", sn)
	}
	if sn.Checksum != sha(before) {
		t.Errorf("snapshot checksum %s, want %s", sn.Checksum, sha(before))
	}
	if got := e.readExport(root, sn.ExportName); !bytes.Equal(got, before) {
		t.Error("the snapshot does not hold exactly the writes made before it")
	}
	// An image and a disk from the snapshot read the same.
	im := resp[apitypes.Image](t, must(e.svc.CreateImage(ctx, root, "", apitypes.CreateImageRequest{FolderID: f.ID, SnapshotID: sn.ID, Family: "snaps"}))(t))
	if im.Checksum != sn.Checksum || im.SourceSnapshotID != sn.ID || im.VirtualSize != sn.DiskSize {
		t.Errorf("image from snapshot %+v", im)
	}
	d2 := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, SnapshotID: sn.ID})
	if got := e.readExport(root, d2.ExportName); !bytes.Equal(got, before) {
		t.Error("a disk from the snapshot reads other data")
	}
	// Deleting the snapshot leaves the image readable.
	must(e.svc.DeleteSnapshot(root, "", sn.ID))(t)
	if got := e.readExport(root, im.ExportName); !bytes.Equal(got, before) {
		t.Error("the image from a deleted snapshot reads other data")
	}
	ops := must(e.svc.ListOperations(root, ListOperationsFilter{ResourceID: sn.ID}, 0, ""))(t)
	if len(ops.Operations) != 2 || ops.Operations[0].Description != "delete snapshot" {
		t.Errorf("operations of the snapshot: %+v", ops.Operations)
	}
}

func TestRestartAbortsUnfinishedOperations(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	// Forge what a crash mid-import leaves: a running operation and its
	// CREATING image holding a name.
	op := &opRec{Operation: apitypes.Operation{ID: "oprcrashed", Description: "import image x",
		Metadata: apitypes.OperationMetadata{FolderID: f.ID, ImageID: "imgcrashed"}}, Seq: 99}
	im := &imageRec{Image: apitypes.Image{ID: "imgcrashed", FolderID: f.ID, Name: "x", Status: apitypes.StatusCreating}, OpID: op.ID}
	if err := e.store.Update(func(tx *storage.Txn) error {
		if err := putJSON(tx, pfxOp+op.ID, op); err != nil {
			return err
		}
		if err := claimName(tx, pfxImageName, "image", f.ID, "x", im.ID); err != nil {
			return err
		}
		return putJSON(tx, pfxImage+im.ID, im)
	}); err != nil {
		t.Fatal(err)
	}
	e.close()
	e.open()
	got := must(e.svc.GetOperation(root, op.ID))(t)
	if !got.Done || got.Error == nil || got.Error.Code != apitypes.CodeAborted {
		t.Fatalf("operation after restart: %+v", got)
	}
	_, err := e.svc.GetImage(root, im.ID)
	wantCode(t, err, apitypes.CodeNotFound)
	// Its name is free again.
	e.upload(root, UploadRequest{FolderID: f.ID, Name: "x"}, pattern(4096, 1))
	// Finished operations survive a restart as they were.
	ops := must(e.svc.ListOperations(root, ListOperationsFilter{FolderID: f.ID}, 0, ""))(t)
	if len(ops.Operations) < 3 {
		t.Errorf("%d operations after restart", len(ops.Operations))
	}
}

func TestUploadRefusesUnsafeAndMislabelledFiles(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	qcow := qcow2WithBackingFile(t)
	for _, tc := range []struct {
		name   string
		format string
		data   []byte
		want   string
	}{
		{"qcow2 with a backing file", "", qcow, invalid},
		{"raw claimed as qcow2", "qcow2", pattern(8192, 1), invalid},
		{"unknown format", "iso", pattern(8192, 1), invalid},
		{"empty file", "", nil, invalid},
		{"truncated qcow2", "", qcow[:40], invalid},
	} {
		_, err := e.svc.UploadImage(context.Background(), root, "", UploadRequest{FolderID: f.ID, Format: tc.format}, bytes.NewReader(tc.data))
		if got := code(err); got != tc.want {
			t.Errorf("%s: got %q (%v), want %q", tc.name, got, err, tc.want)
		}
	}
	if n := len(must(e.svc.ListImages(root, f.ID, 0, "", ""))(t).Images); n != 0 {
		t.Errorf("%d images after refused uploads", n)
	}
}

// qcow2WithBackingFile makes, with qemu-img, a qcow2 overlay that names a
// backing file: importing it would read another file.
func qcow2WithBackingFile(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	base, over := filepath.Join(dir, "base.raw"), filepath.Join(dir, "over.qcow2")
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", over).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	b, err := os.ReadFile(over)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func bind(role string, id Identity) apitypes.AccessBinding {
	return apitypes.AccessBinding{RoleID: role, Subject: apitypes.Subject{Type: apitypes.SubjectUnixUser, ID: uidString(id.UID)}}
}

func uidString(uid uint32) string { return strconv.FormatUint(uint64(uid), 10) }

// TestConcurrentCreatesKeepNamesAndQuotas races creations: a name goes to
// exactly one of them, and a quota lets exactly its limit through.
func TestConcurrentCreatesKeepNamesAndQuotas(t *testing.T) {
	e := newEnv(t, Config{DefaultQuotas: map[string]int64{apitypes.QuotaDisksCount: 3}})
	f := e.folder("f1")
	race := func(req func(i int) apitypes.CreateDiskRequest) map[string]int {
		const n = 8
		codes := make(chan string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := e.svc.CreateDisk(root, "", req(i))
				codes <- code(err)
			}()
		}
		wg.Wait()
		close(codes)
		got := map[string]int{}
		for c := range codes {
			got[c]++
		}
		return got
	}
	got := race(func(int) apitypes.CreateDiskRequest {
		return apitypes.CreateDiskRequest{FolderID: f.ID, Size: 4096, Name: "same"}
	})
	if got[""] != 1 || got[apitypes.CodeAlreadyExists] != 7 {
		t.Errorf("racing one name: %v", got)
	}
	got = race(func(i int) apitypes.CreateDiskRequest {
		return apitypes.CreateDiskRequest{FolderID: f.ID, Size: 4096, Name: "d" + strconv.Itoa(i)}
	})
	if got[""] != 2 || got[apitypes.CodeResourceExhausted] != 6 {
		t.Errorf("racing a quota of 3 with 1 used: %v", got)
	}
}
