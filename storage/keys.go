package storage

import (
	"encoding/binary"
	"fmt"
)

// Key space of the one Badger database. The first byte is the namespace,
// so the store's own records never collide with the keys layer/ and api/
// keep through Txn (which all start with nsMeta).
const (
	nsMeta  byte = 'm' // user metadata: 'm' + caller's key
	nsStore byte = 's' // store settings: 's' + name
	nsHash  byte = 'h' // dedup index: 'h' + hash -> id
	nsPack  byte = 'p' // chunk bodies: 'p' + pack base id -> records and slot table (pack.go)
	nsChunk byte = 'c' // format 1 (before packs): 'c' + id -> one record; never written now
	nsRef   byte = 'r' // reference record: 'r' + id -> refRecord
	nsZero  byte = 'z' // GC queue: 'z' + zeroSince + id -> nothing
	nsFlush byte = 'x' // scratch key used to force a memtable flush
)

var (
	keyChunkSize = []byte{nsStore, 'c', 'h', 'u', 'n', 'k'}
	keySecret    = []byte{nsStore, 's', 'e', 'c', 'r', 'e', 't'}
	keySequence  = []byte{nsStore, 's', 'e', 'q'}
	keyFormat    = []byte{nsStore, 'f', 'o', 'r', 'm', 'a', 't'}
	keyFlush     = []byte{nsFlush}
)

func idKey(ns byte, id ChunkID) []byte {
	k := make([]byte, 9)
	k[0] = ns
	binary.BigEndian.PutUint64(k[1:], uint64(id))
	return k
}

func hashKey(h *chunkHash) []byte {
	k := make([]byte, 1+hashSize)
	k[0] = nsHash
	copy(k[1:], h[:])
	return k
}

// zeroKey orders the GC queue by the time a chunk's count reached zero, so
// GC reads only the entries old enough to free and stops at the first
// younger one.
func zeroKey(since int64, id ChunkID) []byte {
	k := make([]byte, 17)
	k[0] = nsZero
	binary.BigEndian.PutUint64(k[1:9], uint64(since))
	binary.BigEndian.PutUint64(k[9:], uint64(id))
	return k
}

func parseZeroKey(k []byte) (since int64, id ChunkID, ok bool) {
	if len(k) != 17 || k[0] != nsZero {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(k[1:9])), ChunkID(binary.BigEndian.Uint64(k[9:])), true
}

func parseIDKey(k []byte) (ChunkID, bool) {
	if len(k) != 9 {
		return 0, false
	}
	return ChunkID(binary.BigEndian.Uint64(k[1:])), true
}

// refRecord is the small per-chunk record that lives in the LSM tree (well
// under the value threshold), so counting, GC and Stats never touch the
// value log where chunk bodies are.
type refRecord struct {
	count     int64
	zeroSince int64 // unix nanoseconds when count last became 0; 0 while referenced
	rawLen    uint32
	storedLen uint32
	hash      chunkHash
}

const refRecordSize = 8 + 8 + 4 + 4 + hashSize

func (r *refRecord) marshal() []byte {
	b := make([]byte, refRecordSize)
	r.marshalTo(b)
	return b
}

// marshalTo writes the record into b (refRecordSize bytes).
func (r *refRecord) marshalTo(b []byte) {
	binary.LittleEndian.PutUint64(b[0:8], uint64(r.count))
	binary.LittleEndian.PutUint64(b[8:16], uint64(r.zeroSince))
	binary.LittleEndian.PutUint32(b[16:20], r.rawLen)
	binary.LittleEndian.PutUint32(b[20:24], r.storedLen)
	copy(b[24:], r.hash[:])
}

func (r *refRecord) unmarshal(b []byte) error {
	if len(b) != refRecordSize {
		return fmt.Errorf("%w: reference record of %d bytes", ErrCorrupt, len(b))
	}
	r.count = int64(binary.LittleEndian.Uint64(b[0:8]))
	r.zeroSince = int64(binary.LittleEndian.Uint64(b[8:16]))
	r.rawLen = binary.LittleEndian.Uint32(b[16:20])
	r.storedLen = binary.LittleEndian.Uint32(b[20:24])
	copy(r.hash[:], b[24:])
	return nil
}
