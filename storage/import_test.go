package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
)

// mixedImage makes size bytes shaped like an OS image: runs of zeros,
// text, structured binary (compressible) and random (incompressible) data,
// in 64 KiB regions.
func mixedImage(size int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	out := make([]byte, 0, size)
	for len(out) < size {
		n := min(64<<10, size-len(out))
		switch p := rng.IntN(100); {
		case p < 35:
			out = append(out, make([]byte, n)...)
		case p < 65:
			out = append(out, textChunk(rng, n)...)
		case p < 85:
			// Binary-ish: little-endian integers and pointers with
			// repeating high bytes, as in executables and tables.
			for range n / 8 {
				v := rng.Uint64() & 0x0000_00ff_ffff_f0f0
				for k := range 8 {
					out = append(out, byte(v>>(8*k)))
				}
			}
			out = append(out, make([]byte, n%8)...)
		default:
			out = append(out, randomChunk(rng, n)...)
		}
	}
	return out
}

// progressRecorder returns an Import progress callback that fails the
// test if the bytes reported ever go back, and the last value reported.
func progressRecorder(t *testing.T) (*int64, func(int64)) {
	var last int64
	return &last, func(n int64) {
		if n < last {
			t.Errorf("progress went back: %d after %d", n, last)
		}
		last = n
	}
}

func importAll(t testing.TB, s *Store, data []byte, l *Lease) ([]ChunkID, ImportStats) {
	t.Helper()
	var ids []ChunkID
	st, err := s.Import(context.Background(), bytes.NewReader(data), l, func(i int64, id ChunkID) error {
		if i != int64(len(ids)) {
			t.Fatalf("emit index %d, want %d", i, len(ids))
		}
		ids = append(ids, id)
		return nil
	}, nil)
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	return ids, st
}

func TestImportRoundTripInOrder(t *testing.T) {
	for _, workers := range []int{1, 3} {
		o := testOptions()
		o.Workers = workers
		s := openTest(t, o)
		size := 3<<20 + 12345 // a short last chunk
		data := mixedImage(size, 1)
		l := s.NewLease()
		progressed, progress := progressRecorder(t)
		var ids []ChunkID
		st, err := s.Import(context.Background(), bytes.NewReader(data), l, func(i int64, id ChunkID) error {
			ids = append(ids, id)
			return nil
		}, progress)
		if err != nil {
			t.Fatal(err)
		}
		cs := s.ChunkSize()
		if want := (size + cs - 1) / cs; len(ids) != want {
			t.Fatalf("%d ids, want %d", len(ids), want)
		}
		if st.LogicalBytes != int64(size) || *progressed != int64(size) {
			t.Fatalf("LogicalBytes %d, progress %d, want %d", st.LogicalBytes, *progressed, size)
		}
		if st.ZeroChunks+st.NewChunks+st.DedupChunks != int64(len(ids)) {
			t.Fatalf("stats %+v do not add up to %d chunks", st, len(ids))
		}
		var got []byte
		for i, id := range ids {
			want := data[i*cs : min(size, (i+1)*cs)]
			if id == ZeroChunk {
				if !isZero(want) {
					t.Fatalf("chunk %d: ZeroChunk for non-zero data", i)
				}
				continue
			}
			if got, err = s.Get(id, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("workers %d: chunk %d differs", workers, i)
			}
		}
		if st.ZeroChunks == 0 || st.StoredBytes >= st.LogicalBytes {
			t.Fatalf("mixed data: %+v", st)
		}
		l.Release()
	}
}

