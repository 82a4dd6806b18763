package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"strata/api/apitypes"
	"strata/storage"
)

// Operations. Every mutation makes one record in the catalog, in the same
// transaction as the change: short mutations commit done; long ones
// (upload import, snapshot, image from a disk) commit a CREATING resource
// and a running operation (a snapshot's in the disk's switch transaction,
// see inSnapshot), then finish in the background with a second
// transaction that makes the resource READY and the operation done, or
// removes the half-made resource and records the error. Progress lives in
// memory (runningOp) and shows in GET /operation/{id} while it runs.

// runningOp is the in-memory side of a background operation.
type runningOp struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	meta   apitypes.OperationMetadata
	defers []func()
}

// after registers fn to run once the operation's end is recorded, success
// or not (dropping an uncommitted layer, say).
func (r *runningOp) after(fn func()) {
	r.mu.Lock()
	r.defers = append(r.defers, fn)
	r.mu.Unlock()
}

func (r *runningOp) runDefers() {
	r.mu.Lock()
	fns := r.defers
	r.defers = nil
	r.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// report sets the progress of a phase: frac of the whole operation, and
// the phase's byte counts when known.
func (r *runningOp) report(phase string, frac float64, done, total int64) {
	r.mu.Lock()
	r.meta.Phase = phase
	r.meta.Progress = min(max(frac, 0), 1)
	r.meta.BytesDone, r.meta.BytesTotal = done, total
	r.mu.Unlock()
}

func (r *runningOp) snapshot() apitypes.OperationMetadata {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.meta
}

func idemKey(caller Identity, key string) string {
	h := sha256.Sum256([]byte(key))
	return pfxIdem + strconv.FormatUint(uint64(caller.UID), 10) + "/" + hex.EncodeToString(h[:16])
}

func checkIdemKey(key string) error {
	if len(key) > maxIdempotencyKey {
		return errInvalid("Idempotency-Key is %d bytes; use at most %d", len(key), maxIdempotencyKey)
	}
	return nil
}

// lookupIdem returns the operation an earlier request with the same key
// and caller made, or nil.
func lookupIdem(tx *storage.Txn, caller Identity, key string) (*opRec, error) {
	if key == "" {
		return nil, nil
	}
	id, err := tx.Get([]byte(idemKey(caller, key)))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	op, err := getOp(tx, string(id))
	if isNotFound(err) {
		return nil, nil // the operation was pruned: the key no longer holds
	}
	if err != nil {
		return nil, err
	}
	return op, nil
}

// idemOp returns the operation an earlier request with key made.
func (s *Service) idemOp(caller Identity, key string) (apitypes.Operation, error) {
	var prev *opRec
	err := s.view(func(tx *storage.Txn) error {
		var err error
		prev, err = lookupIdem(tx, caller, key)
		return err
	})
	if err == nil && prev == nil {
		err = errf(apitypes.CodeAborted, "the earlier request with this Idempotency-Key vanished; retry")
	}
	if err != nil {
		return apitypes.Operation{}, toError(err)
	}
	return s.live(prev), nil
}

func newOpRec(tx *storage.Txn, caller Identity, desc string, meta apitypes.OperationMetadata) (*opRec, error) {
	seq, err := nextSeq(tx)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	return &opRec{
		Operation: apitypes.Operation{
			ID: newID(idOp), Description: desc, CreatedAt: now, ModifiedAt: now,
			CreatedBy: caller.Subject(), Metadata: meta,
		},
		Seq: seq, CallerID: caller.UID,
	}, nil
}

func saveOp(tx *storage.Txn, op *opRec, caller Identity, key string) error {
	if err := putJSON(tx, pfxOp+op.ID, op); err != nil {
		return err
	}
	if key != "" {
		return tx.Set([]byte(idemKey(caller, key)), []byte(op.ID))
	}
	return nil
}

func finishOp(op *opRec, resp any, err error) error {
	op.Done = true
	op.ModifiedAt = time.Now().UTC()
	op.Metadata.Phase = ""
	op.Metadata.BytesDone, op.Metadata.BytesTotal = 0, 0
	if err != nil {
		e := toError(err)
		op.Error = &apitypes.Status{Code: e.Code, Message: e.Message, Details: e.Details}
		return nil
	}
	op.Metadata.Progress = 1
	if resp == nil {
		resp = struct{}{}
	}
	b, merr := json.Marshal(resp)
	if merr != nil {
		return merr
	}
	op.Response = b
	return nil
}

// mutate runs a short mutation: fn changes the catalog and returns the
// response; the done operation is stored in the same transaction. A
// retried request with the same Idempotency-Key returns the first
// operation and runs nothing.
func (s *Service) mutate(caller Identity, key, desc string, meta apitypes.OperationMetadata,
	fn func(tx *storage.Txn, op *opRec) (any, error)) (apitypes.Operation, error) {
	if err := authenticated(caller); err != nil {
		return apitypes.Operation{}, err
	}
	if err := checkIdemKey(key); err != nil {
		return apitypes.Operation{}, err
	}
	var out *opRec
	err := s.update(func(tx *storage.Txn) error {
		prev, err := lookupIdem(tx, caller, key)
		if err != nil || prev != nil {
			out = prev
			return err
		}
		op, err := newOpRec(tx, caller, desc, meta)
		if err != nil {
			return err
		}
		resp, err := fn(tx, op)
		if err != nil {
			return err
		}
		if err := finishOp(op, resp, nil); err != nil {
			return err
		}
		out = op
		return saveOp(tx, op, caller, key)
	})
	if err != nil {
		return apitypes.Operation{}, toError(err)
	}
	return out.Operation, nil
}

// finisher commits the end of a background operation inside the final
// transaction and returns the operation's response.
type finisher func(tx *storage.Txn) (any, error)

// startAsync stores a running operation together with what prep writes
// (a CREATING resource), then runs work in the background. work returns a
// finisher for the final transaction. On any failure the half-made
// resource is removed (cleanupHalfMade) in the transaction that records
// the error. dup is true when the Idempotency-Key matched an earlier
// operation, which is returned and nothing runs.
func (s *Service) startAsync(caller Identity, key, desc string, meta apitypes.OperationMetadata,
	prep func(tx *storage.Txn, op *opRec) error,
	work func(ctx context.Context, r *runningOp) (finisher, error)) (op apitypes.Operation, dup bool, err error) {
	return s.startAsyncIn(s.update, caller, key, desc, meta, prep, work)
}

// txnRunner runs fn in one write transaction and returns nil only if fn's
// writes committed. Like storage.Store.Update it may run fn more than once.
type txnRunner func(fn func(tx *storage.Txn) error) error

// errIdemDup aborts the transaction of a request whose Idempotency-Key an
// earlier one took meanwhile: nothing of it may commit, also not what
// another component's transaction carries (a snapshot's switch).
var errIdemDup = errors.New("api: idempotency key taken")

// startAsyncIn is startAsync with the records written by run, which may be
// another component's transaction (a disk's snapshot switch), so that the
// operation, its resource and the component's change commit together.
func (s *Service) startAsyncIn(run txnRunner, caller Identity, key, desc string, meta apitypes.OperationMetadata,
	prep func(tx *storage.Txn, op *opRec) error,
	work func(ctx context.Context, r *runningOp) (finisher, error)) (op apitypes.Operation, dup bool, err error) {
	if err := authenticated(caller); err != nil {
		return apitypes.Operation{}, false, err
	}
	if err := checkIdemKey(key); err != nil {
		return apitypes.Operation{}, false, err
	}
	var rec *opRec
	err = run(func(tx *storage.Txn) error {
		prev, err := lookupIdem(tx, caller, key)
		if err != nil || prev != nil {
			rec, dup = prev, prev != nil
			if dup {
				return errIdemDup
			}
			return err
		}
		rec, err = newOpRec(tx, caller, desc, meta)
		if err != nil {
			return err
		}
		if err := prep(tx, rec); err != nil {
			return err
		}
		return saveOp(tx, rec, caller, key)
	})
	if errors.Is(err, errIdemDup) {
		return rec.Operation, true, nil
	}
	if err != nil {
		return apitypes.Operation{}, false, toError(err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	r := &runningOp{cancel: cancel, meta: rec.Metadata}
	s.opsMu.Lock()
	s.running[rec.ID] = r
	s.opsMu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		fin, werr := work(ctx, r)
		s.complete(rec.ID, r, fin, werr)
	}()
	return rec.Operation, false, nil
}

// complete records the end of a background operation.
func (s *Service) complete(id string, r *runningOp, fin finisher, werr error) {
	defer func() {
		r.runDefers()
		s.opsMu.Lock()
		delete(s.running, id)
		s.opsMu.Unlock()
	}()
	if werr == nil {
		err := s.update(func(tx *storage.Txn) error {
			op, err := getOp(tx, id)
			if err != nil {
				return err
			}
			resp, err := fin(tx)
			if err != nil {
				return err
			}
			op.Metadata = r.snapshot()
			if err := finishOp(op, resp, nil); err != nil {
				return err
			}
			return putJSON(tx, pfxOp+id, op)
		})
		if err == nil {
			return
		}
		werr = err
	}
	if s.ctx.Err() != nil && errors.Is(werr, context.Canceled) {
		werr = errf(apitypes.CodeAborted, "the daemon shut down before the operation finished; retry it")
	}
	err := s.update(func(tx *storage.Txn) error {
		op, err := getOp(tx, id)
		if err != nil {
			return err
		}
		if err := s.cleanupHalfMade(tx, op); err != nil {
			return err
		}
		op.Metadata = r.snapshot()
		if err := finishOp(op, nil, werr); err != nil {
			return err
		}
		return putJSON(tx, pfxOp+id, op)
	})
	s.log.Warn("operation failed", zap.String("operation", id), zap.Error(werr))
	if err != nil {
		s.log.Error("recording a failed operation", zap.String("operation", id), zap.Error(err))
	}
}

// cleanupHalfMade removes the resource a failed or aborted operation was
// making: a CREATING image or snapshot that the operation owns, with the
// layer reference it may already hold.
func (s *Service) cleanupHalfMade(tx *storage.Txn, op *opRec) error {
	if id := op.Metadata.ImageID; id != "" {
		im, err := getImage(tx, id)
		if err == nil && im.Status == apitypes.StatusCreating && im.OpID == op.ID {
			if im.Layer != 0 {
				if err := s.layers.ReleaseLayer(tx, im.Layer); err != nil {
					return err
				}
			}
			if err := releaseName(tx, pfxImageName, im.FolderID, im.Name); err != nil {
				return err
			}
			if err := addUsage(tx, im.FolderID, imageUsage(&im.Image, -1)); err != nil {
				return err
			}
			if err := del(tx, pfxImage+id); err != nil {
				return err
			}
		} else if err != nil && !isNotFound(err) {
			return err
		}
	}
	if id := op.Metadata.SnapshotID; id != "" {
		sn, err := getSnap(tx, id)
		if err == nil && sn.Status == apitypes.StatusCreating && sn.OpID == op.ID {
			if sn.Layer != 0 {
				if err := s.layers.ReleaseLayer(tx, sn.Layer); err != nil {
					return err
				}
			}
			if err := releaseName(tx, pfxSnapName, sn.FolderID, sn.Name); err != nil {
				return err
			}
			if err := addUsage(tx, sn.FolderID, map[string]int64{apitypes.QuotaSnapshotsCount: -1}); err != nil {
				return err
			}
			if err := del(tx, pfxSnap+id); err != nil {
				return err
			}
		} else if err != nil && !isNotFound(err) {
			return err
		}
	}
	return nil
}

func isNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == apitypes.CodeNotFound || errors.Is(err, storage.ErrNotFound)
}

// operationRetention is how long finished operations are kept: long
// enough for any retry with an Idempotency-Key and for an admin to look
// back, short enough that the catalog does not grow without bound.
const operationRetention = 30 * 24 * time.Hour

// recover marks every operation a previous run left unfinished as ABORTED
// and removes what it half-made, and prunes finished operations older
// than operationRetention.
func (s *Service) recover() error {
	var ids, old []string
	cutoff := time.Now().Add(-operationRetention)
	err := s.view(func(tx *storage.Txn) error {
		return iterJSON(tx, pfxOp, func(op *opRec) error {
			switch {
			case !op.Done:
				ids = append(ids, op.ID)
			case op.ModifiedAt.Before(cutoff):
				old = append(old, op.ID)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	// Pruning in modest batches keeps each transaction small.
	for len(old) > 0 {
		n := min(len(old), 1000)
		batch := old[:n]
		old = old[n:]
		if err := s.update(func(tx *storage.Txn) error {
			for _, id := range batch {
				if err := del(tx, pfxOp+id); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	for _, id := range ids {
		err := s.update(func(tx *storage.Txn) error {
			op, err := getOp(tx, id)
			if err != nil {
				return err
			}
			if err := s.cleanupHalfMade(tx, op); err != nil {
				return err
			}
			aborted := errf(apitypes.CodeAborted, "the daemon restarted before the operation finished; nothing was kept, retry it")
			if err := finishOp(op, nil, aborted); err != nil {
				return err
			}
			return putJSON(tx, pfxOp+id, op)
		})
		if err != nil {
			return err
		}
		s.log.Info("aborted an operation left unfinished by the last run", zap.String("operation", id))
	}
	return s.countUsage()
}

// OperationsInFlight is the number of operations running in the
// background now (for the daemon's metrics).
func (s *Service) OperationsInFlight() int {
	s.opsMu.Lock()
	defer s.opsMu.Unlock()
	return len(s.running)
}

// GetOperation returns an operation the caller made, or one in a folder
// the caller can see.
func (s *Service) GetOperation(caller Identity, id string) (apitypes.Operation, error) {
	var op *opRec
	err := s.view(func(tx *storage.Txn) error {
		var err error
		if op, err = getOp(tx, id); err != nil {
			return err
		}
		return s.checkOp(tx, caller, op, permGet)
	})
	if err != nil {
		return apitypes.Operation{}, toError(err)
	}
	return s.live(op), nil
}

// live overlays the in-memory progress of a running operation.
func (s *Service) live(op *opRec) apitypes.Operation {
	if op.Done {
		return op.Operation
	}
	s.opsMu.Lock()
	r := s.running[op.ID]
	s.opsMu.Unlock()
	out := op.Operation
	if r != nil {
		out.Metadata = r.snapshot()
	}
	return out
}

func (s *Service) checkOp(tx *storage.Txn, caller Identity, op *opRec, need perm) error {
	if err := authenticated(caller); err != nil {
		return err
	}
	if op.CreatedBy == caller.Subject() || s.isAdmin(caller) {
		return nil
	}
	if op.Metadata.FolderID != "" {
		f, err := s.getFolder(tx, op.Metadata.FolderID)
		if err == nil && s.level(caller, f, nil) >= need {
			return nil
		}
	}
	return errDenied(permVerb[need], "operation", op.ID)
}

// CancelOperation cancels a running operation (an import stops at once;
// its half-made image is removed). A finished operation is returned as is.
func (s *Service) CancelOperation(caller Identity, id string) (apitypes.Operation, error) {
	var op *opRec
	err := s.view(func(tx *storage.Txn) error {
		var err error
		if op, err = getOp(tx, id); err != nil {
			return err
		}
		return s.checkOp(tx, caller, op, permEdit)
	})
	if err != nil {
		return apitypes.Operation{}, toError(err)
	}
	s.opsMu.Lock()
	r := s.running[id]
	s.opsMu.Unlock()
	if r != nil {
		r.cancel()
	}
	return s.live(op), nil
}

// WaitOperation blocks until the operation is done or ctx ends, then
// returns it. Tests and the daemon's shutdown use it; HTTP clients poll.
func (s *Service) WaitOperation(ctx context.Context, caller Identity, id string) (apitypes.Operation, error) {
	for {
		op, err := s.GetOperation(caller, id)
		if err != nil || op.Done {
			return op, err
		}
		select {
		case <-ctx.Done():
			return op, toError(ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// ListOperationsFilter selects operations: by folder, or by the resource
// they worked on (image, disk or snapshot id).
type ListOperationsFilter struct {
	FolderID   string
	ResourceID string
}

// ListOperations lists operations newest first.
func (s *Service) ListOperations(caller Identity, f ListOperationsFilter, pageSize int, pageToken string) (apitypes.ListOperationsResponse, error) {
	var ops []*opRec
	err := s.view(func(tx *storage.Txn) error {
		if f.FolderID != "" {
			fo, err := s.getFolder(tx, f.FolderID)
			if err != nil {
				return err
			}
			f.FolderID = fo.ID
			if s.level(caller, fo, nil) < permGet {
				return errDenied("see", "folder", fo.ID)
			}
		}
		return iterJSON(tx, pfxOp, func(op *opRec) error {
			m := op.Metadata
			switch {
			case f.FolderID != "" && m.FolderID != f.FolderID:
				return nil
			case f.ResourceID != "" && m.ImageID != f.ResourceID && m.DiskID != f.ResourceID && m.SnapshotID != f.ResourceID:
				return nil
			}
			if f.FolderID == "" && s.checkOp(tx, caller, op, permGet) != nil {
				return nil
			}
			ops = append(ops, op)
			return nil
		})
	})
	if err != nil {
		return apitypes.ListOperationsResponse{}, toError(err)
	}
	slices.SortFunc(ops, func(a, b *opRec) int { return cmpDesc(a.Seq, b.Seq) })
	page, next, err := paginate(ops, pageSize, pageToken,
		func(o *opRec) string { return strconv.FormatUint(o.Seq, 10) },
		func(o *opRec, t string) bool { return afterSeqDesc(o.Seq, t) })
	if err != nil {
		return apitypes.ListOperationsResponse{}, err
	}
	out := apitypes.ListOperationsResponse{Operations: []apitypes.Operation{}, NextPageToken: next}
	for _, o := range page {
		out.Operations = append(out.Operations, s.live(o))
	}
	return out, nil
}

func cmpDesc(a, b uint64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}
