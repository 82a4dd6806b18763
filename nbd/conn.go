package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Reads of at least this many bytes consult Extents and send hole chunks
// for zero runs: below it the lookup costs more than the bytes it saves.
const (
	sparseReadMin = 64 << 10
	holeChunkMin  = 4 << 10
	maxReadChunks = 64
)

// conn is one client connection. The reader goroutine (serve) parses
// requests and hands them to up to Server.Workers worker goroutines, bounded
// also by budget (bytes); replies go out under wmu in whatever order
// requests finish.
type conn struct {
	srv  *Server
	raw  net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer // negotiation, and replies on a connection without q
	q    *replyQueue   // replies in transmission, on a socket that takes writev
	peer Peer

	ctx    context.Context
	cancel context.CancelFunc

	// Negotiation state.
	tlsForced  bool
	noZeroes   bool
	structured bool
	metaBase   bool
	metaExport string

	// Transmission state, fixed once negotiation ends.
	be     Backend
	tr     TryReader // be's non-blocking read, if it has one
	tw     TryWriter // and write
	export string
	sess   session
	flags  uint16

	wmu       sync.Mutex
	waiting   atomic.Int32 // goroutines waiting for wmu: the last one flushes
	busy      atomic.Int32 // requests dispatched and not yet answered
	werr      error        // guarded by wmu
	needFlush bool         // guarded by wmu: replies sit in bw or q
	hdr       [32]byte     // guarded by wmu: reply header scratch (a stack one escapes)

	jobs     chan job // to the workers; buffered, so the reader runs ahead
	idle     atomic.Int32
	started  int // workers started; reader only
	budget   *byteBudget
	inflight sync.WaitGroup
	dirty    atomic.Bool // a write completed since the last flush began

	mu           sync.Mutex
	nc           net.Conn // raw, or the TLS conn over it
	transmitting bool
	shutdown     bool
}

func newConn(s *Server, nc net.Conn) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{
		srv:    s,
		raw:    nc,
		nc:     nc,
		br:     bufio.NewReaderSize(nc, 128<<10),
		bw:     bufio.NewWriterSize(nc, 128<<10),
		ctx:    ctx,
		cancel: cancel,
		jobs:   make(chan job, s.workers()),
		budget: newByteBudget(s.budget()),
	}
	c.peer.Addr = nc.RemoteAddr()
	if tc, ok := nc.(*net.TCPConn); ok {
		// Replies are small and latency-bound; Nagle would hold them.
		tc.SetNoDelay(true)
		c.tlsForced = s.TLSConfig != nil
	}
	if uc, ok := nc.(*net.UnixConn); ok {
		c.peer.Unix = unixCred(uc)
		// A Unix socket's send buffer (~200 KiB by default) is all the
		// data in flight: a 1 MiB reply would park the writer several
		// times per reply. The kernel caps this at net.core.wmem_max.
		// (TCP keeps its autotuning, which a fixed size would disable.)
		uc.SetWriteBuffer(unixSocketBuffer)
		uc.SetReadBuffer(unixSocketBuffer)
	}
	return c
}

// beginShutdown asks the connection to stop reading requests: one still
// negotiating is closed, one in transmission finishes what it has read.
func (c *conn) beginShutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shutdown = true
	if !c.transmitting {
		c.cancel() // a Lookup in progress may stop early
		c.raw.Close()
		return
	}
	c.raw.SetReadDeadline(time.Now())
}

// abort closes the connection without waiting.
func (c *conn) abort() {
	c.cancel()
	c.raw.Close()
	c.budget.close()
}

func (c *conn) serve() {
	defer c.cancel()
	defer c.raw.Close()
	c.raw.SetDeadline(time.Now().Add(c.srv.handshakeTimeout()))
	if !c.negotiate() {
		if c.be != nil {
			closeBackend(c.be)
		}
		return
	}
	c.mu.Lock()
	if c.shutdown {
		c.mu.Unlock()
		closeBackend(c.be)
		return
	}
	c.transmitting = true
	c.raw.SetDeadline(time.Time{})
	c.mu.Unlock()
	c.transmit()
}

