package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestPipelinedReadsOfMixedSizesArriveIntact sends hundreds of reads of
// sizes around the reply queue's limits (copied below 16 KiB, referenced
// from it on, a write forced at 1 MiB) with errors and empty reads mixed
// in, all in flight at once, so that replies of inline reads and of
// several workers interleave in the queue; every reply must carry exactly
// the bytes at its offset.
func TestPipelinedReadsOfMixedSizesArriveIntact(t *testing.T) {
	m, want := holedDisk()
	backends := map[string]Backend{"workers": m, "inline": tryMem{m}}
	ts := startServer(t, backends, nil)
	for _, export := range []string{"workers", "inline"} {
		for _, structured := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/structured=%v", export, structured), func(t *testing.T) {
				rc := dialRaw(t, "unix", ts.sock)
				rc.greet(3)
				rc.goExport(export, structured, false)
				pipelineReads(t, rc, want, uint64(len(export)))
			})
		}
	}
}

// TestPipelinedReadsOverTCPArriveIntact does the same over plain TCP,
// whose replies also leave by writev.
func TestPipelinedReadsOverTCPArriveIntact(t *testing.T) {
	m, want := holedDisk()
	srv := &Server{Exports: &mapExports{m: map[string]Backend{"d": tryMem{m}}, deny: map[string]bool{}}, AllowInsecureTCP: true}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	rc := dialRaw(t, "tcp", l.Addr().String())
	rc.greet(3)
	rc.goExport("d", true, false)
	pipelineReads(t, rc, want, 3)
}

// holedDisk is 32 MiB of data with a few holes in every MiB, so large
// structured reads get hole chunks between data chunks; want is its
// content.
func holedDisk() (m *memBackend, want []byte) {
	const size = 32 << 20
	m = newMem(size)
	for off := int64(0); off < size; off += 1 << 20 {
		m.fill(off, pattern(uint64(off), 1<<20-3*memBlock))
	}
	return m, m.snapshot()
}

