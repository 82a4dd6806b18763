package imagefile

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// qcow2 header fields and flags used here (docs/interop/qcow2.txt in qemu).
const (
	qcow2IncompatDirty    = 1 << 0
	qcow2IncompatCorrupt  = 1 << 1
	qcow2IncompatDataFile = 1 << 2
	qcow2IncompatCompress = 1 << 3
	qcow2IncompatExtL2    = 1 << 4
	qcow2KnownIncompat    = qcow2IncompatDirty | qcow2IncompatCorrupt | qcow2IncompatDataFile |
		qcow2IncompatCompress | qcow2IncompatExtL2

	qcow2ExtEnd      = 0
	qcow2ExtDataFile = 0x44415441

	qcow2OflagCompressed = 1 << 62
	qcow2OflagZero       = 1 << 0
	qcow2OffsetMask      = 0x00fffffffffffe00

	qcow2CompressZlib = 0
	qcow2CompressZstd = 1
)

type qcow2Image struct {
	unitReader
	clusterBits uint
	l2Entries   int64
	l1          []int64 // L2 table file offsets, 0 = absent
	l2          tableCache
	compression uint8
	csizeShift  uint
	csizeMask   uint64
	coffMask    uint64
}

func openQCOW2(r io.ReaderAt, size int64) (Image, error) {
	h := make([]byte, 112)
	if size < 72 {
		return nil, fmt.Errorf("%w: qcow2 file of %d bytes is too short for its header; upload the complete file", ErrInvalid, size)
	}
	if err := readFull(r, size, h[:min(int64(len(h)), size)], 0); err != nil {
		return nil, err
	}
	be := binary.BigEndian
	version := be.Uint32(h[4:])
	if version != 2 && version != 3 {
		return nil, fmt.Errorf("%w: qcow2 version %d is not supported (only 2 and 3); convert it with qemu-img convert -O qcow2", ErrInvalid, version)
	}
	clusterBits := be.Uint32(h[20:])
	if clusterBits < 9 || clusterBits > 21 {
		return nil, fmt.Errorf("%w: qcow2 cluster size 2^%d is out of range (512 B to 2 MiB); the file is corrupt", ErrInvalid, clusterBits)
	}
	cs := int64(1) << clusterBits
	// Unsafe references come first: they are what the user must fix.
	if bOff, bLen := be.Uint64(h[8:]), be.Uint32(h[16:]); bOff != 0 {
		name := readName(r, size, int64(bOff), int64(bLen))
		return nil, fmt.Errorf("%w: qcow2 image has a backing file %q; flatten it first with qemu-img convert -O qcow2", ErrUnsafe, name)
	}
	var incompat uint64
	headerLen := int64(72)
	var compression uint8
	if version == 3 {
		if size < 104 {
			return nil, fmt.Errorf("%w: qcow2 v3 file of %d bytes is too short for its header; upload the complete file", ErrInvalid, size)
		}
		incompat = be.Uint64(h[72:])
		headerLen = int64(be.Uint32(h[100:]))
		if headerLen < 104 || headerLen > cs || headerLen > size {
			return nil, fmt.Errorf("%w: qcow2 header length %d is invalid; the file is corrupt", ErrInvalid, headerLen)
		}
		if headerLen > 104 {
			compression = h[104]
		}
	}
	exts, err := qcow2Extensions(r, size, headerLen, cs)
	if err != nil {
		return nil, err
	}
	if incompat&qcow2IncompatDataFile != 0 {
		name := string(exts[qcow2ExtDataFile])
		return nil, fmt.Errorf("%w: qcow2 image keeps its data in an external data file %q; convert it to a self-contained image first with qemu-img convert -O qcow2", ErrUnsafe, name)
	}
	if incompat&^qcow2KnownIncompat != 0 {
		return nil, fmt.Errorf("%w: qcow2 image uses incompatible features %#x that strata does not know; convert it with qemu-img convert -O qcow2 -o compat=1.1", ErrInvalid, incompat&^qcow2KnownIncompat)
	}
	if incompat&qcow2IncompatCorrupt != 0 {
		return nil, fmt.Errorf("%w: qcow2 image is marked corrupt; repair it with qemu-img check -r all or convert it, then upload again", ErrInvalid)
	}
	if incompat&qcow2IncompatExtL2 != 0 {
		return nil, fmt.Errorf("%w: qcow2 images with extended L2 entries (subclusters) are not supported; convert with qemu-img convert -O qcow2", ErrInvalid)
	}
	if incompat&qcow2IncompatCompress == 0 {
		compression = qcow2CompressZlib
	}
	if compression != qcow2CompressZlib && compression != qcow2CompressZstd {
		return nil, fmt.Errorf("%w: qcow2 compression type %d is not supported; convert with qemu-img convert -O qcow2", ErrInvalid, compression)
	}
	if crypt := be.Uint32(h[32:]); crypt != 0 {
		return nil, fmt.Errorf("%w: qcow2 image is encrypted; decrypt it with qemu-img convert before uploading", ErrInvalid)
	}
	vsize := be.Uint64(h[24:])
	if vsize > MaxVirtualSize {
		return nil, fmt.Errorf("%w: qcow2 virtual size %d is over the %d byte limit", ErrInvalid, vsize, int64(MaxVirtualSize))
	}
	l2Entries := cs / 8
	l1Need := ceilDiv(int64(vsize), cs*l2Entries)
	l1Size := int64(be.Uint32(h[36:]))
	l1Off := be.Uint64(h[40:])
	if l1Size < l1Need {
		return nil, fmt.Errorf("%w: qcow2 L1 table has %d entries but the %d byte disk needs %d; the file is corrupt", ErrInvalid, l1Size, vsize, l1Need)
	}
	if l1Need*8 > MaxTableBytes {
		return nil, fmt.Errorf("%w: qcow2 L1 table of %d bytes is over the %d byte limit", ErrInvalid, l1Need*8, MaxTableBytes)
	}
	if l1Need > 0 && (l1Off%uint64(cs) != 0 || l1Off > uint64(size)) {
		return nil, fmt.Errorf("%w: qcow2 L1 table offset %d is not a cluster inside the file; the file is corrupt or truncated", ErrInvalid, l1Off)
	}
	raw := make([]byte, l1Need*8)
	if err := readFull(r, size, raw, int64(l1Off)); err != nil {
		return nil, fmt.Errorf("qcow2 L1 table: %w", err)
	}
	img := &qcow2Image{
		clusterBits: uint(clusterBits),
		l2Entries:   l2Entries,
		l1:          make([]int64, l1Need),
		compression: compression,
		csizeShift:  uint(62 - (clusterBits - 8)),
		csizeMask:   (1 << (clusterBits - 8)) - 1,
	}
	img.coffMask = (1 << img.csizeShift) - 1
	img.unitReader = unitReader{r: r, file: size, size: int64(vsize), unit: cs, format: img}
	for i := range img.l1 {
		e := be.Uint64(raw[i*8:])
		off := int64(e & qcow2OffsetMask)
		if off != 0 && (off%cs != 0 || off+cs > size) {
			return nil, fmt.Errorf("%w: qcow2 L1 entry %d points at %d, outside the %d byte file or not cluster aligned; the file is corrupt or truncated", ErrInvalid, i, off, size)
		}
		img.l1[i] = off
	}
	if err := checkDistinct(img.l1, "qcow2 L2 table"); err != nil {
		return nil, err
	}
	// Validate every L2 entry now, so a bad file fails before the import.
	for i, off := range img.l1 {
		if off == 0 {
			continue
		}
		t, err := img.loadL2(off)
		if err != nil {
			return nil, err
		}
		for j, e := range t {
			if _, err := img.classify(int64(i)*l2Entries+int64(j), e); err != nil {
				return nil, err
			}
		}
	}
	return img, nil
}

