package layer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"strata/storage"
)

// Building a layer's map (by import or by seal) runs in resumable steps so
// no transaction grows with the layer's size:
//
//  1. stageLeaves: new leaf pages, their chunk references, and a staging
//     key layer/sl/<layer><leaf> owning each page, a few leaves per txn;
//  2. stageDirs: per touched dir, a new dir page over the staged leaves and
//     the parent's unchanged ones (+1 each), owned by layer/sd/<layer><dir>;
//     the leaf staging keys of that dir go in the same txn;
//  3. finishDirs, in the txn that makes the layer ready: the layer record
//     takes over the staged dirs and shares the parent's untouched ones.
//
// A crash between steps leaves staging keys; the seal resumes from them, and
// a dropped layer's release frees them (reaper.go).

var errAbandoned = errors.New("layer: build abandoned (layer deleted)")

// leavesPerTxn is how many new leaves one staging transaction may write:
// a leaf costs up to two writes per entry (a chunk's count, and its GC
// queue key when the count leaves zero) plus a few for the page, and
// storage.MaxTxnWrites is what a transaction safely holds.
func (m *Manager) leavesPerTxn() int {
	return max(1, m.store.MaxTxnWrites()/(2*fanout+4))
}

type stagedLeaf struct {
	li int64
	l  *leaf // nil: all holes
}

// checkState fails with errAbandoned unless layer id is in state want.
func checkState(tx *storage.Txn, id LayerID, want string) (*layerMeta, error) {
	lm, err := getLayerMeta(tx, id)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && lm.State != want) {
		return nil, errAbandoned
	}
	return lm, err
}

// stageLeaves writes a batch of new leaves of layer id in one transaction
// and records their page ids in staged.
func (m *Manager) stageLeaves(id LayerID, want string, batch []stagedLeaf, staged map[int64]uint64) error {
	if len(batch) == 0 {
		return nil
	}
	for _, s := range batch {
		if s.l != nil && s.l.pid == 0 {
			pid, err := m.newID()
			if err != nil {
				return err
			}
			s.l.pid = pid
		}
	}
	err := m.store.Update(func(tx *storage.Txn) error {
		if _, err := checkState(tx, id, want); err != nil {
			return err
		}
		for _, s := range batch {
			var pid uint64
			if s.l != nil {
				pid = s.l.pid
				if err := writeLeaf(tx, s.l); err != nil {
					return err
				}
			}
			if err := tx.Set(key(pfxStageLf, uint64(id), uint64(s.li)), be64(pid)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, s := range batch {
		if s.l != nil {
			staged[s.li] = s.l.pid
			m.pages.add(packLeaf(s.l.pid, s.l.ids))
		} else {
			staged[s.li] = 0
		}
	}
	return nil
}

// readStaged loads the staging keys of layer id: leaf index -> page id and
// dir index -> page id.
func (m *Manager) readStaged(id LayerID) (leaves, dirs map[int64]uint64, err error) {
	leaves, dirs = map[int64]uint64{}, map[int64]uint64{}
	err = m.store.View(func(tx *storage.Txn) error {
		for _, s := range []struct {
			p   []byte
			dst map[int64]uint64
		}{{key(pfxStageLf, uint64(id)), leaves}, {key(pfxStageDr, uint64(id)), dirs}} {
			if err := tx.Iterate(s.p, func(k, v []byte) error {
				if len(v) != 8 || len(k) != len(s.p)+8 {
					return fmt.Errorf("%w: staging record", ErrCorruptMeta)
				}
				s.dst[int64(binary.BigEndian.Uint64(k[len(s.p):]))] = binary.BigEndian.Uint64(v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return leaves, dirs, err
}

// stageDirs builds a new dir page for every dir holding staged leaves (one
// txn each), sharing the parent's other leaves.
func (m *Manager) stageDirs(id LayerID, want string, parent *blockMap, leaves, dirs map[int64]uint64) error {
	byDir := map[int64][]int64{}
	for li := range leaves {
		byDir[li/fanout] = append(byDir[li/fanout], li)
	}
	order := make([]int64, 0, len(byDir))
	for di := range byDir {
		order = append(order, di)
	}
	slices.Sort(order)
	for _, di := range order {
		if _, done := dirs[di]; done {
			continue
		}
		ids := make([]uint64, fanout)
		var shared []uint64
		for j := range ids {
			li := di*fanout + int64(j)
			if pid, ok := leaves[li]; ok {
				ids[j] = pid
			} else if pid := parent.leafPID(li); pid != 0 {
				ids[j] = pid
				shared = append(shared, pid)
			}
		}
		var dpid uint64
		if slices.ContainsFunc(ids, func(v uint64) bool { return v != 0 }) {
			var err error
			if dpid, err = m.newID(); err != nil {
				return err
			}
		}
		err := m.store.Update(func(tx *storage.Txn) error {
			if _, err := checkState(tx, id, want); err != nil {
				return err
			}
			if dpid != 0 {
				if err := tx.Set(key(pfxDir, dpid), encodeIDs(ids)); err != nil {
					return err
				}
				if err := tx.Set(key(pfxRefcount, dpid), be64(1)); err != nil {
					return err
				}
				for _, pid := range shared {
					if _, err := incPage(tx, pid, 1); err != nil {
						return err
					}
				}
			}
			for _, li := range byDir[di] {
				if err := tx.Delete(key(pfxStageLf, uint64(id), uint64(li))); err != nil {
					return err
				}
			}
			return tx.Set(key(pfxStageDr, uint64(id), uint64(di)), be64(dpid))
		})
		if err != nil {
			return err
		}
		dirs[di] = dpid
	}
	return nil
}

// plannedDirs is the dir list the layer will have: staged dirs where its
// leaves changed, the parent's elsewhere.
func plannedDirs(size, chunkSize int64, parent *blockMap, dirs map[int64]uint64) []uint64 {
	n := ceilDiv(ceilDiv(ceilDiv(size, chunkSize), fanout), fanout)
	out := make([]uint64, n)
	for di := range out {
		if pid, ok := dirs[int64(di)]; ok {
			out[di] = pid
		} else {
			out[di] = parent.dirPID(int64(di))
		}
	}
	return out
}

// finishDirs, in the txn that completes the layer, hands the staged dirs to
// the layer record and adds a reference to each shared parent dir.
func finishDirs(tx *storage.Txn, id LayerID, planned []uint64, dirs map[int64]uint64) error {
	for di, pid := range planned {
		if _, staged := dirs[int64(di)]; staged {
			if err := tx.Delete(key(pfxStageDr, uint64(id), uint64(di))); err != nil {
				return err
			}
			continue
		}
		if pid != 0 {
			if _, err := incPage(tx, pid, 1); err != nil {
				return err
			}
		}
	}
	return nil
}
