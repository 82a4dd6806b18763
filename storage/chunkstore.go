package storage

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// ChunkID is the small internal id of a stored chunk. Layer maps hold ids,
// never hashes.
type ChunkID uint64

// ZeroChunk is the sentinel id for an all-zero chunk; such chunks are never
// stored and carry no reference count.
const ZeroChunk ChunkID = 0

var (
	// ErrCorrupt: a stored chunk failed its checksum or could not be decoded.
	ErrCorrupt = errors.New("storage: chunk corrupt")
	// ErrNotFound: no such chunk or key.
	ErrNotFound = errors.New("storage: not found")
	// ErrTxnTooBig: a transaction grew past what Badger commits at once;
	// split the work into smaller steps.
	ErrTxnTooBig = errors.New("storage: transaction too big")
	// ErrConflict: a transaction kept conflicting with concurrent ones and
	// gave up after several retries.
	ErrConflict = errors.New("storage: transaction conflict")
	// ErrRefUnderflow: AddRef would take a reference count below zero
	// (a double free in the caller).
	ErrRefUnderflow = errors.New("storage: reference count below zero")
	// ErrLeaseReleased: Put under a lease that was already released.
	ErrLeaseReleased = errors.New("storage: lease released")
	// ErrInvalid: a bad argument (chunk too long, bad options).
	ErrInvalid = errors.New("storage: invalid argument")
)

// Store is the chunk store and the single Badger database of a data directory.
type Store struct {
	db        *badger.DB
	dir       string
	opts      Options
	chunkSize int
	seq       *badger.Sequence
	hash      *hasher
	codec     *codec
	holds     holdSet
	newHashes newHashes // lets puts of new content skip the index lookup

	// Store-wide figures, saved by Close, taken back or recounted at
	// Open and moved by every commit (see stats.go).
	chunks        atomic.Int64
	rawBytes      atomic.Int64
	storedBytes   atomic.Int64
	referencedRaw atomic.Int64
	corruptReads  atomic.Int64
	counted       chan struct{} // closed when the figures are exact
	recounted     bool          // Open found no saved figures (set before Open returns)

	// packBytes bounds a pack's records: packs are Badger values, and
	// no value may outgrow a value-log file.
	packBytes int

	stripes           [stripeCount]sync.Mutex
	gcMu              sync.Mutex   // one collection at a time
	vlogMu            sync.RWMutex // value-log GC (write) vs commits that delete caller keys (read)
	freedSinceCompact atomic.Int64 // stored bytes freed since the LSM was last compacted for vlog GC

	lastGCMu  sync.Mutex
	lastGC    GCStats
	lastGCErr error
	lastGCAt  time.Time

	stop       chan struct{}
	wg         sync.WaitGroup
	closeOnce  sync.Once
	openSerial uint64 // this Open's number (see vlogPrefaulter)
}

// commitRetries bounds how often a transaction that lost a conflict is run
// again. Conflicts here are short-lived (two writers on one chunk's count),
// so a handful of retries always suffices in practice.
const commitRetries = 64

