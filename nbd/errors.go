package nbd

import (
	"context"
	"errors"
	"syscall"
)

// Errors a Backend (or an Exports implementation) returns to choose what the
// client sees. The server matches them with errors.Is, so wrap freely with %w.
var (
	// ErrNotFast is returned by WriteZeroes when fastOnly is set and zeroing
	// the range would be slow (NBD_CMD_FLAG_FAST_ZERO); the client gets
	// NBD_ENOTSUP and falls back to writing zeros itself.
	ErrNotFast = errors.New("nbd: zeroing would not be fast")
	// ErrNoSpace reports that the write cannot be stored (quota, full disk);
	// the client gets NBD_ENOSPC.
	ErrNoSpace = errors.New("nbd: no space left")
	// ErrInvalid reports a request the backend cannot make sense of; the
	// client gets NBD_EINVAL.
	ErrInvalid = errors.New("nbd: invalid request")
	// ErrPermission refuses an operation (a write to a frozen disk) or, from
	// Exports.Lookup, access to an export. The client gets NBD_EPERM, or
	// NBD_REP_ERR_POLICY during negotiation.
	ErrPermission = errors.New("nbd: permission denied")
	// ErrUnknownExport is returned by Exports.Lookup for a name that names
	// no export; the client gets NBD_REP_ERR_UNKNOWN.
	ErrUnknownExport = errors.New("nbd: unknown export")
	// ErrShutdown reports that the server (or the backend) is going away;
	// the client gets NBD_ESHUTDOWN, or NBD_REP_ERR_SHUTDOWN in negotiation.
	ErrShutdown = errors.New("nbd: server shutting down")
	// ErrInsecureTCP is returned by Serve for a TCP listener when TLS is not
	// configured and Server.AllowInsecureTCP is false.
	ErrInsecureTCP = errors.New("nbd: refusing TCP without TLS (set AllowInsecureTCP to override)")
	// ErrServerClosed is returned by Serve after Shutdown or Close.
	ErrServerClosed = errors.New("nbd: server closed")
)

// NBD error values (the spec's "Error values"; they are errno numbers on
// Linux but defined by the protocol, not by the host).
const (
	errnoPERM     uint32 = 1
	errnoIO       uint32 = 5
	errnoINVAL    uint32 = 22
	errnoNOSPC    uint32 = 28
	errnoNOTSUP   uint32 = 95
	errnoSHUTDOWN uint32 = 108
)

// errnoFor translates a backend error into the NBD error value; this is the
// only place where that translation happens.
func errnoFor(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrNotFast), errors.Is(err, syscall.ENOTSUP):
		return errnoNOTSUP
	case errors.Is(err, ErrNoSpace), errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errnoNOSPC
	case errors.Is(err, ErrInvalid), errors.Is(err, syscall.EINVAL):
		return errnoINVAL
	case errors.Is(err, ErrPermission), errors.Is(err, syscall.EPERM),
		errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EROFS):
		return errnoPERM
	case errors.Is(err, ErrShutdown), errors.Is(err, context.Canceled):
		return errnoSHUTDOWN
	default:
		return errnoIO
	}
}
