package api

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	"strata/api/apitypes"
	"strata/layer"
	"strata/storage"
)

// NBD exports. The daemon's NBD server asks OpenExport for the volume
// behind an export name, with the identity of the connecting process:
//
//	disk/<id>      read-write; needs compute.editor on the disk (or its
//	               folder). One writing process at a time: further
//	               connections from the same process are allowed
//	               (multi-conn), another process is refused with
//	               FAILED_PRECONDITION until the first disconnects.
//	image/<id>     read-only; needs compute.images.user (using an image
//	               means reading its bytes; compute.viewer sees metadata
//	               only). A public image (system:allAuthenticatedUsers
//	               bound to compute.images.user) is open to everyone.
//	snapshot/<id>  read-only; like images.
//
// Refusals are *Error values: NOT_FOUND, PERMISSION_DENIED,
// UNAUTHENTICATED, FAILED_PRECONDITION; ErrorCode tells them apart.

// writer is the process holding a disk's writable handles.
type writer struct {
	pid     int32
	handles int
}

// writerOf reports whether a disk has an NBD writer, and its pid.
func (s *Service) writerOf(diskID string) (int32, bool) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	w := s.writers[diskID]
	if w == nil {
		return 0, false
	}
	return w.pid, true
}

func (s *Service) acquireWriter(diskID string, pid int32) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	w := s.writers[diskID]
	if w == nil {
		s.writers[diskID] = &writer{pid: pid, handles: 1}
		return nil
	}
	if pid != 0 && w.pid == pid {
		w.handles++
		return nil
	}
	return &Error{Code: apitypes.CodeFailedPrecondition, err: ErrWriterBusy,
		Message: "disk " + diskID + " already has a writer (another process); disconnect it first: one writer at a time keeps the disk consistent"}
}

func (s *Service) releaseWriter(diskID string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if w := s.writers[diskID]; w != nil {
		if w.handles--; w.handles <= 0 {
			delete(s.writers, diskID)
		}
	}
}

// diskVolume releases the writer slot when its handle closes.
type diskVolume struct {
	layer.Volume
	once    sync.Once
	release func()
}

func (v *diskVolume) Close() error {
	err := v.Volume.Close()
	v.once.Do(v.release)
	return err
}

// Unwrap exposes the layer volume so the daemon's NBD adapter finds its
// optional fast paths (TryReadAt, BlockSizes) through this wrapper.
func (v *diskVolume) Unwrap() layer.Volume { return v.Volume }

// OpenExport returns the volume behind an NBD export name for caller. The
// caller closes it when the connection ends.
func (s *Service) OpenExport(ctx context.Context, name string, caller Identity) (layer.Volume, error) {
	if err := authenticated(caller); err != nil {
		return nil, err
	}
	kind, id, ok := strings.Cut(name, "/")
	if !ok || id == "" {
		return nil, errf(apitypes.CodeNotFound, "export %q does not exist: names are disk/<id>, image/<id> or snapshot/<id>", name)
	}
	switch kind {
	case "disk":
		var r *diskRec
		err := s.view(func(tx *storage.Txn) error {
			var err error
			if r, err = getDisk(tx, id); err != nil {
				return err
			}
			f, err := s.getFolder(tx, r.FolderID)
			if err != nil {
				return err
			}
			return s.check(caller, permEdit, f, r.Bindings, "disk", id)
		})
		if err != nil {
			return nil, toError(err)
		}
		if err := s.acquireWriter(id, caller.PID); err != nil {
			return nil, err
		}
		v, err := s.layers.OpenDisk(r.DiskID)
		if err != nil {
			s.releaseWriter(id)
			return nil, toError(err)
		}
		return &diskVolume{Volume: v, release: func() { s.releaseWriter(id) }}, nil
	case "image", "snapshot":
		l, err := s.readableLayer(caller, kind, id)
		if err != nil {
			return nil, err
		}
		v, err := s.layers.OpenLayer(l)
		if err != nil {
			return nil, toError(err)
		}
		return v, nil
	}
	return nil, errf(apitypes.CodeNotFound, "export %q does not exist: names are disk/<id>, image/<id> or snapshot/<id>", name)
}

// readableLayer checks the caller may read an image or snapshot ("image"
// or "snapshot") and returns its layer.
func (s *Service) readableLayer(caller Identity, kind, id string) (layer.LayerID, error) {
	var l layer.LayerID
	err := s.view(func(tx *storage.Txn) error {
		var folderID, status string
		var bs []apitypes.AccessBinding
		if kind == "image" {
			r, err := getImage(tx, id)
			if err != nil {
				return err
			}
			folderID, status, bs, l = r.FolderID, r.Status, r.Bindings, r.Layer
		} else {
			r, err := getSnap(tx, id)
			if err != nil {
				return err
			}
			folderID, status, bs, l = r.FolderID, r.Status, r.Bindings, r.Layer
		}
		f, err := s.getFolder(tx, folderID)
		if err != nil {
			return err
		}
		if err := s.check(caller, permUse, f, bs, kind, id); err != nil {
			return err
		}
		if status != apitypes.StatusReady {
			return errf(apitypes.CodeFailedPrecondition, "%s %s is %s, not READY; wait for its operation to finish", kind, id, status)
		}
		return nil
	})
	if err != nil {
		return 0, toError(err)
	}
	return l, nil
}

// Exports lists the export names caller may open (for NBD_OPT_LIST).
func (s *Service) Exports(caller Identity) ([]string, error) {
	var out []string
	if !caller.Known {
		return nil, nil
	}
	err := s.view(func(tx *storage.Txn) error {
		folders := map[string]*folderRec{}
		err := iterJSON(tx, pfxFolder, func(f *folderRec) error { folders[f.ID] = f; return nil })
		if err != nil {
			return err
		}
		if err := iterJSON(tx, pfxDisk, func(r *diskRec) error {
			if s.level(caller, folders[r.FolderID], r.Bindings) >= permEdit {
				out = append(out, "disk/"+r.ID)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := iterJSON(tx, pfxImage, func(r *imageRec) error {
			if r.Status == apitypes.StatusReady && s.level(caller, folders[r.FolderID], r.Bindings) >= permUse {
				out = append(out, "image/"+r.ID)
			}
			return nil
		}); err != nil {
			return err
		}
		return iterJSON(tx, pfxSnap, func(r *snapRec) error {
			if r.Status == apitypes.StatusReady && s.level(caller, folders[r.FolderID], r.Bindings) >= permUse {
				out = append(out, "snapshot/"+r.ID)
			}
			return nil
		})
	})
	if err != nil {
		return nil, toError(err)
	}
	return out, nil
}

// volumeReader adapts a Volume to io.ReaderAt for the file writers.
type volumeReader struct {
	ctx context.Context
	v   layer.Volume
}

func (r volumeReader) ReadAt(p []byte, off int64) (int, error) {
	size := r.v.Size()
	if off >= size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > size-off {
		n = int(size - off)
	}
	if err := r.v.ReadAt(r.ctx, p[:n], off); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

var errShortExtents = errors.New("api: volume reported no extents")