// pipelineReads sends 160 reads of mixed sizes at once (one in 37 past the
// end, for an error reply) and checks every reply against want.
func pipelineReads(t *testing.T, rc *rawClient, want []byte, seed uint64) {
	size := uint64(len(want))
	sizes := []int{0, 1, 512, 4 << 10, queueRefMin - 1, queueRefMin, 64 << 10, 200 << 10, 1 << 20, 2 << 20}
	rng := rand.New(rand.NewPCG(seed, 7))
	const n = 160
	reqs := make([][2]uint64, n) // offset and length by cookie
	pending := map[uint64][2]uint64{}
	for cookie := range reqs {
		l := uint64(sizes[rng.IntN(len(sizes))])
		off := rng.Uint64N(size - l + 1)
		if cookie%37 == 5 {
			off, l = size, 4096
		}
		reqs[cookie] = [2]uint64{off, l}
		pending[uint64(cookie)] = reqs[cookie]
	}
	sendErr := make(chan error, 1)
	go func() {
		for cookie, r := range reqs {
			rc.queue(0, cmdRead, uint64(cookie), r[0], uint32(r[1]), nil)
		}
		sendErr <- rc.bw.Flush()
	}()
	partial := map[uint64]*reply{}
	for range n {
		rp, err := rc.readReply(pending, partial)
		if err != nil {
			t.Fatalf("reply: %v", err)
		}
		r, ok := pending[rp.cookie]
		if !ok {
			t.Fatalf("reply to unknown or repeated cookie %d", rp.cookie)
		}
		delete(pending, rp.cookie)
		switch {
		case r[0] >= size:
			if rp.errno == 0 {
				t.Fatalf("cookie %d: read past the end succeeded", rp.cookie)
			}
		case rp.errno != 0:
			t.Fatalf("cookie %d: errno %d", rp.cookie, rp.errno)
		case !bytes.Equal(rp.data, want[r[0]:r[0]+r[1]]) && r[1] > 0:
			t.Fatalf("cookie %d: %d bytes at %d differ", rp.cookie, r[1], r[0])
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
}

// errInjected is the failure of a brokenConn's write.
var errInjected = errors.New("injected write failure")

// brokenConn sends the first allow bytes of its vectored writes and then
// fails, like a peer that resets the connection in the middle of a reply.
type brokenConn struct {
	net.Conn
	allow *atomic.Int64
}

func (c brokenConn) writeBuffers(v *net.Buffers) (int64, error) {
	left := c.allow.Load()
	var part net.Buffers
	for _, b := range *v {
		k := min(int64(len(b)), left)
		part = append(part, b[:k])
		left -= k
	}
	n, err := part.WriteTo(c.Conn)
	c.allow.Add(-n)
	if err == nil && left == 0 {
		// The server, not this conn, must close the connection.
		err = errInjected
	}
	return n, err
}

type brokenListener struct {
	net.Listener
	allow *atomic.Int64
}

func (l brokenListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return brokenConn{c, l.allow}, nil
}

// TestWriteErrorInVectoredReplyClosesConnection breaks the connection in
// the middle of a writev of many read replies: the client must see the
// replies sent before the break intact and then the connection closed,
// the backend must be closed, and the server must shut down cleanly.
func TestWriteErrorInVectoredReplyClosesConnection(t *testing.T) {
	m := newMem(8 << 20)
	data := pattern(5, 8<<20)
	m.fill(0, data)
	// Unix socket paths are limited to 108 bytes; t.TempDir can be long.
	dir, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var allow atomic.Int64
	allow.Store(3*(64<<10+simpleReplySize) + 1000) // three replies and a piece
	srv := &Server{Exports: &mapExports{m: map[string]Backend{"d": closingBackend{m}}, deny: map[string]bool{}}}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(brokenListener{l, &allow}) }()

	rc := dialRaw(t, "unix", sock)
	rc.greet(3)
	rc.goExport("d", false, false)
	const n = 32
	pending := map[uint64][2]uint64{}
	for cookie := uint64(0); cookie < n; cookie++ {
		off := cookie * (64 << 10)
		pending[cookie] = [2]uint64{off, 64 << 10}
		rc.queue(0, cmdRead, cookie, off, 64<<10, nil)
	}
	rc.flush()
	rc.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := 0
	for {
		rp, err := rc.readReply(pending, map[uint64]*reply{})
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("server kept the connection open after the write failure")
			}
			break
		}
		r := pending[rp.cookie]
		if rp.errno != 0 || !bytes.Equal(rp.data, data[r[0]:r[0]+r[1]]) {
			t.Fatalf("cookie %d: reply before the break differs", rp.cookie)
		}
		got++
	}
	if got != 3 {
		t.Fatalf("%d whole replies before the break, want 3", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	if c := m.closed.Load(); c != 1 {
		t.Fatalf("backend closed %d times, want 1", c)
	}
}

// recordingWriter keeps what it was asked to write, as it was at the time.
type recordingWriter struct{ got []byte }

func (w *recordingWriter) writeBuffers(v *net.Buffers) (int64, error) {
	n := int64(0)
	for _, b := range *v {
		w.got = append(w.got, b...)
		n += int64(len(b))
	}
	*v = (*v)[len(*v):]
	return n, nil
}

// TestReplyQueueHoldsBuffersUntilWritten: a referenced pooled buffer stays
// out of the pool until the write that sends it; small pieces are copied
// (their source may change at once) and coalesced into one piece.
func TestReplyQueueHoldsBuffersUntilWritten(t *testing.T) {
	w := &recordingWriter{}
	q := newReplyQueue(w)
	defer q.close()
	hdr := []byte("header-1")
	big := getBuf(64 << 10)
	copy(*big, pattern(9, 64<<10))
	wantBig := bytes.Clone(*big)
	if err := q.copyIn(hdr); err != nil {
		t.Fatal(err)
	}
	copy(hdr, "HEADER-2") // the caller's scratch is free at once
	if err := q.copyIn(hdr); err != nil {
		t.Fatal(err)
	}
	if len(q.vec) != 1 {
		t.Fatalf("%d pieces for two copies, want them coalesced into 1", len(q.vec))
	}
	if err := q.refer(*big); err != nil {
		t.Fatal(err)
	}
	q.hold(big)
	if len(q.held) != 1 || q.held[0] != big {
		t.Fatal("a referenced buffer was not held until the write")
	}
	if len(w.got) != 0 {
		t.Fatal("wrote before flush")
	}
	if err := q.flush(); err != nil {
		t.Fatal(err)
	}
	want := append([]byte("header-1HEADER-2"), wantBig...)
	if !bytes.Equal(w.got, want) {
		t.Fatal("written bytes differ")
	}
	if len(q.held) != 0 || len(q.vec) != 0 || q.n != 0 {
		t.Fatal("queue not empty after its write")
	}
	// With nothing queued, a handed-over buffer is not held.
	b := getBuf(4096)
	q.hold(b)
	if len(q.held) != 0 {
		t.Fatal("held a buffer nothing references")
	}
}
