package imagefile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Format names a container format.
type Format string

// The formats strata imports. VHD is what qemu calls "vpc".
const (
	Raw   Format = "raw"
	QCOW2 Format = "qcow2"
	VMDK  Format = "vmdk"
	VHD   Format = "vhd"
)

var (
	// ErrUnsafe marks a file that would make us read other files: a qcow2
	// with a backing file or an external data file, a VMDK whose extents
	// live in other files, a VHD differencing disk.
	ErrUnsafe = errors.New("imagefile: image refers to other files")
	// ErrInvalid marks a truncated or inconsistent file, or a variant of
	// a format that strata does not read.
	ErrInvalid = errors.New("imagefile: invalid image file")
	// ErrFormatMismatch marks a claimed format that differs from the one
	// the magic bytes show.
	ErrFormatMismatch = errors.New("imagefile: format differs from the claimed one")
)

// Limits that keep a hostile file from making us allocate or loop without
// bound. Real images stay far below them.
const (
	// MaxVirtualSize is the largest logical disk we accept (64 TiB, the
	// VHDX ceiling and well above any cloud image).
	MaxVirtualSize = 64 << 40
	// MaxTableBytes caps one metadata table read whole (a qcow2 L1, a VMDK
	// grain directory, a VHD BAT); qemu caps the qcow2 L1 at 32 MiB too.
	MaxTableBytes = 32 << 20
	// maxUnit caps a cluster, grain or block (2 MiB, qcow2's maximum).
	maxUnit = 2 << 20
	// maxExtents bounds the list Extents returns; past it the rest is
	// reported as data, which is always a correct (if slower) answer.
	maxExtents = 1 << 20
)

// Image is the logical disk inside an image file.
type Image interface {
	// Format is the container format the image was read from.
	Format() Format
	// Size is the virtual (logical) size in bytes.
	Size() int64
	// ReadAt reads logical bytes; reads past Size return io.EOF as
	// io.ReaderAt demands. Safe for concurrent use.
	io.ReaderAt
	// Extents lists runs of the logical disk in order, covering [0, Size)
	// exactly. A run marked Zero reads as zeros; a data run may still
	// contain zeros (the map is best effort).
	Extents() ([]Extent, error)
}

// Extent is a run of the logical disk.
type Extent struct {
	Offset, Length int64
	// Zero: the run reads as zeros (unallocated or a zero cluster).
	Zero bool
}

// Magic bytes.
var (
	qcow2Magic    = []byte("QFI\xfb")
	vmdkMagic     = []byte("KDMV")
	vmdkCOWDMagic = []byte("COWD")
	vmdkDescMagic = []byte("# Disk DescriptorFile")
	vhdFooter     = []byte("conectix")
)

// Detect names the format of the file by its magic bytes, and answers Raw
// when nothing matches. An error means the file could not be read.
func Detect(r io.ReaderAt, size int64) (Format, error) {
	if size < 0 {
		return "", fmt.Errorf("%w: negative file size %d", ErrInvalid, size)
	}
	head := make([]byte, 512)
	n, err := r.ReadAt(head[:min(int64(len(head)), size)], 0)
	if err != nil && !(errors.Is(err, io.EOF) && int64(n) == min(int64(len(head)), size)) {
		return "", fmt.Errorf("imagefile: reading the file header: %w", err)
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, qcow2Magic):
		return QCOW2, nil
	case bytes.HasPrefix(head, vmdkMagic), bytes.HasPrefix(head, vmdkCOWDMagic),
		bytes.HasPrefix(head, vmdkDescMagic):
		return VMDK, nil
	case bytes.HasPrefix(head, vhdFooter):
		return VHD, nil
	}
	if size >= 512 {
		tail := make([]byte, len(vhdFooter))
		if _, err := r.ReadAt(tail, size-512); err != nil {
			return "", fmt.Errorf("imagefile: reading the file footer: %w", err)
		}
		if bytes.Equal(tail, vhdFooter) {
			return VHD, nil
		}
	}
	return Raw, nil
}

// ParseFormat reads a format name as users write it: raw, qcow2, vmdk,
// vhd or qemu's name for VHD, vpc, in any case. "" stays "" (detect).
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case "", Raw, QCOW2, VMDK, VHD:
		return f, nil
	case "vpc":
		return VHD, nil
	}
	return "", fmt.Errorf("%w: unknown image format %q; use raw, qcow2, vmdk or vhd", ErrInvalid, s)
}

// Open reads the image in the file r of size bytes. claimed is the format
// the user declared, or "" to go by detection. The whole file structure is
// validated before Open returns, so an import fails before it starts rather
// than half way.
func Open(r io.ReaderAt, size int64, claimed Format) (Image, error) {
	switch claimed {
	case "", Raw, QCOW2, VMDK, VHD:
	default:
		return nil, fmt.Errorf("%w: unknown image format %q; use raw, qcow2, vmdk or vhd", ErrInvalid, claimed)
	}
	f, err := Detect(r, size)
	if err != nil {
		return nil, err
	}
	if claimed != "" && claimed != f {
		return nil, fmt.Errorf("%w: the file is a %s image but was declared as %s; declare it as %s or convert it with qemu-img convert",
			ErrFormatMismatch, f, claimed, f)
	}
	switch f {
	case QCOW2:
		return openQCOW2(r, size)
	case VMDK:
		return openVMDK(r, size)
	case VHD:
		return openVHD(r, size)
	}
	return openRaw(r, size)
}

// rawImage is a raw file: the file is the logical disk.
type rawImage struct {
	r    io.ReaderAt
	size int64
}

// foreignMagic names container formats strata does not read, so that one
// is refused rather than stored as if it were a raw disk.
var foreignMagic = []struct {
	at    int64
	magic string
	name  string
}{
	{0, "vhdxfile", "VHDX"},
	{64, "\x7f\x10\xda\xbe", "VDI (VirtualBox)"},
	{0, "QED\x00", "QED"},
	{0, "WithoutFreeSpace", "Parallels"},
	{0, "WithouFreSpacExt", "Parallels"},
}

func openRaw(r io.ReaderAt, size int64) (Image, error) {
	if size > MaxVirtualSize {
		return nil, fmt.Errorf("%w: raw image of %d bytes is larger than the %d byte limit", ErrInvalid, size, int64(MaxVirtualSize))
	}
	for _, m := range foreignMagic {
		b := make([]byte, len(m.magic))
		if m.at+int64(len(b)) > size {
			continue
		}
		if _, err := r.ReadAt(b, m.at); err != nil {
			return nil, fmt.Errorf("imagefile: reading the file header: %w", err)
		}
		if string(b) == m.magic {
			return nil, fmt.Errorf("%w: the file is a %s image, which strata does not read; convert it with qemu-img convert -O qcow2 and upload that", ErrInvalid, m.name)
		}
	}
	return &rawImage{r: r, size: size}, nil
}

func (m *rawImage) Format() Format { return Raw }
func (m *rawImage) Size() int64    { return m.size }

func (m *rawImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("imagefile: negative offset %d", off)
	}
	if off >= m.size {
		return 0, io.EOF
	}
	short := false
	if int64(len(p)) > m.size-off {
		p = p[:m.size-off]
		short = true
	}
	n, err := m.r.ReadAt(p, off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// Extents reports the whole raw file as data: finding zeros would mean
// reading it, which the importer does anyway.
func (m *rawImage) Extents() ([]Extent, error) {
	if m.size == 0 {
		return nil, nil
	}
	return []Extent{{Offset: 0, Length: m.size}}, nil
}
