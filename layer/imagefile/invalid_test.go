package imagefile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tinyImage converts a small pattern with qemu-img and returns the file's
// bytes: the base that hostile variants are patched from.
func tinyImage(t testing.TB, size int64, args ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	rawPath := writeFile(t, dir, "a.raw", pattern(size, 11))
	out := filepath.Join(dir, "img")
	run(t, "qemu-img", append(append([]string{"convert", "-f", "raw"}, args...), rawPath, out)...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	be = binary.BigEndian
	le = binary.LittleEndian
)

// vhdFix recomputes both VHD checksums after a patch.
func vhdFix(b []byte) {
	be.PutUint32(b[64:], vhdChecksum(b[:512], 64))
	copy(b[len(b)-512:], b[:512])
	if be.Uint32(b[60:]) != vhdFixed {
		be.PutUint32(b[512+36:], vhdChecksum(b[512:1536], 36))
	}
}

// TestRefusesHostileHeaders patches one field of a valid file at a time
// to a value a hostile or broken file could hold. Each is ErrInvalid,
// found at Open or (for data inside a compressed unit) on read, with no
// panic and no huge allocation.
func TestRefusesHostileHeaders(t *testing.T) {
	qcow := tinyImage(t, 64<<10, "-O", "qcow2", "-o", "cluster_size=512")
	qcowZ := tinyImage(t, 64<<10, "-c", "-O", "qcow2", "-o", "cluster_size=4096")
	qcow4k := tinyImage(t, 64<<10, "-O", "qcow2", "-o", "cluster_size=4096")
	sparse := tinyImage(t, 64<<10, "-O", "vmdk")
	stream := tinyImage(t, 64<<10, "-O", "vmdk", "-o", "subformat=streamOptimized")
	vhd := makeVHD(vhdSpec{disk: pattern(64<<10, 12), block: 4096, diskType: vhdDynamic})
	vhdFixedFile := makeVHD(vhdSpec{disk: pattern(64<<10, 12), diskType: vhdFixed})

	qL1 := func(b []byte) int64 { return int64(be.Uint64(b[40:])) }
	qL2 := func(b []byte) int64 { return int64(be.Uint64(b[qL1(b):]) & qcow2OffsetMask) }
	// qFirstCompressed finds the first compressed L2 entry of qcowZ.
	qFirstCompressed := func(b []byte) int64 {
		l2 := qL2(b)
		for i := int64(0); i < 512; i++ {
			e := be.Uint64(b[l2+i*8:])
			if e&qcow2OflagCompressed != 0 {
				return int64(e & ((1 << (62 - (12 - 8))) - 1))
			}
		}
		t.Fatal("no compressed cluster in the test image")
		return 0
	}
	vGD := func(b []byte) int64 { return int64(le.Uint64(b[56:])) * 512 }
	vGT := func(b []byte) int64 { return int64(le.Uint32(b[vGD(b):])) * 512 }
	vFirstGrain := func(b []byte) int64 { return int64(le.Uint32(b[vGT(b):])) * 512 }

	cases := []struct {
		name  string
		base  []byte
		patch func(b []byte)
		say   string // part of the message
	}{
		{"qcow2-version-1", qcow, func(b []byte) { be.PutUint32(b[4:], 1) }, "version 1"},
		{"qcow2-version-4", qcow, func(b []byte) { be.PutUint32(b[4:], 4) }, "version 4"},
		{"qcow2-cluster-bits-8", qcow, func(b []byte) { be.PutUint32(b[20:], 8) }, "cluster size"},
		{"qcow2-cluster-bits-40", qcow, func(b []byte) { be.PutUint32(b[20:], 40) }, "cluster size"},
		{"qcow2-size-2^62", qcow, func(b []byte) { be.PutUint64(b[24:], 1<<62) }, "limit"},
		{"qcow2-size-needs-huge-l1", qcow, func(b []byte) { be.PutUint64(b[24:], 1<<40); be.PutUint32(b[36:], 1<<30) }, "limit"},
		{"qcow2-l1-too-small", qcow, func(b []byte) { be.PutUint32(b[36:], 1) }, "L1 table has 1 entries"},
		{"qcow2-l1-past-eof", qcow, func(b []byte) { be.PutUint64(b[40:], 1<<40) }, "L1 table offset"},
		{"qcow2-l1-unaligned", qcow, func(b []byte) { be.PutUint64(b[40:], be.Uint64(b[40:])+8) }, "L1 table offset"},
		{"qcow2-l2-past-eof", qcow, func(b []byte) { be.PutUint64(b[qL1(b):], 1<<40) }, "L1 entry 0"},
		{"qcow2-l2-shared", qcow, func(b []byte) { copy(b[qL1(b)+8:], b[qL1(b):qL1(b)+8]) }, "share"},
		{"qcow2-data-past-eof", qcow, func(b []byte) { be.PutUint64(b[qL2(b):], 1<<40) }, "cluster 0"},
		{"qcow2-data-unaligned", qcow4k, func(b []byte) { be.PutUint64(b[qL2(b):], 3*4096+512|qcow2OflagCopied) }, "cluster 0"},
		{"qcow2-encrypted", qcow, func(b []byte) { be.PutUint32(b[32:], 1) }, "encrypted"},
		{"qcow2-marked-corrupt", qcow, func(b []byte) { b[79] |= qcow2IncompatCorrupt }, "corrupt"},
		{"qcow2-unknown-feature", qcow, func(b []byte) { b[77] |= 0x10 }, "incompatible features"},
		{"qcow2-extended-l2", qcow, func(b []byte) { b[79] |= qcow2IncompatExtL2 }, "subclusters"},
		{"qcow2-header-length", qcow, func(b []byte) { be.PutUint32(b[100:], 50) }, "header length"},
		{"qcow2-compression-type", qcow, func(b []byte) { b[79] |= qcow2IncompatCompress; b[104] = 7 }, "compression type 7"},
		{"qcow2-extension-overrun", qcow, func(b []byte) {
			h := be.Uint32(b[100:])
			be.PutUint32(b[h:], 0x1234)
			be.PutUint32(b[h+4:], 1<<30)
		}, "extension"},
		{"qcow2-compressed-garbage", qcowZ, func(b []byte) {
			o := qFirstCompressed(b)
			copy(b[o:], bytes.Repeat([]byte{0xff}, 64))
		}, "decompress"},
		{"vmdk-version-4", sparse, func(b []byte) { le.PutUint32(b[4:], 4) }, "version 4"},
		{"vmdk-grain-0", sparse, func(b []byte) { le.PutUint64(b[20:], 0) }, "grain size"},
		{"vmdk-grain-not-power-of-2", sparse, func(b []byte) { le.PutUint64(b[20:], 3) }, "grain size"},
		{"vmdk-grain-huge", sparse, func(b []byte) { le.PutUint64(b[20:], 1<<40) }, "grain size"},
		{"vmdk-capacity-huge", sparse, func(b []byte) { le.PutUint64(b[12:], 1<<60) }, "limit"},
		{"vmdk-gtes-0", sparse, func(b []byte) { le.PutUint32(b[44:], 0) }, "grain tables"},
		{"vmdk-gd-past-eof", sparse, func(b []byte) { le.PutUint64(b[56:], 1<<30) }, "grain directory"},
		{"vmdk-gt-past-eof", sparse, func(b []byte) { le.PutUint32(b[vGD(b):], 1<<30) }, "grain table 0"},
		{"vmdk-grain-past-eof", sparse, func(b []byte) { le.PutUint32(b[vGT(b):], 1<<30) }, "grain 0"},
		{"vmdk-cowd", sparse, func(b []byte) { copy(b, "COWD") }, "COWD"},
		{"vmdk-descriptor-without-extents", sparse, func(b []byte) {
			clear(b)
			copy(b, "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n")
		}, "no extents"},
		{"vmdk-descriptor-huge", sparse, func(b []byte) { le.PutUint64(b[36:], 1<<40) }, "descriptor"},
		{"vmdk-text-mode-transfer", sparse, func(b []byte) { b[75] = '\n' }, "text-mode"},
		{"vmdk-compress-algorithm", stream, func(b []byte) { le.PutUint16(b[77:], 2) }, "compression algorithm"},
		{"vmdk-marker-wrong-sector", stream, func(b []byte) { le.PutUint64(b[vFirstGrain(b):], 999) }, "marker"},
		{"vmdk-marker-huge", stream, func(b []byte) { le.PutUint32(b[vFirstGrain(b)+8:], 1<<30) }, "compressed bytes"},
		{"vmdk-grain-garbage", stream, func(b []byte) { copy(b[vFirstGrain(b)+12:], bytes.Repeat([]byte{0xff}, 32)) }, "decompress"},
		{"vhd-footer-checksum", vhd, func(b []byte) { b[len(b)-512+64]++ }, "checksum"},
		{"vhd-disk-type-5", vhd, func(b []byte) { be.PutUint32(b[60:], 5); vhdFix(b) }, "disk type 5"},
		{"vhd-size-huge", vhd, func(b []byte) { be.PutUint64(b[48:], 1<<60); vhdFix(b) }, "limit"},
		{"vhd-dynamic-checksum", vhd, func(b []byte) { b[512+100]++ }, "dynamic header checksum"},
		{"vhd-dynamic-header-past-eof", vhd, func(b []byte) { be.PutUint64(b[16:], 1<<40); vhdFix(b) }, "dynamic header"},
		{"vhd-block-size-3000", vhd, func(b []byte) { be.PutUint32(b[512+32:], 3000); vhdFix(b) }, "block size"},
		{"vhd-block-size-1g", vhd, func(b []byte) { be.PutUint32(b[512+32:], 1<<30); vhdFix(b) }, "block size"},
		{"vhd-bat-too-small", vhd, func(b []byte) { be.PutUint32(b[512+28:], 2); vhdFix(b) }, "needs 16"},
		{"vhd-bat-past-eof", vhd, func(b []byte) { be.PutUint64(b[512+16:], 1<<40); vhdFix(b) }, "block table offset"},
		{"vhd-block-past-eof", vhd, func(b []byte) { be.PutUint32(b[1536:], 1<<30) }, "block 0"},
		{"vhd-blocks-shared", vhd, func(b []byte) { copy(b[1540:], b[1536:1540]) }, "share"},
		{"vhd-fixed-short", vhdFixedFile, func(b []byte) { be.PutUint64(b[len(b)-512+48:], 1<<20); vhdFixFooterOnly(b) }, "truncated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := append([]byte{}, c.base...)
			c.patch(b)
			_, err := openAndReadBytes(b, "")
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), c.say) {
				t.Fatalf("message %q does not say %q", err, c.say)
			}
		})
	}
	// The patched fields were the ones that mattered: the bases are valid.
	for i, b := range [][]byte{qcow, qcowZ, qcow4k, sparse, stream, vhd, vhdFixedFile} {
		if _, err := openAndReadBytes(b, ""); err != nil {
			t.Errorf("base %d: %v", i, err)
		}
	}
}