func (c *conn) transmit() {
	m := c.srv.Metrics
	if m != nil {
		m.Connection(c.export, 1)
		defer m.Connection(c.export, -1)
	}
	c.tr, _ = c.be.(TryReader)
	c.tw, _ = c.be.(TryWriter)
	c.startQueue()
	var hdr [requestHeaderSize]byte
	for {
		if c.br.Buffered() < requestHeaderSize {
			// About to wait for the client: replies the inline path
			// left in the buffer must go out first.
			c.flushPending()
		}
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			break
		}
		req, err := parseRequest(hdr[:])
		if err != nil {
			break // framing is lost: hard disconnect
		}
		if req.typ == cmdDisc {
			break
		}
		if e := c.sess.check(req); e != 0 {
			if req.typ == cmdWrite {
				// Skip the payload through the reader's buffer: an
				// oversized write costs no memory, only bandwidth.
				if _, err := c.br.Discard(int(req.length)); err != nil {
					break
				}
			}
			c.replyErr(req, e, errText(e, req))
			if m != nil {
				m.Request(c.export, opFor(req.typ), int64(req.length), 0, e)
			}
			continue
		}
		if req.typ == cmdRead && c.tr != nil && c.readInline(req) {
			continue
		}
		if req.typ == cmdWrite && c.tw != nil {
			if done, ok := c.writeInline(req); !ok {
				break
			} else if done {
				continue
			}
		}
		var buf *[]byte
		var held int64
		if req.typ == cmdRead || req.typ == cmdWrite {
			held = int64(req.length)
			if !c.budget.acquire(held) {
				break
			}
		}
		if req.typ == cmdWrite && req.length > 0 {
			buf = getBuf(int(req.length))
			if _, err := io.ReadFull(c.br, *buf); err != nil {
				putBuf(buf)
				c.budget.release(held)
				break
			}
		}
		c.inflight.Add(1)
		c.busy.Add(1)
		if c.idle.Load() == 0 && c.started < cap(c.jobs) {
			// Workers start on demand and then stay for the connection:
			// a goroutine per request would grow a fresh stack each time
			// (a quarter of the server's CPU at 4 KiB, measured).
			c.started++
			go c.worker()
		}
		c.jobs <- job{req, buf, held}
	}
	close(c.jobs)
	c.inflight.Wait()
	c.flushPending() // inline replies a DISC or a read error left queued
	c.stopQueue()
	if c.dirty.Load() {
		// Not required by the protocol, but a client that disconnects
		// (or a server shutting down) should not leave data only in a
		// write-back cache.
		if err := c.be.Flush(context.Background()); err != nil {
			c.srv.logf("nbd: flush of %q at disconnect: %v", c.export, err)
		}
	}
	// The backend closes before the socket: a client that sees the
	// connection end knows its handle is released (and a disk's last
	// close has flushed it).
	closeBackend(c.be)
	c.mu.Lock()
	c.nc.Close()
	c.mu.Unlock()
}

func errText(e uint32, r request) string {
	switch e {
	case errnoINVAL:
		return fmt.Sprintf("invalid request (type %d, flags %#x, offset %d, length %d)", r.typ, r.flags, r.offset, r.length)
	case errnoNOSPC:
		return "request past the end of the export"
	case errnoPERM:
		return "export is read-only"
	}
	return ""
}

// unixSocketBuffer is the socket buffer asked for on Unix connections.
const unixSocketBuffer = 4 << 20

// inlineReadMax bounds reads the reader goroutine serves itself.
const inlineReadMax = 128 << 10

