package layer

import (
	"errors"

	"strata/storage"
)

// layerUsage accounts a layer's chunks: those reachable only through pages
// that this layer alone holds (dir and leaf count 1) are unique to it, the
// rest shared with the layers that hold the same pages. Bytes are counted
// at the chunk size (the store does not expose per-chunk stored sizes), so
// they are raw bytes, an upper bound of what compression leaves. A layer
// still sealing reports its frozen overlay's blocks as unique.
func (m *Manager) layerUsage(l *layer) (Usage, error) {
	u := Usage{Logical: l.size}
	v := l.view.Load()
	if v.bm == nil {
		if v.frozen != nil {
			u.Unique = v.frozen.dataBlocks() * blockSize
		}
		return u, nil
	}
	bm := v.bm
	err := m.store.View(func(tx *storage.Txn) error {
		for di, dpid := range bm.dirs {
			if dpid == 0 {
				continue
			}
			dn, err := pageCount(tx, dpid)
			if err != nil {
				return err
			}
			for li := int64(di) * fanout; li < int64(di+1)*fanout && li < int64(len(bm.leaves)); li++ {
				lf := bm.leaves[li]
				if lf == nil {
					continue
				}
				ln, err := pageCount(tx, lf.pid)
				if err != nil {
					return err
				}
				n := lf.allocated()
				if dn == 1 && ln == 1 {
					u.Unique += n * m.chunkSize
				} else {
					u.Shared += n * m.chunkSize
				}
			}
		}
		return nil
	})
	return u, err
}

func pageCount(tx *storage.Txn, pid uint64) (uint64, error) {
	n, err := getU64(tx, key(pfxRefcount, pid))
	if errors.Is(err, storage.ErrNotFound) {
		return 0, nil
	}
	return n, err
}

// DiskUsage returns the disk's space accounting: its overlay's blocks are
// unique to it; a pooled disk shares all of its image's layer, a standard
// disk owns its base as that base's accounting says.
func (m *Manager) DiskUsage(id DiskID) (Usage, error) {
	d, err := m.getDisk(id)
	if err != nil {
		return Usage{}, err
	}
	st := d.st.Load()
	u := Usage{Logical: d.size.Load(), Unique: st.ov.dataBlocks() * blockSize}
	if st.base != nil {
		bu, err := m.layerUsage(st.base)
		if err != nil {
			return Usage{}, err
		}
		if d.pooled {
			u.Shared += bu.Unique + bu.Shared
		} else {
			u.Unique += bu.Unique
			u.Shared += bu.Shared
		}
	}
	return u, nil
}
