package storage

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"

	badger "github.com/dgraph-io/badger/v4"
)

// Stats are store-wide figures.
type Stats struct {
	Chunks        int64 // stored chunks
	RawBytes      int64 // raw bytes of stored chunks
	StoredBytes   int64 // bytes after compression
	ReferencedRaw int64 // raw bytes summed over all references (dedup numerator)
	CorruptReads  int64 // checksum failures seen since open
	DiskBytes     int64 // Badger's LSM + value log size
}

// DedupRatio is ReferencedRaw / RawBytes: how many times, on average, the
// maps use each stored raw byte (1 when nothing is shared).
func (st Stats) DedupRatio() float64 {
	if st.RawBytes == 0 {
		return 1
	}
	return float64(st.ReferencedRaw) / float64(st.RawBytes)
}

// CompressionRatio is RawBytes / StoredBytes.
func (st Stats) CompressionRatio() float64 {
	if st.StoredBytes == 0 {
		return 1
	}
	return float64(st.RawBytes) / float64(st.StoredBytes)
}

// Stats returns current figures. The chunk and byte counters are kept in
// memory, recomputed from the reference records on Open (one scan of small
// LSM-resident records) and moved by every commit, so they cost nothing to
// read and no hot counter key makes every transaction conflict.
func (s *Store) Stats() Stats {
	return Stats{
		Chunks:        s.chunks.Load(),
		RawBytes:      s.rawBytes.Load(),
		StoredBytes:   s.storedBytes.Load(),
		ReferencedRaw: s.referencedRaw.Load(),
		CorruptReads:  s.corruptReads.Load(),
		DiskBytes:     s.diskBytes(),
	}
}

// diskBytes walks the directory: Badger's own Size() is refreshed only once
// a minute, too stale to show what a GC just gave back.
func (s *Store) diskBytes() int64 {
	if s.opts.InMemory {
		return 0
	}
	total, _ := dirBytes(s.dir, "")
	return total
}

// dirBytes sums the sizes of files in dir whose name ends with suffix.
func dirBytes(dir, suffix string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if suffix != "" && filepath.Ext(path) != suffix {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		// Allocated blocks, not the length: Badger preallocates and
		// mmaps its logs, so their length says little about the disk.
		if sys, ok := info.Sys().(*syscall.Stat_t); ok {
			total += sys.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// recount rebuilds the counters from the reference records, and queues
// for GC the fresh chunks a crash left behind (put under a lease that
// never ended; no lease survives a restart).
func (s *Store) recount() error {
	var chunks, raw, stored, refRaw int64
	var fresh []ChunkID
	err := s.db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte{nsRef}
		it := tx.NewIterator(opts)
		defer it.Close()
		var rr refRecord
		for it.Rewind(); it.Valid(); it.Next() {
			if err := it.Item().Value(rr.unmarshal); err != nil {
				return err
			}
			chunks++
			if rr.count == 0 && rr.zeroSince == 0 {
				if id, ok := parseIDKey(it.Item().Key()); ok {
					fresh = append(fresh, id)
				}
			}
			raw += int64(rr.rawLen)
			stored += int64(rr.storedLen)
			refRaw += rr.count * int64(rr.rawLen)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: recount: %w", err)
	}
	s.chunks.Store(chunks)
	s.rawBytes.Store(raw)
	s.storedBytes.Store(stored)
	s.referencedRaw.Store(refRaw)
	return s.queueFresh(fresh)
}
