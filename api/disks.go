package api

import (
	"time"

	"strata/api/apitypes"
	"strata/storage"
)

func (r *diskRec) public() apitypes.Disk {
	d := r.Disk
	d.ExportName = "disk/" + r.ID
	d.BlockSize = blockSize
	if d.Labels != nil {
		d.Labels = cloneMap(d.Labels)
	}
	return d
}

// GetDisk returns a disk with its space accounting.
func (s *Service) GetDisk(caller Identity, id string) (apitypes.Disk, error) {
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
		return s.check(caller, permGet, f, r.Bindings, "disk", id)
	})
	if err != nil {
		return apitypes.Disk{}, toError(err)
	}
	d := r.public()
	if u, err := s.layers.DiskUsage(r.DiskID); err == nil {
		d.Usage = &apitypes.Usage{Logical: u.Logical, Unique: u.Unique, Shared: u.Shared}
	}
	return d, nil
}

// ListDisks lists a folder's disks the caller can see.
func (s *Service) ListDisks(caller Identity, folder string, pageSize int, pageToken, filter string) (apitypes.ListDisksResponse, error) {
	items, next, err := listInFolder[diskRec](s, caller, folder, pfxDisk, pageSize, pageToken, filter,
		func(x apitypes.Disk) string { return x.ID })
	if err != nil {
		return apitypes.ListDisksResponse{}, err
	}
	return apitypes.ListDisksResponse{Disks: items, NextPageToken: next}, nil
}

// CreateDisk makes a disk: empty, or over an image's or a snapshot's
// layer. It copies no data: a disk on a pooled image is an overlay
// directly on the image's layer, any other gets its own base map.
func (s *Service) CreateDisk(caller Identity, key string, req apitypes.CreateDiskRequest) (apitypes.Operation, error) {
	if err := validateMeta(req.Name, req.Description, req.Labels); err != nil {
		return apitypes.Operation{}, err
	}
	if countSources(req.ImageID, req.SnapshotID) > 1 {
		return apitypes.Operation{}, errInvalid("both imageId and snapshotId given: a disk has at most one source")
	}
	empty := req.ImageID == "" && req.SnapshotID == ""
	if empty && req.Size == 0 {
		return apitypes.Operation{}, errInvalid("an empty disk needs a size in bytes (a multiple of %d), or give imageId or snapshotId", blockSize)
	}
	if req.Size != 0 {
		if err := validateDiskSize(req.Size); err != nil {
			return apitypes.Operation{}, err
		}
	}
	osType := apitypes.OSLinux
	if req.OS != nil {
		if !empty {
			return apitypes.Operation{}, errInvalid("os is inherited from the source image or snapshot; omit it")
		}
		var err error
		if osType, err = parseOS(req.OS.Type, apitypes.OSLinux); err != nil {
			return apitypes.Operation{}, err
		}
	}
	return s.mutate(caller, key, "create disk", apitypes.OperationMetadata{}, func(tx *storage.Txn, op *opRec) (any, error) {
		f, err := s.getFolder(tx, req.FolderID)
		if err != nil {
			return nil, err
		}
		if err := s.check(caller, permEdit, f, nil, "folder", f.ID); err != nil {
			return nil, err
		}
		size := req.Size
		r := &diskRec{Disk: apitypes.Disk{OS: apitypes.OS{Type: osType}}}
		var src *source
		if !empty {
			if src, err = s.resolveSource(tx, caller, req.ImageID, req.SnapshotID, ""); err != nil {
				return nil, err
			}
			need := max(src.minDiskSize, src.virtualSize)
			if size == 0 {
				size = roundUp(need, blockSize)
			}
			if size < need {
				return nil, errInvalid("size %d is below the source's minimum disk size %d; give at least %d", size, need, roundUp(need, blockSize))
			}
			r.OS.Type, r.Pooled = src.osType, src.pooled
			r.SourceImageID, r.SourceSnapshotID = req.ImageID, req.SnapshotID
		}
		if err := validateDiskSize(size); err != nil {
			return nil, err
		}
		if err := s.checkQuota(tx, f, map[string]int64{apitypes.QuotaDisksCount: 1}); err != nil {
			return nil, err
		}
		seq, err := nextSeq(tx)
		if err != nil {
			return nil, err
		}
		r.ID, r.FolderID, r.CreatedAt, r.Seq = newID(idDisk), f.ID, time.Now().UTC(), seq
		r.Name, r.Description, r.Labels, r.Size, r.Status = req.Name, req.Description, req.Labels, size, apitypes.StatusReady
		op.Metadata.FolderID, op.Metadata.DiskID = f.ID, r.ID
		if err := claimName(tx, pfxDiskName, "disk", f.ID, r.Name, r.ID); err != nil {
			return nil, err
		}
		if err := addUsage(tx, f.ID, map[string]int64{apitypes.QuotaDisksCount: 1}); err != nil {
			return nil, err
		}
		var base = src.layerOrZero()
		if r.DiskID, err = s.layers.CreateDisk(tx, base, size, r.Pooled); err != nil {
			return nil, err
		}
		return r.public(), putJSON(tx, pfxDisk+r.ID, r)
	})
}