// qcow2Extensions reads the header extensions in the first cluster.
func qcow2Extensions(r io.ReaderAt, size, at, cs int64) (map[uint32][]byte, error) {
	end := min(cs, size)
	if at >= end {
		return nil, nil
	}
	buf := make([]byte, end-at)
	if err := readFull(r, size, buf, at); err != nil {
		return nil, err
	}
	exts := map[uint32][]byte{}
	be := binary.BigEndian
	for p := 0; p+8 <= len(buf); {
		typ, n := be.Uint32(buf[p:]), int(be.Uint32(buf[p+4:]))
		if typ == qcow2ExtEnd {
			break
		}
		if n > len(buf)-p-8 {
			return nil, fmt.Errorf("%w: qcow2 header extension %#x runs past the first cluster; the file is corrupt", ErrInvalid, typ)
		}
		exts[typ] = buf[p+8 : p+8+n]
		p += 8 + (n+7)/8*8
	}
	return exts, nil
}

// readName reads a file name stored in the image, for error messages.
func readName(r io.ReaderAt, size, off, n int64) string {
	n = min(n, 1023)
	if off <= 0 || n <= 0 || off > size || n > size-off {
		return "(name unreadable)"
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, off); err != nil {
		return "(name unreadable)"
	}
	return string(b)
}

