package imagefile

import (
	"encoding/binary"
	"unicode/utf16"
)

// vhdSpec describes a VHD that makeVHD builds by hand, for cases qemu-img
// cannot make: small blocks, partial sector bitmaps, differencing disks.
type vhdSpec struct {
	disk     []byte // logical contents
	block    int64  // dynamic block size
	diskType uint32 // vhdFixed, vhdDynamic, vhdDifferencing
	parent   string // differencing parent name
	// garbage: fill sectors whose bitmap bit is clear with 0xAA, so a
	// reader that ignores the bitmap returns wrong data.
	garbage bool
}

func vhdMakeFooter(size int64, diskType uint32, dataOff uint64) []byte {
	f := make([]byte, 512)
	be := binary.BigEndian
	copy(f, vhdFooter)
	be.PutUint32(f[8:], 2)
	be.PutUint32(f[12:], 0x00010000)
	be.PutUint64(f[16:], dataOff)
	copy(f[28:], "test")
	be.PutUint64(f[40:], uint64(size))
	be.PutUint64(f[48:], uint64(size))
	be.PutUint32(f[60:], diskType)
	be.PutUint32(f[64:], vhdChecksum(f, 64))
	return f
}

func makeVHD(s vhdSpec) []byte {
	size := int64(len(s.disk))
	if s.diskType == vhdFixed {
		return append(append([]byte{}, s.disk...), vhdMakeFooter(size, vhdFixed, ^uint64(0))...)
	}
	be := binary.BigEndian
	blocks := ceilDiv(size, s.block)
	foot := vhdMakeFooter(size, s.diskType, 512)
	dyn := make([]byte, 1024)
	copy(dyn, vhdDynCookie)
	be.PutUint64(dyn[8:], ^uint64(0))
	batOff := int64(1536)
	be.PutUint64(dyn[16:], uint64(batOff))
	be.PutUint32(dyn[24:], 0x00010000)
	be.PutUint32(dyn[28:], uint32(blocks))
	be.PutUint32(dyn[32:], uint32(s.block))
	u := utf16.Encode([]rune(s.parent))
	for i, c := range u {
		be.PutUint16(dyn[64+2*i:], c)
	}
	be.PutUint32(dyn[36:], vhdChecksum(dyn, 36))
	batLen := ceilDiv(blocks*4, 512) * 512
	bat := make([]byte, batLen)
	for i := range bat {
		bat[i] = 0xff
	}
	out := append(append(append([]byte{}, foot...), dyn...), bat...)
	bitmapBytes := ceilDiv(s.block/512, 8*512) * 512
	for b := int64(0); b < blocks; b++ {
		data := make([]byte, s.block)
		copy(data, s.disk[b*s.block:min(size, (b+1)*s.block)])
		if allZero(data) {
			continue
		}
		bm := make([]byte, bitmapBytes)
		for sec := int64(0); sec < s.block/512; sec++ {
			if !allZero(data[sec*512 : (sec+1)*512]) {
				bm[sec/8] |= 0x80 >> (sec % 8)
			} else if s.garbage {
				for i := range data[sec*512 : (sec+1)*512] {
					data[sec*512+int64(i)] = 0xAA
				}
			}
		}
		be.PutUint32(out[batOff+b*4:], uint32(len(out)/512))
		out = append(append(out, bm...), data...)
	}
	return append(out, foot...)
}
