package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"strata/api/apitypes"
)

// defaultSockets are tried in order when neither --socket nor STRATA_SOCKET
// says where the daemon is: the checkout's `make run` first, then the
// systemd unit's.
var defaultSockets = []string{"./var/admin.sock", "/run/strata/admin.sock"}

// resolveSocket picks the admin socket: the flag, the environment, then
// the first default that exists (or the last one, for the error message).
func resolveSocket(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("STRATA_SOCKET"); env != "" {
		return env
	}
	for _, p := range defaultSockets {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return defaultSockets[len(defaultSockets)-1]
}

// client talks HTTP/JSON to stratad over its Unix socket.
type client struct {
	socket  string
	http    *http.Client
	idemKey string // sent on every mutation when set
}

func newClient(socket string) *client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", socket)
			if err != nil {
				return nil, err
			}
			return bulkConn{c}, nil
		},
		// Uploads stream for as long as the file takes; no timeout here,
		// the user has Ctrl-C.
		DisableCompression: true,
		// Uploads ask for 100-continue; a daemon that does not answer
		// within this time gets the body anyway.
		ExpectContinueTimeout: 5 * time.Second,
	}
	return &client{socket: socket, http: &http.Client{Transport: tr}}
}

// apiError is an error the daemon reported: its gRPC-style code and the
// sentence that says what to do.
type apiError struct {
	HTTPStatus int
	Code       string
	Message    string
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// errDaemonDown: nothing answers on the socket.
var errDaemonDown = errors.New("cannot reach stratad")

// do sends one request. body, when not nil, is sent as JSON; out, when not
// nil, receives the JSON reply. A non-2xx reply becomes an *apiError.
func (c *client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, query, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(req, out)
}

func (c *client) newRequest(ctx context.Context, method, path string, query url.Values, body io.Reader) (*http.Request, error) {
	u := "http://strata" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if c.idemKey != "" && method != http.MethodGet {
		req.Header.Set(apitypes.IdempotencyHeader, c.idemKey)
	}
	return req, nil
}

// send runs req and decodes the reply into out.
func (c *client) send(req *http.Request, out any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(resp.StatusCode, data)
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], data...)
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("reply to %s %s: %w", req.Method, req.URL.Path, err)
	}
	return nil
}

// dialError explains a failure to reach the daemon.
func (c *client) dialError(err error) error {
	var ne *net.OpError
	if errors.As(err, &ne) && ne.Op == "dial" {
		return fmt.Errorf("%w on %s (is it running? set --socket or STRATA_SOCKET): %v", errDaemonDown, c.socket, ne.Err)
	}
	return err
}

// decodeError reads the daemon's error body. It accepts the code as a
// name or a gRPC number, at the top level or under "error", so that a
// proxy's plain-text reply still gives a useful message.
func decodeError(status int, data []byte) error {
	var body struct {
		Code    json.RawMessage `json:"code"`
		Message string          `json:"message"`
		Error   *struct {
			Code    json.RawMessage `json:"code"`
			Message string          `json:"message"`
		} `json:"error"`
	}
	e := &apiError{HTTPStatus: status}
	if json.Unmarshal(data, &body) == nil {
		code, msg := body.Code, body.Message
		if body.Error != nil {
			code, msg = body.Error.Code, body.Error.Message
		}
		e.Code, e.Message = codeName(code), msg
	}
	if e.Code == "" {
		e.Code = http.StatusText(status)
		if e.Code == "" {
			e.Code = fmt.Sprintf("HTTP %d", status)
		}
		e.Code = strings.ToUpper(strings.ReplaceAll(e.Code, " ", "_"))
		if e.Message == "" {
			e.Message = strings.TrimSpace(string(data))
		}
	}
	return e
}

// grpcCodes names the numeric gRPC status codes.
var grpcCodes = []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

func codeName(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n int
	if json.Unmarshal(raw, &n) == nil && n >= 0 && n < len(grpcCodes) {
		return grpcCodes[n]
	}
	return ""
}

// bulkCopySize is the buffer an upload's body is sent through. The HTTP
// transport hands a request body to the connection's ReadFrom, and a Unix
// socket has none of its own, so io.Copy's 32 KiB buffer set the pace:
// a 3.5 GB upload took 106,000 reads and 108,000 writes, which cost the
// CLI 2.4-7.7 s of system time on the 2-core VM, taken from the daemon
// importing on the same cores.
const bulkCopySize = 1 << 20

// bulkConn is a connection that takes bodies in bulkCopySize writes.
type bulkConn struct{ net.Conn }

// ReadFrom copies r to the connection through one large buffer.
func (c bulkConn) ReadFrom(r io.Reader) (int64, error) {
	// The struct hides this method from io.CopyBuffer, which would
	// otherwise call it again.
	return io.CopyBuffer(struct{ io.Writer }{c.Conn}, r, make([]byte, bulkCopySize))
}
