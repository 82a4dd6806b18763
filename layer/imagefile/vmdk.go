package imagefile

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
)

// VMDK sparse extent header fields (VMware's "Virtual Disk Format 5.0").
const (
	vmdkFlagNewlineTest = 1 << 0
	vmdkFlagZeroGrain   = 1 << 2
	vmdkFlagCompressed  = 1 << 16
	vmdkFlagMarkers     = 1 << 17
	vmdkGDAtEnd         = ^uint64(0)
	vmdkCompressDeflat  = 1
	vmdkGTEZero         = 1 // grain table entry for a zeroed grain
	vmdkMaxDescriptor   = 1 << 20
	vmdkMarkerLen       = 12 // lba u64 + size u32 before a compressed grain
)

type vmdkImage struct {
	unitReader
	gtEntries  int64
	gd         []int64 // grain table file offsets, 0 = absent
	gt         tableCache
	zeroGrain  bool
	compressed bool
	markers    bool
}

type vmdkHeader struct {
	version, flags      uint32
	capacity, grainSize uint64
	descOff, descSize   uint64
	gtEntries           uint32
	gdOffset            uint64
	compressAlgorithm   uint16
	magicOK             bool
}

func parseVMDKHeader(b []byte) vmdkHeader {
	le := binary.LittleEndian
	return vmdkHeader{
		magicOK:           bytes.HasPrefix(b, vmdkMagic),
		version:           le.Uint32(b[4:]),
		flags:             le.Uint32(b[8:]),
		capacity:          le.Uint64(b[12:]),
		grainSize:         le.Uint64(b[20:]),
		descOff:           le.Uint64(b[28:]),
		descSize:          le.Uint64(b[36:]),
		gtEntries:         le.Uint32(b[44:]),
		gdOffset:          le.Uint64(b[56:]),
		compressAlgorithm: le.Uint16(b[77:]),
	}
}

