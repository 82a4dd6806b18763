package imagefile

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// exportBlock is how much the writers read from the source at a time: the
// importer's block size, large enough to amortise a read of a chunked
// layer.
const exportBlock = 1 << 20

// WriteRaw copies the size logical bytes of src to w.
func WriteRaw(w io.Writer, src io.ReaderAt, size int64) error {
	if size < 0 {
		return fmt.Errorf("imagefile: negative size %d", size)
	}
	buf := make([]byte, min(exportBlock, max(size, 1)))
	for off := int64(0); off < size; {
		n := int(min(int64(len(buf)), size-off))
		if err := readSource(src, buf[:n], off); err != nil {
			return err
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return fmt.Errorf("imagefile: writing raw image at %d: %w", off, err)
		}
		off += int64(n)
	}
	return nil
}

// readSource reads exactly len(p) bytes of the source disk.
func readSource(src io.ReaderAt, p []byte, off int64) error {
	n, err := src.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("imagefile: reading the source disk at %d: %w", off, err)
}

// The qcow2 files WriteQCOW2 makes: v3, 64 KiB clusters (qemu's default,
// so qemu reads them with no surprise), 16-bit refcounts.
const (
	exportClusterBits = 16
	exportCluster     = 1 << exportClusterBits
	exportL2Entries   = exportCluster / 8
	exportRefsPerBlk  = exportCluster / 2
	qcow2OflagCopied  = 1 << 63
	exportHeaderLen   = 112
)

