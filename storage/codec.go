package storage

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"

	"strata/storage/smallzstd"
)

// A stored chunk record is
//
//	codec (1 byte) | raw length (4, little endian) | xxhash64 of raw (8) | payload
//
// The checksum covers the raw bytes, so it catches a flipped bit in the
// payload, a decoder bug and a record swapped for another alike.
const (
	codecRaw  byte = 0 // payload is the raw chunk (zstd did not save enough)
	codecZstd byte = 1 // payload is one zstd frame

	recordHeader = 1 + 4 + 8
)

// codec holds the encoders and the decoder shared by every goroutine: at
// level 1 smallzstd encoders, one per goroutine at a time from a pool;
// otherwise one zstd encoder. Its EncodeAll and DecodeAll are safe for
// concurrent use and keep a pool of per-call states sized by their
// concurrency, so nothing is allocated per chunk once warm.
type codec struct {
	small   *sync.Pool // *smallzstd.Encoder, at level 1; enc is nil then
	enc     *zstd.Encoder
	dec     *zstd.Decoder
	scratch sync.Pool // *[]byte of MaxChunkSize + decodeSlack
}

// decodeSlack is the spare room the zstd decoder needs past a frame's end
// to take its fast path: with 16 bytes of slack its assembly copies
// literals and matches in 16-byte blocks, which may overrun into the slack;
// without it, it uses bounds-exact copies. Measured on 4 KiB frames of the
// benchmark's text (klauspost/compress v1.20.3, one core): 6.1 us a frame
// exact, 3.8 us with slack. Callers hand decode buffers of exactly a chunk
// (the rest of a reader's buffer may be live data), so frames are decoded
// into a pooled scratch buffer with slack and copied out: 4 KiB of copy for
// 2.3 us of decoding.
const decodeSlack = 64

func newCodec(level, workers int) (*codec, error) {
	n := max(workers, runtime.GOMAXPROCS(0))
	c := &codec{}
	if level <= 1 {
		c.small = &sync.Pool{New: func() any { return new(smallzstd.Encoder) }}
	} else {
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstdLevel(level)),
			zstd.WithEncoderConcurrency(n),
			// A chunk is at most 64 KiB: a bigger window only costs
			// memory.
			zstd.WithWindowSize(MaxChunkSize),
			// Our own xxhash64 covers the raw bytes; zstd's CRC would
			// be a second checksum over the same data.
			zstd.WithEncoderCRC(false),
			zstd.WithZeroFrames(false),
		)
		if err != nil {
			return nil, err
		}
		c.enc = enc
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(n),
		// A damaged frame must not make us allocate more than a chunk.
		zstd.WithDecoderMaxMemory(MaxChunkSize),
		zstd.WithDecoderMaxWindow(MaxChunkSize),
	)
	if err != nil {
		c.close()
		return nil, err
	}
	c.dec = dec
	c.scratch.New = func() any { b := make([]byte, 0, MaxChunkSize+decodeSlack); return &b }
	return c, nil
}

// zstdLevel maps Options.CompressionLevel above 1 to klauspost's encoder
// levels:
//
//	1: smallzstd: predefined sequence tables, literals stored as they are
//	2: zstd "fastest"
//	3: zstd "default"
//	4: zstd "better"
//	5: zstd "best"
//
// Level 1 is the default. On 152,770 non-zero 4 KiB chunks of an ext4
// image of this machine's OS files (the storage/smallzstd comparison of
// the seventh session, one core): smallzstd 380-388 MB/s storing 349.7 MB;
// klauspost's "fastest" without Huffman-coded literals, the default
// before, 313-324 MB/s storing 331.0 MB; level 2 (Huffman-coded literals
// too) about half as fast for about 10 % fewer bytes. smallzstd's frames
// also decode 22 % faster (see package smallzstd).
func zstdLevel(level int) zstd.EncoderLevel {
	switch {
	case level <= 2:
		return zstd.SpeedFastest
	case level == 3:
		return zstd.SpeedDefault
	case level == 4:
		return zstd.SpeedBetterCompression
	default:
		return zstd.SpeedBestCompression
	}
}

func (c *codec) close() {
	if c.enc != nil {
		c.enc.Close()
	}
	if c.dec != nil {
		c.dec.Close()
	}
}

// minSaving is the least a zstd frame must save, as a share of the chunk
// (1/minSaving), for the chunk to be stored compressed; otherwise it is
// stored raw. A frame that barely shrinks costs a decode on every read for
// next to no space: a 4 KiB frame of the benchmark's binary-like content
// (ratio 1.06) decodes in 0.9 us where a raw copy takes 0.15 us. An
// eighth, the share Ceph BlueStore requires by default, stores raw 84 % of
// those chunks for 0.4 % more bytes, and 10-14 % of the chunks of ext4
// images of this machine's /usr/lib and /usr/share (mostly compressed
// files) for 0.2-0.8 % more.
const minSaving = 8

// encode appends the record of raw to dst[:0].
func (c *codec) encode(raw, dst []byte) []byte {
	dst = append(dst[:0], make([]byte, recordHeader)...)
	binary.LittleEndian.PutUint32(dst[1:5], uint32(len(raw)))
	binary.LittleEndian.PutUint64(dst[5:13], xxhash.Sum64(raw))
	limit := len(raw) - len(raw)/minSaving // the most a payload may take
	var ok bool
	if c.small != nil {
		e := c.small.Get().(*smallzstd.Encoder)
		dst, ok = e.AppendFrame(dst, raw, limit)
		c.small.Put(e)
	} else {
		dst = c.enc.EncodeAll(raw, dst)
		ok = len(dst)-recordHeader <= limit
	}
	if !ok {
		dst = append(dst[:recordHeader], raw...)
		dst[0] = codecRaw
		return dst
	}
	dst[0] = codecZstd
	return dst
}

// decode appends the raw chunk of rec to dst[:0] and verifies it. Every
// failure wraps ErrCorrupt: a record we cannot read back is damage, never
// a reason to return something else.
func (c *codec) decode(rec, dst []byte) ([]byte, error) {
	if len(rec) < recordHeader {
		return nil, fmt.Errorf("%w: record of %d bytes", ErrCorrupt, len(rec))
	}
	rawLen := int(binary.LittleEndian.Uint32(rec[1:5]))
	sum := binary.LittleEndian.Uint64(rec[5:13])
	payload := rec[recordHeader:]
	if rawLen > MaxChunkSize {
		return nil, fmt.Errorf("%w: raw length %d", ErrCorrupt, rawLen)
	}
	var out []byte
	switch rec[0] {
	case codecRaw:
		out = append(dst[:0], payload...)
	case codecZstd:
		// Decoded into scratch with slack, then copied: see decodeSlack.
		sp := c.scratch.Get().(*[]byte)
		raw, err := c.dec.DecodeAll(payload, (*sp)[:0])
		if err == nil {
			out = append(dst[:0], raw...)
		}
		c.scratch.Put(sp)
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
	default:
		return nil, fmt.Errorf("%w: unknown codec %d", ErrCorrupt, rec[0])
	}
	if len(out) != rawLen {
		return nil, fmt.Errorf("%w: length %d, want %d", ErrCorrupt, len(out), rawLen)
	}
	if xxhash.Sum64(out) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	return out, nil
}