func openVMDK(r io.ReaderAt, size int64) (Image, error) {
	head := make([]byte, 512)
	if err := readFull(r, size, head[:min(512, size)], 0); err != nil {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(head, vmdkDescMagic):
		return nil, vmdkDescriptorFileError(r, size)
	case bytes.HasPrefix(head, vmdkCOWDMagic):
		return nil, fmt.Errorf("%w: VMDK of the ESX \"COWD\" sparse kind is not supported; convert it with qemu-img convert -O vmdk -o subformat=streamOptimized", ErrInvalid)
	}
	if size < 512 {
		return nil, fmt.Errorf("%w: VMDK file of %d bytes is too short for its header; upload the complete file", ErrInvalid, size)
	}
	h := parseVMDKHeader(head)
	if h.version < 1 || h.version > 3 {
		return nil, fmt.Errorf("%w: VMDK sparse extent version %d is not supported; convert it with qemu-img convert -O vmdk", ErrInvalid, h.version)
	}
	if h.flags&vmdkFlagNewlineTest != 0 && string(head[73:77]) != "\n \r\n" {
		return nil, fmt.Errorf("%w: VMDK header has its line-ending test bytes changed, so the file went through a text-mode transfer and is corrupt; transfer it again in binary mode", ErrInvalid)
	}
	// The descriptor tells whether other files are involved: check it
	// before anything else, since that is the user's fix.
	if err := checkEmbeddedDescriptor(r, size, h); err != nil {
		return nil, err
	}
	if h.gdOffset == vmdkGDAtEnd {
		// streamOptimized written as a stream: the real header is the
		// footer, in the second-to-last sector.
		if size < 1536 {
			return nil, fmt.Errorf("%w: streamOptimized VMDK of %d bytes has no room for its footer; the file is truncated", ErrInvalid, size)
		}
		foot := make([]byte, 512)
		if err := readFull(r, size, foot, size-1024); err != nil {
			return nil, err
		}
		fh := parseVMDKHeader(foot)
		if !fh.magicOK || fh.gdOffset == vmdkGDAtEnd {
			return nil, fmt.Errorf("%w: streamOptimized VMDK has no valid footer at the end; the file is truncated", ErrInvalid)
		}
		h.gdOffset, h.gtEntries, h.grainSize, h.capacity, h.flags = fh.gdOffset, fh.gtEntries, fh.grainSize, fh.capacity, fh.flags
		h.compressAlgorithm = fh.compressAlgorithm
	}
	if h.capacity > MaxVirtualSize/512 {
		return nil, fmt.Errorf("%w: VMDK capacity of %d sectors is over the %d byte limit", ErrInvalid, h.capacity, int64(MaxVirtualSize))
	}
	if h.grainSize == 0 || h.grainSize&(h.grainSize-1) != 0 || h.grainSize > maxUnit/512 {
		return nil, fmt.Errorf("%w: VMDK grain size of %d sectors is invalid (a power of two up to %d); the file is corrupt", ErrInvalid, h.grainSize, maxUnit/512)
	}
	if h.gtEntries == 0 || int64(h.gtEntries)*4 > MaxTableBytes {
		return nil, fmt.Errorf("%w: VMDK grain tables of %d entries are invalid; the file is corrupt", ErrInvalid, h.gtEntries)
	}
	compressed := h.flags&vmdkFlagCompressed != 0
	if compressed && h.compressAlgorithm != vmdkCompressDeflat {
		return nil, fmt.Errorf("%w: VMDK compression algorithm %d is not supported (only deflate)", ErrInvalid, h.compressAlgorithm)
	}
	vsize := int64(h.capacity) * 512
	grain := int64(h.grainSize) * 512
	gtCover := grain * int64(h.gtEntries)
	gdLen := ceilDiv(vsize, gtCover)
	if gdLen*4 > MaxTableBytes {
		return nil, fmt.Errorf("%w: VMDK grain directory of %d entries is over the %d byte limit", ErrInvalid, gdLen, MaxTableBytes)
	}
	if gdLen > 0 && (h.gdOffset == 0 || h.gdOffset > uint64(size)/512) {
		return nil, fmt.Errorf("%w: VMDK grain directory at sector %d is outside the %d byte file; the file is truncated or corrupt", ErrInvalid, h.gdOffset, size)
	}
	raw := make([]byte, gdLen*4)
	if err := readFull(r, size, raw, int64(h.gdOffset)*512); err != nil {
		return nil, fmt.Errorf("VMDK grain directory: %w", err)
	}
	img := &vmdkImage{
		gtEntries:  int64(h.gtEntries),
		gd:         make([]int64, gdLen),
		zeroGrain:  h.flags&vmdkFlagZeroGrain != 0,
		compressed: compressed,
		markers:    h.flags&vmdkFlagMarkers != 0,
	}
	img.unitReader = unitReader{r: r, file: size, size: vsize, unit: grain, format: img}
	for i := range img.gd {
		off := int64(binary.LittleEndian.Uint32(raw[i*4:])) * 512
		if off != 0 && off+img.gtEntries*4 > size {
			return nil, fmt.Errorf("%w: VMDK grain table %d at %d is outside the %d byte file; the file is truncated or corrupt", ErrInvalid, i, off, size)
		}
		img.gd[i] = off
	}
	if err := checkDistinct(img.gd, "VMDK grain table"); err != nil {
		return nil, err
	}
	for i, off := range img.gd {
		if off == 0 {
			continue
		}
		t, err := img.loadGT(off)
		if err != nil {
			return nil, err
		}
		for j, e := range t {
			if _, err := img.classify(int64(i)*img.gtEntries+int64(j), e); err != nil {
				return nil, err
			}
		}
	}
	return img, nil
}

// vmdkDescriptor is what strata needs from a descriptor's text.
type vmdkDescriptor struct {
	createType string
	parentCID  string
	parentHint string
	extents    []vmdkExtentLine
}

type vmdkExtentLine struct {
	access  string
	sectors int64
	kind    string
	file    string
}

func parseVMDKDescriptor(text []byte) vmdkDescriptor {
	var d vmdkDescriptor
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 4096), vmdkMaxDescriptor)
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimRight(sc.Text(), "\x00"))
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			v = strings.Trim(strings.TrimSpace(v), `"`)
			switch strings.TrimSpace(k) {
			case "createType":
				d.createType = v
			case "parentCID":
				d.parentCID = v
			case "parentFileNameHint":
				d.parentHint = v
			}
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		switch f[0] {
		case "RW", "RDONLY", "NOACCESS":
		default:
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		e := vmdkExtentLine{access: f[0], sectors: n, kind: f[2]}
		if _, rest, ok := strings.Cut(line, `"`); ok {
			e.file, _, _ = strings.Cut(rest, `"`)
		}
		d.extents = append(d.extents, e)
	}
	return d
}