// WriteQCOW2 writes the size logical bytes of src to w as a qcow2 v3 file
// that `qemu-img check` finds clean. Runs marked Zero in extents are not
// read; clusters in them, and any cluster that reads as all zeros, stay
// unallocated. extents may be nil (everything is read); runs it does not
// cover are read. The virtual size is rounded up to 512 bytes, as qemu
// counts in sectors.
//
// Data clusters are written first, in order, then the tables, then the
// header at offset 0: one pass over src and one seek back. w is written
// from offset 0 and should be empty (a new file): bytes past the end of
// the image are not truncated.
func WriteQCOW2(w io.WriteSeeker, src io.ReaderAt, size int64, extents []Extent) error {
	if size < 0 || size > MaxVirtualSize {
		return fmt.Errorf("imagefile: cannot export a disk of %d bytes as qcow2 (limit %d)", size, int64(MaxVirtualSize))
	}
	zeros, err := zeroRuns(extents, size)
	if err != nil {
		return err
	}
	vsize := (size + 511) / 512 * 512
	if _, err := w.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("imagefile: seeking the qcow2 output: %w", err)
	}
	bw := bufio.NewWriterSize(w, exportBlock)
	out := &clusterWriter{w: bw}
	out.put(make([]byte, exportCluster)) // the header's cluster, filled in last

	l2 := map[int64][]uint64{}
	buf := make([]byte, exportBlock)
	zero := make([]byte, exportCluster)
	zi := 0
	for pos := int64(0); pos < size && out.err == nil; {
		// Skip clusters that lie wholly in a zero run without reading.
		for zi < len(zeros) && zeros[zi][1] <= pos {
			zi++
		}
		if zi < len(zeros) && zeros[zi][0] <= pos {
			skip := zeros[zi][1] / exportCluster * exportCluster
			if zeros[zi][1] >= size {
				skip = vsize
			}
			if skip > pos {
				pos = skip
				continue
			}
		}
		n := min(int64(len(buf)), size-pos)
		if zi < len(zeros) && zeros[zi][0] > pos {
			// Stop before the next run's first whole cluster.
			n = min(n, max(exportCluster, (zeros[zi][0]+exportCluster-1)/exportCluster*exportCluster-pos))
		}
		if err := readSource(src, buf[:n], pos); err != nil {
			return err
		}
		padded := (n + exportCluster - 1) / exportCluster * exportCluster
		clear(buf[n:padded])
		for c := int64(0); c < padded; c += exportCluster {
			data := buf[c : c+exportCluster]
			if bytes.Equal(data, zero) {
				continue
			}
			idx := (pos + c) / exportCluster
			t := l2[idx/exportL2Entries]
			if t == nil {
				t = make([]uint64, exportL2Entries)
				l2[idx/exportL2Entries] = t
			}
			t[idx%exportL2Entries] = uint64(out.put(data)) | qcow2OflagCopied
		}
		pos += padded
	}

	// L2 tables, then the L1 table.
	l1Size := max(1, ceilDiv(vsize, exportCluster*exportL2Entries))
	l1 := make([]byte, ceilDiv(l1Size*8, exportCluster)*exportCluster)
	keys := make([]int64, 0, len(l2))
	for k := range l2 {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	tbl := make([]byte, exportCluster)
	for _, k := range keys {
		for i, e := range l2[k] {
			binary.BigEndian.PutUint64(tbl[i*8:], e)
		}
		binary.BigEndian.PutUint64(l1[k*8:], uint64(out.put(tbl))|qcow2OflagCopied)
	}
	l1Off := out.put(l1)

	// Refcounts: every cluster of the file is used exactly once. The
	// refcount blocks count themselves and the table, so find the
	// smallest layout that covers its own clusters.
	used := out.next / exportCluster
	var blocks, tableClusters int64
	for {
		total := used + blocks + tableClusters
		b := ceilDiv(total, exportRefsPerBlk)
		tc := ceilDiv(b*8, exportCluster)
		if b == blocks && tc == tableClusters {
			break
		}
		blocks, tableClusters = b, tc
	}
	total := used + blocks + tableClusters
	table := make([]byte, tableClusters*exportCluster)
	blk := make([]byte, exportCluster)
	for b := int64(0); b < blocks; b++ {
		clear(blk)
		for i := int64(0); i < exportRefsPerBlk && b*exportRefsPerBlk+i < total; i++ {
			binary.BigEndian.PutUint16(blk[i*2:], 1)
		}
		binary.BigEndian.PutUint64(table[b*8:], uint64(out.put(blk)))
	}
	tableOff := out.put(table)
	if out.err == nil {
		out.err = bw.Flush()
	}
	if out.err != nil {
		return fmt.Errorf("imagefile: writing qcow2 image: %w", out.err)
	}

	h := make([]byte, exportHeaderLen+8) // header, then the end-of-extensions mark
	be := binary.BigEndian
	copy(h, qcow2Magic)
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], exportClusterBits)
	be.PutUint64(h[24:], uint64(vsize))
	be.PutUint32(h[36:], uint32(l1Size))
	be.PutUint64(h[40:], uint64(l1Off))
	be.PutUint64(h[48:], uint64(tableOff))
	be.PutUint32(h[56:], uint32(tableClusters))
	be.PutUint32(h[96:], 4) // refcount_order: 16-bit refcounts
	be.PutUint32(h[100:], exportHeaderLen)
	if _, err := w.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("imagefile: seeking the qcow2 output: %w", err)
	}
	if _, err := w.Write(h); err != nil {
		return fmt.Errorf("imagefile: writing the qcow2 header: %w", err)
	}
	if _, err := w.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("imagefile: seeking the qcow2 output: %w", err)
	}
	return nil
}

// clusterWriter appends whole clusters and hands back their offsets.
type clusterWriter struct {
	w    io.Writer
	next int64
	err  error
}

func (c *clusterWriter) put(b []byte) int64 {
	off := c.next
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
	c.next += int64(len(b))
	return off
}

// zeroRuns returns the Zero extents clipped to [0, size), sorted and
// merged, as [start, end) pairs.
func zeroRuns(extents []Extent, size int64) ([][2]int64, error) {
	var z [][2]int64
	for _, e := range extents {
		if e.Offset < 0 || e.Length < 0 {
			return nil, fmt.Errorf("imagefile: extent at %d of %d bytes is invalid", e.Offset, e.Length)
		}
		if !e.Zero || e.Length == 0 || e.Offset >= size {
			continue
		}
		z = append(z, [2]int64{e.Offset, min(size, e.Offset+e.Length)})
	}
	slices.SortFunc(z, func(a, b [2]int64) int { return int(max(-1, min(1, a[0]-b[0]))) })
	out := z[:0]
	for _, r := range z {
		if n := len(out); n > 0 && r[0] <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out, nil
}
