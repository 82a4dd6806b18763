package storage

import (
	"io"
	"os"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"strata/storage/smallzstd"
)

// BenchmarkCodecOSImage compares, on the non-zero 4 KiB chunks of the
// first GiB of BenchmarkImportOSImage's image, compression level 1's
// encoder (storage/smallzstd) with the one level 1 used before:
// klauspost's fastest level without Huffman-coded literals. It reports
// encoding MB/s on one core, the bytes stored (a chunk that does not
// save an eighth counts whole, as the store keeps it raw) and how long
// klauspost's decoder, which reads every frame of the store, takes for a
// frame of each.
//
//	go test -run '^$' -bench CodecOSImage -benchtime 3x -timeout 30m ./storage/
func BenchmarkCodecOSImage(b *testing.B) {
	chunks := osImageChunks(b, 1<<30, 4096)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	defer dec.Close()
	general, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(MaxChunkSize),
		zstd.WithEncoderCRC(false), zstd.WithZeroFrames(false),
		zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithNoEntropyCompression(true))
	if err != nil {
		b.Fatal(err)
	}
	defer general.Close()
	var small smallzstd.Encoder
	encoders := []struct {
		name   string
		encode func(dst, raw []byte, limit int) ([]byte, bool)
	}{
		{"smallzstd", small.AppendFrame},
		{"klauspost-fastest-rawlits", func(dst, raw []byte, limit int) ([]byte, bool) {
			out := general.EncodeAll(raw, dst)
			return out, len(out)-len(dst) <= limit
		}},
	}
	for _, e := range encoders {
		b.Run(e.name, func(b *testing.B) {
			b.SetBytes(int64(len(chunks) * 4096))
			buf := make([]byte, 0, 2*MaxChunkSize)
			for range b.N {
				for _, c := range chunks {
					buf, _ = e.encode(buf[:0], c, len(c)-len(c)/minSaving)
				}
			}
			b.StopTimer()
			var stored int64
			var frames [][]byte
			for _, c := range chunks {
				f, ok := e.encode(nil, c, len(c)-len(c)/minSaving)
				if !ok {
					stored += int64(len(c))
					continue
				}
				stored += int64(len(f))
				frames = append(frames, f)
			}
			out := make([]byte, 0, MaxChunkSize+decodeSlack)
			t0 := time.Now()
			for _, f := range frames {
				if out, err = dec.DecodeAll(f, out[:0]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(time.Since(t0).Nanoseconds())/1e3/float64(len(frames)), "decode-us/frame")
			b.ReportMetric(float64(stored)/1e6, "stored-MB")
		})
	}
}

// osImageChunks reads up to limit bytes of BenchmarkImportOSImage's image
// and returns its non-zero chunks of size cs.
func osImageChunks(b *testing.B, limit int64, cs int) [][]byte {
	f, err := os.Open(buildOSImage(b))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		b.Fatal(err)
	}
	var chunks [][]byte
	for off := 0; off+cs <= len(data); off += cs {
		if c := data[off : off+cs]; !isZero(c) {
			chunks = append(chunks, c)
		}
	}
	if len(chunks) == 0 {
		b.Fatalf("no data in the first %d bytes of the image", limit)
	}
	return chunks
}
