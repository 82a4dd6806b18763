package api

import (
	"errors"
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

// Usage is kept as counters per folder (key api/u/<folder>), changed in
// the transaction that adds or removes a resource, so a creation costs the
// same however many resources the store holds. New recounts them from the
// records at start (countUsage), which also heals any drift.

// usage returns what a folder holds, CREATING resources included.
func usage(tx *storage.Txn, folderID string) (map[string]int64, error) {
	u := make(map[string]int64, len(quotaNames))
	err := getJSON(tx, pfxUsage+folderID, &u)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	return u, nil
}

// addUsage changes a folder's counters by delta.
func addUsage(tx *storage.Txn, folderID string, delta map[string]int64) error {
	u, err := usage(tx, folderID)
	if err != nil {
		return err
	}
	for k, v := range delta {
		u[k] = max(u[k]+v, 0)
	}
	return putJSON(tx, pfxUsage+folderID, u)
}

// imageUsage is what an image counts against its folder's quotas.
func imageUsage(im *apitypes.Image, sign int64) map[string]int64 {
	d := map[string]int64{apitypes.QuotaImagesCount: sign, apitypes.QuotaImagesSize: sign * im.VirtualSize}
	if im.Pooled {
		d[apitypes.QuotaDiskPoolsCount] = sign
	}
	return d
}

// countUsage recounts every folder's usage from the records and rewrites
// the counters.
func (s *Service) countUsage() error {
	all := map[string]map[string]int64{}
	add := func(folder string, d map[string]int64) {
		u := all[folder]
		if u == nil {
			u = map[string]int64{}
			all[folder] = u
		}
		for k, v := range d {
			u[k] += v
		}
	}
	var stale []string
	err := s.view(func(tx *storage.Txn) error {
		if err := iterJSON(tx, pfxFolder, func(f *folderRec) error { add(f.ID, nil); return nil }); err != nil {
			return err
		}
		if err := iterJSON(tx, pfxImage, func(im *imageRec) error { add(im.FolderID, imageUsage(&im.Image, 1)); return nil }); err != nil {
			return err
		}
		if err := iterJSON(tx, pfxDisk, func(d *diskRec) error {
			add(d.FolderID, map[string]int64{apitypes.QuotaDisksCount: 1})
			return nil
		}); err != nil {
			return err
		}
		if err := iterJSON(tx, pfxSnap, func(sn *snapRec) error {
			add(sn.FolderID, map[string]int64{apitypes.QuotaSnapshotsCount: 1})
			return nil
		}); err != nil {
			return err
		}
		return tx.Iterate([]byte(pfxUsage), func(k, _ []byte) error {
			if id := string(k[len(pfxUsage):]); all[id] == nil {
				stale = append(stale, id)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	return s.update(func(tx *storage.Txn) error {
		for id, u := range all {
			if err := putJSON(tx, pfxUsage+id, u); err != nil {
				return err
			}
		}
		for _, id := range stale {
			if err := del(tx, pfxUsage+id); err != nil {
				return err
			}
		}
		return nil
	})
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
