package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"strata/storage"
)

// storeWithLeak makes a store in dataDir holding one chunk whose count (1)
// no block map accounts for, and returns the chunk's id.
func storeWithLeak(t *testing.T, dataDir string) storage.ChunkID {
	t.Helper()
	s, err := storage.Open(filepath.Join(dataDir, "store"), storage.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := s.NewLease()
	defer l.Release()
	id, err := s.Put(bytes.Repeat([]byte("leaked "), 600)[:4096], l)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *storage.Txn) error { return tx.AddRef(id, 1) }); err != nil {
		t.Fatal(err)
	}
	return id
}

func runAudit(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs(append([]string{"audit"}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestAuditReportsALeakAndFails: a count no map accounts for is reported,
// by id, and the command fails; an empty store is clean.
func TestAuditReportsALeakAndFails(t *testing.T) {
	empty := t.TempDir()
	s, err := storage.Open(filepath.Join(empty, "store"), storage.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	out, err := runAudit(t, "--data-dir", empty, "--verify")
	if err != nil || !strings.HasSuffix(out, "clean\n") {
		t.Fatalf("audit of an empty store: %v\n%s", err, out)
	}

	dir := t.TempDir()
	id := storeWithLeak(t, dir)
	out, err = runAudit(t, "--data-dir", dir)
	if !errors.Is(err, errAuditFound) {
		t.Fatalf("audit of a leak: error %v\n%s", err, out)
	}
	if !strings.Contains(out, "leaked (count above the maps')       1 ") || !strings.Contains(out, "not checked (--verify)") || strings.Contains(out, "clean") {
		t.Fatalf("report:\n%s", out)
	}
	out, err = runAudit(t, "--data-dir", dir, "--format", "json", "--verify")
	if !errors.Is(err, errAuditFound) {
		t.Fatalf("json audit of a leak: error %v\n%s", err, out)
	}
	var rep auditJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json report: %v\n%s", err, out)
	}
	if rep.Clean || !rep.Verified || rep.Chunks != 1 || len(rep.Leaked) != 1 || rep.Leaked[0] != id ||
		len(rep.Missing)+len(rep.Dangling)+len(rep.Corrupt) != 0 || rep.Missing == nil {
		t.Fatalf("json report %+v, want only chunk %d leaked", rep, id)
	}
}

// TestAuditRefusesARunningDaemonsStore: the directory's lock keeps an
// audit off a store a daemon is using, and a directory without a store
// is an error, not a new store.
func TestAuditRefusesARunningDaemonsStore(t *testing.T) {
	dir := t.TempDir()
	storeWithLeak(t, dir)
	lock, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if _, err := runAudit(t, "--data-dir", dir); !errors.Is(err, errDataDirBusy) {
		t.Fatalf("audit under another's lock: %v", err)
	}
	if _, err := runAudit(t, "--data-dir", filepath.Join(dir, "none")); err == nil || !strings.Contains(err.Error(), "no store in") {
		t.Fatalf("audit of a directory without a store: %v", err)
	}
	if _, err := runAudit(t, "--data-dir", dir, "--format", "xml"); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Fatalf("audit --format xml: %v", err)
	}
}
