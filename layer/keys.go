package layer

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"strata/storage"
)

// Key layout. Every record of this package lives under "layer/" in the
// store's metadata namespace, next to api/'s catalog, so one transaction can
// change a catalog record and the layer state behind it together.
//
//	layer/c                  id counter high-water mark (be64)
//	layer/m/<layer>          layerMeta (JSON)
//	layer/d/<disk>           diskMeta (JSON)
//	layer/lf/<page>          leaf page: up to 1024 chunk ids (le64 each)
//	layer/dr/<page>          dir page: up to 1024 leaf page ids (le64 each)
//	layer/rc/<page>          page reference count (be64)
//	layer/sl/<layer><leaf>   staged leaf of a layer being built -> page id
//	layer/sd/<layer><dir>    staged dir of a layer being built -> page id
//	layer/o/<overlay><block> overlay block: seq, kind, 4 KiB data
//	layer/or/<overlay><seq>  overlay range record: kind, first, end block
//	layer/j/<job>            background release job
//
// Ids are big-endian in keys so prefix iteration runs in numeric order.
var (
	keyCounter  = []byte("layer/c")
	pfxLayer    = []byte("layer/m/")
	pfxDisk     = []byte("layer/d/")
	pfxLeaf     = []byte("layer/lf/")
	pfxDir      = []byte("layer/dr/")
	pfxRefcount = []byte("layer/rc/")
	pfxStageLf  = []byte("layer/sl/")
	pfxStageDr  = []byte("layer/sd/")
	pfxBlock    = []byte("layer/o/")
	pfxRange    = []byte("layer/or/")
	pfxJob      = []byte("layer/j/")
)

func key(prefix []byte, ids ...uint64) []byte {
	k := make([]byte, len(prefix), len(prefix)+8*len(ids))
	copy(k, prefix)
	for _, id := range ids {
		k = binary.BigEndian.AppendUint64(k, id)
	}
	return k
}

// keyID returns the n-th id after prefix in k.
func keyID(prefix, k []byte, n int) uint64 {
	o := len(prefix) + 8*n
	if len(k) < o+8 {
		return 0
	}
	return binary.BigEndian.Uint64(k[o:])
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func getU64(tx *storage.Txn, k []byte) (uint64, error) {
	v, err := tx.Get(k)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: bad counter %q", ErrCorruptMeta, k)
	}
	return binary.BigEndian.Uint64(v), nil
}

// Layer states. A layer is visible (to LayerInfo, OpenLayer, CreateDisk)
// only when sealing or ready.
const (
	statePending  = "pending"  // import not yet committed: invisible, dropped at Open
	stateSealing  = "sealing"  // map being built from Parent + Overlay
	stateReady    = "ready"    // Dirs complete
	stateDeleting = "deleting" // release job running
)

// layerMeta is the persisted record of a layer.
type layerMeta struct {
	State   string   `json:"state"`
	Size    int64    `json:"size"`
	Holders int64    `json:"holders"`           // image/snapshot records (RetainLayer)
	Users   int64    `json:"users"`             // disks on it, layers sealing over it
	Parent  LayerID  `json:"parent,omitempty"`  // sealing: the layer under Overlay
	Overlay uint64   `json:"overlay,omitempty"` // sealing: the frozen overlay (0: none, a clone)
	Dirs    []uint64 `json:"dirs,omitempty"`    // ready: dir page ids, 0 = hole
}

func (lm *layerMeta) visible() bool { return lm.State == stateSealing || lm.State == stateReady }

// diskMeta is the persisted record of a disk.
type diskMeta struct {
	Size    int64   `json:"size"`
	Base    LayerID `json:"base,omitempty"` // 0: empty base
	Overlay uint64  `json:"overlay"`
	Pooled  bool    `json:"pooled,omitempty"`
}

func getJSON(tx *storage.Txn, k []byte, v any) error {
	b, err := tx.Get(k)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrCorruptMeta, k, err)
	}
	return nil
}

func setJSON(tx *storage.Txn, k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Set(k, b)
}

func getLayerMeta(tx *storage.Txn, id LayerID) (*layerMeta, error) {
	var lm layerMeta
	if err := getJSON(tx, key(pfxLayer, uint64(id)), &lm); err != nil {
		return nil, err
	}
	return &lm, nil
}

func putLayerMeta(tx *storage.Txn, id LayerID, lm *layerMeta) error {
	return setJSON(tx, key(pfxLayer, uint64(id)), lm)
}

func getDiskMeta(tx *storage.Txn, id DiskID) (*diskMeta, error) {
	var dm diskMeta
	if err := getJSON(tx, key(pfxDisk, uint64(id)), &dm); err != nil {
		return nil, err
	}
	return &dm, nil
}

// encodeIDs packs ids little-endian, dropping trailing zeros (holes cost
// nothing on disk either).
func encodeIDs(ids []uint64) []byte {
	n := len(ids)
	for n > 0 && ids[n-1] == 0 {
		n--
	}
	b := make([]byte, 8*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint64(b[8*i:], ids[i])
	}
	return b
}

func decodeIDs(b []byte, dst []uint64) error {
	if len(b)%8 != 0 || len(b)/8 > len(dst) {
		return fmt.Errorf("%w: page of %d bytes", ErrCorruptMeta, len(b))
	}
	for i := range dst {
		dst[i] = 0
	}
	for i := 0; i < len(b)/8; i++ {
		dst[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return nil
}
