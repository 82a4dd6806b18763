package api

import (
	"context"
	"time"

	"go.uber.org/zap"

	"strata/api/apitypes"
	"strata/layer"
	"strata/storage"
)

func (r *imageRec) public() apitypes.Image {
	im := r.Image
	im.ExportName = "image/" + r.ID
	if im.Labels != nil {
		im.Labels = cloneMap(im.Labels)
	}
	return im
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// imageSpec is a new image's fields, from a request and its source.
type imageSpec struct {
	folder      string
	name        string
	description string
	labels      map[string]string
	family      string
	minDiskSize int64 // 0: the default, virtual size rounded up to a block
	productIDs  []string
	osType      string
	pooled      bool
	virtualSize int64 // 0 while unknown (an upload before import)
	lineage     apitypes.Image
}

func (sp *imageSpec) validate() error {
	if err := validateMeta(sp.name, sp.description, sp.labels); err != nil {
		return err
	}
	if err := validateFamily(sp.family); err != nil {
		return err
	}
	if err := validateProductIDs(sp.productIDs); err != nil {
		return err
	}
	if sp.minDiskSize < 0 || sp.minDiskSize > maxVolumeSize {
		return errInvalid("minDiskSize %d is invalid: give 0 (the image's size) up to %d bytes", sp.minDiskSize, int64(maxVolumeSize))
	}
	return nil
}

// minDisk returns the image's minDiskSize for a known virtual size.
func minDisk(given, virtual int64) (int64, error) {
	if given == 0 {
		return roundUp(virtual, blockSize), nil
	}
	if given < virtual {
		return 0, errInvalid("minDiskSize %d is smaller than the image's virtual size %d; give at least %d", given, virtual, virtual)
	}
	return given, nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// addImage checks the caller may create sp in its folder, within quotas
// and with a free name, and returns the record (not yet stored) with a
// fresh id and creation sequence.
// With dry, it only checks: nothing is written (for read-only transactions).
func (s *Service) addImage(tx *storage.Txn, caller Identity, sp *imageSpec, status string, dry bool) (*imageRec, *folderRec, error) {
	f, err := s.getFolder(tx, sp.folder)
	if err != nil {
		return nil, nil, err
	}
	if err := s.check(caller, permEdit, f, nil, "folder", f.ID); err != nil {
		return nil, nil, err
	}
	md := sp.minDiskSize
	if sp.virtualSize > 0 {
		if md, err = minDisk(sp.minDiskSize, sp.virtualSize); err != nil {
			return nil, nil, err
		}
	}
	add := map[string]int64{apitypes.QuotaImagesCount: 1, apitypes.QuotaImagesSize: sp.virtualSize}
	if sp.pooled {
		add[apitypes.QuotaDiskPoolsCount] = 1
	}
	if err := s.checkQuota(tx, f, add); err != nil {
		return nil, nil, err
	}
	if dry {
		return nil, f, checkName(tx, pfxImageName, "image", f.ID, sp.name, "")
	}
	seq, err := nextSeq(tx)
	if err != nil {
		return nil, nil, err
	}
	r := &imageRec{Image: sp.lineage, Seq: seq}
	r.ID = newID(idImage)
	r.FolderID = f.ID
	r.CreatedAt = time.Now().UTC()
	r.Name, r.Description, r.Labels, r.Family = sp.name, sp.description, sp.labels, sp.family
	r.MinDiskSize, r.ProductIDs, r.Status = md, sp.productIDs, status
	r.OS = apitypes.OS{Type: sp.osType}
	r.Pooled, r.VirtualSize = sp.pooled, sp.virtualSize
	if err := claimName(tx, pfxImageName, "image", f.ID, r.Name, r.ID); err != nil {
		return nil, nil, err
	}
	// The caller stores r in this transaction or fails it.
	if err := addUsage(tx, f.ID, imageUsage(&r.Image, 1)); err != nil {
		return nil, nil, err
	}
	return r, f, nil
}

// GetImage returns an image the caller can see, with its space usage.
func (s *Service) GetImage(caller Identity, id string) (apitypes.Image, error) {
	var out apitypes.Image
	var lid layer.LayerID
	err := s.view(func(tx *storage.Txn) error {
		r, err := getImage(tx, id)
		if err != nil {
			return err
		}
		f, err := s.getFolder(tx, r.FolderID)
		if err != nil {
			return err
		}
		out, lid = r.public(), r.Layer
		return s.check(caller, permGet, f, r.Bindings, "image", id)
	})
	if err != nil {
		return apitypes.Image{}, toError(err)
	}
	if lid != 0 {
		if info, err := s.layers.LayerInfo(lid); err == nil {
			out.Usage = &apitypes.Usage{Logical: info.Usage.Logical, Unique: info.Usage.Unique, Shared: info.Usage.Shared}
		}
	}
	return out, nil
}

// ListImages lists a folder's images: all of them for callers with a role
// on the folder, else those the caller has a role on (public ones too).
func (s *Service) ListImages(caller Identity, folder string, pageSize int, pageToken, filter string) (apitypes.ListImagesResponse, error) {
	items, next, err := listInFolder[imageRec](s, caller, folder, pfxImage, pageSize, pageToken, filter,
		func(x apitypes.Image) string { return x.ID })
	if err != nil {
		return apitypes.ListImagesResponse{}, err
	}
	return apitypes.ListImagesResponse{Images: items, NextPageToken: next}, nil
}

// LatestByFamily returns the newest READY image of family in folder that
// the caller can see, by creation sequence.
func (s *Service) LatestByFamily(caller Identity, folder, family string) (apitypes.Image, error) {
	if err := authenticated(caller); err != nil {
		return apitypes.Image{}, err
	}
	if family == "" {
		return apitypes.Image{}, errInvalid("family is required")
	}
	if err := validateFamily(family); err != nil {
		return apitypes.Image{}, err
	}
	var best *imageRec
	var fid string
	err := s.view(func(tx *storage.Txn) error {
		f, err := s.getFolder(tx, folder)
		if err != nil {
			return err
		}
		fid = f.ID
		return iterJSON(tx, pfxImage, func(r *imageRec) error {
			if r.FolderID == f.ID && r.Family == family && r.Status == apitypes.StatusReady &&
				(best == nil || r.Seq > best.Seq) && s.level(caller, f, r.Bindings) >= permGet {
				best = r
			}
			return nil
		})
	})
	if err != nil {
		return apitypes.Image{}, toError(err)
	}
	if best == nil {
		return apitypes.Image{}, errf(apitypes.CodeNotFound, "no READY image of family %q in folder %s that you can see; list images with `strata image list --folder %s`", family, fid, fid)
	}
	return best.public(), nil
}

// source is what a new image or disk is made from.
type source struct {
	layer       layer.LayerID
	virtualSize int64
	minDiskSize int64
	osType      string
	checksum    string
	storageSize int64
	pooled      bool
	diskID      layer.DiskID // for a disk source
}

// imageSource loads and checks the source of a new image: exactly one of
// imageID, snapshotID, diskID, which the caller may use and which is READY.
func (s *Service) resolveSource(tx *storage.Txn, caller Identity, imageID, snapshotID, diskID string) (*source, error) {
	switch {
	case imageID != "":
		r, err := getImage(tx, imageID)
		if err != nil {
			return nil, err
		}
		f, err := s.getFolder(tx, r.FolderID)
		if err != nil {
			return nil, err
		}
		if err := s.check(caller, permUse, f, r.Bindings, "image", imageID); err != nil {
			return nil, err
		}
		if r.Status != apitypes.StatusReady {
			return nil, errf(apitypes.CodeFailedPrecondition, "image %s is %s, not READY; wait for its operation to finish", imageID, r.Status)
		}
		return &source{layer: r.Layer, virtualSize: r.VirtualSize, minDiskSize: r.MinDiskSize, osType: r.OS.Type,
			checksum: r.Checksum, storageSize: r.StorageSize, pooled: r.Pooled}, nil
	case snapshotID != "":
		r, err := getSnap(tx, snapshotID)
		if err != nil {
			return nil, err
		}
		f, err := s.getFolder(tx, r.FolderID)
		if err != nil {
			return nil, err
		}
		if err := s.check(caller, permUse, f, r.Bindings, "snapshot", snapshotID); err != nil {
			return nil, err
		}
		if r.Status != apitypes.StatusReady {
			return nil, errf(apitypes.CodeFailedPrecondition, "snapshot %s is %s, not READY; wait for its operation to finish", snapshotID, r.Status)
		}
		return &source{layer: r.Layer, virtualSize: r.DiskSize, minDiskSize: r.DiskSize, osType: r.OS.Type,
			checksum: r.Checksum, storageSize: r.StorageSize}, nil
	case diskID != "":
		r, err := getDisk(tx, diskID)
		if err != nil {
			return nil, err
		}
		f, err := s.getFolder(tx, r.FolderID)
		if err != nil {
			return nil, err
		}
		if err := s.check(caller, permUse, f, r.Bindings, "disk", diskID); err != nil {
			return nil, err
		}
		return &source{virtualSize: r.Size, minDiskSize: r.Size, osType: r.OS.Type, diskID: r.DiskID}, nil
	}
	return nil, errInvalid("no source given")
}

func countSources(ids ...string) int {
	n := 0
	for _, id := range ids {
		if id != "" {
			n++
		}
	}
	return n
}

// CreateImage makes an image from exactly one of an image, a snapshot or a
// disk. From an image or snapshot it is a new record over the same layer
// and completes at once; from a disk it snapshots the disk (the image holds
// exactly the writes acknowledged before the call) and becomes READY when
// the snapshot is sealed. The OS type is the source's.
func (s *Service) CreateImage(ctx context.Context, caller Identity, key string, req apitypes.CreateImageRequest) (apitypes.Operation, error) {
	switch countSources(req.ImageID, req.SnapshotID, req.DiskID) {
	case 0:
		return apitypes.Operation{}, errInvalid("no source given: set exactly one of imageId, diskId or snapshotId, or upload a file with images:upload")
	case 1:
	default:
		return apitypes.Operation{}, errInvalid("several sources given: set exactly one of imageId, diskId or snapshotId")
	}
	sp := &imageSpec{
		folder: req.FolderID, name: req.Name, description: req.Description, labels: req.Labels,
		family: req.Family, minDiskSize: req.MinDiskSize, productIDs: req.ProductIDs, pooled: req.Pooled,
	}
	if err := sp.validate(); err != nil {
		return apitypes.Operation{}, err
	}
	var wantOS string
	if req.OS != nil {
		var err error
		if wantOS, err = parseOS(req.OS.Type, ""); err != nil {
			return apitypes.Operation{}, err
		}
	}
	// fill completes sp from the source inside a transaction.
	fill := func(tx *storage.Txn) (*source, error) {
		src, err := s.resolveSource(tx, caller, req.ImageID, req.SnapshotID, req.DiskID)
		if err != nil {
			return nil, err
		}
		if wantOS != "" && wantOS != src.osType {
			return nil, errInvalid("os type %s differs from the source's %s: an image inherits its source's OS type; omit os", wantOS, src.osType)
		}
		sp.osType, sp.virtualSize = src.osType, src.virtualSize
		if sp.minDiskSize == 0 && src.minDiskSize > 0 {
			sp.minDiskSize = max(src.minDiskSize, roundUp(src.virtualSize, blockSize))
		}
		sp.lineage = apitypes.Image{SourceImageID: req.ImageID, SourceSnapshotID: req.SnapshotID, SourceDiskID: req.DiskID}
		return src, nil
	}
	if req.DiskID == "" {
		return s.mutate(caller, key, "create image", apitypes.OperationMetadata{}, func(tx *storage.Txn, op *opRec) (any, error) {
			src, err := fill(tx)
			if err != nil {
				return nil, err
			}
			r, _, err := s.addImage(tx, caller, sp, apitypes.StatusReady, false)
			if err != nil {
				return nil, err
			}
			op.Metadata.FolderID, op.Metadata.ImageID = r.FolderID, r.ID
			r.Layer, r.Checksum, r.StorageSize = src.layer, src.checksum, src.storageSize
			if err := s.layers.RetainLayer(tx, src.layer); err != nil {
				return nil, err
			}
			return r.public(), putJSON(tx, pfxImage+r.ID, r)
		})
	}
	return s.imageFromDisk(ctx, caller, key, sp, fill)
}

// imageFromDisk checks the request, then snapshots the disk at once and
// records a CREATING image over the snapshot's layer in the snapshot's
// switch transaction, and seals it in the background.
func (s *Service) imageFromDisk(ctx context.Context, caller Identity, key string, sp *imageSpec, fill func(*storage.Txn) (*source, error)) (apitypes.Operation, error) {
	var src *source
	var dup bool
	err := s.view(func(tx *storage.Txn) error {
		if prev, err := lookupIdem(tx, caller, key); err != nil || prev != nil {
			dup = prev != nil
			return err
		}
		var err error
		if src, err = fill(tx); err != nil {
			return err
		}
		_, _, err = s.addImage(tx, caller, sp, apitypes.StatusCreating, true)
		return err
	})
	if err != nil {
		return apitypes.Operation{}, toError(err)
	}
	if dup {
		return s.idemOp(caller, key)
	}
	var lid layer.LayerID
	var rec *imageRec
	op, _, err := s.startAsyncIn(s.inSnapshot(ctx, src.diskID, &lid), caller, key, "create image from disk "+sp.lineage.SourceDiskID, apitypes.OperationMetadata{},
		func(tx *storage.Txn, op *opRec) error {
			if _, err := fill(tx); err != nil {
				return err
			}
			r, _, err := s.addImage(tx, caller, sp, apitypes.StatusCreating, false)
			if err != nil {
				return err
			}
			r.Layer, r.OpID = lid, op.ID
			op.Metadata.FolderID, op.Metadata.ImageID, op.Metadata.DiskID = r.FolderID, r.ID, sp.lineage.SourceDiskID
			rec = r
			return putJSON(tx, pfxImage+r.ID, r)
		},
		func(ctx context.Context, ro *runningOp) (finisher, error) {
			sum, err := s.sealAndHash(ctx, lid, ro)
			if err != nil {
				return nil, err
			}
			return func(tx *storage.Txn) (any, error) {
				r, err := getImage(tx, rec.ID)
				if err != nil {
					return nil, err
				}
				r.Status, r.OpID, r.Checksum = apitypes.StatusReady, "", sum
				if info, err := s.layers.LayerInfo(lid); err == nil {
					r.StorageSize = info.Usage.Unique + info.Usage.Shared
				}
				return r.public(), putJSON(tx, pfxImage+r.ID, r)
			}, nil
		})
	return op, err
}

// inSnapshot returns a txnRunner that runs fn inside the switch
// transaction of a snapshot of disk, with *lid set to the new layer first:
// the layer and the records that hold it (a CREATING snapshot or image and
// its operation) commit together or not at all, so no crash can leave a
// layer that nothing releases. Catalog writes stay serialised (s.mu).
func (s *Service) inSnapshot(ctx context.Context, disk layer.DiskID, lid *layer.LayerID) txnRunner {
	return func(fn func(tx *storage.Txn) error) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		id, err := s.layers.SnapshotWith(ctx, disk, func(tx *storage.Txn, id layer.LayerID) error {
			*lid = id
			return fn(tx)
		})
		if err != nil && id != 0 {
			// Committed but not synced: the records hold the layer and the
			// operation must run to finish or remove them.
			s.log.Error("syncing a snapshot's switch", zap.Uint64("layer", uint64(id)), zap.Error(err))
			return nil
		}
		return err
	}
}

// UpdateImage changes name, description, labels or minDiskSize, as the
// update mask says.
func (s *Service) UpdateImage(caller Identity, key, id string, req apitypes.UpdateImageRequest) (apitypes.Operation, error) {
	fields, err := parseUpdateMask(req.UpdateMask, []string{"name", "description", "labels", "minDiskSize"},
		[]string{"family", "os", "os.type", "pooled", "folderId", "id", "imageId", "diskId", "snapshotId", "productIds", "virtualSize", "status", "checksum"})
	if err != nil {
		return apitypes.Operation{}, err
	}
	if err := validateMeta(req.Name, req.Description, req.Labels); err != nil {
		return apitypes.Operation{}, err
	}
	return s.mutate(caller, key, "update image", apitypes.OperationMetadata{ImageID: id}, func(tx *storage.Txn, op *opRec) (any, error) {
		r, err := getImage(tx, id)
		if err != nil {
			return nil, err
		}
		f, err := s.editFolder(tx, caller, op, r.FolderID, r.Bindings, "image", id)
		if err != nil {
			return nil, err
		}
		for _, fl := range fields {
			done, err := applyMetaField(tx, fl, pfxImageName, "image", f.ID, r.ID,
				metaFields{&r.Name, &r.Description, &r.Labels}, req.Name, req.Description, req.Labels)
			if err != nil {
				return nil, err
			}
			if done {
				continue
			}
			switch fl {
			case "minDiskSize":
				if req.MinDiskSize > maxVolumeSize {
					return nil, errInvalid("minDiskSize %d is above the %d byte limit", req.MinDiskSize, int64(maxVolumeSize))
				}
				if r.MinDiskSize, err = minDisk(req.MinDiskSize, r.VirtualSize); err != nil {
					return nil, err
				}
			}
		}
		return r.public(), putJSON(tx, pfxImage+r.ID, r)
	})
}

// DeleteImage removes an image from the catalog. Disks made from it keep
// working: the layer lives until nothing holds it.
func (s *Service) DeleteImage(caller Identity, key, id string) (apitypes.Operation, error) {
	return s.mutate(caller, key, "delete image", apitypes.OperationMetadata{ImageID: id}, func(tx *storage.Txn, op *opRec) (any, error) {
		r, err := getImage(tx, id)
		if err != nil {
			return nil, err
		}
		f, err := s.editFolder(tx, caller, op, r.FolderID, r.Bindings, "image", id)
		if err != nil {
			return nil, err
		}
		if r.Status == apitypes.StatusCreating {
			return nil, errf(apitypes.CodeFailedPrecondition, "image %s is still being made by operation %s; cancel it (`strata operation cancel %s`) or wait", id, r.OpID, r.OpID)
		}
		if r.Layer != 0 {
			if err := s.layers.ReleaseLayer(tx, r.Layer); err != nil {
				return nil, err
			}
		}
		if err := releaseName(tx, pfxImageName, f.ID, r.Name); err != nil {
			return nil, err
		}
		if err := addUsage(tx, f.ID, imageUsage(&r.Image, -1)); err != nil {
			return nil, err
		}
		return nil, del(tx, pfxImage+id)
	})
}

// layerOrZero is the base layer of a disk from src (0: an empty disk).
func (src *source) layerOrZero() layer.LayerID {
	if src == nil {
		return 0
	}
	return src.layer
}