// Open opens or creates the store in dir. An existing store keeps the chunk
// size it was created with.
func Open(dir string, opts Options) (*Store, error) {
	def := DefaultOptions()
	if opts.ChunkSize == 0 {
		opts.ChunkSize = def.ChunkSize
	}
	if opts.CompressionLevel == 0 {
		opts.CompressionLevel = def.CompressionLevel
	}
	if err := validChunkSize(opts.ChunkSize); err != nil {
		return nil, err
	}
	db, err := badger.Open(opts.badgerOptions(dir))
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	s := &Store{db: db, dir: dir, opts: opts, stop: make(chan struct{}), counted: make(chan struct{}), openSerial: openSerials.Add(1)}
	s.packBytes = int(min(2*packMaxRaw, db.Opts().ValueLogFileSize/2))
	s.holds.init()
	saved, exact, err := s.savedCounts()
	if err == nil {
		err = s.init()
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	s.openCounts(saved, exact)
	s.newHashes.init(saved.chunks)
	if !opts.InMemory {
		s.adviseReadsAtOpen()
	}
	s.wg.Add(1)
	go s.scanHashes()
	if opts.GCInterval > 0 {
		s.wg.Add(1)
		go s.gcLoop(opts.GCInterval)
	}
	return s, nil
}

// errScanStopped ends scanHashes when the store closes.
var errScanStopped = errors.New("storage: closing")

// scanHashes fills newHashes from the dedup index, in the background:
// puts look every hash up until it is done. A hash a put adds meanwhile is
// in the filter already (claim inserts every hash before its transaction
// commits), so the scan's snapshot only has to cover what came before.
func (s *Store) scanHashes() {
	defer s.wg.Done()
	const batch = 4096
	hs := make([]chunkHash, 0, batch)
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte{nsHash}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 1+hashSize {
				continue
			}
			hs = append(hs, chunkHash(k[1:]))
			if len(hs) == batch {
				s.newHashes.addScanned(hs)
				hs = hs[:0]
				select {
				case <-s.stop:
					return errScanStopped
				default:
				}
			}
		}
		return nil
	})
	if err != nil {
		// Not ready: every put keeps looking its hashes up.
		return
	}
	s.newHashes.addScanned(hs)
	s.newHashes.setReady()
}

func validChunkSize(n int) error {
	if n < MinChunkSize || n > MaxChunkSize || n&(n-1) != 0 {
		return fmt.Errorf("%w: chunk size %d is not a power of two in [%d, %d]",
			ErrInvalid, n, MinChunkSize, MaxChunkSize)
	}
	return nil
}

// init reads or creates the persistent settings (chunk size, hash secret),
// then the id sequence and codec, and recovers the fresh chunks of leases
// a crash ended (fresh.go).
func (s *Store) init() error {
	var secret []byte
	err := s.db.Update(func(tx *badger.Txn) error {
		item, err := tx.Get(keyChunkSize)
		switch {
		case err == nil:
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) != 4 {
				return fmt.Errorf("%w: chunk size record", ErrCorrupt)
			}
			s.chunkSize = int(binary.LittleEndian.Uint32(v))
		case errors.Is(err, badger.ErrKeyNotFound):
			s.chunkSize = s.opts.ChunkSize
			if err := tx.Set(keyChunkSize, binary.LittleEndian.AppendUint32(nil, uint32(s.chunkSize))); err != nil {
				return err
			}
		default:
			return err
		}
		if err := checkFormat(tx); err != nil {
			return err
		}
		item, err = tx.Get(keySecret)
		switch {
		case err == nil:
			secret, err = item.ValueCopy(nil)
			return err
		case errors.Is(err, badger.ErrKeyNotFound):
			secret = make([]byte, 32)
			if _, err := rand.Read(secret); err != nil {
				return err
			}
			return tx.Set(keySecret, secret)
		default:
			return err
		}
	})
	if err != nil {
		return fmt.Errorf("storage: settings: %w", err)
	}
	if err := validChunkSize(s.chunkSize); err != nil {
		return fmt.Errorf("%w: stored %v", ErrCorrupt, err)
	}
	if len(secret) != 32 {
		return fmt.Errorf("%w: hash secret of %d bytes", ErrCorrupt, len(secret))
	}
	if s.hash, err = newHasher(secret); err != nil {
		return err
	}
	// Bandwidth 4096: one sequence write per 4096 new chunks; a crash
	// wastes at most that many ids, which are never reused.
	if s.seq, err = s.db.GetSequence(keySequence, 4096); err != nil {
		return fmt.Errorf("storage: id sequence: %w", err)
	}
	if s.codec, err = newCodec(s.opts.CompressionLevel, s.opts.workers()); err != nil {
		return fmt.Errorf("storage: codec: %w", err)
	}
	return s.recoverFresh()
}

// storeFormat is the layout of chunk bodies this build reads and writes:
// 2 is packs (pack.go). Format 1 kept one record per chunk under nsChunk.
const storeFormat = 2

// ErrFormat: the store was written in a layout this build does not read.
var ErrFormat = errors.New("storage: unsupported store format")

