package storage

import (
	"encoding/binary"
	"errors"
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

	// Counting is set while the counters are being rebuilt after an Open
	// that did not follow a clean Close: Chunks, RawBytes, StoredBytes and
	// ReferencedRaw are then partial. See Store.Counted.
	Counting bool
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
// memory and moved by every commit, so they cost nothing to read and no
// hot counter key makes every transaction conflict. A clean Close saves
// them and the next Open takes them back; after a crash Open rebuilds
// them from the reference records in the background (Counting).
func (s *Store) Stats() Stats {
	st := Stats{
		Chunks:        s.chunks.Load(),
		RawBytes:      s.rawBytes.Load(),
		StoredBytes:   s.storedBytes.Load(),
		ReferencedRaw: s.referencedRaw.Load(),
		CorruptReads:  s.corruptReads.Load(),
		DiskBytes:     s.diskBytes(),
	}
	select {
	case <-s.counted:
	default:
		st.Counting = true
	}
	return st
}

// RecountedAtOpen reports whether Open found no counters saved by a
// clean Close and so rebuilds them from the reference records, in the
// background (see Counted).
func (s *Store) RecountedAtOpen() bool { return s.recounted }

// Counted is closed once the counters Stats reports are exact: at Open
// after a clean Close, or when the background recount ends. It stays open
// if the recount failed or the store closed first.
func (s *Store) Counted() <-chan struct{} { return s.counted }

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

// The counters (chunks, raw, stored, referenced raw) survive a clean
// Close in one settings record, keyCounts:
//
//	version (1 byte, countsVersion) | chunks | raw | stored | referenced raw (8 bytes each, little endian)
//
// Close writes it last, once nothing else can commit. Open believes it
// only if it is still the last thing committed (its Badger version is the
// database's highest): any commit after it, by this build after a crash or
// by one that does not know the record, makes it stale. A stale or missing
// record means a scan of every reference record, which Open starts in the
// background (recountFrom); a stale record still sizes the dedup filter.
const (
	countsVersion byte = 1
	countsLen          = 1 + 4*8
)

// counts is one set of the store's counters.
type counts struct{ chunks, raw, stored, refRaw int64 }

func (c counts) marshal() []byte {
	b := make([]byte, 1, countsLen)
	b[0] = countsVersion
	for _, v := range [...]int64{c.chunks, c.raw, c.stored, c.refRaw} {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	return b
}

func unmarshalCounts(b []byte) (c counts, ok bool) {
	if len(b) != countsLen || b[0] != countsVersion {
		return c, false
	}
	v := func(i int) int64 { return int64(binary.LittleEndian.Uint64(b[1+8*i:])) }
	return counts{v(0), v(1), v(2), v(3)}, true
}

// add moves the live counters by c.
func (s *Store) add(c counts) {
	s.chunks.Add(c.chunks)
	s.rawBytes.Add(c.raw)
	s.storedBytes.Add(c.stored)
	s.referencedRaw.Add(c.refRaw)
}

// savedCounts reads, before Open writes anything, the counters the last
// Close saved; exact reports that nothing committed since. A store with
// no settings yet is new: its counters are exact at zero.
func (s *Store) savedCounts() (c counts, exact bool, err error) {
	err = s.db.View(func(tx *badger.Txn) error {
		if _, err := tx.Get(keyChunkSize); errors.Is(err, badger.ErrKeyNotFound) {
			exact = true
			return nil
		} else if err != nil {
			return err
		}
		item, err := tx.Get(keyCounts)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			var ok bool
			// A damaged record is only a lost shortcut.
			if c, ok = unmarshalCounts(v); ok {
				exact = item.Version() == s.db.MaxVersion()
			}
			return nil
		})
	})
	if err != nil {
		return counts{}, false, fmt.Errorf("storage: counters: %w", err)
	}
	return c, exact, nil
}

// openCounts sets the counters at Open, after recoverFresh and before
// anything else can commit: saved ones when exact, else a background
// recount's.
func (s *Store) openCounts(saved counts, exact bool) {
	s.recounted = !exact
	if exact {
		s.add(saved)
		close(s.counted)
		return
	}
	s.recountFrom(s.db.NewTransaction(false))
}

// recountFrom rebuilds the counters from the reference records tx sees,
// in the background, then queues for GC the fresh chunks a crash left
// behind (put under a lease that never ended; no lease survives a
// restart). tx is taken before anything else commits and the counters
// start at zero: every later commit moves them by its change, and the scan
// adds what was there before, so they end exact however busy the store.
// Until then Stats reports Counting.
func (s *Store) recountFrom(tx *badger.Txn) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		c, fresh, err := s.scanCounts(tx)
		tx.Discard()
		if err != nil {
			// Counting stays set and Close keeps the record stale:
			// the next Open counts again.
			return
		}
		s.add(c)
		close(s.counted)
		// A failure here leaves the chunks for the next Open's scan.
		_ = s.queueFresh(fresh)
	}()
}

// refIterator walks the reference records tx sees, in id order, their
// values (small, in the LSM) fetched ahead.
func refIterator(tx *badger.Txn) *badger.Iterator {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte{nsRef}
	return tx.NewIterator(opts)
}

// recountHook, when set (by tests), runs when a background recount has its
// snapshot and before it scans.
var recountHook func(*Store)

// scanCounts sums the reference records tx sees. It stops, with
// errScanStopped, when the store closes.
func (s *Store) scanCounts(tx *badger.Txn) (c counts, fresh []ChunkID, err error) {
	if recountHook != nil {
		recountHook(s)
	}
	it := refIterator(tx)
	defer it.Close()
	var rr refRecord
	for it.Rewind(); it.Valid(); it.Next() {
		if c.chunks%4096 == 0 {
			select {
			case <-s.stop:
				return c, nil, errScanStopped
			default:
			}
		}
		if err := it.Item().Value(rr.unmarshal); err != nil {
			return c, nil, fmt.Errorf("storage: recount: %w", err)
		}
		c.chunks++
		if rr.count == 0 && rr.zeroSince == 0 {
			if id, ok := parseIDKey(it.Item().Key()); ok {
				fresh = append(fresh, id)
			}
		}
		c.raw += int64(rr.rawLen)
		c.stored += int64(rr.storedLen)
		c.refRaw += rr.count * int64(rr.rawLen)
	}
	return c, fresh, nil
}

// saveCounts records the counters at Close, once nothing else can commit,
// if they are complete.
func (s *Store) saveCounts() error {
	select {
	case <-s.counted:
	default:
		return nil
	}
	c := counts{s.chunks.Load(), s.rawBytes.Load(), s.storedBytes.Load(), s.referencedRaw.Load()}
	err := s.db.Update(func(tx *badger.Txn) error { return tx.Set(keyCounts, c.marshal()) })
	if err != nil {
		return fmt.Errorf("storage: save counters: %w", err)
	}
	return nil
}
