package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"strata/api/apitypes"
	"strata/cmd/internal/units"
)

func TestDecodeError(t *testing.T) {
	for _, tc := range []struct {
		name         string
		status       int
		body         string
		code, substr string
	}{
		{"api error", 429, `{"code":"RESOURCE_EXHAUSTED","message":"raise compute.diskPools.count"}`, "RESOURCE_EXHAUSTED", "raise"},
		{"numeric grpc code", 404, `{"code":5,"message":"no such image"}`, "NOT_FOUND", "no such image"},
		{"nested error", 403, `{"error":{"code":"PERMISSION_DENIED","message":"ask an admin"}}`, "PERMISSION_DENIED", "ask an admin"},
		{"plain text", 502, "bad gateway\n", "BAD_GATEWAY", "bad gateway"},
		{"unknown status", 599, "", "HTTP_599", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeError(tc.status, []byte(tc.body))
			var ae *apiError
			if !errors.As(err, &ae) || ae.Code != tc.code || !strings.Contains(ae.Message, tc.substr) {
				t.Fatalf("decodeError(%d, %q) = %#v; want code %s", tc.status, tc.body, err, tc.code)
			}
			if !strings.HasPrefix(err.Error(), tc.code) {
				t.Fatalf("message %q must start with the code", err.Error())
			}
		})
	}
}

func TestParseBindingsAndResources(t *testing.T) {
	b, err := parseBinding("compute.viewer=unixUser:1000")
	if err != nil || b.RoleID != apitypes.RoleViewer || b.Subject != (apitypes.Subject{Type: "unixUser", ID: "1000"}) {
		t.Fatalf("binding: %+v %v", b, err)
	}
	for in, want := range map[string]apitypes.Subject{
		"unixGroup:100":                {Type: "unixGroup", ID: "100"},
		"system:allAuthenticatedUsers": {Type: "system", ID: "allAuthenticatedUsers"},
		"allAuthenticatedUsers":        {Type: "system", ID: "allAuthenticatedUsers"},
	} {
		if got, err := parseSubject(in); err != nil || got != want {
			t.Errorf("parseSubject(%q) = %+v %v", in, got, err)
		}
	}
	for _, bad := range []string{"alice", "unixUser:", ""} {
		if _, err := parseSubject(bad); err == nil {
			t.Errorf("parseSubject(%q) accepted", bad)
		}
	}
	if _, err := parseBinding("compute.viewer"); err == nil {
		t.Error("binding without subject accepted")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"image/img1"}, "/compute/v1/images/img1"},
		{[]string{"folder", "f1"}, "/compute/v1/folders/f1"},
		{[]string{"disk/d 1"}, "/compute/v1/disks/d%201"},
		{[]string{"snapshot/s1"}, "/compute/v1/snapshots/s1"},
	} {
		if got, err := resourcePath(tc.args); err != nil || got != tc.want {
			t.Errorf("resourcePath(%v) = %q %v; want %q", tc.args, got, err, tc.want)
		}
	}
	for _, bad := range [][]string{{"img1"}, {"vm/x"}, {"a", "b", "c"}} {
		if _, err := resourcePath(bad); err == nil {
			t.Errorf("resourcePath(%v) accepted", bad)
		}
	}
}

func TestCLISizes(t *testing.T) {
	for in, want := range map[string]int64{"10G": 10 << 30, "512MiB": 512 << 20, "1073741824": 1 << 30, "80M": 80 << 20} {
		if got, err := units.ParseSize(in); err != nil || got != want {
			t.Errorf("units.ParseSize(%q) = %d %v", in, got, err)
		}
	}
	if _, err := units.ParseSize("big"); err == nil {
		t.Error("parseSize accepted a word")
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 64 << 20: "64.0 MiB", 3 << 40: "3.0 TiB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestOutputFormats(t *testing.T) {
	img := apitypes.Image{ID: "img1", Name: "base", Family: "deb", Status: "READY", VirtualSize: 1 << 30}
	for format, check := range map[string]func(string) bool{
		"id": func(s string) bool { return s == "img1\n" },
		"json": func(s string) bool {
			var i apitypes.Image
			return json.Unmarshal([]byte(s), &i) == nil && i.ID == "img1"
		},
		"table": func(s string) bool { return strings.Contains(s, "NAME") && strings.Contains(s, "1.0 GiB") },
	} {
		var out bytes.Buffer
		a := &app{format: format, stdout: &out}
		if err := a.printImage(img); err != nil || !check(out.String()) {
			t.Errorf("format %s printed %q (%v)", format, out.String(), err)
		}
		out.Reset()
		if err := printList(a, apitypes.ListImagesResponse{Images: []apitypes.Image{img}}, []apitypes.Image{img}, imageColumns); err != nil {
			t.Fatal(err)
		}
		if format == "id" && out.String() != "img1\n" {
			t.Errorf("list -o id printed %q", out.String())
		}
	}
}

func TestOperationErrorBecomesExitError(t *testing.T) {
	op := apitypes.Operation{ID: "op1", Done: true, Error: &apitypes.Status{Code: "RESOURCE_EXHAUSTED", Message: "quota"}}
	err := opError(&op)
	var ae *apiError
	if !errors.As(err, &ae) || ae.Code != "RESOURCE_EXHAUSTED" || ae.HTTPStatus != http.StatusTooManyRequests {
		t.Fatalf("opError: %#v", err)
	}
	if opError(&apitypes.Operation{Done: true}) != nil {
		t.Fatal("a successful operation is not an error")
	}
}
