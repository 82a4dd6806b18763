package api

import (
	"time"

	"strata/api/apitypes"
	"strata/storage"
)

// CreateFolder makes a folder. Only daemon admins may: a folder is where
// quotas and access are granted, so making one is an admin's decision.
// Folder names are required and unique across the daemon, so they can be
// used wherever a folder id is expected.
func (s *Service) CreateFolder(caller Identity, key string, req apitypes.CreateFolderRequest) (apitypes.Operation, error) {
	if req.Name == "" {
		return apitypes.Operation{}, errInvalid("a folder needs a name")
	}
	if err := validateMeta(req.Name, req.Description, req.Labels); err != nil {
		return apitypes.Operation{}, err
	}
	if !s.isAdmin(caller) {
		if err := authenticated(caller); err != nil {
			return apitypes.Operation{}, err
		}
		return apitypes.Operation{}, errf(apitypes.CodePermissionDenied, "only daemon admins (root, the daemon's user, or configured admins) may create folders; ask one to create it and bind you a role on it")
	}
	return s.mutate(caller, key, "create folder", apitypes.OperationMetadata{}, func(tx *storage.Txn, op *opRec) (any, error) {
		if ok, err := exists(tx, pfxFolderName+req.Name); err != nil || ok {
			if ok {
				return nil, errf(apitypes.CodeAlreadyExists, "folder %q already exists; pick another name", req.Name)
			}
			return nil, err
		}
		f := &folderRec{Folder: apitypes.Folder{
			ID: newID(idFolder), CreatedAt: time.Now().UTC(), Name: req.Name,
			Description: req.Description, Labels: req.Labels, Status: apitypes.FolderActive,
		}}
		op.Metadata.FolderID = f.ID
		if err := tx.Set([]byte(pfxFolderName+f.Name), []byte(f.ID)); err != nil {
			return nil, err
		}
		return f.Folder, putJSON(tx, pfxFolder+f.ID, f)
	})
}

// GetFolder returns a folder by id or name.
func (s *Service) GetFolder(caller Identity, folder string) (apitypes.Folder, error) {
	var out apitypes.Folder
	err := s.view(func(tx *storage.Txn) error {
		f, err := s.getFolder(tx, folder)
		if err != nil {
			return err
		}
		out = f.Folder
		return s.check(caller, permGet, f, nil, "folder", f.ID)
	})
	if err != nil {
		return apitypes.Folder{}, toError(err)
	}
	return out, nil
}

// ListFolders lists the folders the caller has a role on (all, for admins).
func (s *Service) ListFolders(caller Identity, pageSize int, pageToken, filter string) (apitypes.ListFoldersResponse, error) {
	if err := authenticated(caller); err != nil {
		return apitypes.ListFoldersResponse{}, err
	}
	name, byName, err := parseFilter(filter)
	if err != nil {
		return apitypes.ListFoldersResponse{}, err
	}
	var all []apitypes.Folder
	err = s.view(func(tx *storage.Txn) error {
		return iterJSON(tx, pfxFolder, func(f *folderRec) error {
			if (!byName || f.Name == name) && s.level(caller, f, nil) >= permGet {
				all = append(all, f.Folder)
			}
			return nil
		})
	})
	if err != nil {
		return apitypes.ListFoldersResponse{}, toError(err)
	}
	page, next, err := paginate(all, pageSize, pageToken, func(f apitypes.Folder) string { return f.ID },
		func(f apitypes.Folder, t string) bool { return afterID(f.ID, t) })
	if err != nil {
		return apitypes.ListFoldersResponse{}, err
	}
	return apitypes.ListFoldersResponse{Folders: append([]apitypes.Folder{}, page...), NextPageToken: next}, nil
}

// DeleteFolder removes an empty folder (daemon admins only).
func (s *Service) DeleteFolder(caller Identity, key, folder string) (apitypes.Operation, error) {
	return s.mutate(caller, key, "delete folder", apitypes.OperationMetadata{}, func(tx *storage.Txn, op *opRec) (any, error) {
		f, err := s.getFolder(tx, folder)
		if err != nil {
			return nil, err
		}
		op.Metadata.FolderID = f.ID
		if err := s.check(caller, permSystem, f, nil, "folder", f.ID); err != nil {
			return nil, err
		}
		u, err := usage(tx, f.ID)
		if err != nil {
			return nil, err
		}
		if n := u[apitypes.QuotaImagesCount] + u[apitypes.QuotaDisksCount] + u[apitypes.QuotaSnapshotsCount]; n > 0 {
			return nil, errf(apitypes.CodeFailedPrecondition, "folder %s still holds %d images, %d disks and %d snapshots; delete them first",
				f.Name, u[apitypes.QuotaImagesCount], u[apitypes.QuotaDisksCount], u[apitypes.QuotaSnapshotsCount])
		}
		if err := del(tx, pfxFolderName+f.Name); err != nil {
			return nil, err
		}
		if err := del(tx, pfxUsage+f.ID); err != nil {
			return nil, err
		}
		return nil, del(tx, pfxFolder+f.ID)
	})
}

// Resource kinds, as in the URL paths.
const (
	KindFolders   = "folders"
	KindImages    = "images"
	KindDisks     = "disks"
	KindSnapshots = "snapshots"
)

