package imagefile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRefusesUnsafeImages: every file that would make strata read another
// file is refused with ErrUnsafe and a message naming that file.
func TestRefusesUnsafeImages(t *testing.T) {
	cases := []struct {
		name string
		// make creates the files in dir and returns the one to upload.
		make func(t *testing.T, dir string) string
		// mention must appear in the message (the file to deal with).
		mention string
	}{
		{name: "qcow2-backing-file", mention: `"base.raw"`, make: func(t *testing.T, dir string) string {
			run(t, "qemu-img", "create", "-f", "raw", filepath.Join(dir, "base.raw"), "1M")
			p := filepath.Join(dir, "top.qcow2")
			run(t, "qemu-img", "create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", p)
			return p
		}},
		{name: "qcow2-v2-backing-file", mention: `"base.qcow2"`, make: func(t *testing.T, dir string) string {
			run(t, "qemu-img", "create", "-f", "qcow2", filepath.Join(dir, "base.qcow2"), "1M")
			p := filepath.Join(dir, "top.qcow2")
			run(t, "qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.qcow2", "-F", "qcow2", p)
			return p
		}},
		{name: "qcow2-external-data-file", mention: "data.raw", make: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "x.qcow2")
			run(t, "qemu-img", "create", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "data.raw"), p, "1M")
			return p
		}},
		{name: "vmdk-monolithicFlat-descriptor", mention: "x-flat.vmdk", make: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "x.vmdk")
			run(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", p, "1M")
			return p
		}},
		{name: "vmdk-twoGbMaxExtentSparse-descriptor", mention: "x-s001.vmdk", make: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "x.vmdk")
			run(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", p, "1M")
			return p
		}},
		{name: "vmdk-twoGbMaxExtentSparse-extent-alone", mention: "multi-file disk", make: func(t *testing.T, dir string) string {
			run(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", filepath.Join(dir, "x.vmdk"), "1M")
			return filepath.Join(dir, "x-s001.vmdk")
		}},
		{name: "vmdk-twoGbMaxExtentFlat-descriptor", mention: "x-f001.vmdk", make: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "x.vmdk")
			run(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", p, "1M")
			return p
		}},
		{name: "vmdk-delta-on-parent", mention: `"base.vmdk"`, make: func(t *testing.T, dir string) string {
			run(t, "qemu-img", "create", "-f", "vmdk", filepath.Join(dir, "base.vmdk"), "1M")
			p := filepath.Join(dir, "delta.vmdk")
			run(t, "qemu-img", "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", p)
			return p
		}},
		{name: "vhd-differencing", mention: `"parent.vhd"`, make: func(t *testing.T, dir string) string {
			b := makeVHD(vhdSpec{disk: pattern(64<<10, 1), block: 4096, diskType: vhdDifferencing, parent: "parent.vhd"})
			return writeFile(t, dir, "diff.vhd", b)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := c.make(t, t.TempDir())
			_, err := openFile(t, p, "")
			if !errors.Is(err, ErrUnsafe) {
				t.Fatalf("Open = %v, want ErrUnsafe", err)
			}
			if !strings.Contains(err.Error(), c.mention) || !strings.Contains(err.Error(), "qemu-img convert") {
				t.Fatalf("message %q should name %s and say how to fix it", err, c.mention)
			}
		})
	}
}

// TestRefusesFormatMismatch: a claimed format must be the detected one,
// raw included (a qcow2 declared raw would be stored as its container).
func TestRefusesFormatMismatch(t *testing.T) {
	dir := t.TempDir()
	rawPath := writeFile(t, dir, "a.raw", pattern(256<<10, 3))
	files := map[Format]string{Raw: rawPath}
	for f, args := range map[Format][]string{
		QCOW2: {"-O", "qcow2"},
		VMDK:  {"-O", "vmdk"},
		VHD:   {"-O", "vpc"},
	} {
		files[f] = filepath.Join(dir, "a."+string(f))
		run(t, "qemu-img", append(append([]string{"convert", "-f", "raw"}, args...), rawPath, files[f])...)
	}
	for actual, p := range files {
		for _, claimed := range []Format{Raw, QCOW2, VMDK, VHD} {
			_, err := openFile(t, p, claimed)
			switch {
			case claimed == actual && err != nil:
				t.Errorf("%s claimed as itself: %v", actual, err)
			case claimed != actual && !errors.Is(err, ErrFormatMismatch):
				t.Errorf("%s claimed as %s: %v, want ErrFormatMismatch", actual, claimed, err)
			}
		}
	}
	if _, err := openFile(t, rawPath, "vdi"); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown claimed format: %v, want ErrInvalid", err)
	}
}