func TestImportSameDataTwiceAddsNothing(t *testing.T) {
	s := openTest(t, testOptions())
	data := mixedImage(4<<20, 2)
	// Plus a long zero range, which must store nothing.
	data = append(data, make([]byte, 2<<20)...)
	l := s.NewLease()
	defer l.Release()
	ids1, st1 := importAll(t, s, data, l)
	before := s.Stats()
	ids2, st2 := importAll(t, s, data, l)
	after := s.Stats()
	if st2.NewChunks != 0 || st2.StoredBytes != 0 {
		t.Fatalf("second import stored new chunks: %+v", st2)
	}
	if grow := after.StoredBytes - before.StoredBytes; grow*100 >= before.StoredBytes {
		t.Fatalf("stored bytes grew by %d of %d", grow, before.StoredBytes)
	}
	for i := range ids1 {
		if ids1[i] != ids2[i] {
			t.Fatalf("chunk %d: id %d then %d", i, ids1[i], ids2[i])
		}
	}
	tail := ids1[len(ids1)-(2<<20)/s.ChunkSize():]
	for _, id := range tail {
		if id != ZeroChunk {
			t.Fatalf("zero range got a stored chunk %d", id)
		}
	}
	if before.RawBytes >= int64(len(data)) || st1.ZeroChunks < int64(len(tail)) {
		t.Fatalf("zeros were stored: %+v, import %+v", before, st1)
	}
}

type failingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	p = p[:min(len(p), f.n)]
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestImportErrors(t *testing.T) {
	s := openTest(t, testOptions())
	data := mixedImage(2<<20, 3)
	l := s.NewLease()
	defer l.Release()
	ctx := context.Background()

	boom := errors.New("disk unplugged")
	_, err := s.Import(ctx, &failingReader{r: bytes.NewReader(data), n: 1 << 20, err: boom}, l,
		func(int64, ChunkID) error { return nil }, nil)
	if !errors.Is(err, boom) {
		t.Fatalf("reader error: %v", err)
	}

	stop := errors.New("enough")
	count := 0
	_, err = s.Import(ctx, bytes.NewReader(data), l, func(i int64, id ChunkID) error {
		count++
		if i == 100 {
			return stop
		}
		return nil
	}, nil)
	if !errors.Is(err, stop) || count != 101 {
		t.Fatalf("emit error: %v after %d calls", err, count)
	}

	cctx, cancel := context.WithCancel(ctx)
	_, err = s.Import(cctx, bytes.NewReader(data), l, func(i int64, id ChunkID) error {
		if i == 10 {
			cancel()
		}
		return nil
	}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled import: %v", err)
	}

	// Empty input: no chunks, no error.
	ids, st := importAll(t, s, nil, l)
	if len(ids) != 0 || st.LogicalBytes != 0 {
		t.Fatalf("empty import: %d ids, %+v", len(ids), st)
	}
}

// An import whose batches alternate between data the store holds and new
// data exercises both ways a batch is compressed (all chunks up front
// while most are new, only the new ones inside the transaction once most
// exist): ids of known chunks must not change, every chunk must read back,
// and only the new chunks may be stored.
func TestImportMixOfKnownAndNewChunks(t *testing.T) {
	s := openTest(t, testOptions())
	l := s.NewLease()
	defer l.Release()
	known := mixedImage(4<<20, 3)
	fresh := mixedImage(4<<20, 4)
	idsKnown, _ := importAll(t, s, known, l)
	before := s.Stats()

	const block = importBatchBytes
	var data []byte
	for off := 0; off < len(known); off += block {
		data = append(data, known[off:off+block]...)
		data = append(data, fresh[off:off+block]...)
	}
	ids, st := importAll(t, s, data, l)
	after := s.Stats()

	cs := s.ChunkSize()
	per := block / cs
	freshIDs := map[ChunkID]bool{}
	for i, id := range ids {
		pair, within := i/per, i%per
		if pair%2 == 0 {
			if want := idsKnown[pair/2*per+within]; id != want {
				t.Fatalf("chunk %d: known content got id %d, first import gave %d", i, id, want)
			}
		} else if id != ZeroChunk && !slices.Contains(idsKnown, id) {
			freshIDs[id] = true
		}
		got, err := s.Get(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[i*cs:(i+1)*cs]) {
			t.Fatalf("chunk %d reads back different bytes", i)
		}
	}
	if st.NewChunks != int64(len(freshIDs)) {
		t.Fatalf("import stored %d new chunks, %d distinct new ids", st.NewChunks, len(freshIDs))
	}
	if grow := after.StoredBytes - before.StoredBytes; grow != st.StoredBytes {
		t.Fatalf("store grew by %d bytes, import reports %d", grow, st.StoredBytes)
	}
}

