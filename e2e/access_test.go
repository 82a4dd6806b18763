package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"strata/api/apitypes"
)

const (
	nobody   = 65534 // a user with roles granted during the test
	stranger = 65532 // a user with no roles at all
)

// TestAccessRolesAsOtherUsers runs the CLI and NBD clients as other uids
// (setpriv) against one daemon, which tells callers apart by the admin and
// NBD sockets' peer credentials. It shows what each role allows, a public
// image usable by everyone and deletable only by editors and admins, and
// that daemon-wide actions stay with daemon admins.
func TestAccessRolesAsOtherUsers(t *testing.T) {
	need(t, "setpriv", "nbdcopy", "nbdinfo", "qemu-io")
	if os.Getuid() != 0 {
		t.Fatal("this test runs the CLI as other users with setpriv and needs root (make test runs as root)")
	}
	work := sharedTempDir(t)
	d := startDaemon(t, filepath.Join(work, "data"), "--allow-windows-import")

	// A small image with recognisable content.
	content := bytes.Repeat([]byte("strata access test block\n"), 4*mib/25+1)[:4*mib]
	file := filepath.Join(work, "small.raw")
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	d.ok(t, -1, nil, "folder", "create", "shared")
	d.ok(t, -1, nil, "folder", "create", "mine")
	var priv, pub apitypes.Image
	d.ok(t, -1, &priv, "image", "import", file, "--folder", "shared", "--name", "private")
	// This daemon allows Windows uploads; the public image is one.
	d.ok(t, -1, &pub, "image", "import", file, "--folder", "shared", "--name", "public", "--os-type", "windows")
	if pub.OS.Type != apitypes.OSWindows {
		t.Fatalf("--os-type windows imported as %q", pub.OS.Type)
	}
	// nobody edits its own folder "mine".
	d.ok(t, -1, nil, "access", "add", "folder/mine", "--role", apitypes.RoleEditor, "--subject", "unixUser:65534")

	readsImage := func(uid int, export string) bool {
		t.Helper()
		out := filepath.Join(work, "read.raw")
		os.Remove(out)
		r := run(t, uid, "nbdcopy", d.uri(export), out)
		d.idle(t, export)
		if r.code != 0 {
			return false
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content) {
			t.Fatalf("%s read by uid %d differs from the imported file", export, uid)
		}
		return true
	}

	// No role: nothing is visible or usable.
	d.fails(t, nobody, apitypes.CodePermissionDenied, "image", "get", priv.ID)
	var list apitypes.ListImagesResponse
	d.ok(t, nobody, &list, "image", "list", "--folder", "shared")
	if len(list.Images) != 0 {
		t.Fatalf("uid %d without roles lists %d images in shared", nobody, len(list.Images))
	}
	d.fails(t, nobody, apitypes.CodePermissionDenied, "disk", "create", "--folder", "mine", "--image", priv.ID)
	if readsImage(nobody, priv.ExportName) {
		t.Fatalf("uid %d without roles read %s over NBD", nobody, priv.ExportName)
	}
	d.refused(t, priv.ExportName, "unixUser:65534", apitypes.CodePermissionDenied)

	// compute.viewer on the image: metadata only.
	d.ok(t, -1, nil, "access", "add", "image/"+priv.ID, "--role", apitypes.RoleViewer, "--subject", "unixUser:65534")
	var got apitypes.Image
	d.ok(t, nobody, &got, "image", "get", priv.ID)
	d.ok(t, nobody, &list, "image", "list", "--folder", "shared")
	if len(list.Images) != 1 || list.Images[0].ID != priv.ID {
		t.Fatalf("viewer lists %+v, want just %s", list.Images, priv.ID)
	}
	d.fails(t, nobody, apitypes.CodePermissionDenied, "disk", "create", "--folder", "mine", "--image", priv.ID)
	if readsImage(nobody, priv.ExportName) {
		t.Fatalf("a viewer read %s over NBD; viewers see metadata only", priv.ExportName)
	}
	d.fails(t, nobody, apitypes.CodePermissionDenied, "image", "delete", priv.ID)

	// compute.images.user: use as a source and read over NBD; no changes.
	d.ok(t, -1, nil, "access", "add", "image/"+priv.ID, "--role", apitypes.RoleImagesUser, "--subject", "unixUser:65534")
	var disk apitypes.Disk
	d.ok(t, nobody, &disk, "disk", "create", "--folder", "mine", "--image", priv.ID, "--name", "mydisk")
	if !readsImage(nobody, priv.ExportName) {
		t.Fatalf("an images.user could not read %s over NBD", priv.ExportName)
	}
	d.fails(t, nobody, apitypes.CodePermissionDenied, "image", "delete", priv.ID)
	d.fails(t, nobody, apitypes.CodePermissionDenied, "image", "update", priv.ID, "--description", "mine now")
	d.fails(t, nobody, apitypes.CodePermissionDenied, "access", "add", "image/"+priv.ID,
		"--role", apitypes.RoleViewer, "--subject", "unixUser:65532")
	// The disk in its own folder is nobody's to write; a stranger may not.
	d.nbdTool(t, nobody, disk.ExportName, "qemu-io", "-f", "raw", d.uri(disk.ExportName), "-c", "write -P 0x5a 0 4k")
	if r := run(t, stranger, "qemu-io", "-f", "raw", d.uri(disk.ExportName), "-c", "read 0 4k"); r.code == 0 {
		t.Fatalf("uid %d without roles opened %s", stranger, disk.ExportName)
	}
	d.refused(t, disk.ExportName, "unixUser:65532", apitypes.CodePermissionDenied)
	// NBD_OPT_LIST shows each user the exports it may open.
	listURI := "nbd+unix:///?socket=" + d.nbd
	if out := d.nbdTool(t, nobody, disk.ExportName, "nbdinfo", "--list", listURI); !strings.Contains(out, `"`+disk.ExportName+`"`) {
		t.Fatalf("the disk's editor does not see %s in the export list:\n%s", disk.ExportName, out)
	}
	if r := run(t, stranger, "nbdinfo", "--list", listURI); strings.Contains(r.stdout, disk.ExportName) {
		t.Fatalf("a user without roles sees %s in the export list:\n%s", disk.ExportName, r.stdout)
	}

	// A public image: every user may see and read it, nobody but editors
	// and admins may delete it.
	d.fails(t, -1, apitypes.CodeInvalidArgument, "access", "add", "image/"+pub.ID,
		"--role", apitypes.RoleImagesUser, "--subject", "system:allUsers")
	d.ok(t, -1, nil, "access", "add", "image/"+pub.ID, "--role", apitypes.RoleImagesUser,
		"--subject", "system:allAuthenticatedUsers")
	d.ok(t, stranger, &got, "image", "get", pub.ID)
	if !readsImage(stranger, pub.ExportName) {
		t.Fatalf("uid %d could not read the public image over NBD", stranger)
	}
	// nobody has no role on it, yet may make a disk of it in its own folder.
	var fromPub apitypes.Disk
	d.ok(t, nobody, &fromPub, "disk", "create", "--folder", "mine", "--image", pub.ID, "--name", "from-public")
	if fromPub.SourceImageID != pub.ID {
		t.Fatalf("disk from the public image: %+v", fromPub)
	}
	d.fails(t, stranger, apitypes.CodePermissionDenied, "image", "delete", pub.ID)
	d.fails(t, nobody, apitypes.CodePermissionDenied, "image", "delete", pub.ID)
	d.fails(t, stranger, apitypes.CodePermissionDenied, "image", "get", priv.ID)

	// compute.editor on the folder: change and delete, but not access.
	d.ok(t, -1, nil, "access", "add", "folder/shared", "--role", apitypes.RoleEditor, "--subject", "unixUser:65534")
	d.ok(t, nobody, &got, "image", "update", priv.ID, "--description", "edited by an editor")
	if got.Description != "edited by an editor" {
		t.Fatalf("update by an editor: description %q", got.Description)
	}
	d.fails(t, nobody, apitypes.CodePermissionDenied, "access", "set", "image/"+priv.ID)
	d.ok(t, nobody, nil, "image", "delete", pub.ID)
	d.fails(t, -1, apitypes.CodeNotFound, "image", "get", pub.ID)

	// compute.admin on the image: change its access, and delete it.
	d.ok(t, -1, nil, "access", "add", "image/"+priv.ID, "--role", apitypes.RoleAdmin, "--subject", "unixUser:65532")
	d.ok(t, stranger, nil, "access", "add", "image/"+priv.ID, "--role", apitypes.RoleViewer, "--subject", "unixGroup:100")
	var bindings apitypes.ListAccessBindingsResponse
	d.ok(t, stranger, &bindings, "access", "list", "image/"+priv.ID)
	found := false
	for _, b := range bindings.AccessBindings {
		found = found || (b.RoleID == apitypes.RoleViewer && b.Subject.Type == apitypes.SubjectUnixGroup && b.Subject.ID == "100")
	}
	if !found {
		t.Fatalf("binding added by an image admin is not listed: %+v", bindings.AccessBindings)
	}
	d.ok(t, stranger, nil, "image", "delete", priv.ID)
	// The disk made from it keeps its data and its writes.
	out := filepath.Join(work, "mydisk.raw")
	d.nbdTool(t, nobody, disk.ExportName, "nbdcopy", d.uri(disk.ExportName), out)
	gotDisk, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{0x5a}, 4096), content[4096:]...)
	if !bytes.Equal(gotDisk, want) {
		t.Fatal("the disk made from a deleted image does not read back its data and its write")
	}

	// Daemon-wide actions belong to daemon admins.
	d.fails(t, nobody, apitypes.CodePermissionDenied, "folder", "create", "another")
	d.fails(t, nobody, apitypes.CodePermissionDenied, "quota", "set", "--folder", "mine", apitypes.QuotaDiskPoolsCount+"=5")
}
