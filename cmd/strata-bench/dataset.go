package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
)

// Kind is what an extent of the data set holds.
type Kind uint8

// Extent kinds. The mix stands in for an OS image: text (configs, scripts,
// docs) that zstd shrinks several times, binary-ish code and tables that
// shrink a little, random bytes (compressed archives, keys) that do not
// shrink, and holes that were never written.
const (
	KindHole Kind = iota
	KindText
	KindBinary
	KindRandom
)

var kindNames = [...]string{"hole", "text", "binary", "random"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Extent is one run of the data set's layout.
type Extent struct {
	Off, Len int64
	Kind     Kind
}

// Extent lengths: 4 KiB aligned, 16 KiB to 1 MiB. Small enough that even a
// 64 MiB set mixes every kind, large enough that holes are real holes at
// any chunk size up to 64 KiB most of the time.
const (
	extentAlign = 4 << 10
	extentMin   = 16 << 10
	extentMax   = 1 << 20
)

// Layout cuts size bytes into extents, deterministically from seed. With
// holes, about half of the bytes are holes: the choice leans towards
// whichever side is behind, so the share stays near one half at any size
// instead of drifting like a fair coin would.
func Layout(size int64, seed uint64, holes bool) []Extent {
	rng := rand.New(rand.NewPCG(seed, 0x6c61796f7574))
	var out []Extent
	var allocated int64
	for off := int64(0); off < size; {
		n := int64(extentMin/extentAlign+rng.IntN((extentMax-extentMin)/extentAlign+1)) * extentAlign
		n = min(n, size-off)
		k := allocatedKind(rng)
		if holes {
			pAlloc := 0.5
			switch {
			case off > 0 && float64(allocated)/float64(off) < 0.5:
				pAlloc = 0.7
			case off > 0:
				pAlloc = 0.3
			}
			if rng.Float64() >= pAlloc {
				k = KindHole
			}
		}
		if k != KindHole {
			allocated += n
		}
		out = append(out, Extent{Off: off, Len: n, Kind: k})
		off += n
	}
	return out
}

// allocatedKind picks the content of a data extent: 40 % text, 35 %
// binary, 25 % random.
func allocatedKind(rng *rand.Rand) Kind {
	switch r := rng.IntN(100); {
	case r < 40:
		return KindText
	case r < 75:
		return KindBinary
	default:
		return KindRandom
	}
}

// AllocatedBytes sums the extents that are not holes.
func AllocatedBytes(ext []Extent) int64 {
	var n int64
	for _, e := range ext {
		if e.Kind != KindHole {
			n += e.Len
		}
	}
	return n
}

// words is the vocabulary text extents are made of.
var words = toBytes([]string{
	"the", "of", "and", "to", "in", "is", "for", "on", "with", "as", "by",
	"config", "service", "enable", "disable", "path", "usr", "lib", "share",
	"systemd", "network", "interface", "address", "kernel", "module", "user",
	"root", "default", "true", "false", "return", "if", "then", "else", "fi",
	"echo", "export", "local", "function", "package", "version", "license",
	"GNU", "General", "Public", "License", "copyright", "free", "software",
	"#", "=", "{", "}", "(", ")", "[", "]", ";", ":", "/", "--", "0", "1",
	"localhost", "127.0.0.1", "/etc", "/var/log", "Description", "After",
	"Requires", "ExecStart", "WantedBy", "multi-user.target", "Type=simple",
})

func toBytes(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, w := range ss {
		out[i] = []byte(w)
	}
	return out
}

// generator fills extents with their content. Each extent's bytes depend
// only on the seed and the extent's offset, so the set can be regenerated
// piecewise and checked.
type generator struct {
	seed uint64
}

func newGenerator(seed uint64) *generator {
	return &generator{seed: seed}
}

// fill writes e's content into dst (len(dst) == e.Len). Holes are zeros.
func (g *generator) fill(dst []byte, e Extent) {
	var cs [32]byte
	binary.LittleEndian.PutUint64(cs[:], g.seed)
	binary.LittleEndian.PutUint64(cs[8:], uint64(e.Off))
	cs[16] = byte(e.Kind)
	switch e.Kind {
	case KindHole:
		clear(dst)
	case KindRandom:
		// ChaCha8.Read does not fail.
		_, _ = rand.NewChaCha8(cs).Read(dst)
	case KindText:
		// Lines of words drawn at random, now and then a number: zstd
		// shrinks it about 3x, like real configs and scripts, and no two
		// 4 KiB blocks are alike, so dedup finds nothing. One PCG draw
		// decides a whole word (generation speed matters at 4 GiB).
		pcg := rand.NewPCG(g.seed, uint64(e.Off)^uint64(e.Kind)<<56)
		var num [20]byte
		for blk := 0; blk < len(dst); blk += extentAlign {
			b := dst[blk:min(blk+extentAlign, len(dst))]
			n, line := 0, 0
			for n < len(b) {
				r := pcg.Uint64()
				var w []byte
				if (r>>16)&7 == 0 {
					w = strconv.AppendUint(num[:0], (r>>19)&(1<<20-1), 10)
				} else {
					w = words[(r&0xffff)*uint64(len(words))>>16]
				}
				n += copy(b[n:], w)
				line += len(w) + 1
				sep := byte(' ')
				if line > 30+int((r>>40)%60) {
					sep, line = '\n', 0
				}
				if n < len(b) {
					b[n] = sep
					n++
				}
			}
		}
	case KindBinary:
		// Little-endian words of limited width, the width changing per
		// 4 KiB block: compresses somewhere between 1.2x and 3x, like
		// machine code and tables.
		pcg := rand.NewPCG(g.seed, uint64(e.Off)^uint64(e.Kind)<<56)
		for blk := 0; blk < len(dst); blk += extentAlign {
			b := dst[blk:min(blk+extentAlign, len(dst))]
			shift := 8 + pcg.Uint64()%17
			for i := 0; i+8 <= len(b); i += 8 {
				r := pcg.Uint64()
				binary.LittleEndian.PutUint32(b[i:], uint32(r)>>shift)
				binary.LittleEndian.PutUint32(b[i+4:], uint32(r>>32)>>shift)
			}
		}
	}
}

// WriteDataSet writes the layout's data extents into f at their offsets
// and sizes f to size; holes are left unwritten, so the file is sparse
// where the data set has holes.
func WriteDataSet(f *os.File, size int64, seed uint64, holes bool) ([]Extent, error) {
	layout := Layout(size, seed, holes)
	if err := f.Truncate(size); err != nil {
		return nil, err
	}
	g := newGenerator(seed)
	buf := make([]byte, extentMax)
	for _, e := range layout {
		if e.Kind == KindHole {
			continue
		}
		b := buf[:e.Len]
		g.fill(b, e)
		if _, err := f.WriteAt(b, e.Off); err != nil {
			return nil, err
		}
	}
	return layout, nil
}

// dataSetReader streams the whole data set, holes as zeros, without a
// file: the tests use it to check determinism.
type dataSetReader struct {
	g      *generator
	layout []Extent
	i      int
	back   []byte // the current extent's bytes
	pos    int    // how much of back was read
}

func newDataSetReader(size int64, seed uint64, holes bool) *dataSetReader {
	return &dataSetReader{g: newGenerator(seed), layout: Layout(size, seed, holes), back: make([]byte, 0, extentMax)}
}

func (r *dataSetReader) Read(p []byte) (int, error) {
	for r.pos == len(r.back) {
		if r.i == len(r.layout) {
			return 0, io.EOF
		}
		e := r.layout[r.i]
		r.i++
		r.back = r.back[:e.Len]
		r.g.fill(r.back, e)
		r.pos = 0
	}
	n := copy(p, r.back[r.pos:])
	r.pos += n
	return n, nil
}
