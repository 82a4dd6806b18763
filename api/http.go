package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"strata/api/apitypes"
)

// maxJSONBody bounds request bodies other than uploads.
const maxJSONBody = 1 << 20

// Handler returns the HTTP/JSON API (routes in package apitypes). The
// caller's identity comes from the request context (ConnContext on the
// Unix socket, or WithIdentity).
func (s *Service) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

// request is one call being served.
type request struct {
	s      *Service
	w      http.ResponseWriter
	r      *http.Request
	caller Identity
	key    string
}

func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request) {
	q := &request{s: s, w: w, r: r, caller: IdentityFrom(r.Context()), key: r.Header.Get(apitypes.IdempotencyHeader)}
	path := r.URL.Path
	switch {
	case path == "/healthz":
		if q.method(http.MethodGet) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "ok\n")
		}
	case path == "/operation" || path == "/operations":
		if q.method(http.MethodGet) {
			res, err := s.ListOperations(q.caller, ListOperationsFilter{FolderID: q.query("folderId")}, q.pageSize(), q.query("pageToken"))
			q.reply(res, err)
		}
	case strings.HasPrefix(path, "/operation/") || strings.HasPrefix(path, "/operations/"):
		_, rest, _ := strings.Cut(path[1:], "/")
		id, verb, _ := strings.Cut(rest, ":")
		switch verb {
		case "":
			if q.method(http.MethodGet) {
				q.reply(s.GetOperation(q.caller, id))
			}
		case "cancel":
			if q.method(http.MethodPost) {
				q.reply(s.CancelOperation(q.caller, id))
			}
		default:
			q.fail(errNoRoute(path))
		}
	case strings.HasPrefix(path, "/compute/v1/"):
		q.compute(strings.TrimPrefix(path, "/compute/v1/"))
	default:
		q.fail(errNoRoute(path))
	}
}

func errNoRoute(path string) error {
	return errf(apitypes.CodeNotFound, "no API route %s; see the route list in the strata documentation (package apitypes)", path)
}

// compute routes /compute/v1/{kind}[:verb][/{id}[:verb]][/{sub}].
func (q *request) compute(rest string) {
	parts := strings.Split(rest, "/")
	kind, verb, _ := strings.Cut(parts[0], ":")
	switch kind {
	case KindFolders, KindImages, KindDisks, KindSnapshots:
	default:
		q.fail(errNoRoute(q.r.URL.Path))
		return
	}
	switch len(parts) {
	case 1:
		q.collection(kind, verb)
	case 2:
		id, verb, _ := strings.Cut(parts[1], ":")
		q.item(kind, id, verb)
	case 3:
		q.sub(kind, parts[1], parts[2])
	default:
		q.fail(errNoRoute(q.r.URL.Path))
	}
}

func (q *request) collection(kind, verb string) {
	s, c := q.s, q.caller
	m := q.r.Method
	switch {
	case verb == "" && m == http.MethodGet:
		folder, size, token, filter := q.query("folderId"), q.pageSize(), q.query("pageToken"), q.query("filter")
		switch kind {
		case KindFolders:
			q.reply(s.ListFolders(c, size, token, filter))
		case KindImages:
			q.reply(s.ListImages(c, folder, size, token, filter))
		case KindDisks:
			q.reply(s.ListDisks(c, folder, size, token, filter))
		case KindSnapshots:
			q.reply(s.ListSnapshots(c, folder, size, token, filter))
		}
	case verb == "" && m == http.MethodPost:
		switch kind {
		case KindFolders:
			var req apitypes.CreateFolderRequest
			if q.decode(&req) {
				q.reply(s.CreateFolder(c, q.key, req))
			}
		case KindImages:
			var req apitypes.CreateImageRequest
			if q.decode(&req) {
				q.reply(s.CreateImage(q.r.Context(), c, q.key, req))
			}
		case KindDisks:
			var req apitypes.CreateDiskRequest
			if q.decode(&req) {
				q.reply(s.CreateDisk(c, q.key, req))
			}
		case KindSnapshots:
			var req apitypes.CreateSnapshotRequest
			if q.decode(&req) {
				q.reply(s.CreateSnapshot(q.r.Context(), c, q.key, req))
			}
		}
	case kind == KindImages && verb == "latestByFamily":
		if q.method(http.MethodGet) {
			q.reply(s.LatestByFamily(c, q.query("folderId"), q.query("family")))
		}
	case kind == KindImages && verb == "upload":
		if q.method(http.MethodPost) {
			req, err := q.uploadRequest()
			var op apitypes.Operation
			if err == nil {
				op, err = s.UploadImage(q.r.Context(), c, q.key, req, q.r.Body)
			}
			if err != nil {
				// The body may be unread (a refusal comes first): do not
				// keep a connection with a half-sent file on it.
				q.w.Header().Set("Connection", "close")
			}
			q.reply(op, err)
		}
	case verb == "":
		q.badMethod("GET, POST")
	default:
		q.fail(errNoRoute(q.r.URL.Path))
	}
}