// bindingsOf loads the folder and bindings of a resource for access
// calls; save writes new bindings back.
func (s *Service) bindingsOf(tx *storage.Txn, kind, id string) (f *folderRec, bs []apitypes.AccessBinding, save func([]apitypes.AccessBinding) error, err error) {
	switch kind {
	case KindFolders:
		f, err = s.getFolder(tx, id)
		if err != nil {
			return nil, nil, nil, err
		}
		return f, nil, func(n []apitypes.AccessBinding) error { f.Bindings = n; return putJSON(tx, pfxFolder+f.ID, f) }, nil
	case KindImages:
		r, err := getImage(tx, id)
		if err != nil {
			return nil, nil, nil, err
		}
		f, err = s.getFolder(tx, r.FolderID)
		return f, r.Bindings, func(n []apitypes.AccessBinding) error { r.Bindings = n; return putJSON(tx, pfxImage+id, r) }, err
	case KindDisks:
		r, err := getDisk(tx, id)
		if err != nil {
			return nil, nil, nil, err
		}
		f, err = s.getFolder(tx, r.FolderID)
		return f, r.Bindings, func(n []apitypes.AccessBinding) error { r.Bindings = n; return putJSON(tx, pfxDisk+id, r) }, err
	case KindSnapshots:
		r, err := getSnap(tx, id)
		if err != nil {
			return nil, nil, nil, err
		}
		f, err = s.getFolder(tx, r.FolderID)
		return f, r.Bindings, func(n []apitypes.AccessBinding) error { r.Bindings = n; return putJSON(tx, pfxSnap+id, r) }, err
	}
	return nil, nil, nil, errf(apitypes.CodeNotFound, "resource kind %q has no access bindings", kind)
}

// ListAccessBindings returns the bindings set directly on a resource
// (folder bindings apply too but are listed on the folder).
func (s *Service) ListAccessBindings(caller Identity, kind, id string) (apitypes.ListAccessBindingsResponse, error) {
	out := apitypes.ListAccessBindingsResponse{AccessBindings: []apitypes.AccessBinding{}}
	err := s.view(func(tx *storage.Txn) error {
		f, bs, _, err := s.bindingsOf(tx, kind, id)
		if err != nil {
			return err
		}
		if kind == KindFolders {
			bs = f.Bindings
		}
		if err := s.check(caller, permGet, f, bs, singular(kind), id); err != nil {
			return err
		}
		out.AccessBindings = append(out.AccessBindings, bs...)
		return nil
	})
	if err != nil {
		return out, toError(err)
	}
	return out, nil
}

// SetAccessBindings replaces a resource's bindings (compute.admin).
func (s *Service) SetAccessBindings(caller Identity, key, kind, id string, req apitypes.SetAccessBindingsRequest) (apitypes.Operation, error) {
	bs, err := validateBindings(req.AccessBindings)
	if err != nil {
		return apitypes.Operation{}, err
	}
	return s.changeBindings(caller, key, kind, id, "set access bindings", func([]apitypes.AccessBinding) ([]apitypes.AccessBinding, error) { return bs, nil })
}

// UpdateAccessBindings adds and removes bindings (compute.admin).
func (s *Service) UpdateAccessBindings(caller Identity, key, kind, id string, req apitypes.UpdateAccessBindingsRequest) (apitypes.Operation, error) {
	if len(req.AccessBindingDeltas) == 0 {
		return apitypes.Operation{}, errInvalid("no accessBindingDeltas given")
	}
	for _, d := range req.AccessBindingDeltas {
		if err := validateBinding(d.AccessBinding); err != nil {
			return apitypes.Operation{}, err
		}
	}
	return s.changeBindings(caller, key, kind, id, "update access bindings", func(cur []apitypes.AccessBinding) ([]apitypes.AccessBinding, error) {
		return applyDeltas(cur, req.AccessBindingDeltas)
	})
}

func (s *Service) changeBindings(caller Identity, key, kind, id, desc string, change func([]apitypes.AccessBinding) ([]apitypes.AccessBinding, error)) (apitypes.Operation, error) {
	return s.mutate(caller, key, desc, apitypes.OperationMetadata{}, func(tx *storage.Txn, op *opRec) (any, error) {
		f, bs, save, err := s.bindingsOf(tx, kind, id)
		if err != nil {
			return nil, err
		}
		if kind == KindFolders {
			bs = f.Bindings
		}
		op.Metadata.FolderID = f.ID
		setResourceMeta(&op.Metadata, kind, id)
		if err := s.check(caller, permAdmin, f, bs, singular(kind), id); err != nil {
			return nil, err
		}
		n, err := change(bs)
		if err != nil {
			return nil, err
		}
		if err := save(n); err != nil {
			return nil, err
		}
		return apitypes.ListAccessBindingsResponse{AccessBindings: append([]apitypes.AccessBinding{}, n...)}, nil
	})
}

func setResourceMeta(m *apitypes.OperationMetadata, kind, id string) {
	switch kind {
	case KindImages:
		m.ImageID = id
	case KindDisks:
		m.DiskID = id
	case KindSnapshots:
		m.SnapshotID = id
	}
}

func singular(kind string) string {
	switch kind {
	case KindFolders:
		return "folder"
	case KindImages:
		return "image"
	case KindDisks:
		return "disk"
	case KindSnapshots:
		return "snapshot"
	}
	return kind
}
