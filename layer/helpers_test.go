package layer

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"strata/storage"
)

// env is a store and a manager on a temp directory, reopenable.
type env struct {
	t     testing.TB
	dir   string
	chunk int
	store *storage.Store
	m     *Manager
	bench bool // store defaults (big value-log files), manager defaults
}

func newEnv(t testing.TB, chunk int) *env {
	e := &env{t: t, dir: t.TempDir(), chunk: chunk}
	e.open()
	t.Cleanup(e.close)
	return e
}

// storageTxn shortens signatures in tests.
type storageTxn = storage.Txn

func (e *env) open() {
	e.t.Helper()
	if err := e.tryOpen(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) tryOpen() error {
	o := storage.DefaultOptions()
	o.ChunkSize = e.chunk
	o.GCInterval = 0
	o.GCGrace = 0
	mo := Options{CacheBytes: 8 << 20}
	if e.bench {
		mo = DefaultOptions()
	} else {
		// Small value-log files, so GC in tests can give space back.
		o.ValueLogFileSize = 1 << 20
	}
	s, err := storage.Open(e.dir, o)
	if err != nil {
		return err
	}
	m, err := Open(s, mo)
	if err != nil {
		s.Close()
		return err
	}
	e.store, e.m = s, m
	return nil
}

func (e *env) close() {
	if e.m != nil {
		e.m.Close()
		e.m = nil
	}
	if e.store != nil {
		e.store.Close()
		e.store = nil
	}
}

func (e *env) reopen() {
	e.close()
	e.open()
}

func (e *env) update(fn func(tx *storage.Txn) error) {
	e.t.Helper()
	if err := e.store.Update(fn); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) createDisk(base LayerID, size int64, pooled bool) DiskID {
	e.t.Helper()
	var id DiskID
	e.update(func(tx *storage.Txn) (err error) {
		id, err = e.m.CreateDisk(tx, base, size, pooled)
		return err
	})
	return id
}

func (e *env) openDisk(id DiskID) Volume {
	e.t.Helper()
	v, err := e.m.OpenDisk(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *env) importBytes(data []byte) LayerID {
	e.t.Helper()
	p, err := e.m.Import(context.Background(), bytes.NewReader(data), int64(len(data)), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	var id LayerID
	e.update(func(tx *storage.Txn) (err error) {
		id, err = p.Commit(tx)
		return err
	})
	return id
}

// audit checks that every chunk count equals the references the maps hold.
func (e *env) audit() storage.AuditReport {
	e.t.Helper()
	rep, err := e.store.Audit(context.Background(), Refs(), true)
	if err != nil {
		e.t.Fatal(err)
	}
	if !rep.Clean() {
		e.t.Fatalf("audit not clean: %+v", rep)
	}
	return rep
}

// readAll reads a volume whole.
func readAll(t testing.TB, v Volume) []byte {
	t.Helper()
	p := make([]byte, v.Size())
	if err := v.ReadAt(context.Background(), p, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

func firstDiff(a, b []byte) string {
	if len(a) != len(b) {
		return fmt.Sprintf("length %d vs %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Sprintf("byte %d: got %#x want %#x", i, a[i], b[i])
		}
	}
	return "equal"
}
