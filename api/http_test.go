package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"strata/api/apitypes"
)

// testUIDHeader lets a test act as another user over HTTP; only the test
// server honours it, the daemon never sees this wrapper.
const testUIDHeader = "X-Test-Uid"

type client struct {
	t    *testing.T
	http *http.Client
	uid  string // "" = the socket's own credentials
	key  string
}

// serve starts the API on a Unix socket with ConnContext, as the daemon
// does, and returns a client for it. The server stops with the test.
func serve(t *testing.T, e *env) *client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := e.svc.Handler()
	srv := &http.Server{
		ConnContext: ConnContext,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if v := r.Header.Get(testUIDHeader); v != "" {
				uid, _ := strconv.ParseUint(v, 10, 32)
				r = r.WithContext(WithIdentity(r.Context(), Identity{UID: uint32(uid), GID: uint32(uid), Known: true}))
			}
			h.ServeHTTP(w, r)
		}),
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, http: &http.Client{Transport: tr}}
}

func (c *client) as(uid uint32) *client {
	d := *c
	d.uid = strconv.FormatUint(uint64(uid), 10)
	return &d
}

// do sends a request and decodes a 200 answer into out; it returns the
// status and, for failures, the error body.
func (c *client) do(method, path string, body io.Reader, out any) (int, apitypes.Error) {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://strata"+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.uid != "" {
		req.Header.Set(testUIDHeader, c.uid)
	}
	if c.key != "" {
		req.Header.Set(apitypes.IdempotencyHeader, c.key)
	}
	res, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	var e apitypes.Error
	if res.StatusCode != http.StatusOK {
		if err := json.Unmarshal(b, &e); err != nil || e.Code == "" || e.Message == "" {
			c.t.Fatalf("%s %s: status %d with a body that is not an error: %s", method, path, res.StatusCode, b)
		}
		if want := apitypes.HTTPStatus(e.Code); want != res.StatusCode && res.StatusCode != http.StatusMethodNotAllowed {
			c.t.Errorf("%s %s: status %d for code %s, want %d", method, path, res.StatusCode, e.Code, want)
		}
		return res.StatusCode, e
	}
	switch o := out.(type) {
	case nil:
	case *[]byte:
		*o = b
	default:
		reflect.ValueOf(out).Elem().SetZero() // decode into a clean value, not over the last answer
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return res.StatusCode, e
}

// ok sends a JSON request that must succeed.
func (c *client) ok(method, path string, in, out any) {
	c.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	if st, e := c.do(method, path, body, out); st != http.StatusOK {
		c.t.Fatalf("%s %s: %d %s: %s", method, path, st, e.Code, e.Message)
	}
}

// fails sends a request that must fail with code.
func (c *client) fails(method, path string, in any, code string) apitypes.Error {
	c.t.Helper()
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case string:
		body = bytes.NewReader([]byte(v))
	default:
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	st, e := c.do(method, path, body, nil)
	if st == http.StatusOK || e.Code != code {
		c.t.Fatalf("%s %s: status %d code %q (%s), want %s", method, path, st, e.Code, e.Message, code)
	}
	return e
}

// wait polls GET /operation/{id} until done and returns it.
func (c *client) wait(op apitypes.Operation) apitypes.Operation {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !op.Done {
		if time.Now().After(deadline) {
			c.t.Fatalf("operation %s not done", op.ID)
		}
		time.Sleep(5 * time.Millisecond)
		c.ok("GET", "/operation/"+op.ID, nil, &op)
	}
	if op.Error != nil {
		c.t.Fatalf("operation %s failed: %s: %s", op.ID, op.Error.Code, op.Error.Message)
	}
	return op
}

