package api

import (
	"context"
	"time"

	"strata/api/apitypes"
	"strata/layer"
	"strata/storage"
)

func (r *snapRec) public() apitypes.Snapshot {
	sn := r.Snapshot
	sn.ExportName = "snapshot/" + r.ID
	if sn.Labels != nil {
		sn.Labels = cloneMap(sn.Labels)
	}
	return sn
}

// GetSnapshot returns a snapshot the caller can see.
func (s *Service) GetSnapshot(caller Identity, id string) (apitypes.Snapshot, error) {
	var out apitypes.Snapshot
	err := s.view(func(tx *storage.Txn) error {
		r, err := getSnap(tx, id)
		if err != nil {
			return err
		}
		f, err := s.getFolder(tx, r.FolderID)
		if err != nil {
			return err
		}
		out = r.public()
		return s.check(caller, permGet, f, r.Bindings, "snapshot", id)
	})
	if err != nil {
		return apitypes.Snapshot{}, toError(err)
	}
	return out, nil
}

// ListSnapshots lists a folder's snapshots the caller can see.
func (s *Service) ListSnapshots(caller Identity, folder string, pageSize int, pageToken, filter string) (apitypes.ListSnapshotsResponse, error) {
	items, next, err := listInFolder[snapRec](s, caller, folder, pfxSnap, pageSize, pageToken, filter,
		func(x apitypes.Snapshot) string { return x.ID })
	if err != nil {
		return apitypes.ListSnapshotsResponse{}, err
	}
	return apitypes.ListSnapshotsResponse{Snapshots: items, NextPageToken: next}, nil
}

// CreateSnapshot snapshots a disk, also while an NBD client writes to it:
// the switch to a fresh overlay happens before this returns, so the
// snapshot holds exactly the writes acknowledged before the request. It is
// CREATING until the background seal and checksum finish, then READY.
func (s *Service) CreateSnapshot(ctx context.Context, caller Identity, key string, req apitypes.CreateSnapshotRequest) (apitypes.Operation, error) {
	if err := validateMeta(req.Name, req.Description, req.Labels); err != nil {
		return apitypes.Operation{}, err
	}
	if req.DiskID == "" {
		return apitypes.Operation{}, errInvalid("diskId is required: name the disk to snapshot")
	}
	// plan checks everything in tx and returns the new record's fields.
	plan := func(tx *storage.Txn, dry bool) (*snapRec, *diskRec, error) {
		d, err := getDisk(tx, req.DiskID)
		if err != nil {
			return nil, nil, err
		}
		df, err := s.getFolder(tx, d.FolderID)
		if err != nil {
			return nil, nil, err
		}
		if err := s.check(caller, permEdit, df, d.Bindings, "disk", d.ID); err != nil {
			return nil, nil, err
		}
		f := df
		if req.FolderID != "" {
			if f, err = s.getFolder(tx, req.FolderID); err != nil {
				return nil, nil, err
			}
			if err := s.check(caller, permEdit, f, nil, "folder", f.ID); err != nil {
				return nil, nil, err
			}
		}
		if err := s.checkQuota(tx, f, map[string]int64{apitypes.QuotaSnapshotsCount: 1}); err != nil {
			return nil, nil, err
		}
		r := &snapRec{Snapshot: apitypes.Snapshot{
			FolderID: f.ID, Name: req.Name, Description: req.Description, Labels: req.Labels,
			DiskSize: d.Size, Status: apitypes.StatusCreating, OS: d.OS, SourceDiskID: d.ID,
		}}
		if dry {
			return r, d, checkName(tx, pfxSnapName, "snapshot", f.ID, r.Name, "")
		}
		if r.Seq, err = nextSeq(tx); err != nil {
			return nil, nil, err
		}
		r.ID, r.CreatedAt = newID(idSnap), time.Now().UTC()
		if err := addUsage(tx, f.ID, map[string]int64{apitypes.QuotaSnapshotsCount: 1}); err != nil {
			return nil, nil, err
		}
		return r, d, claimName(tx, pfxSnapName, "snapshot", f.ID, r.Name, r.ID)
	}
	var d *diskRec
	var dup bool
	err := s.view(func(tx *storage.Txn) error {
		if prev, err := lookupIdem(tx, caller, key); err != nil || prev != nil {
			dup = prev != nil
			return err
		}
		var err error
		_, d, err = plan(tx, true)
		return err
	})
	if err != nil {
		return apitypes.Operation{}, toError(err)
	}
	if dup {
		return s.idemOp(caller, key)
	}
	var lid layer.LayerID
	var id string
	op, _, err := s.startAsyncIn(s.inSnapshot(ctx, d.DiskID, &lid), caller, key, "create snapshot of disk "+d.ID, apitypes.OperationMetadata{},
		func(tx *storage.Txn, op *opRec) error {
			r, _, err := plan(tx, false)
			if err != nil {
				return err
			}
			r.Layer, r.OpID, id = lid, op.ID, r.ID
			op.Metadata.FolderID, op.Metadata.SnapshotID, op.Metadata.DiskID = r.FolderID, r.ID, d.ID
			return putJSON(tx, pfxSnap+r.ID, r)
		},
		func(ctx context.Context, ro *runningOp) (finisher, error) {
			sum, err := s.sealAndHash(ctx, lid, ro)
			if err != nil {
				return nil, err
			}
			return func(tx *storage.Txn) (any, error) {
				r, err := getSnap(tx, id)
				if err != nil {
					return nil, err
				}
				r.Status, r.OpID, r.Checksum = apitypes.StatusReady, "", sum
				if info, err := s.layers.LayerInfo(lid); err == nil {
					r.StorageSize = info.Usage.Unique + info.Usage.Shared
				}
				return r.public(), putJSON(tx, pfxSnap+id, r)
			}, nil
		})
	return op, err
}