// vhdFixFooterOnly re-checksums the footer of a fixed VHD (at the end).
func vhdFixFooterOnly(b []byte) {
	f := b[len(b)-512:]
	be.PutUint32(f[64:], vhdChecksum(f, 64))
}

// TestRefusesEncryptedQCOW2: a real encrypted qcow2 from qemu-img (the
// legacy AES kind: LUKS would spend seconds deriving its key here).
func TestRefusesEncryptedQCOW2(t *testing.T) {
	p := filepath.Join(t.TempDir(), "enc.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", "--object", "secret,id=sec0,data=abc",
		"-o", "encrypt.format=aes,encrypt.key-secret=sec0,compat=0.10", p, "1M")
	_, err := openFile(t, p, "")
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "encrypted") {
		t.Fatalf("Open = %v, want ErrInvalid saying encrypted", err)
	}
}

// TestReadVHDHonoursSectorBitmaps: sectors whose bitmap bit is clear read
// as zeros even when the block holds other bytes there, in blocks smaller
// than qemu makes and with a last block the disk ends inside.
func TestReadVHDHonoursSectorBitmaps(t *testing.T) {
	for _, block := range []int64{512, 4096, 64 << 10} {
		disk := pattern(300<<10+1536, 13)
		b := makeVHD(vhdSpec{disk: disk, block: block, diskType: vhdDynamic, garbage: true})
		img, err := Open(bytes.NewReader(b), int64(len(b)), VHD)
		if err != nil {
			t.Fatalf("block %d: %v", block, err)
		}
		data := readAll(t, img, 1<<20)
		checkSame(t, data, disk)
		checkSame(t, readAll(t, img, 1000), disk)
		checkExtents(t, img, data)
	}
}