func (q *qcow2Image) Format() Format { return QCOW2 }
func (q *qcow2Image) Size() int64    { return q.size }

func (q *qcow2Image) loadL2(off int64) ([]uint64, error) {
	raw := make([]byte, q.unit)
	if err := readFull(q.r, q.file, raw, off); err != nil {
		return nil, fmt.Errorf("qcow2 L2 table: %w", err)
	}
	t := make([]uint64, q.l2Entries)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(raw[i*8:])
	}
	return t, nil
}

// classify decodes the L2 entry e of cluster idx and checks it points
// inside the file.
func (q *qcow2Image) classify(idx int64, e uint64) (unitMap, error) {
	if e&qcow2OflagCompressed != 0 {
		off := int64(e & q.coffMask)
		sectors := int64((e>>q.csizeShift)&q.csizeMask) + 1
		clen := sectors*512 - off%512
		if off >= q.file {
			return unitMap{}, fmt.Errorf("%w: qcow2 compressed cluster %d is at %d, past the end of the %d byte file; the file is truncated or corrupt", ErrInvalid, idx, off, q.file)
		}
		// qemu may round the last compressed cluster past the end of the
		// file; the bytes that matter are inside it.
		return unitMap{kind: unitCompressed, host: off, clen: min(clen, q.file-off)}, nil
	}
	if e&qcow2OflagZero != 0 {
		return unitMap{kind: unitZero}, nil
	}
	off := int64(e & qcow2OffsetMask)
	if off == 0 {
		return unitMap{kind: unitZero}, nil
	}
	need := min(q.unit, q.size-idx*q.unit)
	if off%q.unit != 0 || need <= 0 || off+need > q.file {
		return unitMap{}, fmt.Errorf("%w: qcow2 cluster %d points at %d, outside the %d byte file or not cluster aligned; the file is truncated or corrupt", ErrInvalid, idx, off, q.file)
	}
	return unitMap{kind: unitData, host: off}, nil
}

func (q *qcow2Image) lookup(idx int64) (unitMap, int64, error) {
	i1, i2 := idx/q.l2Entries, idx%q.l2Entries
	if i1 >= int64(len(q.l1)) {
		return unitMap{}, 0, fmt.Errorf("%w: qcow2 cluster %d is beyond the L1 table", ErrInvalid, idx)
	}
	off := q.l1[i1]
	if off == 0 {
		return unitMap{kind: unitZero}, q.l2Entries - i2, nil
	}
	t, err := q.l2.get(off, func() ([]uint64, error) { return q.loadL2(off) })
	if err != nil {
		return unitMap{}, 0, err
	}
	m, err := q.classify(idx, t[i2])
	return m, 1, err
}

var (
	flatePool sync.Pool
	zstdPool  sync.Pool
)

func (q *qcow2Image) inflate(m unitMap, dst []byte) error {
	src := make([]byte, m.clen)
	if err := readFull(q.r, q.file, src, m.host); err != nil {
		return err
	}
	var err error
	if q.compression == qcow2CompressZstd {
		err = inflateZstd(src, dst)
	} else {
		err = inflateDeflate(src, dst)
	}
	if err != nil {
		return fmt.Errorf("%w: qcow2 compressed cluster at %d does not decompress to %d bytes (%v); the file is corrupt", ErrInvalid, m.host, len(dst), err)
	}
	return nil
}

// inflateDeflate fills dst from raw deflate data, as qemu writes it.
func inflateDeflate(src, dst []byte) error {
	br := bytes.NewReader(src)
	var fr io.ReadCloser
	if v := flatePool.Get(); v != nil {
		fr = v.(io.ReadCloser)
		if err := fr.(flate.Resetter).Reset(br, nil); err != nil {
			return err
		}
	} else {
		fr = flate.NewReader(br)
	}
	defer flatePool.Put(fr)
	_, err := io.ReadFull(fr, dst)
	return err
}

// inflateZstd fills dst from zstd frames. The stream API stops once dst is
// full, so the sector padding after the frame is never parsed.
func inflateZstd(src, dst []byte) error {
	var d *zstd.Decoder
	if v := zstdPool.Get(); v != nil {
		d = v.(*zstd.Decoder)
		if err := d.Reset(bytes.NewReader(src)); err != nil {
			return err
		}
	} else {
		var err error
		d, err = zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderMaxMemory(16<<20))
		if err != nil {
			return err
		}
	}
	defer zstdPool.Put(d)
	_, err := io.ReadFull(d, dst)
	return err
}