// checkEmbeddedDescriptor reads the descriptor inside a sparse extent and
// refuses one that names a parent or more than this one extent.
func checkEmbeddedDescriptor(r io.ReaderAt, size int64, h vmdkHeader) error {
	if h.descOff == 0 || h.descSize == 0 {
		return fmt.Errorf("%w: VMDK sparse extent has no embedded descriptor, so it is one piece of a multi-file disk; convert the whole disk to one file with qemu-img convert -O vmdk -o subformat=streamOptimized", ErrUnsafe)
	}
	if h.descSize > vmdkMaxDescriptor/512 || h.descOff > uint64(size)/512 {
		return fmt.Errorf("%w: VMDK embedded descriptor (sector %d, %d sectors) is out of range; the file is corrupt or truncated", ErrInvalid, h.descOff, h.descSize)
	}
	text := make([]byte, h.descSize*512)
	if err := readFull(r, size, text, int64(h.descOff)*512); err != nil {
		return fmt.Errorf("VMDK descriptor: %w", err)
	}
	d := parseVMDKDescriptor(text)
	if d.parentCID != "" && !strings.EqualFold(d.parentCID, "ffffffff") {
		return fmt.Errorf("%w: VMDK is a delta disk on the parent %q; flatten it first with qemu-img convert -O vmdk -o subformat=streamOptimized", ErrUnsafe, d.parentHint)
	}
	if len(d.extents) == 0 {
		// qemu writes the extents of a twoGbMaxExtentSparse disk with an
		// empty descriptor area: the real descriptor is another file.
		return fmt.Errorf("%w: VMDK sparse extent has no descriptor of its own, so it is one piece of a multi-file disk; convert the whole disk to one file with qemu-img convert -O vmdk -o subformat=streamOptimized", ErrUnsafe)
	}
	if len(d.extents) != 1 || d.extents[0].kind != "SPARSE" {
		return fmt.Errorf("%w: VMDK descriptor lists %s; only a single self-contained sparse extent can be uploaded, so convert it with qemu-img convert -O vmdk -o subformat=streamOptimized", ErrUnsafe, describeExtents(d.extents))
	}
	return nil
}

// vmdkDescriptorFileError explains why a text descriptor cannot be
// uploaded: its data is in the files it names.
func vmdkDescriptorFileError(r io.ReaderAt, size int64) error {
	text := make([]byte, min(size, vmdkMaxDescriptor))
	if err := readFull(r, size, text, 0); err != nil {
		return err
	}
	d := parseVMDKDescriptor(text)
	if len(d.extents) == 0 {
		return fmt.Errorf("%w: VMDK descriptor file lists no extents; the file is corrupt", ErrInvalid)
	}
	return fmt.Errorf("%w: this is a VMDK descriptor (createType %q) whose data lives in %s; convert the disk to one file with qemu-img convert -O vmdk -o subformat=streamOptimized (or -O qcow2) and upload that",
		ErrUnsafe, d.createType, describeExtents(d.extents))
}

func describeExtents(ex []vmdkExtentLine) string {
	if len(ex) == 0 {
		return "no extents"
	}
	var names []string
	for i, e := range ex {
		if i == 3 {
			names = append(names, fmt.Sprintf("and %d more", len(ex)-3))
			break
		}
		names = append(names, fmt.Sprintf("%s extent %q", e.kind, e.file))
	}
	return strings.Join(names, ", ")
}

func (v *vmdkImage) Format() Format { return VMDK }
func (v *vmdkImage) Size() int64    { return v.size }

func (v *vmdkImage) loadGT(off int64) ([]uint64, error) {
	raw := make([]byte, v.gtEntries*4)
	if err := readFull(v.r, v.file, raw, off); err != nil {
		return nil, fmt.Errorf("VMDK grain table: %w", err)
	}
	t := make([]uint64, v.gtEntries)
	for i := range t {
		t[i] = uint64(binary.LittleEndian.Uint32(raw[i*4:]))
	}
	return t, nil
}

