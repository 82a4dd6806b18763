package api

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"sync"
	"testing"

	"strata/api/apitypes"
	"strata/layer"
	"strata/storage"
)

// The layer package's record prefixes, read raw here to see what a failed
// request left in the store.
const (
	rawLayerPrefix = "layer/m/"
	rawDiskPrefix  = "layer/d/"
)

// layerIDs returns the ids of the layer records in the store.
func (e *env) layerIDs() map[layer.LayerID]bool {
	e.t.Helper()
	ids := map[layer.LayerID]bool{}
	if err := e.store.View(func(tx *storage.Txn) error {
		return tx.Iterate([]byte(rawLayerPrefix), func(k, _ []byte) error {
			ids[layer.LayerID(binary.BigEndian.Uint64(k[len(rawLayerPrefix):]))] = true
			return nil
		})
	}); err != nil {
		e.t.Fatal(err)
	}
	return ids
}

// checkNewLayers fails unless the only layer made since before (layers
// are only ever removed meanwhile, by the reaper) is want.
func (e *env) checkNewLayers(before map[layer.LayerID]bool, want layer.LayerID) {
	e.t.Helper()
	for id := range e.layerIDs() {
		if !before[id] && id != want {
			e.t.Errorf("layer %d was made besides the recorded %d: a request that was not recorded left it", id, want)
		}
	}
}

// diskBase returns the layer a disk is over now.
func (e *env) diskBase(id layer.DiskID) layer.LayerID {
	e.t.Helper()
	var dm struct {
		Base layer.LayerID `json:"base"`
	}
	if err := json.Unmarshal(e.rawRecord(rawDiskPrefix, uint64(id)), &dm); err != nil {
		e.t.Fatal(err)
	}
	return dm.Base
}