// putScratch hands out memory Badger points into until commit: running
// out of slab must start a new one, never reuse or move what was handed
// out, so every key keeps its bytes.
func TestPutScratchHandsOutDistinctMemory(t *testing.T) {
	var p putScratch
	p.reset(1)
	var keys [][]byte
	for i := range 20 {
		keys = append(keys, p.idKey(nsRef, ChunkID(i+1)))
	}
	for i, k := range keys {
		if want := idKey(nsRef, ChunkID(i+1)); !bytes.Equal(k, want) {
			t.Fatalf("key %d is %x, want %x", i, k, want)
		}
	}
}

// zeroReader reads as an endless run of zeros.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// An image with runs of zeros longer than the reader may run ahead
// (zeroLead batches), ending in a short run: zero batches go to the
// emitter without a buffer, and every chunk must still come out once, in
// order, with its own id.
func TestImportZeroRunsGoAheadOfData(t *testing.T) {
	s := openTest(t, testOptions())
	cs := s.ChunkSize()
	head := mixedImage(importBatchBytes+3*cs, 7)
	for i := range head[:cs] {
		head[i] |= 1 // the first chunk is data
	}
	longZeros := int64(zeroLead+44) * importBatchBytes
	mid := mixedImage(2*importBatchBytes+cs/2, 8) // ends in a short chunk's worth
	mid[len(mid)-1] = 9
	tailZeros := int64(2*importBatchBytes + 5)
	size := int64(len(head)) + longZeros + int64(len(mid)) + tailZeros
	src := func() io.Reader {
		return io.MultiReader(bytes.NewReader(head), io.LimitReader(zeroReader{}, longZeros),
			bytes.NewReader(mid), io.LimitReader(zeroReader{}, tailZeros))
	}
	// The expected ids: ZeroChunk exactly where the image is zeros.
	wantZero := func(i int64) bool {
		off := i * int64(cs)
		end := min(size, off+int64(cs))
		switch {
		case end <= int64(len(head)):
			return isZero(head[off:end])
		case off < int64(len(head)):
			t.Fatal("head is not whole chunks")
		case end <= int64(len(head))+longZeros:
			return true
		case off >= int64(len(head))+longZeros+int64(len(mid)):
			return true
		}
		m := off - int64(len(head)) - longZeros
		return isZero(mid[m:min(int64(len(mid)), m+int64(cs))])
	}

	l := s.NewLease()
	defer l.Release()
	var n int64
	progressed, progress := progressRecorder(t)
	zb := zeroBatches.Load()
	st, err := s.Import(context.Background(), src(), l, func(i int64, id ChunkID) error {
		if i != n {
			t.Fatalf("emit index %d, want %d", i, n)
		}
		if (id == ZeroChunk) != wantZero(i) {
			t.Fatalf("chunk %d: id %d, zeros %v", i, id, wantZero(i))
		}
		n++
		return nil
	}, progress)
	if err != nil {
		t.Fatal(err)
	}
	chunks := (size + int64(cs) - 1) / int64(cs)
	if n != chunks || st.LogicalBytes != size || *progressed != size {
		t.Fatalf("%d chunks, %d bytes, progress %d; want %d chunks, %d bytes", n, st.LogicalBytes, *progressed, chunks, size)
	}
	// The runs of zeros went past the workers (two batches at the seams
	// hold data too).
	if got, want := zeroBatches.Load()-zb, (longZeros+tailZeros)/importBatchBytes-2; got < want {
		t.Fatalf("%d batches of zeros went straight to the emitter, want at least %d", got, want)
	}
	if min := (longZeros + tailZeros) / int64(cs); st.ZeroChunks < min || st.ZeroChunks+st.NewChunks+st.DedupChunks != chunks {
		t.Fatalf("stats %+v: want at least %d zero chunks, %d in all", st, min, chunks)
	}

	// An emit that fails inside the long run stops the import there.
	stop := errors.New("enough")
	at := int64(len(head)/cs) + 1000
	var calls int64
	_, err = s.Import(context.Background(), src(), l, func(i int64, id ChunkID) error {
		calls++
		if i == at {
			return stop
		}
		return nil
	}, nil)
	if !errors.Is(err, stop) || calls != at+1 {
		t.Fatalf("emit error in a zero run: %v after %d calls, want %d", err, calls, at+1)
	}
}
