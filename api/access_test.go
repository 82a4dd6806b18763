package api

import (
	"context"
	"testing"

	"strata/api/apitypes"
)

var eve = Identity{UID: 20005, GID: 20005, PID: 105, Known: true}

// TestRoles checks what each role allows on a folder's image, acting as
// each user directly (the CLI's tests do the same through setpriv).
func TestRoles(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	f := e.folder("team")
	mine := e.folder("mine") // where alice..carol are editors, to make disks
	im := e.upload(root, UploadRequest{FolderID: f.ID, Name: "base", Family: "base"}, pattern(64<<10, 1))
	group := apitypes.AccessBinding{RoleID: apitypes.RoleEditor, Subject: apitypes.Subject{Type: apitypes.SubjectUnixGroup, ID: "20100"}}
	must(e.svc.SetAccessBindings(root, "", KindFolders, f.ID, apitypes.SetAccessBindingsRequest{AccessBindings: []apitypes.AccessBinding{
		bind(apitypes.RoleViewer, alice), bind(apitypes.RoleImagesUser, bob), group, bind(apitypes.RoleAdmin, eve),
	}}))(t)
	var editors []apitypes.AccessBinding
	for _, id := range []Identity{alice, bob, carol, dave, eve} {
		editors = append(editors, bind(apitypes.RoleEditor, id))
	}
	must(e.svc.SetAccessBindings(root, "", KindFolders, mine.ID, apitypes.SetAccessBindingsRequest{AccessBindings: editors}))(t)

	const ok, denied = "", apitypes.CodePermissionDenied
	type action struct {
		name string
		do   func(Identity) error
	}
	actions := []action{
		{"get", func(c Identity) error { _, err := e.svc.GetImage(c, im.ID); return err }},
		{"latestByFamily", func(c Identity) error { _, err := e.svc.LatestByFamily(c, f.ID, "base"); return err }},
		{"listAccessBindings", func(c Identity) error { _, err := e.svc.ListAccessBindings(c, KindImages, im.ID); return err }},
		{"read over NBD", func(c Identity) error {
			v, err := e.svc.OpenExport(ctx, im.ExportName, c)
			if err == nil {
				v.Close()
			}
			return err
		}},
		{"disk from it elsewhere", func(c Identity) error {
			_, err := e.svc.CreateDisk(c, "", apitypes.CreateDiskRequest{FolderID: mine.ID, ImageID: im.ID})
			return err
		}},
		{"disk in its folder", func(c Identity) error {
			_, err := e.svc.CreateDisk(c, "", apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: im.ID})
			return err
		}},
		{"update", func(c Identity) error {
			_, err := e.svc.UpdateImage(c, "", im.ID, apitypes.UpdateImageRequest{UpdateMask: "description", Description: "x"})
			return err
		}},
		{"set access", func(c Identity) error {
			_, err := e.svc.UpdateAccessBindings(c, "", KindImages, im.ID, apitypes.UpdateAccessBindingsRequest{AccessBindingDeltas: []apitypes.AccessBindingDelta{
				{Action: apitypes.ActionAdd, AccessBinding: bind(apitypes.RoleViewer, Identity{UID: 29999})}}})
			return err
		}},
		{"set quotas", func(c Identity) error {
			_, err := e.svc.SetQuotas(c, "", f.ID, apitypes.SetQuotasRequest{Limits: map[string]int64{apitypes.QuotaDisksCount: 50}})
			return err
		}},
		{"create folder", func(c Identity) error {
			_, err := e.svc.CreateFolder(c, "", apitypes.CreateFolderRequest{Name: "new" + uidString(c.UID)})
			return err
		}},
	}
	for _, tc := range []struct {
		who  string
		id   Identity
		want []string // per action, in order
	}{
		{"viewer", alice, []string{ok, ok, ok, denied, denied, denied, denied, denied, denied, denied}},
		{"images.user", bob, []string{ok, ok, ok, ok, ok, denied, denied, denied, denied, denied}},
		{"editor by group", carol, []string{ok, ok, ok, ok, ok, ok, ok, denied, denied, denied}},
		{"admin", eve, []string{ok, ok, ok, ok, ok, ok, ok, ok, denied, denied}},
		{"nobody", dave, []string{denied, apitypes.CodeNotFound, denied, denied, denied, denied, denied, denied, denied, denied}},
		{"daemon admin", root, []string{ok, ok, ok, ok, ok, ok, ok, ok, ok, ok}},
		{"no credentials", anon, []string{apitypes.CodeUnauthenticated, apitypes.CodeUnauthenticated, apitypes.CodeUnauthenticated,
			apitypes.CodeUnauthenticated, apitypes.CodeUnauthenticated, apitypes.CodeUnauthenticated, apitypes.CodeUnauthenticated,
			apitypes.CodeUnauthenticated, apitypes.CodeUnauthenticated, apitypes.CodeUnauthenticated}},
	} {
		for i, a := range actions {
			if got := code(a.do(tc.id)); got != tc.want[i] {
				t.Errorf("%s: %s: got %q, want %q", tc.who, a.name, got, tc.want[i])
			}
		}
	}
	// Deleting: an images.user may not, an editor may.
	_, err := e.svc.DeleteImage(bob, "", im.ID)
	wantCode(t, err, denied)
	must(e.svc.DeleteImage(carol, "", im.ID))(t)
}

