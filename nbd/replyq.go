package nbd

import (
	"net"
)

// vectorWriter is a connection that sends several buffers with one system
// call (writev). *net.UnixConn and *net.TCPConn are, through netVector; a
// TLS connection is not (each buffer would be a record of its own).
type vectorWriter interface {
	writeBuffers(v *net.Buffers) (int64, error)
}

// netVector sends net.Buffers on a plain socket, which takes them as one
// writev.
type netVector struct{ nc net.Conn }

func (v netVector) writeBuffers(b *net.Buffers) (int64, error) { return b.WriteTo(v.nc) }

// vectorOf returns nc's vectored writer, or nil when nc has none.
func vectorOf(nc net.Conn) vectorWriter {
	switch c := nc.(type) {
	case vectorWriter:
		return c
	case *net.UnixConn, *net.TCPConn:
		return netVector{nc}
	}
	return nil
}

// Sizes of a reply queue. The arena is as big as the buffered writer it
// replaces, so small replies batch as before (32 4 KiB read replies per
// write); pieces from refMin on are sent from where they lie.
const (
	queueArena    = 128 << 10
	queueRefMin   = 16 << 10
	queueMaxBytes = 1 << 20 // pending bytes that force a write
	queueMaxVecs  = 1024    // Linux's IOV_MAX: Go splits beyond it anyway
)

// replyQueue gathers replies for one vectored write. Small pieces (headers,
// error messages, short read data) are copied into an arena; large ones
// (read data) are referenced where they lie, so a 64 KiB read reply is
// never copied in user space, and several ready replies leave in one
// writev. The buffers it references must stay unchanged until the write:
// a pooled buffer is handed over with hold and returned to the pool after
// it. All methods run under the connection's write lock.
type replyQueue struct {
	w        vectorWriter
	arenaBuf *[]byte
	arena    []byte      // copied pieces; never reallocated while referenced
	vec      net.Buffers // pending pieces, in order
	out      net.Buffers // the argument writev consumes
	held     []*[]byte   // pooled buffers to return after the write
	n        int         // bytes pending
	open     bool        // the last piece ends at the arena's end: copies extend it
}

func newReplyQueue(w vectorWriter) *replyQueue {
	q := &replyQueue{w: w, arenaBuf: getBuf(queueArena)}
	q.arena = (*q.arenaBuf)[:0]
	return q
}

// copyIn queues a copy of b.
func (q *replyQueue) copyIn(b []byte) error {
	if len(q.arena)+len(b) > cap(q.arena) || len(q.vec) >= queueMaxVecs {
		if err := q.flush(); err != nil {
			return err
		}
		if len(b) > cap(q.arena) {
			return q.sendNow(b)
		}
	}
	start := len(q.arena)
	q.arena = append(q.arena, b...)
	if k := len(q.vec) - 1; q.open && k >= 0 {
		q.vec[k] = q.vec[k][:len(q.vec[k])+len(b)]
	} else {
		q.vec = append(q.vec, q.arena[start:len(q.arena):cap(q.arena)])
		q.open = true
	}
	q.n += len(b)
	return nil
}

// refer queues b itself when it is large, a copy when it is not. b must
// not change until the queue is written (see hold).
func (q *replyQueue) refer(b []byte) error {
	if len(b) < queueRefMin {
		return q.copyIn(b)
	}
	if q.n >= queueMaxBytes || len(q.vec) >= queueMaxVecs {
		if err := q.flush(); err != nil {
			return err
		}
	}
	q.vec = append(q.vec, b)
	q.open = false
	q.n += len(b)
	return nil
}

// hold takes a pooled buffer whose bytes the queued pieces may reference:
// it goes back to the pool after the next write. With nothing queued,
// nothing references it and it goes back at once.
func (q *replyQueue) hold(buf *[]byte) {
	if len(q.vec) == 0 {
		putBuf(buf)
		return
	}
	q.held = append(q.held, buf)
}

// flush writes every queued piece with one writev (more if the kernel
// takes them in parts) and then frees what it held, written or not: after
// an error the connection is closed and nothing more is sent.
func (q *replyQueue) flush() error {
	if len(q.vec) == 0 {
		return nil
	}
	q.out = q.vec
	_, err := q.w.writeBuffers(&q.out)
	q.reset()
	return err
}

// sendNow writes b, which fits no arena, on its own; the queue is empty.
func (q *replyQueue) sendNow(b []byte) error {
	q.vec = append(q.vec, b)
	return q.flush()
}

// reset empties the queue and returns held buffers to the pool.
func (q *replyQueue) reset() {
	clear(q.vec)
	q.vec = q.vec[:0]
	q.out = nil
	q.arena = q.arena[:0]
	q.n = 0
	q.open = false
	for i, b := range q.held {
		putBuf(b)
		q.held[i] = nil
	}
	q.held = q.held[:0]
}

// close drops what is queued and returns the arena: the connection is
// ending.
func (q *replyQueue) close() {
	q.reset()
	if q.arenaBuf != nil {
		putBuf(q.arenaBuf)
		q.arenaBuf, q.arena = nil, nil
	}
}
