package layer

import (
	"strata/storage"
)

// Refs walks every chunk reference the layers of a store hold, for
// storage.Store.Audit: each entry of each stored leaf page, once per page,
// exactly as writeLeaf counted it and the leaf's release will uncount it.
// Staged pages of unfinished builds are included, since their references
// are counted too. It needs no Manager: an offline audit opens none.
func Refs() storage.RefSource {
	return func(tx *storage.Txn, yield func(storage.ChunkID) error) error {
		ids := make([]uint64, fanout)
		return tx.Iterate(pfxLeaf, func(_, v []byte) error {
			if err := decodeIDs(v, ids); err != nil {
				return err
			}
			for _, id := range ids {
				if id != 0 {
					if err := yield(storage.ChunkID(id)); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
}
