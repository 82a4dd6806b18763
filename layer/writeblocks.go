package layer

// blockWriter turns one write request's blocks into overlay records and
// commits them, writeBatchBlocks at a time, through the manager's group
// commit. All its records carry the request's sequence number.
type blockWriter struct {
	d     *disk
	ov    *overlay
	seq   uint64
	rb    *recordBuf
	kvs   []kv
	kinds []uint8 // of kvs' blocks, for the index
	b0    int64   // block of kvs[0]; kvs hold consecutive blocks
}

// newBlockWriter prepares to write up to n blocks of st's overlay; the
// caller holds the blocks' range lock.
func newBlockWriter(d *disk, st *diskState, n int64) *blockWriter {
	n = min(n, writeBatchBlocks)
	return &blockWriter{
		d:     d,
		ov:    st.ov,
		seq:   st.ov.seq.Add(1),
		rb:    getRecordBuf(int(n)),
		kvs:   make([]kv, 0, n),
		kinds: make([]uint8, 0, n),
	}
}

// add queues block b's new bytes (a whole block, or the disk's short last
// block), committing the queue first if it is full. Blocks come in order.
func (w *blockWriter) add(b int64, blk []byte) error {
	if len(w.kvs) == writeBatchBlocks {
		if err := w.flush(); err != nil {
			return err
		}
	}
	if len(w.kvs) == 0 {
		w.b0 = b
	}
	kind := uint8(bData)
	if isZero(blk) {
		kind, blk = bZero, nil
	}
	w.kvs = append(w.kvs, kv{key(pfxBlock, w.ov.id, uint64(b)), w.rb.record(w.seq, kind, blk)})
	w.kinds = append(w.kinds, kind)
	return nil
}

// flush commits the queued records, then sets their blocks in the index.
func (w *blockWriter) flush() error {
	if len(w.kvs) == 0 {
		return nil
	}
	ov := w.ov
	err := ov.mutate(w.d.m.commits.commit, w.kvs, func() {
		for i, k := range w.kinds {
			ov.setLocked(w.b0+int64(i), k)
		}
	})
	if err != nil {
		return err
	}
	// The commit has returned: the store has its own copies now.
	w.kvs, w.kinds = w.kvs[:0], w.kinds[:0]
	w.rb.reset()
	return nil
}

// release returns the record buffer; no commit of it may be running.
func (w *blockWriter) release() { w.rb.release() }