func (q *request) item(kind, id, verb string) {
	s, c := q.s, q.caller
	m := q.r.Method
	switch verb {
	case "":
		switch m {
		case http.MethodGet:
			switch kind {
			case KindFolders:
				q.reply(s.GetFolder(c, id))
			case KindImages:
				q.reply(s.GetImage(c, id))
			case KindDisks:
				q.reply(s.GetDisk(c, id))
			case KindSnapshots:
				q.reply(s.GetSnapshot(c, id))
			}
		case http.MethodPatch:
			switch kind {
			case KindImages:
				var req apitypes.UpdateImageRequest
				if q.decode(&req) {
					q.reply(s.UpdateImage(c, q.key, id, req))
				}
			case KindDisks:
				var req apitypes.UpdateDiskRequest
				if q.decode(&req) {
					q.reply(s.UpdateDisk(c, q.key, id, req))
				}
			case KindSnapshots:
				var req apitypes.UpdateSnapshotRequest
				if q.decode(&req) {
					q.reply(s.UpdateSnapshot(c, q.key, id, req))
				}
			default:
				q.badMethod("GET, DELETE")
			}
		case http.MethodDelete:
			switch kind {
			case KindFolders:
				q.reply(s.DeleteFolder(c, q.key, id))
			case KindImages:
				q.reply(s.DeleteImage(c, q.key, id))
			case KindDisks:
				q.reply(s.DeleteDisk(c, q.key, id))
			case KindSnapshots:
				q.reply(s.DeleteSnapshot(c, q.key, id))
			}
		default:
			q.badMethod("GET, PATCH, DELETE")
		}
	case "listAccessBindings":
		if q.method(http.MethodGet) {
			q.reply(s.ListAccessBindings(c, kind, id))
		}
	case "setAccessBindings":
		var req apitypes.SetAccessBindingsRequest
		if q.method(http.MethodPost) && q.decode(&req) {
			q.reply(s.SetAccessBindings(c, q.key, kind, id, req))
		}
	case "updateAccessBindings":
		var req apitypes.UpdateAccessBindingsRequest
		if q.method(http.MethodPost) && q.decode(&req) {
			q.reply(s.UpdateAccessBindings(c, q.key, kind, id, req))
		}
	case "export":
		if (kind == KindImages || kind == KindSnapshots) && q.method(http.MethodGet) {
			q.export(kind, id)
			return
		}
		if kind != KindImages && kind != KindSnapshots {
			q.fail(errNoRoute(q.r.URL.Path))
		}
	default:
		q.fail(errNoRoute(q.r.URL.Path))
	}
}

func (q *request) sub(kind, id, sub string) {
	s, c := q.s, q.caller
	switch {
	case kind == KindFolders && sub == "quotas":
		switch q.r.Method {
		case http.MethodGet:
			q.reply(s.GetQuotas(c, id))
		case http.MethodPost, http.MethodPatch:
			var req apitypes.SetQuotasRequest
			if q.decode(&req) {
				q.reply(s.SetQuotas(c, q.key, id, req))
			}
		default:
			q.badMethod("GET, POST")
		}
	case kind != KindFolders && sub == "operations":
		if q.method(http.MethodGet) {
			q.reply(s.ListOperations(c, ListOperationsFilter{ResourceID: id}, q.pageSize(), q.query("pageToken")))
		}
	case kind == KindFolders && sub == "operations":
		if q.method(http.MethodGet) {
			q.reply(s.ListOperations(c, ListOperationsFilter{FolderID: id}, q.pageSize(), q.query("pageToken")))
		}
	default:
		q.fail(errNoRoute(q.r.URL.Path))
	}
}

