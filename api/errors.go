package api

import (
	"context"
	"errors"
	"fmt"

	"strata/api/apitypes"
	"strata/layer"
	"strata/storage"
)

// Error is an API failure: a gRPC-style code (apitypes.Code...) and a
// sentence the caller can act on. Every error leaving Service is one.
type Error struct {
	Code    string
	Message string
	Details []string
	err     error // the cause, for errors.Is/As and logs
}

// Error returns the code and the message.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.err }

// errf makes an Error with a formatted message.
func errf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Sentinel causes inside the package; translated to codes by toError.
var (
	// ErrWriterBusy: a disk already has a writing NBD client.
	ErrWriterBusy = errors.New("api: disk has a writer")
)

// ErrorCode returns the API code of err (apitypes.CodeInternal for errors
// that are not *Error). The daemon's NBD export lookup uses it to pick the
// refusal it sends.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	return toError(err).Code
}

// toError translates any error into an *Error, exactly once: errors that
// already are *Error pass through, known causes from storage and layer get
// their code and a sentence, everything else is INTERNAL.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, storage.ErrCorrupt):
		return &Error{Code: apitypes.CodeDataLoss, err: err,
			Message: "stored data failed its checksum: the store is damaged; run the daemon's audit and restore the affected image from its source"}
	case errors.Is(err, layer.ErrCorruptMeta):
		return &Error{Code: apitypes.CodeDataLoss, err: err, Details: []string{err.Error()},
			Message: "a block map or disk record could not be decoded: the store is damaged; run the daemon's audit and restore the affected image or disk from a snapshot or its source"}
	case errors.Is(err, layer.ErrInvalid):
		// The cause names the value refused; the sentence gives the rules
		// a caller can break (the api validates most requests before layer
		// sees them, so these are the ones only layer can check).
		return &Error{Code: apitypes.CodeInvalidArgument, err: err, Details: []string{err.Error()},
			Message: "the request is not valid (" + err.Error() + "): a disk can only grow and never below the size of the image or snapshot it starts from, and an upload must be exactly its declared size; correct the request and retry"}
	case errors.Is(err, layer.ErrClosed):
		return &Error{Code: apitypes.CodeUnavailable, err: err,
			Message: "the daemon is shutting down or the volume was closed; retry once the daemon is running again"}
	case errors.Is(err, layer.ErrBusy):
		return &Error{Code: apitypes.CodeFailedPrecondition, err: err,
			Message: "the disk is in use (open by an NBD client or being snapshotted); disconnect the client or wait, then retry"}
	case errors.Is(err, layer.ErrOutOfRange):
		return &Error{Code: apitypes.CodeOutOfRange, err: err, Message: "the request reaches beyond the end of the volume"}
	case errors.Is(err, layer.ErrNotFound), errors.Is(err, storage.ErrNotFound):
		return &Error{Code: apitypes.CodeNotFound, err: err,
			Message: "the data behind this resource is gone; it may have been deleted concurrently"}
	case errors.Is(err, context.Canceled):
		return &Error{Code: apitypes.CodeCanceled, err: err, Message: "the operation was cancelled"}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: apitypes.CodeUnavailable, err: err, Message: "the operation timed out; retry it"}
	}
	return &Error{Code: apitypes.CodeInternal, err: err,
		Message: "internal error: " + err.Error() + "; see the daemon log"}
}

// Common errors with their sentences.
func errNotFound(kind, id string) *Error {
	return errf(apitypes.CodeNotFound, "%s %q not found; list them with `strata %s list`", kind, id, kind)
}

func errDenied(action, kind, id string) *Error {
	return errf(apitypes.CodePermissionDenied,
		"you may not %s %s %q; ask a folder admin to grant you a role (see `strata access`)", action, kind, id)
}

func errInvalid(format string, args ...any) *Error {
	return errf(apitypes.CodeInvalidArgument, format, args...)
}
