package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// ImportStats reports one import.
type ImportStats struct {
	LogicalBytes int64 // bytes read from the stream
	ZeroChunks   int64
	NewChunks    int64 // chunks stored by this import
	DedupChunks  int64 // chunks that already existed
	StoredBytes  int64 // bytes written for new chunks, after compression
}

// importBatchBytes is the raw size of one unit of work in the pipeline:
// big enough that channel hand-offs and one Badger commit per batch cost
// little per chunk, small enough that 2 x workers batches in flight stay a
// few MiB.
const importBatchBytes = 1 << 20

// Import cuts r into ChunkSize chunks, hashes, compresses and stores them in
// parallel under the lease, and calls emit in index order for every chunk
// (ZeroChunk included). progress, when not nil, is called with the bytes
// read so far, from the calling goroutine, after each batch is emitted.
//
// The pipeline: one reader fills reusable batch buffers (a batch of only
// zeros goes on as a count, and its buffer is reused); Workers goroutines
// each take a batch, skip zero chunks, hash the rest and store them in one
// transaction, compressing into a per-worker reusable buffer (all chunks
// before the transaction while the import's batches are mostly new, only
// the ones that turn out new inside it otherwise); the calling goroutine
// puts the finished batches back in order, calls emit and returns the
// buffers to the reader.
// Memory stays at about 4 x Workers batches whatever the image size.
func (s *Store) Import(ctx context.Context, r io.Reader, l *Lease, emit func(index int64, id ChunkID) error, progress func(bytesRead int64)) (ImportStats, error) {
	var st ImportStats
	cs := s.chunkSize
	per := max(1, importBatchBytes/cs)
	workers := s.opts.workers()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// Twice as many goroutines as CPU slots: while one waits for its
	// batch to commit, another hashes and compresses.
	gate := make(cpuGate, workers)
	nbuf := 4*workers + 1
	free := make(chan *importBatch, nbuf)
	for range nbuf {
		free <- &importBatch{buf: make([]byte, per*cs)}
	}
	jobs := make(chan *importBatch, nbuf)
	done := make(chan *importBatch, nbuf)
	// ahead bounds how many batches the reader may be past the emitter:
	// zero batches hold no buffer, so only this stops it.
	ahead := make(chan struct{}, zeroLead)

	// Reader. A batch that reads as all zeros goes straight to the
	// emitter as a count of zero chunks, and its buffer is read into
	// again: through the long runs of zeros of a disk image the reader
	// races ahead while the workers compress the data before them,
	// instead of the workers idling while it reads the zeros (one core
	// idle for 4 % of an import of BenchmarkImportOSImage's image).
	var readErr error
	go func() {
		defer close(jobs)
		var b *importBatch
		for seq := int64(0); ; seq++ {
			select {
			case ahead <- struct{}{}:
			case <-ctx.Done():
				return
			}
			if b == nil {
				select {
				case b = <-free:
				case <-ctx.Done():
					return
				}
			}
			b.seq, b.lens, b.err = seq, b.lens[:0], nil
			// One read per batch, not per chunk: a file or pipe source
			// then costs one system call per MiB.
			n, err := io.ReadFull(r, b.buf)
			eof := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
			if err != nil && !eof {
				readErr = err
				cancel(fmt.Errorf("storage: import: read: %w", err))
				return
			}
			switch {
			case n == 0:
			case isZero(b.buf[:n]):
				zeroBatches.Add(1)
				z := &importBatch{seq: seq, zeroes: n}
				select {
				case done <- z:
				case <-ctx.Done():
					return
				}
			default:
				for off := 0; off < n; off += cs {
					b.lens = append(b.lens, min(cs, n-off))
				}
				select {
				case jobs <- b:
					b = nil
				case <-ctx.Done():
					return
				}
			}
			if eof {
				return
			}
		}
	}()

	// Workers.
	var wg sync.WaitGroup
	var mostlyNew atomic.Bool
	for range 2 * workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &importWorker{s: s, gate: gate, mostlyNew: &mostlyNew}
			for b := range jobs {
				if ctx.Err() == nil {
					gate.enter()
					b.err = w.run(b, l)
					gate.leave()
					if b.err != nil {
						cancel(b.err)
					}
				}
				done <- b
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()

	// Ordered emit, in the caller's goroutine.
	pending := make(map[int64]*importBatch)
	var next, index int64
	var firstErr error
	for b := range done {
		pending[b.seq] = b
		for {
			b, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			if firstErr == nil && b.err != nil {
				firstErr = b.err
			}
			if firstErr == nil && ctx.Err() == nil && b.zeroes > 0 {
				for off := 0; off < b.zeroes; off += cs {
					if err := emit(index, ZeroChunk); err != nil {
						firstErr = err
						cancel(err)
						break
					}
					index++
					st.LogicalBytes += int64(min(cs, b.zeroes-off))
					st.ZeroChunks++
				}
				if progress != nil && firstErr == nil {
					progress(st.LogicalBytes)
				}
			} else if firstErr == nil && ctx.Err() == nil {
				for i, id := range b.ids {
					if err := emit(index, id); err != nil {
						firstErr = err
						cancel(err)
						break
					}
					index++
					st.LogicalBytes += int64(b.lens[i])
				}
				st.ZeroChunks += b.res.zero
				st.NewChunks += b.res.newChunks
				st.DedupChunks += b.res.dedupChunks
				st.StoredBytes += b.res.storedBytes
				if progress != nil && firstErr == nil {
					progress(st.LogicalBytes)
				}
			}
			<-ahead
			if b.buf != nil {
				free <- b
			}
		}
	}
	if firstErr != nil {
		return st, firstErr
	}
	if readErr != nil {
		return st, fmt.Errorf("storage: import: read: %w", readErr)
	}
	if err := context.Cause(ctx); err != nil {
		return st, err
	}
	return st, nil
}

// importBatch is one buffer's worth of consecutive chunks, or (zeroes
// above 0, no buffer) that many bytes of zeros.
type importBatch struct {
	seq    int64
	buf    []byte
	lens   []int
	ids    []ChunkID
	res    batchResult
	err    error
	zeroes int
}

// zeroBatches counts the batches of zeros that went straight to an
// import's emitter, in every import of the process (tests read it).
var zeroBatches atomic.Int64

// zeroLead is how many batches the reader may run ahead of the ordered
// emit (zero batches hold no buffer): 256 MiB of zeros, a few KiB of
// memory.
const zeroLead = 256

type batchResult struct {
	putResult
	zero int64
}

// importWorker keeps per-worker scratch space: put items and one arena the
// compressed records of a batch are written into, reused batch after batch
// (Badger has copied them by the time a commit returns).
type importWorker struct {
	s       *Store
	gate    cpuGate
	items   []putItem
	ptrs    []*putItem
	unseen  []*putItem // of ptrs, those encodeAll compresses
	arena   []byte
	scratch putScratch
	// mostlyNew: most chunks of the import's last finished batch were
	// new, so the next batch compresses all its chunks before its
	// transaction (see encodeAll). Shared by the import's workers; false
	// until a batch has finished, so an import of known data never
	// compresses a chunk.
	mostlyNew *atomic.Bool
}

// encodeAll compresses the chunks of the batch that are almost surely new
// before its transaction starts. Badger starts a transaction only once
// every earlier commit has been written, so compressing inside it (only
// the chunks the lookup finds new) keeps the CPU-heaviest step from
// overlapping Badger's single writer. Compressing first overlaps them, at
// the cost of compressing chunks that turn out to exist: run only while
// most do not, and skip the chunks whose hashes the store's filter has
// seen (an earlier copy in the same image, mostly: 4.7 % of the chunks of
// BenchmarkImportOSImage's image, 0.3 s of its 13 CPU-s of zstd work);
// those few that turn out new after all are compressed in the
// transaction.
func (w *importWorker) encodeAll() {
	w.unseen = w.s.newHashes.unseen(w.ptrs, w.unseen[:0])
	for _, it := range w.unseen {
		it.rec = w.s.codec.encode(it.raw, it.arena)
	}
}

func (w *importWorker) run(b *importBatch, l *Lease) error {
	cs := w.s.chunkSize
	n := len(b.lens)
	if cap(w.items) < n {
		w.items = make([]putItem, n)
		w.arena = make([]byte, n*(cs+recordHeader+64))
	}
	items := w.items[:n]
	w.ptrs = w.ptrs[:0]
	b.ids = b.ids[:0]
	b.res = batchResult{}
	slot := cs + recordHeader + 64
	for i, sz := range b.lens {
		raw := b.buf[i*cs : i*cs+sz]
		it := &items[i]
		*it = putItem{raw: raw, rec: nil}
		if isZero(raw) {
			it.zero = true
			b.res.zero++
			continue
		}
		it.hash = w.s.hash.sum(raw)
		// The record is encoded lazily, only if the chunk is new, into
		// this slot of the arena.
		it.arena = w.arena[i*slot : i*slot : (i+1)*slot]
		w.ptrs = append(w.ptrs, it)
	}
	if len(w.ptrs) > 0 {
		if w.mostlyNew.Load() {
			w.encodeAll()
		}
		res, err := w.s.commitPuts(w.ptrs, l, w.gate, &w.scratch)
		if err != nil {
			return fmt.Errorf("storage: import: %w", err)
		}
		b.res.putResult = res
		w.mostlyNew.Store(res.newChunks > res.dedupChunks)
	}
	for i := range items {
		b.ids = append(b.ids, items[i].id) // ZeroChunk for zero chunks
	}
	return nil
}