// layerDisk returns the layer package's id of a catalog disk.
func (e *env) layerDisk(id string) layer.DiskID {
	e.t.Helper()
	var ld layer.DiskID
	if err := e.store.View(func(tx *storage.Txn) error {
		r, err := getDisk(tx, id)
		if err == nil {
			ld = r.DiskID
		}
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return ld
}

// rawRecord returns the layer package's record prefix+id.
func (e *env) rawRecord(prefix string, id uint64) []byte {
	e.t.Helper()
	var v []byte
	if err := e.store.View(func(tx *storage.Txn) error {
		b, err := tx.Get(binary.BigEndian.AppendUint64([]byte(prefix), id))
		v = bytes.Clone(b)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// holders returns how many catalog records hold layer id.
func (e *env) holders(id layer.LayerID) int64 {
	e.t.Helper()
	var lm struct {
		Holders int64 `json:"holders"`
	}
	if err := json.Unmarshal(e.rawRecord(rawLayerPrefix, uint64(id)), &lm); err != nil {
		e.t.Fatal(err)
	}
	return lm.Holders
}

// auditStore checks every chunk count against the maps.
func (e *env) auditStore() {
	e.t.Helper()
	rep, err := e.store.Audit(context.Background(), layer.Refs(), true)
	if err != nil {
		e.t.Fatal(err)
	}
	if !rep.Clean() {
		e.t.Fatalf("audit not clean: %+v", rep)
	}
}

// recordLayer returns the layer of the snapshot or image an operation made.
func (e *env) recordLayer(op apitypes.Operation) layer.LayerID {
	e.t.Helper()
	var id layer.LayerID
	if err := e.store.View(func(tx *storage.Txn) error {
		if sid := op.Metadata.SnapshotID; sid != "" {
			r, err := getSnap(tx, sid)
			if err == nil {
				id = r.Layer
			}
			return err
		}
		r, err := getImage(tx, op.Metadata.ImageID)
		if err == nil {
			id = r.Layer
		}
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// TestSnapshotCatalogConflictLeavesNoLayer: concurrent requests snapshot
// one disk where only one can be recorded (the same name, or a quota of
// one). They all pass the early check; the losers fail inside the switch
// transaction, so exactly one layer is made, held once, the disk is over
// it (no loser switched the disk), and the audit is clean.
func TestSnapshotCatalogConflictLeavesNoLayer(t *testing.T) {
	cases := []struct {
		name   string
		quotas map[string]int64
		code   string
		create func(e *env, f apitypes.Folder, d apitypes.Disk, i int) (apitypes.Operation, error)
	}{
		{"snapshot name taken", nil, apitypes.CodeAlreadyExists,
			func(e *env, f apitypes.Folder, d apitypes.Disk, _ int) (apitypes.Operation, error) {
				return e.svc.CreateSnapshot(context.Background(), root, "", apitypes.CreateSnapshotRequest{DiskID: d.ID, Name: "s"})
			}},
		{"snapshot quota", map[string]int64{apitypes.QuotaSnapshotsCount: 1}, apitypes.CodeResourceExhausted,
			func(e *env, f apitypes.Folder, d apitypes.Disk, i int) (apitypes.Operation, error) {
				return e.svc.CreateSnapshot(context.Background(), root, "", apitypes.CreateSnapshotRequest{DiskID: d.ID, Name: "s" + string(rune('a'+i))})
			}},
		{"image name taken", nil, apitypes.CodeAlreadyExists,
			func(e *env, f apitypes.Folder, d apitypes.Disk, _ int) (apitypes.Operation, error) {
				return e.svc.CreateImage(context.Background(), root, "", apitypes.CreateImageRequest{FolderID: f.ID, DiskID: d.ID, Name: "i"})
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, Config{DefaultQuotas: c.quotas})
			f := e.folder("f1")
			im := e.upload(root, UploadRequest{FolderID: f.ID}, pattern(64<<10, 3))
			d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID, Size: 64 << 10})
			before := e.layerIDs()
			ops, errs := concurrently(8, func(i int) (apitypes.Operation, error) { return c.create(e, f, d, i) })
			var won []apitypes.Operation
			for i, err := range errs {
				if err != nil {
					wantCode(t, err, c.code)
					continue
				}
				won = append(won, ops[i])
			}
			if len(won) != 1 {
				t.Fatalf("%d requests succeeded, want 1 (errors %v)", len(won), errs)
			}
			op := e.done(root, won[0])
			lid := e.recordLayer(op)
			e.checkNewLayers(before, lid)
			if b := e.diskBase(e.layerDisk(d.ID)); b != lid {
				t.Errorf("the disk is over layer %d, want the recorded snapshot's %d: a failed request switched it", b, lid)
			}
			if h := e.holders(lid); h != 1 {
				t.Errorf("the recorded layer has %d holders, want 1", h)
			}
			e.auditStore()
		})
	}
}

// TestSnapshotCatalogFailureKeepsDisk: a snapshot whose catalog write fails
// inside the switch transaction (here the catalog's sequence is unreadable,
// which only the write reads) fails with that error and changes nothing:
// no layer, the disk keeps its overlay and data, no operation is recorded.
// Once the catalog is mended the same request works.
func TestSnapshotCatalogFailureKeepsDisk(t *testing.T) {
	for _, fromDisk := range []string{"snapshot", "image"} {
		t.Run(fromDisk, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, Config{})
			f := e.folder("f1")
			data := pattern(64<<10, 5)
			im := e.upload(root, UploadRequest{FolderID: f.ID}, data)
			d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID, Size: 64 << 10})
			ld := e.layerDisk(d.ID)
			create := func(key string) (apitypes.Operation, error) {
				if fromDisk == "image" {
					return e.svc.CreateImage(ctx, root, key, apitypes.CreateImageRequest{FolderID: f.ID, DiskID: d.ID, Name: "i"})
				}
				return e.svc.CreateSnapshot(ctx, root, key, apitypes.CreateSnapshotRequest{DiskID: d.ID, Name: "s"})
			}
			layers, disk := e.layerIDs(), e.rawRecord(rawDiskPrefix, uint64(ld))
			ops := len(must(e.svc.ListOperations(root, ListOperationsFilter{}, 0, ""))(t).Operations)
			var seq []byte
			setSeq := func(v []byte) {
				if err := e.store.Update(func(tx *storage.Txn) error { return tx.Set([]byte(keySeq), v) }); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.store.View(func(tx *storage.Txn) (err error) {
				b, err := tx.Get([]byte(keySeq))
				seq = bytes.Clone(b)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			setSeq([]byte("bad"))
			_, err := create("k")
			wantCode(t, err, apitypes.CodeDataLoss)
			e.checkNewLayers(layers, 0)
			if got := e.rawRecord(rawDiskPrefix, uint64(ld)); !bytes.Equal(got, disk) {
				t.Errorf("disk record changed by a failed snapshot: %s, was %s", got, disk)
			}
			setSeq(seq)
			if n := len(must(e.svc.ListOperations(root, ListOperationsFilter{}, 0, ""))(t).Operations); n != ops {
				t.Errorf("%d operations after a failed snapshot, want %d", n, ops)
			}
			if !bytes.Equal(e.readExport(root, d.ExportName), data) {
				t.Error("the disk does not read its data after a failed snapshot")
			}
			e.auditStore()
			op := e.done(root, must(create("k"))(t))
			lid := e.recordLayer(op)
			if h := e.holders(lid); h != 1 {
				t.Errorf("the recorded layer has %d holders, want 1", h)
			}
			again := must(create("k"))(t)
			if again.ID != op.ID {
				t.Errorf("a retry with the same key made operation %s, want %s", again.ID, op.ID)
			}
			e.checkNewLayers(layers, lid)
			if b := e.diskBase(ld); b != lid {
				t.Errorf("the disk is over layer %d, want the snapshot's %d", b, lid)
			}
			e.auditStore()
		})
	}
}

// TestSnapshotSameKeyConcurrentOneLayer: concurrent requests with one
// Idempotency-Key all pass the early check; the first to commit wins, the
// others find its key inside the switch transaction and abort it, so all
// return one operation and the disk was switched once.
func TestSnapshotSameKeyConcurrentOneLayer(t *testing.T) {
	e := newEnv(t, Config{})
	f := e.folder("f1")
	im := e.upload(root, UploadRequest{FolderID: f.ID}, pattern(64<<10, 4))
	d := e.disk(root, apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID, Size: 64 << 10})
	before := e.layerIDs()
	ops, errs := concurrently(8, func(int) (apitypes.Operation, error) {
		return e.svc.CreateSnapshot(context.Background(), root, "once", apitypes.CreateSnapshotRequest{DiskID: d.ID})
	})
	for i := range ops {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if ops[i].ID != ops[0].ID {
			t.Fatalf("request %d made operation %s, request 0 %s", i, ops[i].ID, ops[0].ID)
		}
	}
	lid := e.recordLayer(e.done(root, ops[0]))
	e.checkNewLayers(before, lid)
	if b := e.diskBase(e.layerDisk(d.ID)); b != lid {
		t.Errorf("the disk is over layer %d, want the snapshot's %d: a repeated request switched it", b, lid)
	}
	if h := e.holders(lid); h != 1 {
		t.Errorf("the snapshot's layer has %d holders, want 1", h)
	}
	e.auditStore()
}

// concurrently makes n calls of create at once and returns each one's
// operation and error, in call order.
func concurrently(n int, create func(i int) (apitypes.Operation, error)) ([]apitypes.Operation, []error) {
	ops := make([]apitypes.Operation, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { ops[i], errs[i] = create(i) })
	}
	wg.Wait()
	return ops, errs
}