// readInline serves a read on the reader goroutine when the backend can
// answer it without blocking (TryReader): no handoff to a worker, no thread
// wakeup, and replies to a burst of requests leave in one write. It returns
// false, having sent nothing, when the read must go to a worker.
func (c *conn) readInline(req request) bool {
	n := int(req.length)
	if n == 0 || n > inlineReadMax {
		return false
	}
	var start time.Time
	m := c.srv.Metrics
	if m != nil {
		start = time.Now()
	}
	buf := getBuf(n)
	if !c.tr.TryReadAt(*buf, int64(req.offset)) {
		putBuf(buf)
		return false
	}
	// A read this large that the backend could serve without I/O is
	// most often a hole (cold data goes to a worker): its zeros leave
	// as hole chunks, as a worker's read would send them.
	var segsArr [8]segment
	segs := segsArr[:0]
	if c.sess.structured && req.flags&cflagDF == 0 && n >= sparseReadMin {
		segs = c.sparseSegments(segs, int64(req.offset), n)
	}
	c.lockW()
	c.sendRead(req, *buf, segs)
	c.release(buf)
	c.inlineUnlock()
	if m != nil {
		m.Request(c.export, OpRead, int64(n), time.Since(start), 0)
	}
	return true
}

// writeInline offers a small write to the backend's TryWriter straight
// from the reader's buffer (no copy, no handoff). done reports that the
// request was answered; !ok that the connection failed.
func (c *conn) writeInline(req request) (done, ok bool) {
	n := int(req.length)
	if n == 0 || n > inlineReadMax || n > c.br.Size() {
		return false, true
	}
	var start time.Time
	m := c.srv.Metrics
	if m != nil {
		start = time.Now()
	}
	p, err := c.br.Peek(n)
	if err != nil {
		return false, false
	}
	done, werr := c.tw.TryWriteAt(p, int64(req.offset), req.flags&cflagFUA != 0)
	if !done {
		return false, true // the payload is still unread: a worker takes it
	}
	c.br.Discard(n)
	errno := errnoFor(werr)
	if errno == 0 {
		c.dirty.Store(true)
	}
	c.lockW()
	h := c.hdr[:simpleReplySize]
	putSimple(h, errno, req.cookie)
	if errno != 0 && c.sess.structured {
		h = c.hdr[:structuredHdrSize+6]
		putChunk(h, replyFlagDone, chunkError, req.cookie, 6)
		binary.BigEndian.PutUint32(h[20:], errno)
		binary.BigEndian.PutUint16(h[24:], 0)
	}
	c.write(h)
	c.inlineUnlock()
	if errno == errnoIO {
		c.srv.logf("nbd: write of %q at %d+%d: %v", c.export, req.offset, n, werr)
	}
	if m != nil {
		m.Request(c.export, OpWrite, int64(n), time.Since(start), errno)
	}
	return true, true
}

// inlineUnlock ends a reply sent by the reader: it flushes only when no
// further request is already buffered, so a burst leaves in one write.
func (c *conn) inlineUnlock() {
	c.needFlush = true
	if c.waiting.Load() == 0 && c.br.Buffered() < requestHeaderSize && c.werr == nil {
		c.werr = c.flushW()
		c.needFlush = false
	}
	failed := c.werr != nil
	c.wmu.Unlock()
	if failed {
		c.raw.Close()
	}
}

// flushPending sends replies left buffered.
func (c *conn) flushPending() {
	c.wmu.Lock()
	if c.needFlush && c.werr == nil {
		c.werr = c.flushW()
		c.needFlush = false
	}
	failed := c.werr != nil
	c.wmu.Unlock()
	if failed {
		c.raw.Close()
	}
}

// job is one request handed to a worker, with its write payload and the
// bytes of budget it holds.
type job struct {
	req  request
	buf  *[]byte
	held int64
}

func (c *conn) worker() {
	for {
		c.idle.Add(1)
		j, ok := <-c.jobs
		c.idle.Add(-1)
		if !ok {
			return
		}
		c.handle(j.req, j.buf, j.held)
	}
}