func TestHTTPRoundTrip(t *testing.T) {
	e := newEnv(t, Config{})
	c := serve(t, e)
	var body []byte
	c.ok("GET", "/healthz", nil, &body)
	if string(body) != "ok\n" {
		t.Errorf("healthz: %q", body)
	}

	// Folders (the socket's credentials are the test process's: an admin).
	var op apitypes.Operation
	c.ok("POST", "/compute/v1/folders", apitypes.CreateFolderRequest{Name: "web"}, &op)
	f := resp[apitypes.Folder](t, op)
	c.fails("POST", "/compute/v1/folders", apitypes.CreateFolderRequest{Name: "web"}, apitypes.CodeAlreadyExists)
	c.as(20001).fails("POST", "/compute/v1/folders", apitypes.CreateFolderRequest{Name: "mine"}, apitypes.CodePermissionDenied)
	var fl apitypes.ListFoldersResponse
	c.ok("GET", "/compute/v1/folders", nil, &fl)
	if len(fl.Folders) != 1 || fl.Folders[0].ID != f.ID {
		t.Errorf("folders %+v", fl)
	}
	var got apitypes.Folder
	c.ok("GET", "/compute/v1/folders/web", nil, &got)
	if got.ID != f.ID || got.Status != apitypes.FolderActive {
		t.Errorf("folder by name %+v", got)
	}
	var ql apitypes.QuotaList
	c.ok("POST", "/compute/v1/folders/web/quotas", apitypes.SetQuotasRequest{Limits: map[string]int64{apitypes.QuotaDiskPoolsCount: 1}}, &op)
	c.ok("GET", "/compute/v1/folders/"+f.ID+"/quotas", nil, &ql)
	if quotaOf(ql, apitypes.QuotaDiskPoolsCount).Limit != 1 || len(ql.Quotas) != 5 {
		t.Errorf("quotas %+v", ql)
	}

	// Upload, then read it back.
	data := pattern(192<<10, 4)
	q := url.Values{"folderId": {"web"}, "name": {"base"}, "family": {"web-base"}, "format": {"raw"},
		"labels": {"env=test,tier=web"}, "pooled": {"true"}}
	if st, e := c.do("POST", "/compute/v1/images:upload?"+q.Encode(), bytes.NewReader(data), &op); st != http.StatusOK {
		t.Fatalf("upload: %d %+v", st, e)
	}
	im := resp[apitypes.Image](t, c.wait(op))
	if im.Name != "base" || im.Labels["tier"] != "web" || !im.Pooled || im.Checksum != sha(data) || im.Family != "web-base" {
		t.Errorf("uploaded image %+v", im)
	}
	var im2 apitypes.Image
	c.ok("GET", "/compute/v1/images/"+im.ID, nil, &im2)
	if im2.ID != im.ID || im2.Status != apitypes.StatusReady {
		t.Errorf("get image %+v", im2)
	}
	c.ok("POST", "/compute/v1/images", apitypes.CreateImageRequest{FolderID: f.ID, ImageID: im.ID, Name: "copy", Family: "web-base"}, &op)
	cp := resp[apitypes.Image](t, c.wait(op))
	var il apitypes.ListImagesResponse
	c.ok("GET", "/compute/v1/images?folderId=web&pageSize=1", nil, &il)
	if len(il.Images) != 1 || il.NextPageToken == "" {
		t.Fatalf("first page %+v", il)
	}
	first := il.Images[0].ID
	c.ok("GET", "/compute/v1/images?folderId=web&pageSize=1&pageToken="+il.NextPageToken, nil, &il)
	if len(il.Images) != 1 || il.NextPageToken != "" || il.Images[0].ID == first {
		t.Fatalf("second page %+v", il)
	}
	c.ok("GET", "/compute/v1/images?folderId=web&filter="+url.QueryEscape(`name="copy"`), nil, &il)
	if len(il.Images) != 1 || il.Images[0].ID != cp.ID {
		t.Errorf("filtered list %+v", il)
	}
	c.ok("GET", "/compute/v1/images:latestByFamily?folderId=web&family=web-base", nil, &im2)
	if im2.ID != cp.ID {
		t.Errorf("latestByFamily %s, want %s", im2.ID, cp.ID)
	}
	c.fails("GET", "/compute/v1/images:latestByFamily?folderId=web&family=none-such", nil, apitypes.CodeNotFound)
	c.ok("PATCH", "/compute/v1/images/"+cp.ID, apitypes.UpdateImageRequest{UpdateMask: "description", Description: "a copy"}, &op)
	if resp[apitypes.Image](t, op).Description != "a copy" {
		t.Errorf("update answered %s", op.Response)
	}
	c.fails("PATCH", "/compute/v1/images/"+cp.ID, map[string]any{"updateMask": "family", "family": "x"}, apitypes.CodeInvalidArgument)

	// Export, raw and qcow2.
	c.ok("GET", "/compute/v1/images/"+im.ID+":export?format=raw", nil, &body)
	if !bytes.Equal(body, data) {
		t.Error("raw export differs from the upload")
	}
	c.ok("GET", "/compute/v1/images/"+im.ID+":export?format=qcow2", nil, &body)
	checkQCOW2(t, body, data)
	c.fails("GET", "/compute/v1/images/"+im.ID+":export?format=vmdk", nil, apitypes.CodeInvalidArgument)

	// Disks.
	c.ok("POST", "/compute/v1/disks", apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID, Name: "d1"}, &op)
	d := resp[apitypes.Disk](t, c.wait(op))
	if !d.Pooled || d.Size != int64(len(data)) || d.ExportName != "disk/"+d.ID {
		t.Errorf("disk %+v", d)
	}
	c.ok("PATCH", "/compute/v1/disks/"+d.ID, apitypes.UpdateDiskRequest{UpdateMask: "size", Size: 1 << 20}, &op)
	var dg apitypes.Disk
	c.ok("GET", "/compute/v1/disks/"+d.ID, nil, &dg)
	if dg.Size != 1<<20 {
		t.Errorf("grown disk %+v", dg)
	}
	var dl apitypes.ListDisksResponse
	c.ok("GET", "/compute/v1/disks?folderId="+f.ID, nil, &dl)
	if len(dl.Disks) != 1 {
		t.Errorf("disks %+v", dl)
	}

	// Snapshots.
	c.ok("POST", "/compute/v1/snapshots", apitypes.CreateSnapshotRequest{DiskID: d.ID, Name: "s1"}, &op)
	sn := resp[apitypes.Snapshot](t, c.wait(op))
	if sn.Status != apitypes.StatusReady || sn.DiskSize != 1<<20 {
		t.Errorf("snapshot %+v", sn)
	}
	c.ok("GET", "/compute/v1/snapshots/"+sn.ID+":export", nil, &body)
	if !bytes.Equal(body[:len(data)], data) || len(body) != 1<<20 {
		t.Error("snapshot export differs from the disk")
	}
	var sl apitypes.ListSnapshotsResponse
	c.ok("GET", "/compute/v1/snapshots?folderId=web", nil, &sl)
	if len(sl.Snapshots) != 1 {
		t.Errorf("snapshots %+v", sl)
	}
	c.ok("PATCH", "/compute/v1/snapshots/"+sn.ID, apitypes.UpdateSnapshotRequest{UpdateMask: "labels", Labels: map[string]string{"k": "v"}}, &op)

	// Access bindings.
	c.as(20001).fails("GET", "/compute/v1/images/"+im.ID, nil, apitypes.CodePermissionDenied)
	c.ok("POST", "/compute/v1/folders/web:setAccessBindings", apitypes.SetAccessBindingsRequest{
		AccessBindings: []apitypes.AccessBinding{{RoleID: apitypes.RoleViewer, Subject: apitypes.Subject{Type: "unixUser", ID: "20001"}}}}, &op)
	c.as(20001).ok("GET", "/compute/v1/images/"+im.ID, nil, &im2)
	c.as(20001).fails("DELETE", "/compute/v1/images/"+im.ID, nil, apitypes.CodePermissionDenied)
	// A viewer sees metadata but may not read the data.
	c.as(20001).fails("GET", "/compute/v1/images/"+im.ID+":export", nil, apitypes.CodePermissionDenied)
	c.as(20001).ok("GET", "/compute/v1/folders/web/quotas", nil, &ql)
	c.as(20001).fails("POST", "/compute/v1/folders/web/quotas", apitypes.SetQuotasRequest{Limits: map[string]int64{apitypes.QuotaDisksCount: 9}}, apitypes.CodePermissionDenied)
	c.ok("POST", "/compute/v1/images/"+im.ID+":updateAccessBindings", apitypes.UpdateAccessBindingsRequest{
		AccessBindingDeltas: []apitypes.AccessBindingDelta{{Action: "ADD", AccessBinding: apitypes.AccessBinding{
			RoleID: apitypes.RoleImagesUser, Subject: apitypes.Subject{Type: "system", ID: "allAuthenticatedUsers"}}}}}, &op)
	var ab apitypes.ListAccessBindingsResponse
	c.ok("GET", "/compute/v1/images/"+im.ID+":listAccessBindings", nil, &ab)
	if len(ab.AccessBindings) != 1 || ab.AccessBindings[0].Subject.ID != "allAuthenticatedUsers" {
		t.Errorf("image bindings %+v", ab)
	}
	c.ok("GET", "/compute/v1/folders/"+f.ID+":listAccessBindings", nil, &ab)
	if len(ab.AccessBindings) != 1 || ab.AccessBindings[0].RoleID != apitypes.RoleViewer {
		t.Errorf("folder bindings %+v", ab)
	}
	c.fails("POST", "/compute/v1/images/"+im.ID+":setAccessBindings", apitypes.SetAccessBindingsRequest{
		AccessBindings: []apitypes.AccessBinding{{RoleID: apitypes.RoleViewer, Subject: apitypes.Subject{Type: "system", ID: "allUsers"}}}},
		apitypes.CodeInvalidArgument)
	c.ok("GET", "/compute/v1/disks/"+d.ID+":listAccessBindings", nil, &ab)
	c.ok("GET", "/compute/v1/snapshots/"+sn.ID+":listAccessBindings", nil, &ab)

	// Operations.
	var ol apitypes.ListOperationsResponse
	c.ok("GET", "/operation?folderId=web", nil, &ol)
	if len(ol.Operations) < 10 || ol.Operations[0].Description != "update access bindings" {
		t.Errorf("%d operations, newest %+v", len(ol.Operations), ol.Operations[0])
	}
	c.ok("GET", "/compute/v1/images/"+im.ID+"/operations", nil, &ol)
	if len(ol.Operations) != 2 {
		t.Errorf("image operations %+v", ol)
	}
	c.ok("POST", "/operation/"+op.ID+":cancel", nil, &op)
	if !op.Done || op.Error != nil {
		t.Errorf("cancelling a done operation changed it: %+v", op)
	}
	c.fails("GET", "/operation/oprnope", nil, apitypes.CodeNotFound)

	// Idempotency over HTTP.
	k := *c
	k.key = "disk-2"
	var op1, op2 apitypes.Operation
	k.ok("POST", "/compute/v1/disks", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 4096}, &op1)
	k.ok("POST", "/compute/v1/disks", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 4096}, &op2)
	if op1.ID != op2.ID {
		t.Errorf("Idempotency-Key: operations %s and %s", op1.ID, op2.ID)
	}

	// Errors are JSON with codes and statuses.
	c.fails("GET", "/compute/v1/images/imgnope", nil, apitypes.CodeNotFound)
	c.fails("POST", "/compute/v1/disks", `{"folderId": "web", "sise": 4096}`, apitypes.CodeInvalidArgument)
	c.fails("POST", "/compute/v1/disks", `not json`, apitypes.CodeInvalidArgument)
	c.fails("GET", "/compute/v1/instances", nil, apitypes.CodeNotFound)
	c.fails("GET", "/compute/v1/images/x/y/z", nil, apitypes.CodeNotFound)
	c.fails("PUT", "/compute/v1/images/"+im.ID, nil, apitypes.CodeUnimplemented)
	c.fails("GET", "/compute/v1/images?folderId=web&pageSize=5000", nil, apitypes.CodeInvalidArgument)
	c.fails("GET", "/compute/v1/images?folderId=web&filter=family%3Dx", nil, apitypes.CodeInvalidArgument)
	c.fails("DELETE", "/compute/v1/folders/web", nil, apitypes.CodeFailedPrecondition)

	// Deletes.
	c.ok("DELETE", "/compute/v1/snapshots/"+sn.ID, nil, &op)
	c.ok("DELETE", "/compute/v1/disks/"+d.ID, nil, &op)
	c.ok("DELETE", "/compute/v1/disks/"+resp[apitypes.Disk](t, op1).ID, nil, &op)
	c.ok("DELETE", "/compute/v1/images/"+im.ID, nil, &op)
	c.ok("DELETE", "/compute/v1/images/"+cp.ID, nil, &op)
	c.ok("DELETE", "/compute/v1/folders/web", nil, &op)
	c.fails("GET", "/compute/v1/folders/web", nil, apitypes.CodeNotFound)
}