// UpdateSnapshot changes name, description or labels.
func (s *Service) UpdateSnapshot(caller Identity, key, id string, req apitypes.UpdateSnapshotRequest) (apitypes.Operation, error) {
	fields, err := parseUpdateMask(req.UpdateMask, []string{"name", "description", "labels"},
		[]string{"id", "folderId", "diskId", "sourceDiskId", "diskSize", "os", "os.type", "status", "checksum"})
	if err != nil {
		return apitypes.Operation{}, err
	}
	if err := validateMeta(req.Name, req.Description, req.Labels); err != nil {
		return apitypes.Operation{}, err
	}
	return s.mutate(caller, key, "update snapshot", apitypes.OperationMetadata{SnapshotID: id}, func(tx *storage.Txn, op *opRec) (any, error) {
		r, err := getSnap(tx, id)
		if err != nil {
			return nil, err
		}
		f, err := s.editFolder(tx, caller, op, r.FolderID, r.Bindings, "snapshot", id)
		if err != nil {
			return nil, err
		}
		for _, fl := range fields {
			// The mask allows only the shared fields here.
			if _, err := applyMetaField(tx, fl, pfxSnapName, "snapshot", f.ID, r.ID,
				metaFields{&r.Name, &r.Description, &r.Labels}, req.Name, req.Description, req.Labels); err != nil {
				return nil, err
			}
		}
		return r.public(), putJSON(tx, pfxSnap+r.ID, r)
	})
}

// DeleteSnapshot removes a READY snapshot; images and disks made from it
// keep working.
func (s *Service) DeleteSnapshot(caller Identity, key, id string) (apitypes.Operation, error) {
	return s.mutate(caller, key, "delete snapshot", apitypes.OperationMetadata{SnapshotID: id}, func(tx *storage.Txn, op *opRec) (any, error) {
		r, err := getSnap(tx, id)
		if err != nil {
			return nil, err
		}
		f, err := s.editFolder(tx, caller, op, r.FolderID, r.Bindings, "snapshot", id)
		if err != nil {
			return nil, err
		}
		if r.Status == apitypes.StatusCreating {
			return nil, errf(apitypes.CodeFailedPrecondition, "snapshot %s is still being sealed by operation %s; cancel it (`strata operation cancel %s`) or wait", id, r.OpID, r.OpID)
		}
		if err := s.layers.ReleaseLayer(tx, r.Layer); err != nil {
			return nil, err
		}
		if err := releaseName(tx, pfxSnapName, f.ID, r.Name); err != nil {
			return nil, err
		}
		if err := addUsage(tx, f.ID, map[string]int64{apitypes.QuotaSnapshotsCount: -1}); err != nil {
			return nil, err
		}
		return nil, del(tx, pfxSnap+id)
	})
}