// checkFormat records the format in a new store, or checks an existing
// store's. A store from before the format was recorded is format 1 if it
// holds any chunk record, else (no chunk was ever kept) it is adopted.
func checkFormat(tx *badger.Txn) error {
	item, err := tx.Get(keyFormat)
	switch {
	case err == nil:
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if len(v) != 1 || v[0] != storeFormat {
			return fmt.Errorf("%w: format %v, this build reads %d", ErrFormat, v, storeFormat)
		}
		return nil
	case errors.Is(err, badger.ErrKeyNotFound):
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte{nsChunk}})
		it.Rewind()
		old := it.Valid()
		it.Close()
		if old {
			return fmt.Errorf("%w: format 1 (one record per chunk, before packs); "+
				"this build reads %d: import the images into a new data directory", ErrFormat, storeFormat)
		}
		return tx.Set(keyFormat, []byte{storeFormat})
	default:
		return err
	}
}

// Close stops background work and closes the database.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		if s.seq != nil {
			err = s.seq.Release()
		}
		if cerr := s.saveCounts(); err == nil {
			err = cerr
		}
		if cerr := s.db.Close(); err == nil {
			err = cerr
		}
		if s.codec != nil {
			s.codec.close()
		}
	})
	return err
}

// ChunkSize is the store's fixed chunk size.
func (s *Store) ChunkSize() int { return s.chunkSize }

// Sync makes every committed transaction durable. A commit is already in
// Badger's write-ahead log (mmap'd files) when it returns, which survives
// kill -9 of the process; Sync fsyncs the log and the value log so it also
// survives losing the machine.
func (s *Store) Sync() error {
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("storage: sync: %w", err)
	}
	return nil
}

// nextPackBase mints the base id of a new pack (see pack.go). The
// sequence counts packs; number 0 is skipped, so no pack holds ZeroChunk.
func (s *Store) nextPackBase() (ChunkID, error) {
	for {
		n, err := s.seq.Next()
		if err != nil {
			return 0, fmt.Errorf("storage: next chunk id: %w", err)
		}
		if n != 0 {
			return ChunkID(n) << packSlotBits, nil
		}
	}
}

// Put stores one raw chunk (len <= ChunkSize; shorter only at the end of an
// image) and returns its id, deduplicated by keyed hash. An all-zero chunk
// returns ZeroChunk and stores nothing. The chunk is held by the lease until
// a transaction references it with AddRef. With a nil lease only GCGrace
// protects an unreferenced chunk.
func (s *Store) Put(raw []byte, l *Lease) (ChunkID, error) {
	if len(raw) > s.chunkSize {
		return 0, fmt.Errorf("%w: chunk of %d bytes, chunk size %d", ErrInvalid, len(raw), s.chunkSize)
	}
	if len(raw) == 0 || isZero(raw) {
		return ZeroChunk, nil
	}
	it := putItem{raw: raw, hash: s.hash.sum(raw)}
	items := []*putItem{&it}
	if _, err := s.commitPuts(items, l, nil, new(putScratch)); err != nil {
		return 0, err
	}
	return it.id, nil
}

// PutMany is Put for several chunks in one transaction, which costs far
// less per chunk than separate Puts (one commit instead of len(raws)). ids
// gets one id per chunk, in order (ZeroChunk for all-zero ones). For a
// whole image use Import, which also runs in parallel.
func (s *Store) PutMany(raws [][]byte, l *Lease) ([]ChunkID, error) {
	items := make([]putItem, len(raws))
	ptrs := make([]*putItem, 0, len(raws))
	for i, raw := range raws {
		if len(raw) > s.chunkSize {
			return nil, fmt.Errorf("%w: chunk of %d bytes, chunk size %d", ErrInvalid, len(raw), s.chunkSize)
		}
		items[i].raw = raw
		if len(raw) == 0 || isZero(raw) {
			items[i].zero = true
			continue
		}
		items[i].hash = s.hash.sum(raw)
		ptrs = append(ptrs, &items[i])
	}
	if len(ptrs) > 0 {
		if _, err := s.commitPuts(ptrs, l, nil, new(putScratch)); err != nil {
			return nil, err
		}
	}
	ids := make([]ChunkID, len(raws))
	for i := range items {
		ids[i] = items[i].id
	}
	return ids, nil
}