// classify decodes grain table entry e (a sector number) of grain idx.
func (v *vmdkImage) classify(idx int64, e uint64) (unitMap, error) {
	switch {
	case e == 0:
		return unitMap{kind: unitZero}, nil
	case e == vmdkGTEZero && v.zeroGrain:
		return unitMap{kind: unitZero}, nil
	}
	off := int64(e) * 512
	if v.compressed {
		if off+vmdkMarkerLen > v.file || (!v.markers && off >= v.file) {
			return unitMap{}, fmt.Errorf("%w: VMDK compressed grain %d at %d is outside the %d byte file; the file is truncated or corrupt", ErrInvalid, idx, off, v.file)
		}
		return unitMap{kind: unitCompressed, host: off, idx: idx}, nil
	}
	need := min(v.unit, v.size-idx*v.unit)
	if e == vmdkGTEZero || need <= 0 || off+need > v.file {
		return unitMap{}, fmt.Errorf("%w: VMDK grain %d at %d is outside the %d byte file; the file is truncated or corrupt", ErrInvalid, idx, off, v.file)
	}
	return unitMap{kind: unitData, host: off}, nil
}

func (v *vmdkImage) lookup(idx int64) (unitMap, int64, error) {
	i1, i2 := idx/v.gtEntries, idx%v.gtEntries
	if i1 >= int64(len(v.gd)) {
		return unitMap{}, 0, fmt.Errorf("%w: VMDK grain %d is beyond the grain directory", ErrInvalid, idx)
	}
	off := v.gd[i1]
	if off == 0 {
		return unitMap{kind: unitZero}, v.gtEntries - i2, nil
	}
	t, err := v.gt.get(off, func() ([]uint64, error) { return v.loadGT(off) })
	if err != nil {
		return unitMap{}, 0, err
	}
	m, err := v.classify(idx, t[i2])
	return m, 1, err
}

var zlibPool sync.Pool

// inflate decodes one compressed grain: with markers, a 12-byte header
// (the grain's sector and the compressed length) precedes zlib data.
func (v *vmdkImage) inflate(m unitMap, dst []byte) error {
	var src []byte
	if v.markers {
		var mk [vmdkMarkerLen]byte
		if err := readFull(v.r, v.file, mk[:], m.host); err != nil {
			return err
		}
		lba := binary.LittleEndian.Uint64(mk[:])
		n := int64(binary.LittleEndian.Uint32(mk[8:]))
		if lba != uint64(m.idx*v.unit/512) {
			return fmt.Errorf("%w: VMDK grain %d has a marker for sector %d; the file is corrupt", ErrInvalid, m.idx, lba)
		}
		if n == 0 || n > 2*v.unit+4096 {
			return fmt.Errorf("%w: VMDK grain %d claims %d compressed bytes; the file is corrupt", ErrInvalid, m.idx, n)
		}
		src = make([]byte, n)
		if err := readFull(v.r, v.file, src, m.host+vmdkMarkerLen); err != nil {
			return err
		}
	} else {
		src = make([]byte, min(2*v.unit+4096, v.file-m.host))
		if err := readFull(v.r, v.file, src, m.host); err != nil {
			return err
		}
	}
	// The last grain may be stored short when the disk ends inside it.
	need := min(v.unit, v.size-m.idx*v.unit)
	if err := inflateZlib(src, dst[:need]); err != nil {
		return fmt.Errorf("%w: VMDK grain %d does not decompress to %d bytes (%v); the file is corrupt", ErrInvalid, m.idx, need, err)
	}
	clear(dst[need:])
	return nil
}

func inflateZlib(src, dst []byte) error {
	br := bytes.NewReader(src)
	var zr io.ReadCloser
	if v := zlibPool.Get(); v != nil {
		zr = v.(io.ReadCloser)
		if err := zr.(zlib.Resetter).Reset(br, nil); err != nil {
			return err
		}
	} else {
		var err error
		if zr, err = zlib.NewReader(br); err != nil {
			return err
		}
	}
	defer zlibPool.Put(zr)
	_, err := io.ReadFull(zr, dst)
	return err
}
