// Package imagefile reads and writes the container formats a VM image
// arrives in (raw, qcow2, VMDK, VHD) and turns each into what the rest of
// strata stores: the logical disk, a flat run of bytes from 0 to Size.
//
// Vocabulary. The *file* is what the user uploads; the *image* is the
// logical disk inside it. A *cluster* (qcow2), *grain* (VMDK) or *block*
// (VHD) is the format's allocation unit; a *table* maps logical units to
// where they sit in the file. An *extent* is a run of the logical disk that
// is either data or known to read as zeros.
//
// Why this package exists: strata cuts images into chunks at logical
// offsets (DESIGN §2, "never chunk a container file"), so every upload is
// converted to its logical bytes before it reaches the chunk store. Two
// qcow2 files of the same disk share nothing byte for byte; their logical
// disks share everything.
//
// The model, in the order a caller meets it:
//
//   - Detect looks at magic bytes only and answers raw when nothing
//     matches. It never fails on content.
//   - Open detects (or checks the claimed format against what it detects),
//     then validates the whole file up front: header fields, every table
//     entry points inside the file, sizes are bounded. A file that would
//     make strata read another file (a qcow2 backing or external data file,
//     a VMDK descriptor with extents elsewhere, a VHD differencing disk) is
//     refused with ErrUnsafe; one that is truncated, inconsistent or an
//     unsupported variant with ErrInvalid; a claimed format that is not the
//     detected one with ErrFormatMismatch. A container strata does not
//     read (VHDX, VDI, QED, Parallels) is ErrInvalid, never taken for a
//     raw disk. Errors are sentences that say what to do, wrapped around
//     those values.
//   - Image is an io.ReaderAt over the logical disk, safe for concurrent
//     use, plus Extents, a best-effort map of which runs are zeros so the
//     importer can skip them. Data found corrupt while reading (a
//     compressed cluster that does not inflate to its size) is an
//     ErrInvalid error, never bytes.
//   - WriteRaw and WriteQCOW2 go the other way for export: from any
//     logical disk to a raw stream or a qcow2 v3 file that `qemu-img check`
//     accepts, with zero runs left unallocated.
//
// Hostile input. Uploads come from tenants, so every size and offset read
// from a file is checked against the file size and fixed limits before it
// is used to allocate or to read: tables larger than MaxTableBytes, virtual
// sizes over MaxVirtualSize, allocation units over 2 MiB are refused, and
// every loop is bounded by the file or the virtual size. FuzzOpen holds
// this line.
package imagefile