// putItem is one chunk on its way into the store.
type putItem struct {
	raw    []byte
	zero   bool
	hash   chunkHash
	rec    []byte // encoded record, made on first need and kept across retries
	arena  []byte // where to encode rec (nil: allocate)
	id     ChunkID
	isNew  bool
	absent bool // certainly not in the index: no lookup (see newHashes)
}

// putResult sums what a batch of puts added.
type putResult struct {
	newChunks, dedupChunks, storedBytes, rawBytes int64
	vlogBytes                                     uintptr // packs sent to the value log
}

// commitPuts stores a batch of hashed chunks in one transaction: per chunk
// it looks the hash up and either writes a new record (count 0, in the GC
// queue, held by the lease) or dedups onto the existing id.
//
// Safety against GC: a new chunk is held by the lease before its commit,
// so GC never sees it unheld. A dedup onto an existing chunk writes
// nothing (so imports never conflict with the layer's reference-count
// transactions); instead holdExisting takes the hold and then checks, in a
// fresh snapshot and under the chunk's stripe lock that GC also takes
// around its hold check and commit, that the chunk still exists. Either GC
// freed it before (we see it gone and store it anew) or GC checks the
// hold after us and leaves it. Concurrent puts of identical new content
// conflict on the hash key, so they end with one id.
func (s *Store) commitPuts(items []*putItem, l *Lease, gate cpuGate, sc *putScratch) (putResult, error) {
	var added []ChunkID
	for attempt := 0; ; attempt++ {
		added = added[:0]
		res, err := s.tryPuts(items, l, &added, gate, sc)
		if err == nil {
			if l != nil {
				l.addPacks(sc.bases)
			}
			s.chunks.Add(res.newChunks)
			s.rawBytes.Add(res.rawBytes)
			s.storedBytes.Add(res.storedBytes)
			// Packs are a stream of large values: have the value-log
			// pages ahead of the writer ready (see vlogPrefaulter).
			s.prefaultVlog(res.vlogBytes, true)
			return res, nil
		}
		if l != nil {
			l.drop(added)
		}
		switch {
		case errors.Is(err, badger.ErrTxnTooBig) && len(items) > 1:
			// Split: each half is its own transaction. Halves may each
			// have committed chunks before a later error; those are held
			// by the lease like any other.
			a, err := s.commitPuts(items[:len(items)/2], l, gate, sc)
			if err != nil {
				return a, err
			}
			b, err := s.commitPuts(items[len(items)/2:], l, gate, sc)
			a.newChunks += b.newChunks
			a.dedupChunks += b.dedupChunks
			a.storedBytes += b.storedBytes
			a.vlogBytes += b.vlogBytes
			a.rawBytes += b.rawBytes
			return a, err
		case (errors.Is(err, badger.ErrConflict) || errors.Is(err, errChunkGone)) && attempt < commitRetries:
			continue
		case errors.Is(err, badger.ErrConflict) || errors.Is(err, errChunkGone):
			return putResult{}, fmt.Errorf("%w: put: %v", ErrConflict, err)
		case errors.Is(err, badger.ErrTxnTooBig):
			return putResult{}, fmt.Errorf("%w: put: %v", ErrTxnTooBig, err)
		default:
			return putResult{}, fmt.Errorf("storage: put: %w", err)
		}
	}
}

