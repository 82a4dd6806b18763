package storage

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

// benchImageSize is the mixed raw image each BenchmarkImport iteration
// stores into a fresh store.
const benchImageSize = 256 << 20

var benchImage []byte

func benchData() []byte {
	if benchImage == nil {
		benchImage = mixedImage(benchImageSize, 42)
	}
	return benchImage
}

// BenchmarkImport measures import MB/s of mixed OS-image-like data (35 %
// zeros, text, structured binary, 15 % random) into a fresh on-disk store,
// per worker count and chunk size. "second" imports the same data again
// (all dedup).
//
//	go test -run '^$' -bench BenchmarkImport -benchtime 3x ./storage/
func BenchmarkImport(b *testing.B) {
	data := benchData()
	for _, cs := range []int{4 << 10, 16 << 10, 64 << 10} {
		for _, workers := range []int{1, 2} {
			for _, second := range []bool{false, true} {
				name := fmt.Sprintf("chunk=%dK/workers=%d/first", cs>>10, workers)
				if second {
					name = fmt.Sprintf("chunk=%dK/workers=%d/second", cs>>10, workers)
				}
				b.Run(name, func(b *testing.B) {
					o := DefaultOptions()
					o.ChunkSize = cs
					o.Workers = workers
					o.GCInterval = 0
					b.SetBytes(int64(len(data)))
					var cpu, cpuClose time.Duration
					defer func() {
						// MB per CPU-second: what one core does when it
						// is not shared; x2 is the two-core projection.
						b.ReportMetric(float64(b.N)*float64(len(data))/1e6/cpu.Seconds(), "MB/cpu-s")
						// The same with Close counted: Badger flushes the
						// memtables the import filled in the background,
						// which is work the import caused. Not for
						// "second": its Close also flushes the first
						// import's writes.
						if !second {
							b.ReportMetric(float64(b.N)*float64(len(data))/1e6/cpuClose.Seconds(), "MB/cpu-s+close")
						}
					}()
					for range b.N {
						b.StopTimer()
						s, err := Open(b.TempDir(), o)
						if err != nil {
							b.Fatal(err)
						}
						l := s.NewLease()
						if second {
							if _, err := s.Import(context.Background(), bytes.NewReader(data), l, func(int64, ChunkID) error { return nil }, nil); err != nil {
								b.Fatal(err)
							}
						}
						cpu0 := cpuTime()
						b.StartTimer()
						st, err := s.Import(context.Background(), bytes.NewReader(data), l, func(int64, ChunkID) error { return nil }, nil)
						if err != nil {
							b.Fatal(err)
						}
						b.StopTimer()
						cpu += cpuTime() - cpu0
						b.ReportMetric(float64(st.StoredBytes)/float64(len(data)), "stored/raw")
						l.Release()
						s.Close()
						cpuClose += cpuTime() - cpu0
						b.StartTimer()
					}
				})
			}
		}
	}
}

// BenchmarkGet measures random reads of stored 16 KiB chunks (decode and
// checksum included), on all cores.
func BenchmarkGet(b *testing.B) {
	o := DefaultOptions()
	o.GCInterval = 0
	s, err := Open(b.TempDir(), o)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	l := s.NewLease()
	defer l.Release()
	var ids []ChunkID
	data := benchData()[:64<<20]
	if _, err := s.Import(context.Background(), bytes.NewReader(data), l, func(_ int64, id ChunkID) error {
		if id != ZeroChunk {
			ids = append(ids, id)
		}
		return nil
	}, nil); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(s.ChunkSize()))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var buf []byte
		i := 0
		for pb.Next() {
			var err error
			if buf, err = s.Get(ids[(i*7919)%len(ids)], buf); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkPut measures single-chunk Puts of new 4 KiB chunks (one
// transaction each) against PutMany batches of 256.
func BenchmarkPut(b *testing.B) {
	data := benchData()[:64<<20]
	for _, batch := range []int{1, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			o := DefaultOptions()
			o.GCInterval = 0
			s, err := Open(b.TempDir(), o)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			l := s.NewLease()
			defer l.Release()
			cs := s.ChunkSize()
			n := len(data) / cs
			b.SetBytes(int64(cs))
			b.ResetTimer()
			raws := make([][]byte, 0, batch)
			for i := range b.N {
				raws = append(raws, data[(i%n)*cs:(i%n+1)*cs])
				if len(raws) == batch || i == b.N-1 {
					if _, err := s.PutMany(raws, l); err != nil {
						b.Fatal(err)
					}
					raws = raws[:0]
				}
			}
		})
	}
}

// BenchmarkAddRef measures Update transactions that each change the
// counts of 64 chunks, as a layer map commit does.
func BenchmarkAddRef(b *testing.B) {
	o := DefaultOptions()
	o.GCInterval = 0
	s, err := Open(b.TempDir(), o)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	l := s.NewLease()
	defer l.Release()
	var ids []ChunkID
	if _, err := s.Import(context.Background(), bytes.NewReader(benchData()[:32<<20]), l, func(_ int64, id ChunkID) error {
		if id != ZeroChunk {
			ids = append(ids, id)
		}
		return nil
	}, nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		delta := int64(1)
		if i%2 == 1 {
			delta = -1 // back to zero: exercises the GC queue too
		}
		err := s.Update(func(tx *Txn) error {
			for k := range 64 {
				if err := tx.AddRef(ids[(i/2*64+k)%len(ids)], delta); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*64)/b.Elapsed().Seconds(), "refs/s")
}
