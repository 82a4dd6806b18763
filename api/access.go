package api

import (
	"os"
	"slices"

	"strata/api/apitypes"
)

// perm is what a call needs. Roles grant levels: each role includes the
// ones below it.
type perm int

const (
	permNone   perm = iota
	permGet         // get and list: compute.viewer
	permUse         // also use as a source, read-only NBD: compute.images.user
	permEdit        // also create, update, delete, write a disk: compute.editor
	permAdmin       // also change access bindings: compute.admin
	permSystem      // daemon admins only: folders, quotas
)

var roleLevel = map[string]perm{
	apitypes.RoleViewer:     permGet,
	apitypes.RoleImagesUser: permUse,
	apitypes.RoleEditor:     permEdit,
	apitypes.RoleAdmin:      permAdmin,
}

// isAdmin: root, the daemon's own uid and the configured admins have every
// right on everything.
func (s *Service) isAdmin(id Identity) bool {
	if !id.Known {
		return false
	}
	return id.UID == 0 || id.UID == uint32(os.Getuid()) || slices.Contains(s.cfg.Admins, id.UID)
}

// level is the caller's right on a resource: the best role bound to any of
// the caller's subjects on the resource or on its folder.
func (s *Service) level(id Identity, folder *folderRec, res []apitypes.AccessBinding) perm {
	if s.isAdmin(id) {
		return permSystem
	}
	best := permNone
	scan := func(bs []apitypes.AccessBinding) {
		for _, b := range bs {
			if l := roleLevel[b.RoleID]; l > best && id.matches(b.Subject) {
				best = l
			}
		}
	}
	if folder != nil {
		scan(folder.Bindings)
	}
	scan(res)
	return best
}

// authenticated refuses callers without credentials.
func authenticated(id Identity) error {
	if !id.Known {
		return errf(apitypes.CodeUnauthenticated, "the daemon could not read your credentials; connect over its Unix admin socket")
	}
	return nil
}

var permVerb = map[perm]string{
	permGet:    "see",
	permUse:    "use",
	permEdit:   "change",
	permAdmin:  "change access to",
	permSystem: "administer",
}

// check returns PERMISSION_DENIED unless the caller has at least need.
func (s *Service) check(id Identity, need perm, folder *folderRec, res []apitypes.AccessBinding, kind, rid string) error {
	if err := authenticated(id); err != nil {
		return err
	}
	if s.level(id, folder, res) >= need {
		return nil
	}
	if need == permSystem {
		return errf(apitypes.CodePermissionDenied, "only daemon admins (root, the daemon's user, or configured admins) may %s %s %q", permVerb[need], kind, rid)
	}
	return errDenied(permVerb[need], kind, rid)
}

// applyDeltas returns bindings changed by deltas; removing an absent
// binding is an error so a typo does not pass silently.
func applyDeltas(bs []apitypes.AccessBinding, deltas []apitypes.AccessBindingDelta) ([]apitypes.AccessBinding, error) {
	out := slices.Clone(bs)
	for _, d := range deltas {
		if err := validateBinding(d.AccessBinding); err != nil {
			return nil, err
		}
		i := slices.Index(out, d.AccessBinding)
		switch d.Action {
		case apitypes.ActionAdd:
			if i < 0 {
				out = append(out, d.AccessBinding)
			}
		case apitypes.ActionRemove:
			if i < 0 {
				return nil, errf(apitypes.CodeNotFound, "no binding of %s to %s:%s to remove; list them with :listAccessBindings",
					d.AccessBinding.RoleID, d.AccessBinding.Subject.Type, d.AccessBinding.Subject.ID)
			}
			out = slices.Delete(out, i, i+1)
		default:
			return nil, errInvalid("access binding action %q is invalid: use ADD or REMOVE", d.Action)
		}
	}
	return out, nil
}

// validateBindings checks a full set and removes duplicates.
func validateBindings(bs []apitypes.AccessBinding) ([]apitypes.AccessBinding, error) {
	var out []apitypes.AccessBinding
	for _, b := range bs {
		if err := validateBinding(b); err != nil {
			return nil, err
		}
		if !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	return out, nil
}
