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
	nsFresh byte = 'f' // fresh-pack marker: 'f' + pack base -> chunkFacts of its slots (fresh.go)
	nsFlush byte = 'x' // scratch key used to force a memtable flush
)

var (
	keyChunkSize = []byte{nsStore, 'c', 'h', 'u', 'n', 'k'}
	keySecret    = []byte{nsStore, 's', 'e', 'c', 'r', 'e', 't'}
	keySequence  = []byte{nsStore, 's', 'e', 'q'}
	keyFormat    = []byte{nsStore, 'f', 'o', 'r', 'm', 'a', 't'}
	keyCounts    = []byte{nsStore, 'c', 'o', 'u', 'n', 't', 's'}
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

// chunkFacts are what a chunk's reference record says about the chunk
// itself, fixed from its put on: sizes and content hash.
type chunkFacts struct {
	rawLen    uint32
	storedLen uint32
	hash      chunkHash
}

const chunkFactsSize = 4 + 4 + hashSize

// marshalTo writes the facts into b (chunkFactsSize bytes).
func (f *chunkFacts) marshalTo(b []byte) {
	binary.LittleEndian.PutUint32(b[0:4], f.rawLen)
	binary.LittleEndian.PutUint32(b[4:8], f.storedLen)
	copy(b[8:], f.hash[:])
}

func (f *chunkFacts) unmarshal(b []byte) {
	f.rawLen = binary.LittleEndian.Uint32(b[0:4])
	f.storedLen = binary.LittleEndian.Uint32(b[4:8])
	copy(f.hash[:], b[8:])
}

// refRecord is the small per-chunk record that lives in the LSM tree (well
// under the value threshold), so counting, GC and Stats never touch the
// value log where chunk bodies are. A chunk put under a lease has none
// until it is first referenced or queued (fresh.go).
type refRecord struct {
	count     int64
	zeroSince int64 // unix nanoseconds when count last became 0; 0 while referenced
	chunkFacts
}

const refRecordSize = 8 + 8 + chunkFactsSize

func (r *refRecord) marshal() []byte {
	b := make([]byte, refRecordSize)
	r.marshalTo(b)
	return b
}

// marshalTo writes the record into b (refRecordSize bytes).
func (r *refRecord) marshalTo(b []byte) {
	binary.LittleEndian.PutUint64(b[0:8], uint64(r.count))
	binary.LittleEndian.PutUint64(b[8:16], uint64(r.zeroSince))
	r.chunkFacts.marshalTo(b[16:])
}

func (r *refRecord) unmarshal(b []byte) error {
	if len(b) != refRecordSize {
		return fmt.Errorf("%w: reference record of %d bytes", ErrCorrupt, len(b))
	}
	r.count = int64(binary.LittleEndian.Uint64(b[0:8]))
	r.zeroSince = int64(binary.LittleEndian.Uint64(b[8:16]))
	r.chunkFacts.unmarshal(b[16:])
	return nil
}
