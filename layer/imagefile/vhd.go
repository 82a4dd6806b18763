package imagefile

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"unicode/utf16"
)

// VHD footer and dynamic header fields (Microsoft's "Virtual Hard Disk
// Image Format Specification" 1.0). All fields are big-endian.
const (
	vhdFixed        = 2
	vhdDynamic      = 3
	vhdDifferencing = 4
	vhdNoBlock      = 0xffffffff
	vhdMaxBlock     = 64 << 20
)

var vhdDynCookie = []byte("cxsparse")

// vhdChecksum is the one's complement of the byte sum with the checksum
// field (at at) taken as zero.
func vhdChecksum(b []byte, at int) uint32 {
	var s uint32
	for i, c := range b {
		if i >= at && i < at+4 {
			continue
		}
		s += uint32(c)
	}
	return ^s
}

func openVHD(r io.ReaderAt, size int64) (Image, error) {
	if size < 512 {
		return nil, fmt.Errorf("%w: VHD file of %d bytes is too short for its footer; upload the complete file", ErrInvalid, size)
	}
	foot := make([]byte, 512)
	if err := readFull(r, size, foot, size-512); err != nil {
		return nil, err
	}
	atEnd := bytes.HasPrefix(foot, vhdFooter)
	if !atEnd {
		// A dynamic disk keeps a copy of the footer at the start; use it
		// (as qemu does) when the end was lost, and let the table checks
		// find what else is missing.
		if err := readFull(r, size, foot, 0); err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(foot, vhdFooter) {
			return nil, fmt.Errorf("%w: VHD footer not found; the file is truncated", ErrInvalid)
		}
	}
	be := binary.BigEndian
	if got, want := be.Uint32(foot[64:]), vhdChecksum(foot, 64); got != want {
		return nil, fmt.Errorf("%w: VHD footer checksum is %#x, expected %#x; the file is corrupt", ErrInvalid, got, want)
	}
	vsize := be.Uint64(foot[48:])
	diskType := be.Uint32(foot[60:])
	if diskType == vhdDifferencing {
		return nil, fmt.Errorf("%w: VHD is a differencing disk on the parent %q; merge it into a standalone disk first with qemu-img convert -O vpc", ErrUnsafe, vhdParentName(r, size, be.Uint64(foot[16:])))
	}
	if vsize > MaxVirtualSize {
		return nil, fmt.Errorf("%w: VHD size %d is over the %d byte limit", ErrInvalid, vsize, int64(MaxVirtualSize))
	}
	switch diskType {
	case vhdFixed:
		if !atEnd {
			return nil, fmt.Errorf("%w: fixed VHD has no footer at its end; the file is truncated", ErrInvalid)
		}
		if int64(vsize) > size-512 {
			return nil, fmt.Errorf("%w: fixed VHD of %d bytes is stored in only %d; the file is truncated", ErrInvalid, vsize, size-512)
		}
		return &vhdFixedImage{rawImage{r: r, size: int64(vsize)}}, nil
	case vhdDynamic:
		return openVHDDynamic(r, size, int64(vsize), be.Uint64(foot[16:]))
	}
	return nil, fmt.Errorf("%w: VHD disk type %d is not supported (fixed and dynamic are); convert it with qemu-img convert -O vpc", ErrInvalid, diskType)
}

