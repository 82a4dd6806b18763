package api

import (
	"fmt"
	"slices"

	"strata/api/apitypes"
	"strata/storage"
)

// Quotas are hard per-folder limits, checked in the transaction that adds
// the resource, against usage counted from the catalog in that same
// transaction (so two creations cannot both slip under a limit).

func (s *Service) limit(f *folderRec, name string) int64 {
	if v, ok := f.Quotas[name]; ok {
		return v
	}
	if v, ok := s.cfg.DefaultQuotas[name]; ok {
		return v
	}
	return DefaultQuotas()[name]
}

// usage counts what a folder holds, CREATING resources included.
func usage(tx *storage.Txn, folderID string) (map[string]int64, error) {
	u := make(map[string]int64, len(quotaNames))
	err := iterJSON(tx, pfxImage, func(im *imageRec) error {
		if im.FolderID == folderID {
			u[apitypes.QuotaImagesCount]++
			u[apitypes.QuotaImagesSize] += im.VirtualSize
			if im.Pooled {
				u[apitypes.QuotaDiskPoolsCount]++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = iterJSON(tx, pfxDisk, func(d *diskRec) error {
		if d.FolderID == folderID {
			u[apitypes.QuotaDisksCount]++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = iterJSON(tx, pfxSnap, func(sn *snapRec) error {
		if sn.FolderID == folderID {
			u[apitypes.QuotaSnapshotsCount]++
		}
		return nil
	})
	return u, err
}

// checkQuota refuses adding add[name] to the folder's usage when that
// would pass a limit, with a message saying how to raise it.
func (s *Service) checkQuota(tx *storage.Txn, f *folderRec, add map[string]int64) error {
	u, err := usage(tx, f.ID)
	if err != nil {
		return err
	}
	for _, name := range quotaNames {
		n, ok := add[name]
		if !ok || n == 0 {
			continue
		}
		lim := s.limit(f, name)
		if u[name]+n > lim {
			want := u[name] + n
			return &Error{Code: apitypes.CodeResourceExhausted,
				Message: fmt.Sprintf("quota %s of folder %s is exhausted (limit %d, in use %d, this needs %d more); a daemon admin can raise it: `strata quota set --folder %s %s=%d`",
					name, f.Name, lim, u[name], n, f.Name, name, want),
				Details: []string{name}}
		}
	}
	return nil
}

func (s *Service) quotaList(tx *storage.Txn, f *folderRec) (apitypes.QuotaList, error) {
	u, err := usage(tx, f.ID)
	if err != nil {
		return apitypes.QuotaList{}, err
	}
	out := apitypes.QuotaList{FolderID: f.ID}
	for _, name := range quotaNames {
		out.Quotas = append(out.Quotas, apitypes.Quota{Name: name, Limit: s.limit(f, name), Usage: u[name]})
	}
	return out, nil
}

// GetQuotas returns a folder's limits and usage (viewer or better).
func (s *Service) GetQuotas(caller Identity, folder string) (apitypes.QuotaList, error) {
	var out apitypes.QuotaList
	err := s.view(func(tx *storage.Txn) error {
		f, err := s.getFolder(tx, folder)
		if err != nil {
			return err
		}
		if err := s.check(caller, permGet, f, nil, "folder", f.ID); err != nil {
			return err
		}
		out, err = s.quotaList(tx, f)
		return err
	})
	if err != nil {
		return out, toError(err)
	}
	return out, nil
}

// SetQuotas changes a folder's limits. Only daemon admins may: a folder's
// own admins raising its quotas would make them no limits at all. A limit
// below current usage is allowed; it stops new creations only.
func (s *Service) SetQuotas(caller Identity, key, folder string, req apitypes.SetQuotasRequest) (apitypes.Operation, error) {
	if len(req.Limits) == 0 {
		return apitypes.Operation{}, errInvalid("no limits given: set at least one, e.g. {\"limits\": {\"%s\": 1}}", apitypes.QuotaDiskPoolsCount)
	}
	for name, v := range req.Limits {
		if !slices.Contains(quotaNames, name) {
			return apitypes.Operation{}, errInvalid("quota %q does not exist; known quotas: %v", name, quotaNames)
		}
		if v < 0 {
			return apitypes.Operation{}, errInvalid("quota %s=%d is invalid: limits are zero or more", name, v)
		}
	}
	return s.mutate(caller, key, "set quotas", apitypes.OperationMetadata{}, func(tx *storage.Txn, op *opRec) (any, error) {
		f, err := s.getFolder(tx, folder)
		if err != nil {
			return nil, err
		}
		op.Metadata.FolderID = f.ID
		if err := s.check(caller, permSystem, f, nil, "folder", f.ID); err != nil {
			return nil, err
		}
		if f.Quotas == nil {
			f.Quotas = make(map[string]int64)
		}
		for name, v := range req.Limits {
			f.Quotas[name] = v
		}
		if err := putJSON(tx, pfxFolder+f.ID, f); err != nil {
			return nil, err
		}
		return s.quotaList(tx, f)
	})
}
