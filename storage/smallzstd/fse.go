package smallzstd

import "math/bits"

// fseTable encodes the symbols of one predefined distribution (RFC 8878
// section 3.1.1.3.2.2) with tANS: the inverse of the decoding table the
// format builds from it. A state is kept as tableSize + cell.
type fseTable struct {
	log   uint32
	next  [64]uint16    // tableSize + cell, grouped by symbol, cells ascending
	trans [64]fseSymbol // by symbol
}

// fseSymbol is what encoding one symbol takes: from state x the symbol
// writes (x + deltaBits) >> 16 low bits of x, and the state becomes
// next[x>>nbits + deltaFind].
type fseSymbol struct {
	deltaBits uint32
	deltaFind int32
}

// newFSETable builds the encoding table of a normalized distribution whose
// counts (a "less than 1" probability written -1) sum to 1<<log, log <= 6.
func newFSETable(norm []int16, log uint32) *fseTable {
	size := 1 << log
	cellSymbol := make([]int, size)
	// Symbols of probability "less than 1" take one cell each from the
	// end of the table; the others are spread with the format's step.
	high := size - 1
	for s, n := range norm {
		if n == -1 {
			cellSymbol[high] = s
			high--
		}
	}
	step := size>>1 + size>>3 + 3
	pos := 0
	for s, n := range norm {
		for range max(n, 0) {
			cellSymbol[pos] = s
			pos = (pos + step) & (size - 1)
			for pos > high {
				pos = (pos + step) & (size - 1)
			}
		}
	}
	if pos != 0 {
		panic("smallzstd: a distribution that does not fill its table")
	}
	t := &fseTable{log: log}
	fill := make([]int, len(norm)) // each symbol's next index in t.next
	total := 0
	for s, n := range norm {
		fill[s] = total
		count := int(max(n, 1))
		// With count cells, a state writes maxBits or maxBits-1 bits
		// (log bits when there is one cell).
		maxBits := log - uint32(bits.Len(uint(count-1))-1)
		if count == 1 {
			maxBits = log
		}
		t.trans[s] = fseSymbol{
			deltaBits: maxBits<<16 - uint32(count)<<maxBits,
			deltaFind: int32(total - count),
		}
		total += count
	}
	for cell, s := range cellSymbol {
		t.next[fill[s]] = uint16(size + cell)
		fill[s]++
	}
	return t
}

// first is a state to start from when s is the last symbol decoded: the
// one of its cells reached with the fewest bits.
func (t *fseTable) first(s uint8) uint32 {
	tr := t.trans[s&63]
	nbits := (tr.deltaBits + 1<<15) >> 16
	x := nbits<<16 - tr.deltaBits
	return uint32(t.next[(int32(x>>nbits)+tr.deltaFind)&63])
}

// The predefined distributions of RFC 8878 section 3.1.1.3.2.2.
var (
	llTable = newFSETable([]int16{
		4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1,
		2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1,
		-1, -1, -1, -1}, 6)
	mlTable = newFSETable([]int16{
		1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1,
		-1, -1, -1, -1, -1}, 6)
	ofTable = newFSETable([]int16{
		1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1}, 5)
)

// Literals length and match length codes: baseline and extra bits by code
// (RFC 8878 section 3.1.1.3.2.1.1), match lengths as length - 3, and the
// codes of small values.
var (
	llBase      [36]uint32
	llExtraBits [36]uint8
	mlBase      [53]uint32
	mlExtraBits [53]uint8
	llSmall     [64]uint8  // code of a literals length below 64
	mlSmall     [128]uint8 // code of a match length - 3 below 128
)

func init() {
	lb := [...]uint32{16, 18, 20, 22, 24, 28, 32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536}
	lx := [...]uint8{1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	mb := [...]uint32{32, 34, 36, 38, 40, 44, 48, 56, 64, 80, 96, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536}
	mx := [...]uint8{1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	for c := range 16 {
		llBase[c] = uint32(c)
	}
	for i := range lb {
		llBase[16+i], llExtraBits[16+i] = lb[i], lx[i]
	}
	for c := range 32 {
		mlBase[c] = uint32(c)
	}
	for i := range mb {
		mlBase[32+i], mlExtraBits[32+i] = mb[i], mx[i]
	}
	for v := range llSmall {
		llSmall[v] = uint8(lastAtMost(llBase[:], uint32(v)))
	}
	for v := range mlSmall {
		mlSmall[v] = uint8(lastAtMost(mlBase[:], uint32(v)))
	}
}

// lastAtMost is the index of the last of the ascending base at most v.
func lastAtMost(base []uint32, v uint32) int {
	i := 0
	for i+1 < len(base) && base[i+1] <= v {
		i++
	}
	return i
}

// llCode is the literals length code of n.
func llCode(n uint32) uint8 {
	if n < 64 {
		return llSmall[n]
	}
	return uint8(bits.Len32(n) + 18) // 64..127 is code 25
}

// mlCode is the match length code of m, a match length - 3.
func mlCode(m uint32) uint8 {
	if m < 128 {
		return mlSmall[m]
	}
	return uint8(bits.Len32(m) + 35) // 128..255 is code 43
}
