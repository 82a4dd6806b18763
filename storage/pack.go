package storage

import (
	"encoding/binary"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// Chunk bodies live in packs: the records of the chunks that one put
// transaction creates are stored together as one Badger value under the
// pack's key, and a chunk id names its pack and its slot in it:
//
//	id = pack base + slot, pack base = id with the low packSlotBits clear
//
// One value per transaction instead of one per chunk is what makes this
// worth it: Badger's single writer pays per entry (a memtable insert, a
// write-ahead-log record, a value-log header), and an import writes
// hundreds of chunks per transaction. A multi-chunk read of one import
// needs one lookup for the pack instead of one per chunk.
//
// A pack is written once by its put and rewritten only by GC, which empties
// the slots of the chunks it frees in the same transaction that deletes
// their records (and deletes the pack when no slot is left), so a slot
// holds a record exactly while its chunk exists: a freed id reads as not
// found, never as stale data, and the audit can match records to bodies.
//
// Value layout (the slot table at the end, so a put appends records as it
// goes and never moves them):
//
//	records | end offset of each slot (n x 4 bytes LE) | n (2, LE) | version (1)
//
// Slot i is records[end[i-1]:end[i]] (end[-1] = 0); an empty range is an
// empty slot.
const (
	packSlotBits = 8
	packSlots    = 1 << packSlotBits
	packVersion  = 1
	packTrailer  = 2 + 1
	// packMaxRaw bounds the raw bytes of one pack (so 16 slots at 64 KiB
	// chunks): a read of one chunk never maps more than a pack's worth of
	// one transaction, and GC rewrites at most this much per pack.
	packMaxRaw = 1 << 20
)

// packBase is the base id of the pack that holds id.
func packBase(id ChunkID) ChunkID { return id &^ (packSlots - 1) }

// packSlotOf is id's slot in its pack.
func packSlotOf(id ChunkID) int { return int(id & (packSlots - 1)) }

// packKey is the Badger key of the pack at base.
func packKey(base ChunkID) []byte { return idKey(nsPack, base) }

// slotsPerPack is how many chunks of size chunkSize one pack takes.
func slotsPerPack(chunkSize int) int { return min(packSlots, max(1, packMaxRaw/chunkSize)) }

// packView is a pack whose trailer has been checked once: its slot count
// and where its slot table starts.
type packView struct {
	v        []byte
	n, table int
}

// openPack checks v's trailer; a damaged one is ErrCorrupt.
func openPack(v []byte) (packView, error) {
	if len(v) < packTrailer {
		return packView{}, fmt.Errorf("%w: pack of %d bytes", ErrCorrupt, len(v))
	}
	if v[len(v)-1] != packVersion {
		return packView{}, fmt.Errorf("%w: pack version %d", ErrCorrupt, v[len(v)-1])
	}
	n := int(binary.LittleEndian.Uint16(v[len(v)-3:]))
	table := len(v) - packTrailer - 4*n
	if n > packSlots || table < 0 {
		return packView{}, fmt.Errorf("%w: pack of %d bytes with %d slots", ErrCorrupt, len(v), n)
	}
	return packView{v: v, n: n, table: table}, nil
}

// end is the end offset of slot i (0 before slot 0).
func (p packView) end(i int) int {
	if i < 0 {
		return 0
	}
	return int(binary.LittleEndian.Uint32(p.v[p.table+4*i:]))
}

// record returns the record in slot: nil (and no error) for an empty slot
// or one past the pack's last, ErrCorrupt if its table entry is damaged.
func (p packView) record(slot int) ([]byte, error) {
	if slot >= p.n {
		return nil, nil
	}
	start, end := p.end(slot-1), p.end(slot)
	if start > end || end > p.table {
		return nil, fmt.Errorf("%w: pack slot %d at [%d, %d) of %d", ErrCorrupt, slot, start, end, p.table)
	}
	if start == end {
		return nil, nil
	}
	return p.v[start:end], nil
}

// packRecord is openPack(v).record(slot), for a single lookup.
func packRecord(v []byte, slot int) ([]byte, error) {
	p, err := openPack(v)
	if err != nil {
		return nil, err
	}
	return p.record(slot)
}

// eachPackRecord calls fn with each non-empty slot of pack v and its
// record, in slot order.
func eachPackRecord(v []byte, fn func(slot int, rec []byte) error) error {
	p, err := openPack(v)
	if err != nil {
		return err
	}
	for i := range p.n {
		rec, err := p.record(i)
		if err != nil {
			return err
		}
		if rec != nil {
			if err := fn(i, rec); err != nil {
				return err
			}
		}
	}
	return nil
}

// packBuilder assembles one pack in a reusable buffer.
type packBuilder struct {
	buf  []byte
	ends []uint32
}

// reset starts an empty pack; capacity is a hint of its record bytes.
func (b *packBuilder) reset(capacity int) {
	if cap(b.buf) < capacity {
		b.buf = make([]byte, 0, capacity)
	}
	b.buf = b.buf[:0]
	b.ends = b.ends[:0]
}

// size is the bytes of records so far.
func (b *packBuilder) size() int { return len(b.buf) }

// slots is how many slots the pack has so far.
func (b *packBuilder) slots() int { return len(b.ends) }

// add appends rec (nil: an empty slot) as the next slot.
func (b *packBuilder) add(rec []byte) {
	b.buf = append(b.buf, rec...)
	b.ends = append(b.ends, uint32(len(b.buf)))
}

// finish appends the slot table and trailer and returns the pack's value.
// It aliases the builder's buffer: use it before the next reset.
func (b *packBuilder) finish() []byte {
	for _, e := range b.ends {
		b.buf = binary.LittleEndian.AppendUint32(b.buf, e)
	}
	b.buf = binary.LittleEndian.AppendUint16(b.buf, uint16(len(b.ends)))
	return append(b.buf, packVersion)
}

// packWithout is pack v with the slots for which drop is true emptied, in
// a new buffer, and whether any slot still holds a record. Trailing empty
// slots are trimmed.
func packWithout(v []byte, drop func(slot int) bool) (out []byte, live bool, err error) {
	p, err := openPack(v)
	if err != nil {
		return nil, false, err
	}
	var b packBuilder
	b.reset(len(v))
	last := -1
	for i := range p.n {
		rec, err := p.record(i)
		if err != nil {
			return nil, false, err
		}
		if rec != nil && !drop(i) {
			for b.slots() < i {
				b.add(nil)
			}
			b.add(rec)
			last = i
		}
	}
	if last < 0 {
		return nil, false, nil
	}
	return b.finish(), true, nil
}

// packCopy reads the pack at base in tx into a buffer of its own (one that
// outlives the transaction and may be changed and written back).
func packCopy(tx *badger.Txn, base ChunkID) ([]byte, error) {
	item, err := tx.Get(packKey(base))
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}
