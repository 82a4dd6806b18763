package layer

import (
	"encoding/binary"
	"math/bits"
	"sync"
)

// blockRecordSize is the size of an overlay data block's record: sequence
// number, kind, then the block.
const blockRecordSize = 9 + blockSize

// recordBuf holds the records of one write transaction's blocks. The store
// takes them without a copy (storage.Txn.SetRef) and copies them itself
// during the commit, so a buffer is reused once the commit has returned.
// Writing into recycled memory instead of a fresh slice per block matters:
// a sequential copy moves hundreds of MB/s through here, and on the VMs we
// run on first-touch memory is written at a fraction of that speed.
type recordBuf struct {
	b    []byte
	used int
}

// recordBufs pools buffers by size class: class c holds 1<<c records,
// up to 1<<10 == writeBatchBlocks.
var recordBufs [11]sync.Pool

func recordClass(blocks int) int { return bits.Len(uint(blocks - 1)) }

// getRecordBuf returns an empty buffer with room for blocks records
// (at most writeBatchBlocks).
func getRecordBuf(blocks int) *recordBuf {
	c := recordClass(blocks)
	if rb, ok := recordBufs[c].Get().(*recordBuf); ok {
		return rb
	}
	return &recordBuf{b: make([]byte, blockRecordSize<<c)}
}

// reset empties rb for the next transaction's records.
func (rb *recordBuf) reset() { rb.used = 0 }

// release returns rb to its pool; its records must no longer be in use.
func (rb *recordBuf) release() {
	rb.used = 0
	recordBufs[recordClass(len(rb.b)/blockRecordSize)].Put(rb)
}

// record appends one block record: data is a whole block for bData, nil
// for bZero; a short data block (the end of a disk whose size is not block
// aligned) is padded with zeros.
func (rb *recordBuf) record(seq uint64, kind uint8, data []byte) []byte {
	n := 9
	if kind == bData {
		n = blockRecordSize
	}
	v := rb.b[rb.used : rb.used+n : rb.used+n]
	rb.used += n
	binary.BigEndian.PutUint64(v, seq)
	v[8] = kind
	if kind == bData {
		clear(v[9+copy(v[9:], data):])
	}
	return v
}
