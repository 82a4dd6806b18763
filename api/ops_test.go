package api

import (
	"context"
	"testing"
	"time"

	"strata/api/apitypes"
	"strata/storage"
)

// startBlocked starts a background operation that makes a CREATING image
// and then works until its context ends, as an import does when cancelled.
func (e *env) startBlocked(folderID string) (apitypes.Operation, string) {
	e.t.Helper()
	var imageID string
	started := make(chan struct{})
	op, dup, err := e.svc.startAsync(root, "", "blocked import", apitypes.OperationMetadata{},
		func(tx *storage.Txn, op *opRec) error {
			r, _, err := e.svc.addImage(tx, root, &imageSpec{folder: folderID, name: "blocked", osType: apitypes.OSLinux}, apitypes.StatusCreating, false)
			if err != nil {
				return err
			}
			r.OpID, imageID = op.ID, r.ID
			op.Metadata.FolderID, op.Metadata.ImageID = folderID, r.ID
			return putJSON(tx, pfxImage+r.ID, r)
		},
		func(ctx context.Context, ro *runningOp) (finisher, error) {
			ro.report("import", 0.25, 1, 4)
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		})
	if err != nil || dup {
		e.t.Fatal(err, dup)
	}
	<-started
	return op, imageID
}

func TestCancelRemovesHalfMadeImage(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	op, imageID := e.startBlocked(f.ID)
	if n := e.svc.OperationsInFlight(); n != 1 {
		t.Errorf("%d operations in flight, want 1", n)
	}
	got := must(e.svc.GetOperation(root, op.ID))(t)
	if got.Done || got.Metadata.Progress != 0.25 || got.Metadata.Phase != "import" || got.Metadata.ImageID != imageID {
		t.Errorf("running operation %+v", got)
	}
	im := must(e.svc.GetImage(root, imageID))(t)
	if im.Status != apitypes.StatusCreating {
		t.Errorf("image is %s while its operation runs", im.Status)
	}
	_, err := e.svc.DeleteImage(root, "", imageID)
	wantCode(t, err, apitypes.CodeFailedPrecondition)
	_, err = e.svc.CancelOperation(dave, op.ID)
	wantCode(t, err, apitypes.CodePermissionDenied)
	must(e.svc.CancelOperation(root, op.ID))(t)
	if c := e.failed(root, op); c != apitypes.CodeCanceled {
		t.Errorf("cancelled operation ended with %q", c)
	}
	_, err = e.svc.GetImage(root, imageID)
	wantCode(t, err, apitypes.CodeNotFound)
	// The name is free again.
	e.upload(root, UploadRequest{FolderID: f.ID, Name: "blocked"}, pattern(4096, 1))
}

func TestShutdownAbortsRunningOperations(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	op, imageID := e.startBlocked(f.ID)
	e.close() // cancels the work and records the end before returning
	e.open()
	got := must(e.svc.GetOperation(root, op.ID))(t)
	if !got.Done || got.Error == nil || got.Error.Code != apitypes.CodeAborted {
		t.Fatalf("operation after shutdown: %+v", got)
	}
	_, err := e.svc.GetImage(root, imageID)
	wantCode(t, err, apitypes.CodeNotFound)
}

func TestOldOperationsArePrunedAtStart(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	op := must(e.svc.CreateDisk(root, "key", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 4096}))(t)
	recent := must(e.svc.CreateDisk(root, "", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 4096}))(t)
	// Age the first operation past the retention.
	if err := e.store.Update(func(tx *storage.Txn) error {
		r, err := getOp(tx, op.ID)
		if err != nil {
			return err
		}
		r.ModifiedAt = r.ModifiedAt.Add(-operationRetention - time.Hour)
		return putJSON(tx, pfxOp+op.ID, r)
	}); err != nil {
		t.Fatal(err)
	}
	e.close()
	e.open()
	_, err := e.svc.GetOperation(root, op.ID)
	wantCode(t, err, apitypes.CodeNotFound)
	must(e.svc.GetOperation(root, recent.ID))(t)
	// Its Idempotency-Key no longer holds: the same request runs again.
	again := must(e.svc.CreateDisk(root, "key", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 4096}))(t)
	if again.ID == op.ID {
		t.Error("a pruned operation was returned")
	}
}

// TestUsageCountersMatchARecount changes a folder in every way that moves
// its quota usage, then checks the kept counters against expected figures
// and against the recount a restart makes.
func TestUsageCountersMatchARecount(t *testing.T) {
	e := newEnv(t, Config{DefaultQuotas: map[string]int64{apitypes.QuotaDiskPoolsCount: 5}})
	ctx := context.Background()
	f := e.folder("f1")
	im := e.upload(root, UploadRequest{FolderID: f.ID, Pooled: true}, pattern(8192, 1))
	cp := resp[apitypes.Image](t, must(e.svc.CreateImage(ctx, root, "", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID}))(t))
	d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID})
	d2 := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, Size: 16384})
	sn := resp[apitypes.Snapshot](t, e.done(root, must(e.svc.CreateSnapshot(ctx, root, "", apitypes.CreateSnapshotRequest{DiskID: d.ID}))(t)))
	e.done(root, must(e.svc.CreateSnapshot(ctx, root, "", apitypes.CreateSnapshotRequest{DiskID: d2.ID}))(t))
	fromDisk := resp[apitypes.Image](t, e.done(root, must(e.svc.CreateImage(ctx, root, "", apitypes.CreateImageRequest{FolderID: f.ID, DiskID: d2.ID}))(t)))
	must(e.svc.DeleteImage(root, "", cp.ID))(t)
	must(e.svc.DeleteDisk(root, "", d.ID))(t)
	must(e.svc.DeleteSnapshot(root, "", sn.ID))(t)
	op, _ := e.startBlocked(f.ID)
	must(e.svc.CancelOperation(root, op.ID))(t)
	e.failed(root, op)

	want := map[string]int64{
		apitypes.QuotaImagesCount:    2, // im, fromDisk
		apitypes.QuotaImagesSize:     8192 + fromDisk.VirtualSize,
		apitypes.QuotaDiskPoolsCount: 1,
		apitypes.QuotaDisksCount:     1,
		apitypes.QuotaSnapshotsCount: 1,
	}
	check := func(when string) {
		q := must(e.svc.GetQuotas(root, f.ID))(t)
		for name, n := range want {
			if got := quotaOf(q, name).Usage; got != n {
				t.Errorf("%s: %s usage %d, want %d", when, name, got, n)
			}
		}
	}
	check("kept counters")
	e.close()
	e.open()
	check("after the recount at start")
}