// TestRefusesTruncatedFiles cuts each format inside its tables and at
// fractions of the file: the result is ErrInvalid at Open or while
// reading, or (when only padding was cut) the right data; never wrong
// data and never a panic.
func TestRefusesTruncatedFiles(t *testing.T) {
	dir := t.TempDir()
	src := pattern(patternSize(), 6)
	rawPath := writeFile(t, dir, "src.raw", src)
	cases := []struct {
		name   string
		format Format
		args   []string
		tables func(b []byte) []int64 // cut points inside the tables
	}{
		{name: "qcow2-v3", format: QCOW2, args: []string{"-O", "qcow2"}, tables: qcow2Tables},
		{name: "qcow2-v2-compressed", format: QCOW2, args: []string{"-c", "-O", "qcow2", "-o", "compat=0.10"}, tables: qcow2Tables},
		{name: "vmdk-monolithicSparse", format: VMDK, args: []string{"-O", "vmdk"}, tables: vmdkTables},
		{name: "vmdk-streamOptimized", format: VMDK, args: []string{"-O", "vmdk", "-o", "subformat=streamOptimized"}, tables: vmdkTables},
		{name: "vhd-dynamic", format: VHD, args: []string{"-O", "vpc"}, tables: func(b []byte) []int64 {
			bat := int64(binary.BigEndian.Uint64(b[512+16:]))
			return []int64{600, bat + 2}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "img")
			run(t, "qemu-img", append(append([]string{"convert", "-f", "raw"}, c.args...), rawPath, p)...)
			full, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			n := int64(len(full))
			tables := c.tables(full)
			cuts := append(tables, 10, 100, n/10, n/3, n/2, n*9/10, n-513, n-1)
			for i, cut := range cuts {
				isTable := i < len(tables)
				if cut <= 0 || cut >= n {
					continue
				}
				got, err := openAndReadBytes(full[:cut], c.format)
				switch {
				case err == nil:
					// Only padding past the last needed byte was cut:
					// then the disk must still read right.
					checkSame(t, got, src)
				case !errors.Is(err, ErrInvalid):
					t.Errorf("cut at %d of %d: %v, want ErrInvalid", cut, n, err)
				}
				if isTable && err == nil {
					t.Errorf("cut at %d of %d inside the tables was accepted", cut, n)
				}
			}
		})
	}
	// A fixed VHD cut anywhere has lost its footer: it is no VHD any more.
	b := makeVHD(vhdSpec{disk: pattern(64<<10, 2), diskType: vhdFixed})
	for _, cut := range []int{len(b) - 1, len(b) - 512, 100} {
		if f, _ := Detect(bytes.NewReader(b[:cut]), int64(cut)); f != Raw {
			t.Errorf("fixed VHD cut at %d detected as %s", cut, f)
		}
		if _, err := Open(bytes.NewReader(b[:cut]), int64(cut), VHD); !errors.Is(err, ErrFormatMismatch) {
			t.Errorf("fixed VHD cut at %d claimed as vhd: %v, want ErrFormatMismatch", cut, err)
		}
	}
}

func qcow2Tables(b []byte) []int64 {
	be := binary.BigEndian
	l1 := int64(be.Uint64(b[40:]))
	ref := int64(be.Uint64(b[48:]))
	cuts := []int64{l1 + 4, ref + 4}
	if l2 := int64(be.Uint64(b[l1:]) & qcow2OffsetMask); l2 != 0 {
		cuts = append(cuts, l2+100)
	}
	return cuts
}

func vmdkTables(b []byte) []int64 {
	gd := binary.LittleEndian.Uint64(b[56:])
	if gd == vmdkGDAtEnd {
		gd = binary.LittleEndian.Uint64(b[len(b)-1024+56:])
	}
	cuts := []int64{int64(gd)*512 + 2}
	if gt := int64(binary.LittleEndian.Uint32(b[gd*512:])) * 512; gt != 0 {
		cuts = append(cuts, gt+100)
	}
	return cuts
}

// openAndReadBytes opens b and reads its extents and all its bytes,
// returning the first error.
func openAndReadBytes(b []byte, claimed Format) ([]byte, error) {
	img, err := Open(bytes.NewReader(b), int64(len(b)), claimed)
	if err != nil {
		return nil, err
	}
	if _, err := img.Extents(); err != nil {
		return nil, err
	}
	out := make([]byte, img.Size())
	for off := int64(0); off < img.Size(); off += 1 << 20 {
		end := min(off+1<<20, img.Size())
		if _, err := img.ReadAt(out[off:end], off); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return out, nil
}

// TestParseFormat: the names users type, qemu's "vpc" included.
func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"": "", "raw": Raw, "QCOW2": QCOW2, " vmdk": VMDK, "vhd": VHD, "vpc": VHD} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseFormat("vhdx"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseFormat(vhdx) = %v, want ErrInvalid", err)
	}
}

// TestRefusesForeignContainers: formats strata does not read are refused,
// not stored as raw disks (their container bytes would be chunked).
func TestRefusesForeignContainers(t *testing.T) {
	for _, f := range []string{"vhdx", "vdi", "qed", "parallels"} {
		t.Run(f, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x."+f)
			run(t, "qemu-img", "create", "-f", f, p, "1M")
			for _, claimed := range []Format{"", Raw} {
				_, err := openFile(t, p, claimed)
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "qemu-img convert") {
					t.Errorf("claimed %q: %v, want ErrInvalid with a fix", claimed, err)
				}
			}
		})
	}
}