// vhdParentName reads a differencing disk's parent name for the error.
func vhdParentName(r io.ReaderAt, size int64, dynOff uint64) string {
	h := make([]byte, 1024)
	if dynOff > uint64(size) || readFull(r, size, h, int64(dynOff)) != nil || !bytes.HasPrefix(h, vhdDynCookie) {
		return "(name unreadable)"
	}
	u := make([]uint16, 0, 256)
	for i := 64; i < 576; i += 2 {
		c := binary.BigEndian.Uint16(h[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// vhdFixedImage is raw data followed by the footer.
type vhdFixedImage struct{ rawImage }

func (v *vhdFixedImage) Format() Format { return VHD }

// vhdDynamicImage reads blocks through the BAT; each block starts with a
// sector bitmap, and a sector whose bit is clear was never written (zeros).
type vhdDynamicImage struct {
	r           io.ReaderAt
	file, size  int64
	block       int64
	bitmapBytes int64
	bat         []int64 // block file offsets, -1 = absent
	bitmaps     tableCache
}

func openVHDDynamic(r io.ReaderAt, size, vsize int64, dynOff uint64) (Image, error) {
	if dynOff > uint64(size) {
		return nil, fmt.Errorf("%w: VHD dynamic header offset %d is outside the %d byte file; the file is truncated or corrupt", ErrInvalid, dynOff, size)
	}
	h := make([]byte, 1024)
	if err := readFull(r, size, h, int64(dynOff)); err != nil {
		return nil, fmt.Errorf("VHD dynamic header: %w", err)
	}
	be := binary.BigEndian
	if !bytes.HasPrefix(h, vhdDynCookie) {
		return nil, fmt.Errorf("%w: VHD dynamic header not found at %d; the file is corrupt", ErrInvalid, dynOff)
	}
	if got, want := be.Uint32(h[36:]), vhdChecksum(h, 36); got != want {
		return nil, fmt.Errorf("%w: VHD dynamic header checksum is %#x, expected %#x; the file is corrupt", ErrInvalid, got, want)
	}
	batOff := be.Uint64(h[16:])
	entries := int64(be.Uint32(h[28:]))
	block := int64(be.Uint32(h[32:]))
	if block < 512 || block > vhdMaxBlock || bits.OnesCount64(uint64(block)) != 1 {
		return nil, fmt.Errorf("%w: VHD block size %d is invalid (a power of two from 512 B to 64 MiB); the file is corrupt", ErrInvalid, block)
	}
	need := ceilDiv(vsize, block)
	if entries < need {
		return nil, fmt.Errorf("%w: VHD block table has %d entries but the %d byte disk needs %d; the file is corrupt", ErrInvalid, entries, vsize, need)
	}
	if need*4 > MaxTableBytes {
		return nil, fmt.Errorf("%w: VHD block table of %d bytes is over the %d byte limit", ErrInvalid, need*4, MaxTableBytes)
	}
	if batOff > uint64(size) {
		return nil, fmt.Errorf("%w: VHD block table offset %d is outside the %d byte file; the file is truncated or corrupt", ErrInvalid, batOff, size)
	}
	raw := make([]byte, need*4)
	if err := readFull(r, size, raw, int64(batOff)); err != nil {
		return nil, fmt.Errorf("VHD block table: %w", err)
	}
	img := &vhdDynamicImage{
		r: r, file: size, size: vsize, block: block,
		bitmapBytes: ceilDiv(block/512, 8*512) * 512,
		bat:         make([]int64, need),
	}
	offs := make([]int64, 0, need)
	for i := range img.bat {
		e := be.Uint32(raw[i*4:])
		if e == vhdNoBlock {
			img.bat[i] = -1
			continue
		}
		off := int64(e) * 512
		used := min(block, vsize-int64(i)*block)
		if off+img.bitmapBytes+used > size {
			return nil, fmt.Errorf("%w: VHD block %d at %d is outside the %d byte file; the file is truncated or corrupt", ErrInvalid, i, off, size)
		}
		img.bat[i] = off
		offs = append(offs, off+1) // +1: checkDistinct ignores 0, a valid offset here
	}
	if err := checkDistinct(offs, "VHD block"); err != nil {
		return nil, err
	}
	return img, nil
}

func (v *vhdDynamicImage) Format() Format { return VHD }
func (v *vhdDynamicImage) Size() int64    { return v.size }

// bitmap returns block i's sector bitmap as 64-bit words, most significant
// bit first like the file.
func (v *vhdDynamicImage) bitmap(off int64) ([]uint64, error) {
	return v.bitmaps.get(off, func() ([]uint64, error) {
		raw := make([]byte, v.bitmapBytes)
		if err := readFull(v.r, v.file, raw, off); err != nil {
			return nil, fmt.Errorf("VHD sector bitmap: %w", err)
		}
		w := make([]uint64, len(raw)/8)
		for i := range w {
			w[i] = binary.BigEndian.Uint64(raw[i*8:])
		}
		return w, nil
	})
}

func bitSet(w []uint64, s int64) bool { return w[s/64]&(1<<(63-s%64)) != 0 }

// runs calls fn for each run of sectors [from, to) of the block that share
// a bitmap bit.
func runs(w []uint64, from, to int64, fn func(from, to int64, set bool) error) error {
	for s := from; s < to; {
		set := bitSet(w, s)
		e := s + 1
		for e < to && bitSet(w, e) == set {
			if e%64 == 0 && to-e >= 64 && (w[e/64] == 0 || w[e/64] == ^uint64(0)) && (w[e/64] != 0) == set {
				e += 64
				continue
			}
			e++
		}
		if err := fn(s, e, set); err != nil {
			return err
		}
		s = e
	}
	return nil
}

func (v *vhdDynamicImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("imagefile: negative offset %d", off)
	}
	if off >= v.size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > v.size-off {
		p = p[:v.size-off]
		eof = io.EOF
	}
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		bi, within := pos/v.block, pos%v.block
		n := int(min(v.block-within, int64(len(p)-done)))
		dst := p[done : done+n]
		boff := v.bat[bi]
		if boff < 0 {
			clear(dst)
			done += n
			continue
		}
		w, err := v.bitmap(boff)
		if err != nil {
			return done, err
		}
		// Sectors are the bitmap's unit; the request may start or end
		// inside one, so runs are clipped to [within, within+n).
		err = runs(w, within/512, ceilDiv(within+int64(n), 512), func(s, e int64, set bool) error {
			a, b := max(s*512, within), min(e*512, within+int64(n))
			seg := dst[a-within : b-within]
			if !set {
				clear(seg)
				return nil
			}
			return readFull(v.r, v.file, seg, boff+v.bitmapBytes+a)
		})
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, eof
}

func (v *vhdDynamicImage) Extents() ([]Extent, error) {
	var b extentBuilder
	for i, boff := range v.bat {
		start := int64(i) * v.block
		if boff < 0 {
			b.add(start, v.block, true)
			continue
		}
		w, err := v.bitmap(boff)
		if err != nil {
			return nil, err
		}
		err = runs(w, 0, v.block/512, func(s, e int64, set bool) error {
			b.add(start+s*512, (e-s)*512, !set)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return b.finish(v.size), nil
}
