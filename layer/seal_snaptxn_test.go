package layer

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"strata/storage"
)

// snapTxnEnv is a disk over an imported image with some writes in its
// overlay, and the disk's expected contents.
func snapTxnEnv(t *testing.T) (*env, DiskID, Volume, []byte) {
	t.Helper()
	e := newEnv(t, 16<<10)
	const size = 256 << 10
	img := bytes.Repeat([]byte("image!"), size/6+1)[:size]
	id := e.createDisk(e.importBytes(img), size, false)
	v := e.openDisk(id)
	model := bytes.Clone(img)
	p := bytes.Repeat([]byte{0xab}, 20000)
	if err := v.WriteAt(context.Background(), p, 5000, true); err != nil {
		t.Fatal(err)
	}
	copy(model[5000:], p)
	return e, id, v, model
}

// newLayers returns the layer records made since before (layers are only
// ever removed meanwhile, by the reaper).
func (e *env) newLayers(before map[LayerID]bool) []LayerID {
	e.t.Helper()
	var out []LayerID
	for id := range e.layerIDs() {
		if !before[id] {
			out = append(out, id)
		}
	}
	return out
}

// layerIDs returns the ids of the layer records in the store.
func (e *env) layerIDs() map[LayerID]bool {
	e.t.Helper()
	ids := map[LayerID]bool{}
	if err := e.store.View(func(tx *storage.Txn) error {
		return tx.Iterate(pfxLayer, func(k, _ []byte) error {
			ids[LayerID(keyID(pfxLayer, k, 0))] = true
			return nil
		})
	}); err != nil {
		e.t.Fatal(err)
	}
	return ids
}

// getKey returns the value of key, or nil when it is not set.
func (e *env) getKey(k string) []byte {
	e.t.Helper()
	var v []byte
	if err := e.store.View(func(tx *storage.Txn) error {
		b, err := tx.Get([]byte(k))
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		v = bytes.Clone(b)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// TestSnapshotWithinFailureCommitsNothing: when the caller's part of the
// switch transaction fails, its error comes back, no layer record and none
// of its writes exist, and the disk keeps its overlay: it reads and writes
// as before, also after a reopen, and a later snapshot holds its data.
func TestSnapshotWithinFailureCommitsNothing(t *testing.T) {
	ctx := context.Background()
	e, id, v, model := snapTxnEnv(t)
	layers := e.layerIDs()
	var before *diskMeta
	e.update(func(tx *storage.Txn) (err error) { before, err = getDiskMeta(tx, id); return err })

	boom := errors.New("catalog says no")
	var offered LayerID
	lid, err := e.m.SnapshotWith(ctx, id, func(tx *storage.Txn, l LayerID) error {
		offered = l
		if err := tx.Set([]byte("test/snaptxn"), []byte("written")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || lid != 0 {
		t.Fatalf("SnapshotWith = %d, %v; want 0, %v", lid, err, boom)
	}
	if got := e.newLayers(layers); len(got) != 0 {
		t.Fatalf("layers %v made by a failed snapshot", got)
	}
	if _, err := e.m.LayerInfo(offered); err == nil {
		t.Fatalf("layer %d exists after its snapshot failed", offered)
	}
	if b := e.getKey("test/snaptxn"); b != nil {
		t.Fatalf("within's write committed: %q", b)
	}
	var after *diskMeta
	e.update(func(tx *storage.Txn) (err error) { after, err = getDiskMeta(tx, id); return err })
	if *after != *before {
		t.Fatalf("disk record changed: %+v, was %+v", after, before)
	}
	if got := readAll(t, v); !bytes.Equal(got, model) {
		t.Fatalf("disk after a failed snapshot: %s", firstDiff(got, model))
	}
	p := bytes.Repeat([]byte{0xcd}, 9000)
	if err := v.WriteAt(ctx, p, 100000, true); err != nil {
		t.Fatal(err)
	}
	copy(model[100000:], p)
	if got := readAll(t, v); !bytes.Equal(got, model) {
		t.Fatalf("disk written after a failed snapshot: %s", firstDiff(got, model))
	}

	sid, err := e.m.Snapshot(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.WaitSealed(ctx, sid, nil); err != nil {
		t.Fatal(err)
	}
	v.Close()
	e.reopen()
	for name, vol := range map[string]func() (Volume, error){
		"disk":     func() (Volume, error) { return e.m.OpenDisk(id) },
		"snapshot": func() (Volume, error) { return e.m.OpenLayer(sid) },
	} {
		vv, err := vol()
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, vv); !bytes.Equal(got, model) {
			t.Fatalf("%s after reopen: %s", name, firstDiff(got, model))
		}
		vv.Close()
	}
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	e.audit()
}

// TestSnapshotWithinCommitsWithLayer: the caller's writes commit with the
// switch and name the layer SnapshotWith returns; the layer is held once.
func TestSnapshotWithinCommitsWithLayer(t *testing.T) {
	ctx := context.Background()
	e, id, v, model := snapTxnEnv(t)
	layers := e.layerIDs()
	lid, err := e.m.SnapshotWith(ctx, id, func(tx *storage.Txn, l LayerID) error {
		return tx.Set([]byte("test/snaptxn"), be64(uint64(l)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.getKey("test/snaptxn"), be64(uint64(lid)); !bytes.Equal(got, want) {
		t.Fatalf("within's record = %x, want %x (layer %d)", got, want, lid)
	}
	if got := e.newLayers(layers); len(got) != 1 || got[0] != lid {
		t.Fatalf("new layers %v, want [%d]", got, lid)
	}
	var lm *layerMeta
	e.update(func(tx *storage.Txn) (err error) { lm, err = getLayerMeta(tx, lid); return err })
	if lm.Holders != 1 {
		t.Fatalf("snapshot layer has %d holders, want 1", lm.Holders)
	}
	if err := e.m.WaitSealed(ctx, lid, nil); err != nil {
		t.Fatal(err)
	}
	lv, err := e.m.OpenLayer(lid)
	if err != nil {
		t.Fatal(err)
	}
	defer lv.Close()
	if got := readAll(t, lv); !bytes.Equal(got, model) {
		t.Fatalf("snapshot: %s", firstDiff(got, model))
	}
	v.Close()
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	e.audit()
}