func (s *Store) tryPuts(items []*putItem, l *Lease, added *[]ChunkID, gate cpuGate, sc *putScratch) (putResult, error) {
	var res putResult
	claim := s.claimHashes(items, gate)
	defer s.newHashes.release(claim, items)
	// Badger starts a transaction only once every commit in flight has
	// been written: a wait, so give the CPU slot to another import
	// worker meanwhile.
	gate.leave()
	tx := s.db.NewTransaction(true)
	gate.enter()
	defer tx.Discard()
	sc.reset(len(items))
	hold := func(id ChunkID, facts *chunkFacts) error {
		if l == nil {
			return nil
		}
		fresh, err := l.add(id, facts)
		if fresh {
			*added = append(*added, id)
		}
		return err
	}
	created := sc.created
	existing := sc.exist // deduplicated onto chunks committed before
	// New chunks go into packs of up to perPack slots, one pack after
	// another; each is staged once full and the last after the loop.
	perPack := slotsPerPack(s.chunkSize)
	var ps *packStage
	var pack *packBuilder
	var base ChunkID
	stagePack := func() error {
		if pack == nil || pack.slots() == 0 {
			return nil
		}
		key, val := sc.idKey(nsPack, base), pack.finish()
		res.vlogBytes += s.vlogEntryBytes(len(key), val)
		if err := sc.set(tx, key, val); err != nil {
			return err
		}
		if l == nil {
			return nil
		}
		// The pack's fresh marker (see fresh.go).
		key = sc.idKey(nsFresh, base)
		res.vlogBytes += s.vlogEntryBytes(len(key), ps.facts)
		sc.bases = append(sc.bases, base)
		return sc.set(tx, key, ps.facts)
	}
	for _, it := range items {
		if it.zero {
			continue
		}
		hk := sc.hashKey(&it.hash)
		item, err := (*badger.Item)(nil), badger.ErrKeyNotFound
		if !it.absent {
			item, err = tx.Get(hk)
		}
		switch {
		case err == nil:
			id, err := indexedID(item)
			if err != nil {
				return res, err
			}
			if _, mine := created[id]; !mine {
				existing = append(existing, id)
			}
			it.id, it.isNew = id, false
			res.dedupChunks++
		case errors.Is(err, badger.ErrKeyNotFound):
			if it.rec == nil {
				it.rec = s.codec.encode(it.raw, it.arena)
			}
			if pack == nil || pack.slots() == perPack || pack.size()+len(it.rec) > s.packBytes {
				if err := stagePack(); err != nil {
					return res, err
				}
				if base, err = s.nextPackBase(); err != nil {
					return res, err
				}
				ps = sc.pack(min(s.packBytes, perPack*(s.chunkSize+recordHeader)), perPack)
				pack = &ps.b
			}
			id := base + ChunkID(pack.slots())
			facts := chunkFacts{rawLen: uint32(len(it.raw)), storedLen: uint32(len(it.rec)), hash: it.hash}
			if err := hold(id, &facts); err != nil {
				return res, err
			}
			pack.add(it.rec)
			if err := sc.set(tx, hk, sc.idValue(id)); err != nil {
				return res, err
			}
			if l != nil {
				// Fresh: the lease holds it, and its reference record is
				// written by the first AddRef, or by the Release that
				// queues it if it is still unreferenced then (fresh.go).
				ps.facts = appendFacts(ps.facts, &facts)
			} else {
				// No lease will queue it: queue it now; GCGrace is all
				// that protects it.
				rr := refRecord{zeroSince: time.Now().UnixNano(), chunkFacts: facts}
				if err := tx.Set(zeroKey(rr.zeroSince, id), nil); err != nil {
					return res, err
				}
				if err := sc.set(tx, sc.idKey(nsRef, id), sc.ref(&rr)); err != nil {
					return res, err
				}
			}
			created[id] = struct{}{}
			it.id, it.isNew = id, true
			res.newChunks++
			res.rawBytes += int64(len(it.raw))
			res.storedBytes += int64(len(it.rec))
		default:
			return res, err
		}
	}
	if err := stagePack(); err != nil {
		return res, err
	}
	sc.exist = existing
	if len(existing) > 0 {
		ok, err := s.holdExisting(existing, func(id ChunkID) error { return hold(id, nil) })
		if err != nil {
			return res, err
		}
		if !ok {
			// GC freed one after our snapshot: start over, and the next
			// snapshot stores it anew.
			return res, errChunkGone
		}
	}
	// The commit mostly waits for Badger's single writer goroutine; give
	// the CPU slot to another import worker meanwhile.
	gate.leave()
	defer gate.enter()
	return res, tx.Commit()
}

