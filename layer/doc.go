// Package layer turns the chunk store into block devices: immutable layers
// (images, snapshots) and writable disks over them.
//
// # Terms
//
//   - A chunk is a stored, deduplicated, fixed-size piece of a raw image
//     (storage.ChunkID; the size is the store's, 4 to 64 KiB).
//   - A layer is immutable: a complete block map, chunk index -> chunk id,
//     for the whole virtual size. Not a delta: reading any byte of any layer
//     is one lookup, however many snapshots lie behind it. Layers share map
//     pieces (refcounted pages, see blockmap.go) and chunks (by id).
//   - A disk is a writable overlay over one layer (its base) or over nothing
//     (an empty disk). The overlay holds 4 KiB guest blocks, whatever the
//     chunk size: a write never copies up a base chunk, and only a write
//     smaller than 4 KiB reads (its own block) before writing.
//   - An overlay block is data, written zeros, or trimmed. Trim and
//     write-zeroes of whole blocks are one range record: metadata.
//   - To seal is to turn a frozen overlay and the layer under it into a new
//     layer: each chunk the overlay touched is rebuilt (base bytes with the
//     dirty blocks over them) and stored through the dedup path; untouched
//     map pages are shared with the parent.
//   - A snapshot of a disk is a layer made by switching the disk to a fresh
//     overlay and sealing the old one in the background.
//   - A layer's holders are catalog records (images, snapshots:
//     RetainLayer/ReleaseLayer); its users are disks on it and layers still
//     sealing over it. A layer with neither is released in the background.
//
// # Invariants
//
// Layers never change once ready. A chunk's reference count (storage) is
// the number of stored leaf pages naming it, changed in the transaction that
// writes or deletes the page; a page's count is the number of dirs or layer
// records naming it. Refs reports exactly the leaf entries, for the audit.
// Reads see, for every block, the newest acknowledged write, whether the
// block sits in the overlay, in a layer still sealing, or in a sealed map.
//
// # Lifecycle by example
//
// Importing an image:
//
//	p, _ := m.Import(ctx, r, size, nil)  // chunks and map stored, invisible
//	store.Update(func(tx) { id, _ = p.Commit(tx); putImageRecord(tx, id) })
//	// or p.Abort(); a crash before Commit leaves nothing (Open drops it)
//
// A pooled image serving many disks: CreateDisk(tx, id, size, true) puts an
// overlay straight on the image's layer in O(1); every disk reads its
// chunks through the one shared cache. ReleaseLayer of the image drops the
// holder; the layer stays until its last disk is deleted.
//
// A standard disk: CreateDisk(tx, id, size, false) gives the disk its own
// base layer sharing the image's map pages (one count per dir page); the
// image can go and the disk stays whole.
//
// Snapshotting a running disk:
//
//	snap, _ := m.Snapshot(ctx, disk) // O(1): fresh overlay, seal queued
//	m.OpenLayer(snap)                // reads right away, through the frozen overlay
//	m.WaitSealed(ctx, snap, nil)     // the map is complete and shared
//
// Both the snapshot record and the disk use the new layer; its parent is
// released once the seal no longer needs it. Seals resume after a restart.
//
// # Concurrency and durability
//
// Volume methods are safe from many goroutines. Writes commit one store
// transaction per request (per 4 MiB of it); Flush and FUA call
// storage.Store.Sync, after which every completed write survives a crash.
// A snapshot waits for writes in flight, so it holds exactly those
// acknowledged before it. Releases (disks, snapshots, layers, overlays) run
// as background jobs in bounded, resumable transactions.
// Both volumes also have TryReadAt (nbd.TryReader): a read that touches
// only cached chunks, holes and zeroed overlay blocks is served without
// I/O or waiting, and anything else is declined to ReadAt.
//
// # Where things are
//
//	contract.go  ids, errors, Usage, Extent, the Volume interface
//	options.go   Options and their defaults
//	manager.go   Open, Close, ids, layer lookup, holders, LayerInfo
//	keys.go      the persisted records and their key layout
//	blockmap.go  map pages: leaf and dir pages, their counts, loading
//	leafmap.go   a loaded leaf page: ids as 2- or 4-byte deltas from a base
//	build.go     staging steps shared by import and seal
//	layer.go     a layer in memory: sealed map or frozen overlay over parent
//	overlay.go   4 KiB overlay blocks, range records, the in-memory index
//	disk.go      disks: create, delete, resize, the read-write Volume
//	volume.go    OpenLayer and the read-only Volume
//	tryread.go   TryReadAt: reads served from memory without blocking
//	seal.go      Snapshot and the background seal
//	import.go    Import and Pending
//	cache.go     the shared cache of decoded chunks
//	reaper.go    release jobs (disks, layers, pages, overlays)
//	usage.go     space accounting; refs.go the audit's reference walk
package layer
