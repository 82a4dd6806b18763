package api

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"strata/api/apitypes"
	"strata/layer"
	"strata/layer/imagefile"
	"strata/storage"
)

// code returns the API code of err, "" for nil.
func code(err error) string {
	if err == nil {
		return ""
	}
	return toError(err).Code
}

const invalid = apitypes.CodeInvalidArgument

func TestValidateNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		want string
	}{
		{"", ""},
		{"a", ""},
		{"web-01", ""},
		{"web_01", ""},
		{"a" + strings.Repeat("b", 62), ""},
		{"a" + strings.Repeat("b", 63), invalid},
		{"Web", invalid},
		{"1web", invalid},
		{"web-", invalid},
		{"web_", invalid},
		{"-web", invalid},
		{"we b", invalid},
		{"web.x", invalid},
	} {
		if got := code(validateName(tc.name)); got != tc.want {
			t.Errorf("validateName(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestValidateFamilies(t *testing.T) {
	for _, tc := range []struct {
		family string
		want   string
	}{
		{"", ""}, // no family
		{"ubuntu", ""},
		{"ubuntu-2204-lts", ""},
		{"abc", ""},
		{"ab", invalid}, // at least 3 characters
		{"a" + strings.Repeat("b", 62), ""},
		{"a" + strings.Repeat("b", 63), invalid},
		{"ubuntu_22", invalid}, // no '_' in families
		{"Ubuntu", invalid},
		{"1ubuntu", invalid},
		{"ubuntu-", invalid},
	} {
		if got := code(validateFamily(tc.family)); got != tc.want {
			t.Errorf("validateFamily(%q) = %q, want %q", tc.family, got, tc.want)
		}
	}
}

func TestValidateLabels(t *testing.T) {
	many := map[string]string{}
	for i := range 65 {
		many["k"+strings.Repeat("x", i%10)+string(rune('a'+i%26))+strings.Repeat("y", i/26)] = "v"
	}
	if len(many) != 65 {
		t.Fatalf("test setup: %d labels", len(many))
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"none", nil, ""},
		{"simple", map[string]string{"env": "prod"}, ""},
		{"all key characters", map[string]string{`a-_./\@09z`: ""}, ""},
		{"empty value", map[string]string{"k": ""}, ""},
		{"uppercase key", map[string]string{"Env": "prod"}, invalid},
		{"key starts with digit", map[string]string{"1k": "v"}, invalid},
		{"empty key", map[string]string{"": "v"}, invalid},
		{"key of 63", map[string]string{"k" + strings.Repeat("a", 62): "v"}, ""},
		{"key of 64", map[string]string{"k" + strings.Repeat("a", 63): "v"}, invalid},
		{"value of 63", map[string]string{"k": strings.Repeat("a", 63)}, ""},
		{"value of 64", map[string]string{"k": strings.Repeat("a", 64)}, invalid},
		{"uppercase value", map[string]string{"k": "Prod"}, invalid},
		{"65 labels", many, invalid},
	} {
		if got := code(validateLabels(tc.labels)); got != tc.want {
			t.Errorf("%s: validateLabels = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestValidateDiskSizes(t *testing.T) {
	for _, tc := range []struct {
		size int64
		want string
	}{
		{4096, ""},
		{1 << 30, ""},
		{maxVolumeSize, ""},
		{0, invalid},
		{-4096, invalid},
		{4095, invalid},
		{4097, invalid},
		{maxVolumeSize + 4096, invalid},
	} {
		if got := code(validateDiskSize(tc.size)); got != tc.want {
			t.Errorf("validateDiskSize(%d) = %q, want %q", tc.size, got, tc.want)
		}
	}
}

func TestMinDiskSize(t *testing.T) {
	for _, tc := range []struct {
		given, virtual, want int64
		code                 string
	}{
		{0, 1 << 20, 1 << 20, ""},
		{0, 1000, 4096, ""}, // default rounds up to a whole block
		{2 << 20, 1 << 20, 2 << 20, ""},
		{1 << 20, 1 << 20, 1 << 20, ""},
		{512 << 10, 1 << 20, 0, invalid}, // below the virtual size
	} {
		got, err := minDisk(tc.given, tc.virtual)
		if code(err) != tc.code || got != tc.want {
			t.Errorf("minDisk(%d, %d) = %d, %q; want %d, %q", tc.given, tc.virtual, got, code(err), tc.want, tc.code)
		}
	}
}

func TestParseUpdateMask(t *testing.T) {
	allowed := []string{"name", "description", "labels", "minDiskSize"}
	immutable := []string{"family", "os", "os.type", "pooled"}
	for _, tc := range []struct {
		mask string
		want []string
		code string
		msg  string
	}{
		{"name", []string{"name"}, "", ""},
		{"name, description,labels", []string{"name", "description", "labels"}, "", ""},
		{"name,name", []string{"name"}, "", ""},
		{"", nil, invalid, "updateMask is empty"},
		{"  ", nil, invalid, "updateMask is empty"},
		{"family", nil, invalid, "cannot change after creation"},
		{"name,os.type", nil, invalid, "cannot change after creation"},
		{"pooled", nil, invalid, "cannot change after creation"},
		{"size", nil, invalid, "cannot be updated"},
		{"Name", nil, invalid, "cannot be updated"},
	} {
		got, err := parseUpdateMask(tc.mask, allowed, immutable)
		if code(err) != tc.code || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("parseUpdateMask(%q) = %v, %q; want %v, %q", tc.mask, got, code(err), tc.want, tc.code)
		}
		if err != nil && !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("parseUpdateMask(%q) message %q lacks %q", tc.mask, err, tc.msg)
		}
	}
}

func TestValidateBindings(t *testing.T) {
	b := func(role, typ, id string) apitypes.AccessBinding {
		return apitypes.AccessBinding{RoleID: role, Subject: apitypes.Subject{Type: typ, ID: id}}
	}
	for _, tc := range []struct {
		name string
		b    apitypes.AccessBinding
		want string
	}{
		{"user viewer", b(apitypes.RoleViewer, "unixUser", "1000"), ""},
		{"group editor", b(apitypes.RoleEditor, "unixGroup", "100"), ""},
		{"user admin", b(apitypes.RoleAdmin, "unixUser", "0"), ""},
		{"public images.user", b(apitypes.RoleImagesUser, "system", "allAuthenticatedUsers"), ""},
		{"public viewer", b(apitypes.RoleViewer, "system", "allAuthenticatedUsers"), ""},
		{"public editor", b(apitypes.RoleEditor, "system", "allAuthenticatedUsers"), invalid},
		{"public admin", b(apitypes.RoleAdmin, "system", "allAuthenticatedUsers"), invalid},
		{"allUsers", b(apitypes.RoleViewer, "system", "allUsers"), invalid},
		{"unknown system", b(apitypes.RoleViewer, "system", "everyone"), invalid},
		{"unknown role", b("compute.owner", "unixUser", "1000"), invalid},
		{"non-numeric uid", b(apitypes.RoleViewer, "unixUser", "alice"), invalid},
		{"unknown type", b(apitypes.RoleViewer, "userAccount", "1000"), invalid},
	} {
		if got := code(validateBinding(tc.b)); got != tc.want {
			t.Errorf("%s: validateBinding = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParseOS(t *testing.T) {
	for _, tc := range []struct{ in, want, code string }{
		{"", apitypes.OSLinux, ""},
		{"linux", apitypes.OSLinux, ""},
		{"WINDOWS", apitypes.OSWindows, ""},
		{"windows", apitypes.OSWindows, ""},
		{"macos", "", invalid},
	} {
		got, err := parseOS(tc.in, apitypes.OSLinux)
		if got != tc.want || code(err) != tc.code {
			t.Errorf("parseOS(%q) = %q, %q; want %q, %q", tc.in, got, code(err), tc.want, tc.code)
		}
	}
}

func TestParseFilter(t *testing.T) {
	for _, tc := range []struct {
		in, name string
		ok       bool
		code     string
	}{
		{"", "", false, ""},
		{`name="web"`, "web", true, ""},
		{` name = "web" `, "web", true, ""},
		{`family="x"`, "", false, invalid},
		{`name=web`, "", false, invalid},
	} {
		name, ok, err := parseFilter(tc.in)
		if name != tc.name || ok != tc.ok || code(err) != tc.code {
			t.Errorf("parseFilter(%q) = %q, %v, %q", tc.in, name, ok, code(err))
		}
	}
}

func TestPaginate(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e"}
	key := func(s string) string { return s }
	var got []string
	token := ""
	for pages := 0; ; pages++ {
		page, next, err := paginate(ids, 2, token, key, afterID)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		if next == "" {
			if pages != 2 {
				t.Errorf("%d pages, want 3", pages+1)
			}
			break
		}
		token = next
	}
	if strings.Join(got, "") != "abcde" {
		t.Errorf("paged %v", got)
	}
	if _, _, err := paginate(ids, maxPageSize+1, "", key, afterID); code(err) != invalid {
		t.Errorf("pageSize above the limit: %v", err)
	}
	if _, _, err := paginate(ids, -1, "", key, afterID); code(err) != invalid {
		t.Errorf("negative pageSize: %v", err)
	}
}

func TestErrorTranslation(t *testing.T) {
	for _, tc := range []struct {
		code   string
		status int
	}{
		{apitypes.CodeInvalidArgument, 400},
		{apitypes.CodeNotFound, 404},
		{apitypes.CodeAlreadyExists, 409},
		{apitypes.CodePermissionDenied, 403},
		{apitypes.CodeFailedPrecondition, 400},
		{apitypes.CodeResourceExhausted, 429},
		{apitypes.CodeDataLoss, 500},
		{apitypes.CodeUnauthenticated, 401},
	} {
		if got := apitypes.HTTPStatus(tc.code); got != tc.status {
			t.Errorf("HTTPStatus(%s) = %d, want %d", tc.code, got, tc.status)
		}
	}
	for _, tc := range []struct {
		err  error
		code string
	}{
		{fmt.Errorf("reading chunk 7: %w", storage.ErrCorrupt), apitypes.CodeDataLoss},
		{fmt.Errorf("delete: %w", layer.ErrBusy), apitypes.CodeFailedPrecondition},
		{fmt.Errorf("open: %w", layer.ErrNotFound), apitypes.CodeNotFound},
		{fmt.Errorf("import: %w", imagefile.ErrUnsafe), apitypes.CodeInternal}, // only importError knows files
		{importError(fmt.Errorf("x: %w", imagefile.ErrUnsafe)), invalid},
		{importError(fmt.Errorf("x: %w", imagefile.ErrFormatMismatch)), invalid},
		{importError(fmt.Errorf("x: %w", imagefile.ErrInvalid)), invalid},
		{errf(apitypes.CodeAborted, "x"), apitypes.CodeAborted},
		{fmt.Errorf("resize: %w", layer.ErrInvalid), invalid},
		{fmt.Errorf("overlay 3 block 9: %w", layer.ErrCorruptMeta), apitypes.CodeDataLoss},
		{fmt.Errorf("read: %w", layer.ErrClosed), apitypes.CodeUnavailable},
	} {
		if got := ErrorCode(tc.err); got != tc.code {
			t.Errorf("ErrorCode(%v) = %s, want %s", tc.err, got, tc.code)
		}
		// A known cause gets a sentence of its own, not the catch-all, and
		// stays reachable for errors.Is.
		if e := toError(tc.err); tc.code != apitypes.CodeInternal &&
			(e.Message == "" || strings.HasPrefix(e.Message, "internal error") || !errors.Is(e, tc.err)) {
			t.Errorf("toError(%v) = %q (cause kept: %v)", tc.err, e.Message, errors.Is(e, tc.err))
		}
	}
}