// handle serves one request on a worker and sends its reply.
func (c *conn) handle(req request, buf *[]byte, held int64) {
	var start time.Time
	m := c.srv.Metrics
	if m != nil {
		start = time.Now()
	}
	errno := uint32(0)
	defer func() {
		if p := recover(); p != nil {
			// A bug must not take the daemon down with it. The reply
			// stream may hold half a reply now, so the only safe answer
			// is a hard disconnect (the spec allows one on server error).
			c.srv.logf("nbd: panic serving %q: %v", c.export, p)
			errno = errnoIO
			c.abort()
		}
		if buf != nil {
			putBuf(buf)
		}
		c.budget.release(held)
		if m != nil {
			m.Request(c.export, opFor(req.typ), int64(req.length), time.Since(start), errno)
		}
		c.busy.Add(-1)
		c.inflight.Done()
	}()
	ctx := c.ctx
	off := int64(req.offset)
	n := int64(req.length)
	fua := req.flags&cflagFUA != 0
	var err error
	switch req.typ {
	case cmdRead:
		errno = c.doRead(req)
		return
	case cmdBlockStatus:
		errno = c.doBlockStatus(req)
		return
	case cmdWrite:
		if n > 0 {
			err = c.be.WriteAt(ctx, *buf, off, fua)
		}
		c.markDirty(err)
	case cmdFlush:
		c.dirty.Store(false)
		err = c.be.Flush(ctx)
		if err != nil {
			c.dirty.Store(true)
		}
	case cmdTrim:
		if n > 0 {
			err = c.be.Trim(ctx, off, n, fua)
		}
		c.markDirty(err)
	case cmdWriteZeroes:
		if n > 0 {
			err = c.be.WriteZeroes(ctx, off, n, req.flags&cflagNoHole == 0, req.flags&cflagFastZero != 0, fua)
		}
		c.markDirty(err)
	case cmdCache:
		if ca, ok := c.be.(Cacher); ok && n > 0 {
			err = ca.Cache(ctx, off, n)
		}
	}
	errno = errnoFor(err)
	if errno != 0 {
		msg := ""
		if errno == errnoIO {
			msg = "I/O error"
			c.srv.logf("nbd: %s on %q at %d+%d: %v", opFor(req.typ), c.export, off, n, err)
		}
		c.replyErr(req, errno, msg)
		return
	}
	c.replySimple(req.cookie, 0)
}

func (c *conn) markDirty(err error) {
	if err == nil {
		c.dirty.Store(true)
	}
}

// lockW takes the write lock, counting waiters so that the last writer of a
// burst flushes: replies finished together leave in one write syscall.
func (c *conn) lockW() {
	c.waiting.Add(1)
	c.wmu.Lock()
	c.waiting.Add(-1)
}

// Waiters alone do not batch on few cores: goroutines there run one after
// another, so each would find nobody waiting and flush its own reply. So a
// writer that knows other requests are being served yields once before
// flushing, letting the runnable ones add their replies first; whoever
// flushes takes all of them. A slow request delays nobody: every writer
// flushes after at most one yield.
func (c *conn) unlockW() {
	if c.werr == nil && c.waiting.Load() == 0 {
		c.needFlush = true
		if c.busy.Load() > 1 {
			c.wmu.Unlock()
			runtime.Gosched()
			c.wmu.Lock()
		}
		if c.needFlush && c.werr == nil && c.waiting.Load() == 0 {
			c.werr = c.flushW()
			c.needFlush = false
		}
	}
	failed := c.werr != nil
	c.wmu.Unlock()
	if failed {
		// The client is gone or stuck: stop reading its requests too.
		c.raw.Close()
	}
}

// write queues a copy of b (or sends it) under wmu.
func (c *conn) write(b []byte) {
	if c.werr != nil {
		return
	}
	if c.q != nil {
		c.werr = c.q.copyIn(b)
		return
	}
	if len(b) >= c.bw.Size() && c.bw.Buffered() > 0 {
		// b cannot fit the buffer anyway, and bufio would first copy a
		// buffer's worth of it: send what is queued, then b straight
		// from its own memory.
		if c.werr = c.bw.Flush(); c.werr != nil {
			return
		}
	}
	_, c.werr = c.bw.Write(b)
}

// writeData queues read data under wmu: on a vectored connection a large
// b is sent from where it lies, so it must not change before the buffer
// holding it is passed to release.
func (c *conn) writeData(b []byte) {
	if c.werr != nil {
		return
	}
	if c.q != nil {
		c.werr = c.q.refer(b)
		return
	}
	c.write(b)
}

// release returns a pooled buffer whose bytes were passed to writeData,
// under wmu: at once if they were copied or sent, else after the write
// that sends them.
func (c *conn) release(buf *[]byte) {
	if c.q != nil {
		c.q.hold(buf)
		return
	}
	putBuf(buf)
}