// export streams an image or snapshot file. Once bytes are sent an error
// can only cut the connection, which the client sees as a short body.
func (q *request) export(kind, id string) {
	format := q.query("format")
	started := false
	err := q.s.WriteExport(q.r.Context(), q.caller, kind, id, format, func(n int64) {
		started = true
		if format == "" {
			format = apitypes.FormatRaw
		}
		h := q.w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.FormatInt(n, 10))
		h.Set("Content-Disposition", `attachment; filename="`+id+"."+format+`"`)
		q.w.WriteHeader(http.StatusOK)
	}, q.w)
	if err == nil {
		return
	}
	if started {
		q.s.log.Warn("export cut short", zap.String("id", id), zap.Error(err))
		panic(http.ErrAbortHandler)
	}
	q.fail(err)
}

func (q *request) method(want string) bool {
	if q.r.Method == want {
		return true
	}
	q.badMethod(want)
	return false
}

func (q *request) badMethod(allowed string) {
	q.w.Header().Set("Allow", allowed)
	q.writeJSON(http.StatusMethodNotAllowed, apitypes.Error{Code: apitypes.CodeUnimplemented,
		Message: "method " + q.r.Method + " is not allowed on " + q.r.URL.Path + "; use " + allowed})
}

func (q *request) query(name string) string { return q.r.URL.Query().Get(name) }

// pageSize is parsed leniently here; the service refuses bad values.
func (q *request) pageSize() int {
	v := q.query("pageSize")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

func (q *request) decode(v any) bool {
	dec := json.NewDecoder(io.LimitReader(q.r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		q.fail(errInvalid("the request body is not valid JSON for this call: %v", err))
		return false
	}
	return true
}

func (q *request) uploadRequest() (UploadRequest, error) {
	v := q.r.URL.Query()
	req := UploadRequest{
		FolderID: v.Get("folderId"), Name: v.Get("name"), Description: v.Get("description"),
		Family: v.Get("family"), Format: v.Get("format"), OSType: v.Get("osType"),
		Size: max(q.r.ContentLength, 0),
	}
	if req.OSType == "" {
		req.OSType = v.Get("os")
	}
	if s := v.Get("minDiskSize"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return req, errInvalid("minDiskSize %q is not a number of bytes", s)
		}
		req.MinDiskSize = n
	}
	if s := v.Get("pooled"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return req, errInvalid("pooled %q is not true or false", s)
		}
		req.Pooled = b
	}
	for _, l := range splitList(v["labels"]) {
		k, val, ok := strings.Cut(l, "=")
		if !ok {
			return req, errInvalid("label %q is not key=value", l)
		}
		if req.Labels == nil {
			req.Labels = map[string]string{}
		}
		req.Labels[k] = val
	}
	req.ProductIDs = splitList(v["productIds"])
	return req, nil
}

// splitList flattens repeated and comma-separated query values.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// reply writes a result or the error.
func (q *request) reply(v any, err error) {
	if err != nil {
		q.fail(err)
		return
	}
	q.writeJSON(http.StatusOK, v)
}

func (q *request) fail(err error) {
	e := toError(err)
	if e.Code == apitypes.CodeInternal || e.Code == apitypes.CodeDataLoss {
		q.s.log.Error("request failed", zap.String("path", q.r.URL.Path), zap.Error(errors.Join(e, e.err)))
	}
	q.writeJSON(apitypes.HTTPStatus(e.Code), apitypes.Error{Code: e.Code, Message: e.Message, Details: e.Details})
}

func (q *request) writeJSON(status int, v any) {
	q.w.Header().Set("Content-Type", "application/json")
	q.w.WriteHeader(status)
	enc := json.NewEncoder(q.w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