// UpdateDisk changes name, description, labels, or grows the disk.
func (s *Service) UpdateDisk(caller Identity, key, id string, req apitypes.UpdateDiskRequest) (apitypes.Operation, error) {
	fields, err := parseUpdateMask(req.UpdateMask, []string{"name", "description", "labels", "size"},
		[]string{"id", "folderId", "imageId", "snapshotId", "sourceImageId", "sourceSnapshotId", "os", "os.type", "pooled", "status"})
	if err != nil {
		return apitypes.Operation{}, err
	}
	if err := validateMeta(req.Name, req.Description, req.Labels); err != nil {
		return apitypes.Operation{}, err
	}
	return s.mutate(caller, key, "update disk", apitypes.OperationMetadata{DiskID: id}, func(tx *storage.Txn, op *opRec) (any, error) {
		r, err := getDisk(tx, id)
		if err != nil {
			return nil, err
		}
		f, err := s.editFolder(tx, caller, op, r.FolderID, r.Bindings, "disk", id)
		if err != nil {
			return nil, err
		}
		for _, fl := range fields {
			done, err := applyMetaField(tx, fl, pfxDiskName, "disk", f.ID, r.ID,
				metaFields{&r.Name, &r.Description, &r.Labels}, req.Name, req.Description, req.Labels)
			if err != nil {
				return nil, err
			}
			if done {
				continue
			}
			switch fl {
			case "size":
				if err := validateDiskSize(req.Size); err != nil {
					return nil, err
				}
				if req.Size < r.Size {
					return nil, errInvalid("size %d is below the disk's %d: disks only grow; make a new disk to shrink", req.Size, r.Size)
				}
				if req.Size > r.Size {
					if err := s.layers.ResizeDisk(tx, r.DiskID, req.Size); err != nil {
						return nil, err
					}
					r.Size = req.Size
				}
			}
		}
		return r.public(), putJSON(tx, pfxDisk+r.ID, r)
	})
}

// DeleteDisk removes a disk that no NBD client has open.
func (s *Service) DeleteDisk(caller Identity, key, id string) (apitypes.Operation, error) {
	return s.mutate(caller, key, "delete disk", apitypes.OperationMetadata{DiskID: id}, func(tx *storage.Txn, op *opRec) (any, error) {
		r, err := getDisk(tx, id)
		if err != nil {
			return nil, err
		}
		f, err := s.editFolder(tx, caller, op, r.FolderID, r.Bindings, "disk", id)
		if err != nil {
			return nil, err
		}
		if pid, open := s.writerOf(id); open {
			return nil, errf(apitypes.CodeFailedPrecondition, "disk %s is attached to an NBD client (pid %d); disconnect it first", id, pid)
		}
		if err := s.layers.DeleteDisk(tx, r.DiskID); err != nil {
			return nil, err
		}
		if err := releaseName(tx, pfxDiskName, f.ID, r.Name); err != nil {
			return nil, err
		}
		if err := addUsage(tx, f.ID, map[string]int64{apitypes.QuotaDisksCount: -1}); err != nil {
			return nil, err
		}
		return nil, del(tx, pfxDisk+id)
	})
}