// flushW sends what is queued or buffered, under wmu.
func (c *conn) flushW() error {
	if c.q != nil {
		return c.q.flush()
	}
	return c.bw.Flush()
}

// startQueue switches replies to a reply queue when the connection takes
// vectored writes (not TLS: see vectorWriter). Negotiation has ended, and
// its last reply was flushed.
func (c *conn) startQueue() {
	if w := vectorOf(c.nc); w != nil && c.bw.Buffered() == 0 {
		c.q = newReplyQueue(w)
	}
}

// stopQueue returns the queue's buffers once no request is being served.
func (c *conn) stopQueue() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.q != nil {
		c.q.close()
	}
}

func putSimple(h []byte, errno uint32, cookie uint64) {
	binary.BigEndian.PutUint32(h[0:], magicSimple)
	binary.BigEndian.PutUint32(h[4:], errno)
	binary.BigEndian.PutUint64(h[8:], cookie)
}

func putChunk(h []byte, flags, typ uint16, cookie uint64, length uint32) {
	binary.BigEndian.PutUint32(h[0:], magicStructured)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], cookie)
	binary.BigEndian.PutUint32(h[16:], length)
}

// replySimple sends a simple reply without data.
func (c *conn) replySimple(cookie uint64, errno uint32) {
	c.lockW()
	defer c.unlockW() // deferred: a panic must not leave the lock held
	h := c.hdr[:simpleReplySize]
	putSimple(h, errno, cookie)
	c.write(h)
}

// replyErr sends an error reply: a structured error chunk when structured
// replies were negotiated (mandatory for reads, and it carries a message),
// else a simple reply.
func (c *conn) replyErr(req request, errno uint32, msg string) {
	if !c.sess.structured {
		c.replySimple(req.cookie, errno)
		return
	}
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	c.lockW()
	defer c.unlockW()
	h := c.hdr[:structuredHdrSize+6]
	putChunk(h, replyFlagDone, chunkError, req.cookie, uint32(6+len(msg)))
	binary.BigEndian.PutUint32(h[20:], errno)
	binary.BigEndian.PutUint16(h[24:], uint16(len(msg)))
	c.write(h)
	switch {
	case c.werr != nil:
	case c.q != nil:
		c.werr = c.q.copyIn([]byte(msg))
	default:
		_, c.werr = c.bw.WriteString(msg)
	}
}

// segment is a piece of a structured read reply.
type segment struct {
	off, n int
	hole   bool
}

func (c *conn) doRead(req request) uint32 {
	n := int(req.length)
	if n == 0 {
		if c.sess.structured {
			c.lockW()
			defer c.unlockW()
			h := c.hdr[:structuredHdrSize]
			putChunk(h, replyFlagDone, chunkNone, req.cookie, 0)
			c.write(h)
		} else {
			c.replySimple(req.cookie, 0)
		}
		return 0
	}
	buf := getBuf(n)
	p := *buf
	off := int64(req.offset)

	var segsArr [8]segment
	segs := segsArr[:0]
	if c.sess.structured && req.flags&cflagDF == 0 && n >= sparseReadMin {
		segs = c.sparseSegments(segs, off, n)
	}
	var err error
	if len(segs) == 0 {
		err = c.be.ReadAt(c.ctx, p, off)
	} else {
		for _, s := range segs {
			if !s.hole {
				if err = c.be.ReadAt(c.ctx, p[s.off:s.off+s.n], off+int64(s.off)); err != nil {
					break
				}
			}
		}
	}
	if err != nil {
		putBuf(buf)
		errno := errnoFor(err)
		if errno == errnoIO {
			c.srv.logf("nbd: read of %q at %d+%d: %v", c.export, off, n, err)
		}
		c.replyErr(req, errno, "read failed")
		return errno
	}
	c.lockW()
	defer c.unlockW()
	c.sendRead(req, p, segs)
	c.release(buf)
	return 0
}