// claimHashes marks the items whose index lookup can be skipped (see
// newHashes), first waiting, out of the CPU gate, for any transaction
// creating one of their hashes to end.
func (s *Store) claimHashes(items []*putItem, gate cpuGate) *hashClaim {
	for {
		c, wait := s.newHashes.claim(items)
		if wait == nil {
			return c
		}
		gate.leave()
		for _, w := range wait {
			<-w
		}
		gate.enter()
	}
}

// indexedID reads the id a hash index entry holds.
func indexedID(item *badger.Item) (ChunkID, error) {
	var id ChunkID
	err := item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: hash index entry of %d bytes", ErrCorrupt, len(v))
		}
		id = ChunkID(binary.BigEndian.Uint64(v))
		return nil
	})
	return id, err
}

// errChunkGone: a chunk found in the hash index was freed by GC before the
// put could hold it; the put retries with a fresh snapshot.
var errChunkGone = errors.New("storage: chunk freed during put")

// holdExisting holds ids for a put that deduplicated onto them, and
// reports whether they all still exist (see commitPuts). It takes their
// stripe locks in ascending order, as GC does.
func (s *Store) holdExisting(ids []ChunkID, hold func(ChunkID) error) (bool, error) {
	unlock := s.lockStripes(ids)
	defer unlock()
	for _, id := range ids {
		if err := hold(id); err != nil {
			return false, err
		}
	}
	all := true
	err := s.db.View(func(tx *badger.Txn) error {
		for _, id := range ids {
			_, err := tx.Get(idKey(nsRef, id))
			if errors.Is(err, badger.ErrKeyNotFound) {
				if _, fresh := s.holds.freshFacts(id); fresh {
					// Created by a put under a lease that holds it
					// still: GC cannot have freed it (fresh.go).
					continue
				}
				all = false
				return nil
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	return all && err == nil, err
}

// stripeCount chunk locks order GC's frees against puts that dedup onto
// the chunk being freed (see commitPuts); nothing else takes them.
const stripeCount = 1024

func stripeIndex(id ChunkID) int { return int(uint64(id) * 0x9E3779B97F4A7C15 >> 54) }

// cpuGate bounds how many import workers compute at once (Options.Workers)
// while letting more of them wait on commits. A nil gate does nothing.
type cpuGate chan struct{}

func (g cpuGate) enter() {
	if g != nil {
		g <- struct{}{}
	}
}

func (g cpuGate) leave() {
	if g != nil {
		<-g
	}
}

func getRef(tx *badger.Txn, rk []byte) (refRecord, error) {
	var rr refRecord
	item, err := tx.Get(rk)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return rr, ErrNotFound
	}
	if err != nil {
		return rr, err
	}
	err = item.Value(rr.unmarshal)
	return rr, err
}

// Get returns the raw bytes of a chunk, appended to dst[:0]. The checksum is
// verified; a mismatch returns an error wrapping ErrCorrupt. ZeroChunk reads
// as ChunkSize zero bytes.
func (s *Store) Get(id ChunkID, dst []byte) ([]byte, error) {
	if id == ZeroChunk {
		dst = dst[:0]
		return append(dst, zeroBlock[:s.chunkSize]...), nil
	}
	var out []byte
	err := s.db.View(func(tx *badger.Txn) error {
		item, err := tx.Get(packKey(packBase(id)))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: chunk %d", ErrNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("storage: get chunk %d: %w", id, err)
		}
		return item.Value(func(v []byte) error {
			p, err := openPack(v)
			if err == nil {
				out, err = s.decodeSlot(p, id, dst)
			}
			return err
		})
	})
	if errors.Is(err, ErrCorrupt) {
		s.corruptReads.Add(1)
		return nil, fmt.Errorf("chunk %d: %w", id, err)
	}
	return out, err
}

// decodeSlot decodes and verifies chunk id from its pack p into dst[:0].
// An empty slot is ErrNotFound; damage wraps ErrCorrupt.
func (s *Store) decodeSlot(p packView, id ChunkID, dst []byte) ([]byte, error) {
	rec, err := p.record(packSlotOf(id))
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("%w: chunk %d", ErrNotFound, id)
	}
	return s.codec.decode(rec, dst)
}

// detach lets background work stop when the store closes.
func (s *Store) detach(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
