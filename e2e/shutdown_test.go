package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"

	"strata/api/apitypes"
)

// TestShutdownDuringUploadLeavesNoHalfImage sends SIGTERM while an upload
// is half sent: the daemon still stops cleanly within its shutdown
// timeout, and after a restart there is no half-made image, no operation
// left running, no quota held, and the name is free again.
func TestShutdownDuringUploadLeavesNoHalfImage(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--shutdown-timeout", "2s")
	d.ok(t, -1, nil, "folder", "create", "up")

	const size = 64 * mib
	pr, pw := io.Pipe()
	q := url.Values{"folderId": {"up"}, "name": {"partial"}, "format": {"raw"}}
	req, err := http.NewRequest(http.MethodPost, "http://strata/compute/v1/images:upload?"+q.Encode(), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	client := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dd net.Dialer
		return dd.DialContext(ctx, "unix", d.admin)
	}}}
	done := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				err = &uploadAccepted{string(body)}
			}
		}
		done <- err
	}()
	// An io.Pipe write returns only once the transport took the bytes, and
	// the socket buffers far less than this: the daemon is reading the body.
	if _, err := pw.Write(bytes.Repeat([]byte{0x42}, 8*mib)); err != nil {
		t.Fatalf("the daemon stopped reading the upload early: %v", err)
	}

	d.stop(t) // requires a clean exit
	// The transport returns only once its body writer stops reading.
	pw.CloseWithError(io.ErrClosedPipe)
	if err := <-done; err == nil {
		t.Fatal("a half-sent upload was answered with success")
	} else if ua, ok := err.(*uploadAccepted); ok {
		// The daemon may answer with an Operation before the body ends;
		// then that operation must not have succeeded (checked below).
		t.Logf("upload answered before shutdown: %s", ua.body)
	}

	d.start(t)
	var list apitypes.ListImagesResponse
	d.ok(t, -1, &list, "image", "list", "--folder", "up")
	if len(list.Images) != 0 {
		t.Fatalf("after a cut upload and a restart the folder holds %+v", list.Images)
	}
	var ops apitypes.ListOperationsResponse
	d.ok(t, -1, &ops, "operation", "list", "--folder", "up")
	for _, op := range ops.Operations {
		if !op.Done {
			t.Fatalf("operation %s (%s) still running after the restart", op.ID, op.Description)
		}
		if op.Metadata.ImageID != "" && op.Error == nil {
			t.Fatalf("upload operation %s succeeded with half its body", op.ID)
		}
	}
	var quotas apitypes.QuotaList
	d.ok(t, -1, &quotas, "quota", "get", "--folder", "up")
	for _, qu := range quotas.Quotas {
		if qu.Name == apitypes.QuotaImagesCount && qu.Usage != 0 {
			t.Fatalf("%s usage %d after a cut upload", qu.Name, qu.Usage)
		}
	}
	// The name is free: a complete upload of it works.
	file := filepath.Join(t.TempDir(), "whole.raw")
	must(t, "truncate", "-s", strconv.Itoa(4*mib), file)
	var img apitypes.Image
	d.ok(t, -1, &img, "image", "import", file, "--folder", "up", "--name", "partial")
	if img.Status != apitypes.StatusReady {
		t.Fatalf("re-upload: %+v", img)
	}
}

// uploadAccepted is a 200 answer to the cut upload.
type uploadAccepted struct{ body string }

func (u *uploadAccepted) Error() string { return "upload accepted: " + u.body }