// sendRead queues a read's reply under wmu: data from p, holes as hole
// chunks (segs; none: all data).
func (c *conn) sendRead(req request, p []byte, segs []segment) {
	if !c.sess.structured {
		h := c.hdr[:simpleReplySize]
		putSimple(h, 0, req.cookie)
		c.write(h)
		c.writeData(p)
		return
	}
	if len(segs) == 0 {
		segs = append(segs, segment{0, len(p), false})
	}
	h := c.hdr[:structuredHdrSize+12]
	for i, s := range segs {
		flags := uint16(0)
		if i == len(segs)-1 {
			flags = replyFlagDone
		}
		if s.hole {
			putChunk(h, flags, chunkOffsetHole, req.cookie, 12)
			binary.BigEndian.PutUint64(h[20:], req.offset+uint64(s.off))
			binary.BigEndian.PutUint32(h[28:], uint32(s.n))
			c.write(h[:32])
		} else {
			putChunk(h, flags, chunkOffsetData, req.cookie, uint32(8+s.n))
			binary.BigEndian.PutUint64(h[20:], req.offset+uint64(s.off))
			c.write(h[:28])
			c.writeData(p[s.off : s.off+s.n])
		}
	}
}

// sparseSegments splits a read into data and hole pieces from the backend's
// extents. It returns nil when there is no hole worth a chunk, and treats any
// extents it cannot use (an error, a zero length) as data.
func (c *conn) sparseSegments(segs []segment, off int64, n int) []segment {
	exts, err := c.be.Extents(c.ctx, off, int64(n))
	if err != nil {
		return nil
	}
	pos := 0
	holes := 0
	for _, e := range exts {
		if pos >= n || e.Length <= 0 || len(segs) >= maxReadChunks-1 {
			break
		}
		l := int(min(e.Length, int64(n-pos)))
		hole := (e.Zero || e.Hole) && l >= holeChunkMin
		if k := len(segs) - 1; k >= 0 && segs[k].hole == hole {
			segs[k].n += l
		} else {
			segs = append(segs, segment{pos, l, hole})
		}
		if hole {
			holes++
		}
		pos += l
	}
	if holes == 0 {
		return nil
	}
	if pos < n {
		if k := len(segs) - 1; !segs[k].hole {
			segs[k].n += n - pos
		} else {
			segs = append(segs, segment{pos, n - pos, false})
		}
	}
	return segs
}

func (c *conn) doBlockStatus(req request) uint32 {
	off := int64(req.offset)
	n := int64(req.length)
	exts, err := c.be.Extents(c.ctx, off, n)
	if err != nil {
		errno := errnoFor(err)
		c.replyErr(req, errno, "block status failed")
		return errno
	}
	reqOne := req.flags&cflagReqOne != 0
	payload := make([]byte, 4, 4+8*min(len(exts)+1, 1024))
	binary.BigEndian.PutUint32(payload, metaContextIDBase)
	var sum int64
	var lastFlags uint32
	for _, e := range exts {
		if sum >= n || e.Length <= 0 {
			break
		}
		l := min(e.Length, n-sum)
		var f uint32
		if e.Hole {
			f |= stateHole | stateZero
		}
		if e.Zero {
			f |= stateZero
		}
		if len(payload) > 4 && f == lastFlags {
			// Merge runs the client cannot tell apart.
			k := len(payload) - 8
			binary.BigEndian.PutUint32(payload[k:], binary.BigEndian.Uint32(payload[k:])+uint32(l))
		} else {
			if reqOne && len(payload) > 4 {
				break
			}
			payload = binary.BigEndian.AppendUint32(payload, uint32(l))
			payload = binary.BigEndian.AppendUint32(payload, f)
		}
		lastFlags = f
		sum += l
	}
	if len(payload) == 4 {
		// Nothing usable: status 0 for the whole range is always true.
		payload = binary.BigEndian.AppendUint32(payload, uint32(n))
		payload = binary.BigEndian.AppendUint32(payload, 0)
	}
	c.lockW()
	defer c.unlockW()
	h := c.hdr[:structuredHdrSize]
	putChunk(h, replyFlagDone, chunkBlockStatus, req.cookie, uint32(len(payload)))
	c.write(h)
	c.write(payload)
	return 0
}
