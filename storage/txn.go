package storage

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// Txn is one Badger transaction over the store's metadata: the key/value
// space that layer/ and api/ keep their records in, and the chunk reference
// counts. Keys given to Get/Set/Delete/Iterate live in a namespace separate
// from the store's own keys.
type Txn struct {
	s      *Store
	tx     *badger.Txn
	refRaw int64 // ReferencedRaw change, applied to Stats on commit
	// referenced: chunks whose count this transaction raises from zero,
	// marked in the hold set on commit (see holdSet.markReferenced).
	referenced []ChunkID
	writes     int     // entries staged so far, for Writes
	vlog       uintptr // estimated bytes SetRef sends to the value log
	// deletes: the transaction deletes a caller key, so its commit must
	// not land while value-log GC rewrites files (see vlogGC).
	deletes bool
}

// Writes is the number of entries this transaction has staged (each Set
// and Delete is one; AddRef is one or two). Compare with MaxTxnWrites to
// split long work into steps before Badger refuses it with ErrTxnTooBig.
func (t *Txn) Writes() int { return t.writes }

// MaxTxnWrites is a safe upper bound on Txn.Writes for one transaction of
// small entries: about half what Badger accepts (which depends on its
// memtable size: 52,428 entries and 5 MB with the store's options), so
// values of a few hundred bytes still fit.
func (s *Store) MaxTxnWrites() int { return int(s.db.MaxBatchCount() / 2) }

// Update runs fn in a read-write transaction and commits it if fn returns
// nil. A transaction too large for Badger returns an error wrapping
// ErrTxnTooBig; callers split work into resumable steps.
//
// Transactions are optimistic: if a concurrent one committed a change to a
// key fn read (say the count of a chunk both reference), the commit
// conflicts and Update runs fn again on a fresh transaction, up to a bound
// (then ErrConflict). So fn may run more than once: it must not have effects
// outside tx that a second run would repeat; apply those after Update
// returns nil.
func (s *Store) Update(fn func(tx *Txn) error) error {
	for attempt := 0; ; attempt++ {
		t := &Txn{s: s, tx: s.db.NewTransaction(true)}
		err := fn(t)
		if err == nil {
			err = t.commit()
		}
		t.tx.Discard()
		if err == nil {
			s.referencedRaw.Add(t.refRaw)
			s.holds.markReferenced(t.referenced)
			s.prefaultVlog(t.vlog, false)
			return nil
		}
		switch {
		case errors.Is(err, badger.ErrConflict) && attempt < commitRetries:
			continue
		case errors.Is(err, badger.ErrConflict):
			return fmt.Errorf("%w: %v", ErrConflict, err)
		case errors.Is(err, badger.ErrTxnTooBig) && !errors.Is(err, ErrTxnTooBig):
			return fmt.Errorf("%w: %v", ErrTxnTooBig, err)
		}
		return err
	}
}

func (t *Txn) commit() error {
	if t.deletes {
		t.s.vlogMu.RLock()
		defer t.s.vlogMu.RUnlock()
	}
	return t.tx.Commit()
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(tx *Txn) error) error {
	tx := s.db.NewTransaction(false)
	defer tx.Discard()
	return fn(&Txn{s: s, tx: tx})
}

func metaKey(key []byte) []byte {
	k := make([]byte, 1+len(key))
	k[0] = nsMeta
	copy(k[1:], key)
	return k
}

// Get returns a copy of the value of key, or ErrNotFound.
func (t *Txn) Get(key []byte) ([]byte, error) {
	item, err := t.tx.Get(metaKey(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: get: %w", err)
	}
	return item.ValueCopy(nil)
}

// Set stores key=val. Both are copied, so the caller may reuse them.
func (t *Txn) Set(key, val []byte) error {
	v := append([]byte(nil), val...)
	t.writes++
	return wrapSetErr(t.tx.Set(metaKey(key), v))
}

// SetRef stores key=val without copying val: the caller must leave val
// unchanged until Update returns. Badger copies values into its value log
// and memtable during the commit, so the caller may reuse val afterwards;
// for large values written at a high rate (overlay blocks) that saves a
// copy into fresh memory per value.
func (t *Txn) SetRef(key, val []byte) error {
	t.writes++
	t.vlog += t.s.vlogEntryBytes(1+len(key), val)
	return wrapSetErr(t.tx.Set(metaKey(key), val))
}

// Delete removes key.
func (t *Txn) Delete(key []byte) error {
	t.writes++
	t.deletes = true
	return wrapSetErr(t.tx.Delete(metaKey(key)))
}

func wrapSetErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrTxnTooBig):
		return fmt.Errorf("%w: %v", ErrTxnTooBig, err)
	default:
		return fmt.Errorf("storage: %w", err)
	}
}

// Iterate calls fn for each key with the prefix, in key order. key and val
// are valid only during the call.
func (t *Txn) Iterate(prefix []byte, fn func(key, val []byte) error) error {
	p := metaKey(prefix)
	opts := badger.DefaultIteratorOptions
	opts.Prefix = p
	// Values are read one by one in the loop: the caller may stop early,
	// and prefetching would copy values it never looks at.
	opts.PrefetchValues = false
	it := t.tx.NewIterator(opts)
	defer it.Close()
	for it.Seek(p); it.ValidForPrefix(p); it.Next() {
		item := it.Item()
		key := item.Key()[1:]
		err := item.Value(func(val []byte) error { return fn(key, val) })
		if err != nil {
			return err
		}
	}
	return nil
}
