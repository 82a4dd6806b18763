package api

import (
	"regexp"
	"strconv"

	"strata/api/apitypes"
	"strata/storage"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// paginate returns one page of items (already in list order) after the
// item whose key is token, and the token of the next page. Tokens are the
// last key returned, so a page is stable under inserts elsewhere; after
// reports whether an item comes after the token in list order.
func paginate[T any](items []T, pageSize int, token string, key func(T) string, after func(T, string) bool) ([]T, string, error) {
	if pageSize < 0 || pageSize > maxPageSize {
		return nil, "", errInvalid("pageSize %d is invalid: give 1 to %d (0 means %d)", pageSize, maxPageSize, defaultPageSize)
	}
	if pageSize == 0 {
		pageSize = defaultPageSize
	}
	start := 0
	if token != "" {
		start = len(items)
		for i, it := range items {
			if after(it, token) {
				start = i
				break
			}
		}
	}
	items = items[start:]
	if len(items) <= pageSize {
		return items, "", nil
	}
	return items[:pageSize], key(items[pageSize-1]), nil
}

// afterID orders lists by id, ascending.
func afterID(id, token string) bool { return id > token }

// afterSeqDesc orders lists newest first by sequence.
func afterSeqDesc(seq uint64, token string) bool {
	t, err := strconv.ParseUint(token, 10, 64)
	return err != nil || seq < t
}

var filterRE = regexp.MustCompile(`^\s*name\s*=\s*"([^"]*)"\s*$`)

// parseFilter accepts the one filter the API knows, name="x"; empty
// matches everything.
func parseFilter(f string) (name string, ok bool, err error) {
	if f == "" {
		return "", false, nil
	}
	m := filterRE.FindStringSubmatch(f)
	if m == nil {
		return "", false, errInvalid(`filter %q is not supported: use name="NAME"`, f)
	}
	return m[1], true, nil
}

// folderResource is what listing needs of an image, disk or snapshot
// record: where it lives, its name, its own bindings, its public form.
type folderResource[P any] interface {
	place() (folderID, name string)
	bindings() []apitypes.AccessBinding
	public() P
}

func (r *imageRec) place() (string, string)            { return r.FolderID, r.Name }
func (r *imageRec) bindings() []apitypes.AccessBinding { return r.Bindings }
func (r *diskRec) place() (string, string)             { return r.FolderID, r.Name }
func (r *diskRec) bindings() []apitypes.AccessBinding  { return r.Bindings }
func (r *snapRec) place() (string, string)             { return r.FolderID, r.Name }
func (r *snapRec) bindings() []apitypes.AccessBinding  { return r.Bindings }

// listInFolder returns one page of a folder's records under prefix that
// the caller may see (all of them with a role on the folder, else those it
// has a role on, public ones too), filtered by `name="x"`, in id order.
func listInFolder[R any, PR interface {
	*R
	folderResource[P]
}, P any](s *Service, caller Identity, folder, prefix string, pageSize int, pageToken, filter string, id func(P) string) ([]P, string, error) {
	if err := authenticated(caller); err != nil {
		return nil, "", err
	}
	name, byName, err := parseFilter(filter)
	if err != nil {
		return nil, "", err
	}
	var all []P
	err = s.view(func(tx *storage.Txn) error {
		f, err := s.getFolder(tx, folder)
		if err != nil {
			return err
		}
		return iterJSON(tx, prefix, func(r *R) error {
			rec := PR(r)
			fid, n := rec.place()
			if fid == f.ID && (!byName || n == name) && s.level(caller, f, rec.bindings()) >= permGet {
				all = append(all, rec.public())
			}
			return nil
		})
	})
	if err != nil {
		return nil, "", toError(err)
	}
	page, next, err := paginate(all, pageSize, pageToken, id, func(x P, t string) bool { return afterID(id(x), t) })
	if err != nil {
		return nil, "", err
	}
	return append([]P{}, page...), next, nil
}