func TestPublicImage(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	f := e.folder("vendor")
	other := e.folder("other")
	pub := e.upload(root, UploadRequest{FolderID: f.ID, Name: "pub", Family: "pub"}, pattern(64<<10, 1))
	priv := e.upload(root, UploadRequest{FolderID: f.ID, Name: "priv"}, pattern(64<<10, 2))
	must(e.svc.SetAccessBindings(root, "", KindFolders, other.ID, apitypes.SetAccessBindingsRequest{
		AccessBindings: []apitypes.AccessBinding{bind(apitypes.RoleEditor, dave)}}))(t)
	must(e.svc.SetAccessBindings(root, "", KindFolders, f.ID, apitypes.SetAccessBindingsRequest{
		AccessBindings: []apitypes.AccessBinding{bind(apitypes.RoleEditor, carol)}}))(t)

	everyone := apitypes.Subject{Type: apitypes.SubjectSystem, ID: apitypes.SystemAllAuthenticatedUsers}
	for _, tc := range []struct {
		name string
		b    apitypes.AccessBinding
	}{
		{"allUsers", apitypes.AccessBinding{RoleID: apitypes.RoleImagesUser, Subject: apitypes.Subject{Type: apitypes.SubjectSystem, ID: apitypes.SystemAllUsers}}},
		{"public editor", apitypes.AccessBinding{RoleID: apitypes.RoleEditor, Subject: everyone}},
	} {
		_, err := e.svc.SetAccessBindings(root, "", KindImages, pub.ID, apitypes.SetAccessBindingsRequest{AccessBindings: []apitypes.AccessBinding{tc.b}})
		wantCode(t, err, invalid)
		_, err = e.svc.UpdateAccessBindings(root, "", KindImages, pub.ID, apitypes.UpdateAccessBindingsRequest{
			AccessBindingDeltas: []apitypes.AccessBindingDelta{{Action: apitypes.ActionAdd, AccessBinding: tc.b}}})
		wantCode(t, err, invalid)
	}
	must(e.svc.UpdateAccessBindings(root, "", KindImages, pub.ID, apitypes.UpdateAccessBindingsRequest{
		AccessBindingDeltas: []apitypes.AccessBindingDelta{{Action: apitypes.ActionAdd,
			AccessBinding: apitypes.AccessBinding{RoleID: apitypes.RoleImagesUser, Subject: everyone}}}}))(t)

	// Everyone sees and uses it, and only it.
	for _, who := range []Identity{alice, dave} {
		must(e.svc.GetImage(who, pub.ID))(t)
		_, err := e.svc.GetImage(who, priv.ID)
		wantCode(t, err, apitypes.CodePermissionDenied)
		list := must(e.svc.ListImages(who, f.ID, 0, "", ""))(t)
		if len(list.Images) != 1 || list.Images[0].ID != pub.ID {
			t.Errorf("uid %d lists %+v, want only the public image", who.UID, list.Images)
		}
		if got := must(e.svc.LatestByFamily(who, f.ID, "pub"))(t); got.ID != pub.ID {
			t.Errorf("latestByFamily for uid %d: %s", who.UID, got.ID)
		}
		v := must(e.svc.OpenExport(ctx, pub.ExportName, who))(t)
		v.Close()
		_, err = e.svc.DeleteImage(who, "", pub.ID)
		wantCode(t, err, apitypes.CodePermissionDenied)
		_, err = e.svc.UpdateImage(who, "", pub.ID, apitypes.UpdateImageRequest{UpdateMask: "name", Name: "mine"})
		wantCode(t, err, apitypes.CodePermissionDenied)
	}
	// dave makes a disk from it in his folder; not in the vendor's.
	d := e.disk(dave, apitypes.CreateDiskRequest{FolderID: other.ID, ImageID: pub.ID})
	if d.SourceImageID != pub.ID {
		t.Errorf("disk %+v", d)
	}
	_, err := e.svc.CreateDisk(dave, "", apitypes.CreateDiskRequest{FolderID: f.ID, ImageID: pub.ID})
	wantCode(t, err, apitypes.CodePermissionDenied)
	// The folder's editor deletes it; dave's disk keeps working.
	must(e.svc.DeleteImage(carol, "", pub.ID))(t)
	v := must(e.svc.OpenExport(ctx, d.ExportName, dave))(t)
	v.Close()
	// Operations: visible to their maker and to the folder's members.
	op := must(e.svc.CreateDisk(carol, "", apitypes.CreateDiskRequest{FolderID: f.ID, Size: 4096}))(t)
	must(e.svc.GetOperation(carol, op.ID))(t)
	must(e.svc.GetOperation(root, op.ID))(t)
	_, err = e.svc.GetOperation(dave, op.ID)
	wantCode(t, err, apitypes.CodePermissionDenied)
	_, err = e.svc.ListOperations(dave, ListOperationsFilter{FolderID: f.ID}, 0, "")
	wantCode(t, err, apitypes.CodePermissionDenied)
	// Folders: listed to those with a role on them.
	fl := must(e.svc.ListFolders(dave, 0, "", ""))(t)
	if len(fl.Folders) != 1 || fl.Folders[0].ID != other.ID {
		t.Errorf("dave lists folders %+v", fl.Folders)
	}
}
