// Package storage is strata's chunk store: content-addressed, compressed,
// checksummed chunks and a transactional key/value space, all in one
// Badger database per data directory.
//
// # Terms
//
//   - A chunk is ChunkSize raw bytes cut at a fixed, aligned offset of an
//     image (shorter only at its end). The chunk size is fixed when the
//     store is created and kept on reopen.
//   - A chunk id (ChunkID) is a small integer: the new chunks of one put
//     transaction (an import batch) get consecutive ids in one pack, the
//     Badger value that holds their records together (pack.go). Maps above
//     the store hold ids, never hashes. ZeroChunk (0) means "all zeros":
//     it is never stored, never counted and reads as zeros.
//   - A chunk's identity is the BLAKE3 hash of its raw bytes keyed with a
//     random per-store secret; an index hash -> id makes Put deduplicate.
//     The key stops anyone from crafting a collision from outside.
//   - A stored chunk is codec | raw length | xxhash64 of the raw bytes |
//     payload (zstd, or raw when zstd saves less than an eighth of it).
//     Every read decodes and checks the checksum; a mismatch is
//     ErrCorrupt, counted in Stats.CorruptReads, and never returned as
//     data.
//   - A reference count says how many map entries use a chunk. It changes
//     only through Txn.AddRef, inside the same transaction that changes the
//     maps, so what users see and the counts behind it commit together.
//   - A lease protects chunks a writer has Put but not yet referenced (an
//     import or seal in progress) from GC until it is released.
//   - GC frees a chunk whose count has been zero for GCGrace and that no
//     lease holds, then lets Badger's value-log GC give the space back.
//     An audit rebuilds every count from the maps and compares.
//
// # Lifecycle of a chunk
//
// Importing an image:
//
//	l := s.NewLease()
//	defer l.Release()
//	st, err := s.Import(ctx, r, l, func(i int64, id ChunkID) error {
//		mapEntries[i] = id // remember the ids in order
//		return nil
//	}, nil)
//	// then, in one transaction: write the map and AddRef(id, +1) each id
//	err = s.Update(func(tx *Txn) error { ... tx.Set(...); tx.AddRef(id, 1) ... })
//
// A new chunk starts fresh: count 0, held by the lease, not yet in the GC
// queue, and without a reference record until it is first referenced or
// queued (fresh.go; ChunkInfo and the audit see it all the same). Once the map that uses it has committed (count >= 1) the lease no
// longer matters (Lease.Forget lets a long import drop such chunks early).
// Deleting the map is the reverse: AddRef(id, -1) in the transaction that
// deletes it. A count reaching zero puts the chunk in the GC queue; so does
// releasing a lease that holds a still-fresh chunk, and reopening the store
// after a crash (no lease survives it). GC frees a queued chunk once it has
// been there GCGrace, unless a lease holds it or it was referenced again.
// A Put that deduplicates onto a queued chunk holds it under its lease
// like a new one.
//
// # Concurrency
//
// Every method is safe for concurrent use. Transactions are Badger's
// optimistic, serialisable snapshot transactions: two that change the same
// chunk's count conflict, and Update runs the loser's fn again (so fn may
// run more than once). GC runs beside the data path without a store-wide
// lock: it reads and deletes each chunk's reference record in a
// transaction, so a concurrent AddRef of that chunk makes one side's
// commit fail; a Put that deduplicates onto a chunk being freed is ordered
// against GC by a per-chunk stripe lock (see commitPuts). A referenced or
// leased chunk is never freed.
//
// # Durability
//
// A committed transaction is in Badger's write-ahead log when Update
// returns and survives the process being killed; Sync (which the layer
// calls on NBD FLUSH and FUA) fsyncs it so it also survives a power loss.
package storage
