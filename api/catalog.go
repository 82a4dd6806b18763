package api

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"

	"strata/api/apitypes"
	"strata/layer"
	"strata/storage"
)

// Catalog records live in the store's transactional key space under
// "api/". Each record is the public resource plus what only the daemon
// needs (layer ids, bindings, the creation sequence). Name indexes make
// "unique per folder" a key lookup inside the same transaction.
const (
	pfxFolder     = "api/f/"  // api/f/<id> -> folderRec
	pfxFolderName = "api/fn/" // api/fn/<name> -> id
	pfxImage      = "api/i/"  // api/i/<id> -> imageRec
	pfxImageName  = "api/in/" // api/in/<folder>/<name> -> id
	pfxDisk       = "api/d/"
	pfxDiskName   = "api/dn/"
	pfxSnap       = "api/s/"
	pfxSnapName   = "api/sn/"
	pfxOp         = "api/o/" // api/o/<id> -> opRec
	pfxIdem       = "api/k/" // api/k/<uid>/<key hash> -> op id
	pfxUsage      = "api/u/" // api/u/<folder> -> quota usage counters
	keySeq        = "api/seq"
)

type folderRec struct {
	apitypes.Folder
	Bindings []apitypes.AccessBinding `json:"bindings,omitempty"`
	Quotas   map[string]int64         `json:"quotas,omitempty"`
}

type imageRec struct {
	apitypes.Image
	Layer    layer.LayerID            `json:"layer"`
	Seq      uint64                   `json:"seq"`
	OpID     string                   `json:"opId,omitempty"` // the operation making it, while CREATING
	Bindings []apitypes.AccessBinding `json:"bindings,omitempty"`
}

type diskRec struct {
	apitypes.Disk
	DiskID   layer.DiskID             `json:"diskId"`
	Seq      uint64                   `json:"seq"`
	Bindings []apitypes.AccessBinding `json:"bindings,omitempty"`
}

type snapRec struct {
	apitypes.Snapshot
	Layer    layer.LayerID            `json:"layer"`
	Seq      uint64                   `json:"seq"`
	OpID     string                   `json:"opId,omitempty"`
	Bindings []apitypes.AccessBinding `json:"bindings,omitempty"`
}

type opRec struct {
	apitypes.Operation
	Seq      uint64 `json:"seq"`
	CallerID uint32 `json:"callerUid"`
}

func getJSON(tx *storage.Txn, key string, v any) error {
	b, err := tx.Get([]byte(key))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return &Error{Code: apitypes.CodeDataLoss, err: err,
			Message: "catalog record " + key + " is unreadable; restore the data directory from a backup"}
	}
	return nil
}

func putJSON(tx *storage.Txn, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Set([]byte(key), b)
}

func del(tx *storage.Txn, key string) error { return tx.Delete([]byte(key)) }

// exists reports whether key is set.
func exists(tx *storage.Txn, key string) (bool, error) {
	_, err := tx.Get([]byte(key))
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// iterJSON decodes every record under prefix, in key order.
func iterJSON[T any](tx *storage.Txn, prefix string, fn func(*T) error) error {
	return tx.Iterate([]byte(prefix), func(_, val []byte) error {
		v := new(T)
		if err := json.Unmarshal(val, v); err != nil {
			return &Error{Code: apitypes.CodeDataLoss, err: err,
				Message: "a catalog record under " + prefix + " is unreadable; restore the data directory from a backup"}
		}
		return fn(v)
	})
}

// nextSeq returns the next value of the catalog's monotonic sequence. It
// orders images within a family and operations in lists, so two creations
// never tie whatever the clock does.
func nextSeq(tx *storage.Txn) (uint64, error) {
	var n uint64
	b, err := tx.Get([]byte(keySeq))
	switch {
	case err == nil && len(b) == 8:
		n = binary.BigEndian.Uint64(b)
	case err == nil:
		return 0, &Error{Code: apitypes.CodeDataLoss, Message: "catalog sequence is unreadable; restore the data directory"}
	case !errors.Is(err, storage.ErrNotFound):
		return 0, err
	}
	n++
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], n)
	return n, tx.Set([]byte(keySeq), out[:])
}

// Id prefixes: three letters that say what an id names, then 17 random
// characters, 20 in all like the cloud's.
const (
	idFolder = "fld"
	idImage  = "img"
	idDisk   = "dsk"
	idSnap   = "snp"
	idOp     = "opr"
)

const idAlphabet = "abcdefghijklmnopqrstuv0123456789"

func newID(prefix string) string {
	var b [17]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	var sb strings.Builder
	sb.WriteString(prefix)
	for _, c := range b {
		sb.WriteByte(idAlphabet[c%32])
	}
	return sb.String()
}