// checkQCOW2 has qemu-img read the exported file and compare it with the
// raw content.
func checkQCOW2(t *testing.T, file, raw []byte) {
	t.Helper()
	dir := t.TempDir()
	q, r := filepath.Join(dir, "x.qcow2"), filepath.Join(dir, "x.raw")
	if err := os.WriteFile(q, file, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "-q", q}, {"compare", "-q", "-f", "qcow2", "-F", "raw", q, r}} {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Errorf("qemu-img %v: %v: %s", args, err, out)
		}
	}
}

// TestConnContextReadsPeerCredentials checks the identity the daemon
// installs comes from the socket: the test process's own uid and pid.
func TestConnContextReadsPeerCredentials(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan Identity, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- Identity{}
			return
		}
		defer c.Close()
		got <- IdentityFrom(ConnContext(context.Background(), c))
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := <-got
	if !id.Known || id.UID != uint32(os.Getuid()) || id.GID != uint32(os.Getgid()) || id.PID != int32(os.Getpid()) {
		t.Errorf("peer identity %+v, want uid %d gid %d pid %d", id, os.Getuid(), os.Getgid(), os.Getpid())
	}
	if id.Subject() != fmt.Sprintf("unixUser:%d", os.Getuid()) {
		t.Errorf("subject %s", id.Subject())
	}
	// A TCP connection has no peer credentials.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	go func() {
		c, err := tl.Accept()
		if err == nil {
			got <- IdentityFrom(ConnContext(context.Background(), c))
			c.Close()
		}
	}()
	tc, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if id := <-got; id.Known {
		t.Errorf("TCP peer has an identity: %+v", id)
	}
}

// TestHTTPRefusedUploadAnswersBeforeTheBody checks that a refused upload
// (here: the pooled quota) answers at once with its error, without the
// daemon reading the file, however large.
func TestHTTPRefusedUploadAnswersBeforeTheBody(t *testing.T) {
	e := newEnv(t, Config{})
	c := serve(t, e)
	var op apitypes.Operation
	c.ok("POST", "/compute/v1/folders", apitypes.CreateFolderRequest{Name: "web"}, &op)
	body := &countingReader{r: bytes.NewReader(make([]byte, 64<<20))}
	st, er := c.do("POST", "/compute/v1/images:upload?folderId=web&pooled=true", body, nil)
	if st != http.StatusTooManyRequests || er.Code != apitypes.CodeResourceExhausted {
		t.Fatalf("pooled upload: %d %+v", st, er)
	}
	if n := body.n.Load(); n >= 64<<20 {
		t.Errorf("the whole %d-byte body was sent before the refusal", n)
	}
	// The connection is usable again for the next call.
	c.ok("GET", "/compute/v1/folders/web", nil, nil)
}

// countingReader counts what the client's write loop took of a body.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