func nameKey(prefix, folder, name string) string { return prefix + folder + "/" + name }

// checkName refuses a name another resource of the kind holds in folder.
func checkName(tx *storage.Txn, prefix, kind, folder, name, id string) error {
	if name == "" {
		return nil
	}
	b, err := tx.Get([]byte(nameKey(prefix, folder, name)))
	if err == nil && string(b) != id {
		return errf(apitypes.CodeAlreadyExists, "a %s named %q already exists in folder %s (id %s); pick another name or delete that one", kind, name, folder, string(b))
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return nil
}

// claimName reserves name in folder for id; an empty name reserves nothing.
func claimName(tx *storage.Txn, prefix, kind, folder, name, id string) error {
	if name == "" {
		return nil
	}
	if err := checkName(tx, prefix, kind, folder, name, id); err != nil {
		return err
	}
	return tx.Set([]byte(nameKey(prefix, folder, name)), []byte(id))
}

// releaseName drops a name reservation.
func releaseName(tx *storage.Txn, prefix, folder, name string) error {
	if name == "" {
		return nil
	}
	return del(tx, nameKey(prefix, folder, name))
}

func notFoundOr(err error, e *Error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return e
	}
	return err
}

// editFolder is the start of every mutation of one resource: it loads the
// resource's folder, names it in the operation's metadata and checks that
// the caller may edit the resource (kind/id, with its own bindings).
func (s *Service) editFolder(tx *storage.Txn, caller Identity, op *opRec, folderID string, bindings []apitypes.AccessBinding, kind, id string) (*folderRec, error) {
	f, err := s.getFolder(tx, folderID)
	if err != nil {
		return nil, err
	}
	op.Metadata.FolderID = f.ID
	if err := s.check(caller, permEdit, f, bindings, kind, id); err != nil {
		return nil, err
	}
	return f, nil
}

func (s *Service) getFolder(tx *storage.Txn, idOrName string) (*folderRec, error) {
	if idOrName == "" {
		return nil, errInvalid("folderId is required: give a folder id or name (see `strata folder list`)")
	}
	f := new(folderRec)
	err := getJSON(tx, pfxFolder+idOrName, f)
	if errors.Is(err, storage.ErrNotFound) {
		var id []byte
		id, err = tx.Get([]byte(pfxFolderName + idOrName))
		if err == nil {
			err = getJSON(tx, pfxFolder+string(id), f)
		}
	}
	if err != nil {
		return nil, notFoundOr(err, errNotFound("folder", idOrName))
	}
	return f, nil
}

func getImage(tx *storage.Txn, id string) (*imageRec, error) {
	r := new(imageRec)
	if err := getJSON(tx, pfxImage+id, r); err != nil {
		return nil, notFoundOr(err, errNotFound("image", id))
	}
	return r, nil
}

func getDisk(tx *storage.Txn, id string) (*diskRec, error) {
	r := new(diskRec)
	if err := getJSON(tx, pfxDisk+id, r); err != nil {
		return nil, notFoundOr(err, errNotFound("disk", id))
	}
	return r, nil
}

func getSnap(tx *storage.Txn, id string) (*snapRec, error) {
	r := new(snapRec)
	if err := getJSON(tx, pfxSnap+id, r); err != nil {
		return nil, notFoundOr(err, errNotFound("snapshot", id))
	}
	return r, nil
}

func getOp(tx *storage.Txn, id string) (*opRec, error) {
	r := new(opRec)
	if err := getJSON(tx, pfxOp+id, r); err != nil {
		return nil, notFoundOr(err, errNotFound("operation", id))
	}
	return r, nil
}

// metaFields points at the name, description and labels of a record, the
// part of an update every resource shares.
type metaFields struct {
	name, description *string
	labels            *map[string]string
}

// applyMetaField applies one update-mask field shared by every resource:
// a rename (moving the record's unique name in its folder, under namePfx),
// the description or the labels. It reports false for any other field,
// which the caller handles itself.
func applyMetaField(tx *storage.Txn, field, namePfx, kind, folderID, id string, to metaFields,
	name, description string, labels map[string]string) (bool, error) {
	switch field {
	case "name":
		if name != *to.name {
			if err := releaseName(tx, namePfx, folderID, *to.name); err != nil {
				return true, err
			}
			if err := claimName(tx, namePfx, kind, folderID, name, id); err != nil {
				return true, err
			}
			*to.name = name
		}
	case "description":
		*to.description = description
	case "labels":
		*to.labels = labels
	default:
		return false, nil
	}
	return true, nil
}
