package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"
)

// alignedBackend advertises a 512-byte minimum block size.
type alignedBackend struct{ *memBackend }

func (alignedBackend) BlockSizes() (uint32, uint32, uint32) { return 512, 4096, 1 << 20 }

func TestTransmissionErrorsTable(t *testing.T) {
	const size = 1 << 20
	rw := newMem(size)
	rw.fill(0, pattern(9, 8192))
	ro := newMem(size)
	ro.readOnly = true
	al := alignedBackend{newMem(size)}
	ts := startServer(t, map[string]Backend{"rw": rw, "ro": ro, "al": al}, func(s *Server) {
		s.MaxPayload = 256 << 10
	})
	big := make([]byte, 512<<10)
	cases := []struct {
		name       string
		export     string
		structured bool
		meta       bool
		flags, typ uint16
		off        uint64
		length     uint32
		payload    []byte
		want       uint32
	}{
		{"read past end", "rw", false, false, 0, cmdRead, size, 512, nil, errnoINVAL},
		{"read straddling end", "rw", true, false, 0, cmdRead, size - 512, 1024, nil, errnoINVAL},
		{"read offset overflow", "rw", false, false, 0, cmdRead, ^uint64(0) - 100, 512, nil, errnoINVAL},
		{"write past end", "rw", false, false, 0, cmdWrite, size - 512, 1024, make([]byte, 1024), errnoNOSPC},
		{"trim past end", "rw", false, false, 0, cmdTrim, size, 4096, nil, errnoNOSPC},
		{"write zeroes past end", "rw", true, false, 0, cmdWriteZeroes, size, 4096, nil, errnoNOSPC},
		{"write to read-only", "ro", false, false, 0, cmdWrite, 0, 512, make([]byte, 512), errnoPERM},
		{"trim on read-only", "ro", false, false, 0, cmdTrim, 0, 4096, nil, errnoPERM},
		{"zeroes on read-only", "ro", true, false, 0, cmdWriteZeroes, 0, 4096, nil, errnoPERM},
		{"fast zero on read-only (not advertised)", "ro", true, false, cflagFastZero, cmdWriteZeroes, 0, 4096, nil, errnoINVAL},
		{"read past max payload", "rw", false, false, 0, cmdRead, 0, 512 << 10, nil, errnoINVAL},
		{"structured read past max payload", "rw", true, false, 0, cmdRead, 0, 512 << 10, nil, errnoINVAL},
		{"write past max payload (payload skipped)", "rw", false, false, 0, cmdWrite, 0, 512 << 10, big, errnoINVAL},
		{"huge read length", "rw", false, false, 0, cmdRead, 0, 0xffffffff, nil, errnoINVAL},
		{"unknown command", "rw", false, false, 0, 42, 0, 512, nil, errnoINVAL},
		{"resize (not supported)", "rw", true, false, 0, 8, 0, 0, nil, errnoINVAL},
		{"unknown flag bit", "rw", false, false, 1 << 9, cmdRead, 0, 512, nil, errnoINVAL},
		{"DF without structured replies", "rw", false, false, cflagDF, cmdRead, 0, 512, nil, errnoINVAL},
		{"DF on a write", "rw", true, false, cflagDF, cmdWrite, 0, 512, make([]byte, 512), errnoINVAL},
		{"REQ_ONE on a read", "rw", true, false, cflagReqOne, cmdRead, 0, 512, nil, errnoINVAL},
		{"FAST_ZERO on a write", "rw", true, false, cflagFastZero, cmdWrite, 0, 512, make([]byte, 512), errnoINVAL},
		{"NO_HOLE on a trim", "rw", false, false, cflagNoHole, cmdTrim, 0, 4096, nil, errnoINVAL},
		{"payload-length flag (extended headers not negotiated)", "rw", true, false, 1 << 5, cmdRead, 0, 512, nil, errnoINVAL},
		{"block status without meta context", "rw", true, false, 0, cmdBlockStatus, 0, 4096, nil, errnoINVAL},
		{"block status past end", "rw", true, true, 0, cmdBlockStatus, size, 4096, nil, errnoINVAL},
		{"block status of zero length", "rw", true, true, 0, cmdBlockStatus, 0, 0, nil, errnoINVAL},
		{"cache past end", "rw", false, false, 0, cmdCache, size, 4096, nil, errnoINVAL},
		{"unaligned read on 512-byte export", "al", false, false, 0, cmdRead, 100, 512, nil, errnoINVAL},
		{"unaligned write on 512-byte export", "al", true, false, 0, cmdWrite, 0, 100, make([]byte, 100), errnoINVAL},
		{"fast zero that would be slow", "rw", true, false, cflagFastZero | cflagNoHole, cmdWriteZeroes, 0, 4096, nil, errnoNOTSUP},
		{"FUA on flush is accepted", "rw", false, false, cflagFUA, cmdFlush, 0, 0, nil, 0},
		{"FUA on a read is accepted", "rw", true, false, cflagFUA, cmdRead, 0, 512, nil, 0},
		{"cache in range", "rw", false, false, 0, cmdCache, 0, 4096, nil, 0},
		{"zero-length read", "rw", true, false, 0, cmdRead, 0, 0, nil, 0},
		{"zero-length write", "rw", false, false, 0, cmdWrite, 0, 0, nil, 0},
		{"read on read-only", "ro", false, false, 0, cmdRead, size - 512, 512, nil, 0},
		{"aligned read on 512-byte export", "al", false, false, 0, cmdRead, 512, 1024, nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, "unix", ts.sock)
			rc.greet(clientFixedNewsty | clientNoZeroes)
			rc.goExport(tc.export, tc.structured, tc.meta)
			rp := rc.do(tc.flags, tc.typ, tc.off, tc.length, tc.payload)
			if rp.errno != tc.want {
				t.Fatalf("errno %d, want %d", rp.errno, tc.want)
			}
			if rp.errno != 0 && tc.typ == cmdRead && rp.data != nil && !rp.structured {
				t.Fatal("error reply carried data")
			}
			// The connection survives and stays in sync.
			rp = rc.do(0, cmdRead, 0, 4096, nil)
			if rp.errno != 0 || len(rp.data) != 4096 {
				t.Fatalf("follow-up read: errno %d, %d bytes", rp.errno, len(rp.data))
			}
			if tc.export == "rw" && !bytes.Equal(rp.data, pattern(9, 8192)[:4096]) {
				t.Fatal("follow-up read returned wrong data")
			}
		})
	}
	if ro.writes.Load() != 0 {
		t.Fatal("a write reached the read-only backend")
	}
}

func TestBadRequestMagicClosesConnection(t *testing.T) {
	ts := startServer(t, map[string]Backend{"rw": newMem(1 << 20)}, nil)
	rc := dialRaw(t, "unix", ts.sock)
	rc.greet(clientFixedNewsty | clientNoZeroes)
	rc.goExport("rw", true, false)
	b := reqBytes(0, cmdRead, 1, 0, 512, nil)
	b[0] ^= 0xff
	rc.send(b)
	rc.expectClosed()
}

func TestHandshakeTable(t *testing.T) {
	rw := newMem(1 << 20)
	rw.desc = "the rw disk"
	ts := startServer(t, map[string]Backend{"rw": rw, "secret": newMem(4096)}, nil)
	ts.exports.deny["secret"] = true

	type step struct {
		send    []byte
		reply   uint32 // expected option reply type; 0: none expected
		closed  bool   // expect the server to close
		extra   uint32 // a second reply expected after the first (e.g. ACK after META_CONTEXT)
		checkFn func(t *testing.T, m optReplyMsg)
	}
	cases := []struct {
		name        string
		clientFlags uint32
		steps       []step
		thenGo      bool // finally GO "rw" and read
	}{
		{"unknown client flag", 1 << 7, []step{{closed: true}}, false},
		{"bad option magic", 3, []step{{send: append([]byte("NOTMAGIC"), make([]byte, 8)...), closed: true}}, false},
		{"garbage", 3, []step{{send: bytes.Repeat([]byte{0xff}, 64), closed: true}}, false},
		{"unknown option then go", 3, []step{{send: optBytes(99, []byte("xyz")), reply: repErrUnsup}}, true},
		{"extended headers unsupported", 3, []step{{send: optBytes(11, nil), reply: repErrUnsup}}, true},
		{"oversized option skipped", 3, []step{{send: optBytes(99, make([]byte, 1<<20)), reply: repErrTooBig}}, true},
		{"absurd option length closes", 3, []step{{send: append(optBytes(optGo, nil)[:12], 0x40, 0, 0, 0), closed: true}}, false},
		{"info with bad lengths", 3, []step{{send: optBytes(optInfo, []byte{0, 0, 0, 9, 'r', 'w', 0, 0}), reply: repErrInvalid}}, true},
		{"info too short", 3, []step{{send: optBytes(optGo, []byte{0, 0}), reply: repErrInvalid}}, true},
		{"info unknown export", 3, []step{{send: optBytes(optInfo, infoBytes("nope")), reply: repErrUnknown}}, true},
		{"go on denied export", 3, []step{{send: optBytes(optGo, infoBytes("secret")), reply: repErrPolicy}}, true},
		{"info name and description", 3, []step{{send: optBytes(optInfo, infoBytes("rw", infoName, infoDescription, infoBlockSize)), reply: repInfo,
			checkFn: func(t *testing.T, m optReplyMsg) {
				if binary.BigEndian.Uint16(m.data) != infoExport || binary.BigEndian.Uint64(m.data[2:]) != 1<<20 {
					t.Fatalf("first info %x", m.data)
				}
			}}}, false},
		{"meta context before structured replies", 3, []step{{send: optBytes(optSetMetaContext, metaBytes("rw", "base:allocation")), reply: repErrInvalid}}, true},
		{"list with data", 3, []step{{send: optBytes(optList, []byte{1}), reply: repErrInvalid}}, true},
		{"structured reply with data", 3, []step{{send: optBytes(optStructuredReply, []byte{1}), reply: repErrInvalid}}, true},
		{"starttls without tls", 3, []step{{send: optBytes(optStartTLS, nil), reply: repErrUnsup}}, true},
		{"list meta contexts", 3, []step{
			{send: optBytes(optStructuredReply, nil), reply: repAck},
			{send: optBytes(optListMetaContext, metaBytes("rw")), reply: repMetaContext, extra: repAck},
			{send: optBytes(optListMetaContext, metaBytes("rw", "x-other:")), reply: repAck},
			{send: optBytes(optListMetaContext, metaBytes("rw", "base:")), reply: repMetaContext, extra: repAck},
			{send: optBytes(optSetMetaContext, []byte{0, 0, 0, 2, 'r', 'w', 0, 0, 0, 5}), reply: repErrInvalid},
		}, true},
		{"abort", 3, []step{{send: optBytes(optAbort, nil), reply: repAck}, {closed: true}}, false},
		{"export name unknown closes", 3, []step{{send: optBytes(optExportName, []byte("nope")), closed: true}}, false},
		{"export name denied closes", 3, []step{{send: optBytes(optExportName, []byte("secret")), closed: true}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, "unix", ts.sock)
			rc.greet(tc.clientFlags)
			for _, s := range tc.steps {
				if s.send != nil {
					rc.send(s.send)
				}
				if s.closed {
					rc.expectClosed()
					return
				}
				if s.reply != 0 {
					m := rc.mustOptReply()
					if m.typ != s.reply {
						t.Fatalf("reply %#x, want %#x (%q)", m.typ, s.reply, m.data)
					}
					if s.checkFn != nil {
						s.checkFn(t, m)
					}
				}
				if s.extra != 0 {
					if m := rc.mustOptReply(); m.typ != s.extra {
						t.Fatalf("second reply %#x, want %#x", m.typ, s.extra)
					}
				}
			}
			if !tc.thenGo {
				return
			}
			structured := false
			for _, s := range tc.steps {
				structured = structured || bytes.Equal(s.send, optBytes(optStructuredReply, nil))
			}
			size, flags := rc.goExport("rw", false, false)
			// SEND_DF is advertised exactly when structured replies are on.
			if size != 1<<20 || flags&tflagHasFlags == 0 || (flags&tflagSendDF != 0) != structured {
				t.Fatalf("go: size %d flags %#x", size, flags)
			}
			if rp := rc.do(0, cmdRead, 0, 512, nil); rp.errno != 0 {
				t.Fatalf("read errno %d", rp.errno)
			}
		})
	}
}

func TestInfoRepliesNameDescriptionAndClosesHandle(t *testing.T) {
	b := closingBackend{newMem(1 << 20)}
	b.desc = "described"
	ts := startServer(t, map[string]Backend{"c": b}, nil)
	rc := dialRaw(t, "unix", ts.sock)
	rc.greet(3)
	rc.opt(optInfo, infoBytes("c", infoName, infoDescription))
	got := map[uint16][]byte{}
	for {
		m := rc.mustOptReply()
		if m.typ == repAck {
			break
		}
		if m.typ != repInfo {
			t.Fatalf("reply %#x", m.typ)
		}
		got[binary.BigEndian.Uint16(m.data)] = m.data[2:]
	}
	if string(got[infoName]) != "c" || string(got[infoDescription]) != "described" {
		t.Fatalf("infos %v", got)
	}
	bs := got[infoBlockSize]
	if len(bs) != 12 || binary.BigEndian.Uint32(bs[8:]) != DefaultMaxPayload {
		t.Fatalf("block size info %x", bs)
	}
	if b.closed.Load() != 1 {
		t.Fatalf("INFO did not close the handle: %d", b.closed.Load())
	}
	// EXPORT_NAME enters transmission; the 124 zero bytes are omitted
	// because we negotiated NO_ZEROES, so a request follows at once.
	rc.opt(optExportName, []byte("c"))
	var h [10]byte
	if _, err := rc.br.Read(h[:]); err != nil {
		t.Fatal(err)
	}
	rp := rc.do(0, cmdWrite, 0, 4, []byte("abcd"))
	if rp.errno != 0 {
		t.Fatalf("write errno %d", rp.errno)
	}
	rc.send(reqBytes(0, cmdDisc, 1, 0, 0, nil))
	rc.expectClosed()
	if b.closed.Load() != 2 {
		t.Fatalf("disconnect did not close the handle: %d", b.closed.Load())
	}
	// The connection wrote and disconnected: the server flushed.
	if b.flushes.Load() != 1 {
		t.Fatalf("flushes at disconnect: %d", b.flushes.Load())
	}
	var p [4]byte
	b.ReadAt(context.Background(), p[:], 0)
	if string(p[:]) != "abcd" {
		t.Fatal("write lost")
	}
}

func TestExportNameWithoutNoZeroesSendsPadding(t *testing.T) {
	ts := startServer(t, map[string]Backend{"": newMem(1 << 20)}, nil)
	rc := dialRaw(t, "unix", ts.sock)
	rc.greet(clientFixedNewsty)
	rc.opt(optExportName, nil)
	var h [134]byte
	if _, err := rc.readFull(h[:]); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint64(h[:]) != 1<<20 || !bytes.Equal(h[10:], make([]byte, 124)) {
		t.Fatalf("export name reply %x", h)
	}
	if rp := rc.do(0, cmdRead, 0, 512, nil); rp.errno != 0 {
		t.Fatal(rp.errno)
	}
}

// panicBackend panics on reads, standing in for a backend bug.
type panicBackend struct{ *memBackend }

func (panicBackend) ReadAt(context.Context, []byte, int64) error { panic("backend bug") }

func TestBackendPanicDropsOnlyThatConnection(t *testing.T) {
	ts := startServer(t, map[string]Backend{"bad": panicBackend{newMem(1 << 20)}, "good": newMem(1 << 20)}, nil)
	bad := dialRaw(t, "unix", ts.sock)
	bad.greet(3)
	bad.goExport("bad", true, false)
	bad.send(reqBytes(0, cmdRead, 1, 0, 4096, nil))
	bad.expectClosed()
	good := dialRaw(t, "unix", ts.sock)
	good.greet(3)
	good.goExport("good", true, false)
	if rp := good.do(0, cmdRead, 0, 4096, nil); rp.errno != 0 {
		t.Fatalf("errno %d", rp.errno)
	}
}

func TestMaximalRequestsRoundTrip(t *testing.T) {
	const size = 64 << 20
	m := newMem(size)
	ts := startServer(t, map[string]Backend{"d": m}, func(s *Server) { s.MaxInFlightBytes = DefaultMaxPayload })
	for _, structured := range []bool{false, true} {
		rc := dialRaw(t, "unix", ts.sock)
		rc.greet(3)
		rc.goExport("d", structured, false)
		data := pattern(11, DefaultMaxPayload)
		clear(data[4<<20 : 8<<20]) // a zero run: hole chunks when structured
		// Two maximal writes pipelined against a budget of one: the
		// second waits for the first instead of doubling the memory.
		rc.queue(0, cmdWrite, 1, 0, DefaultMaxPayload, data)
		rc.queue(cflagFUA, cmdWrite, 2, DefaultMaxPayload, DefaultMaxPayload, data)
		rc.flush()
		for range 2 {
			rp, err := rc.readReply(nil, map[uint64]*reply{})
			if err != nil || rp.errno != 0 {
				t.Fatalf("write: %v %+v", err, rp)
			}
		}
		m.Trim(context.Background(), DefaultMaxPayload+(4<<20), 4<<20, false)
		rp := rc.do(0, cmdRead, DefaultMaxPayload, DefaultMaxPayload, nil)
		if rp.errno != 0 || !bytes.Equal(rp.data, data) {
			t.Fatalf("structured=%v: maximal read differs (errno %d)", structured, rp.errno)
		}
		if structured && rp.holes == 0 {
			t.Fatal("no hole chunk for a trimmed run")
		}
	}
}

func TestByteBudget(t *testing.T) {
	b := newByteBudget(10)
	if !b.acquire(6) || !b.acquire(4) {
		t.Fatal("acquire within the limit failed")
	}
	got := make(chan bool)
	go func() { got <- b.acquire(5) }()
	b.release(6) // now 4 used: 5 more fit
	if !<-got {
		t.Fatal("acquire after release failed")
	}
	b.release(4)
	b.release(5)
	if !b.acquire(100) { // larger than the limit, alone: allowed
		t.Fatal("oversized acquire on an idle budget failed")
	}
	go func() { got <- b.acquire(1) }()
	b.close()
	if <-got {
		t.Fatal("acquire succeeded on a closed budget")
	}
}

// tryAll serves every read inline (a TryReader that never declines) and
// counts them, so a test knows which path answered.
type tryAll struct {
	*memBackend
	served *atomic.Int64
}

func (t tryAll) TryReadAt(p []byte, off int64) bool {
	t.served.Add(1)
	return t.ReadAt(context.Background(), p, off) == nil
}

// A large read the backend serves inline is split into data and hole
// chunks like a worker's: zeros of a hole do not cross the socket.
func TestInlineLargeReadSendsHoleChunks(t *testing.T) {
	m := newMem(1 << 20)
	data := pattern(5, 32<<10)
	m.fill(64<<10, data) // data at [64K, 96K); the rest never written
	var served atomic.Int64
	ts := startServer(t, map[string]Backend{"d": tryAll{m, &served}}, nil)
	rc := dialRaw(t, "unix", ts.sock)
	rc.greet(3)
	rc.goExport("d", true, false)

	hole := rc.do(0, cmdRead, 128<<10, 64<<10, nil)
	if hole.errno != 0 || hole.holes != 1 || hole.dataChunks != 0 || !bytes.Equal(hole.data, make([]byte, 64<<10)) {
		t.Fatalf("64 KiB hole: errno %d, %d hole and %d data chunks", hole.errno, hole.holes, hole.dataChunks)
	}
	mixed := rc.do(0, cmdRead, 32<<10, 96<<10, nil)
	want := append(append(make([]byte, 32<<10), data...), make([]byte, 32<<10)...)
	if mixed.errno != 0 || mixed.holes != 2 || mixed.dataChunks != 1 || !bytes.Equal(mixed.data, want) {
		t.Fatalf("hole, data, hole: errno %d, %d hole and %d data chunks", mixed.errno, mixed.holes, mixed.dataChunks)
	}
	// DF asks for one data chunk; reads under 64 KiB skip the extent
	// lookup.
	for _, c := range []struct {
		flags  uint16
		length uint32
	}{{cflagDF, 64 << 10}, {0, 32 << 10}} {
		rp := rc.do(c.flags, cmdRead, 128<<10, c.length, nil)
		if rp.errno != 0 || rp.holes != 0 || rp.dataChunks != 1 || !bytes.Equal(rp.data, make([]byte, c.length)) {
			t.Fatalf("flags %#x, %d bytes: errno %d, %d hole and %d data chunks", c.flags, c.length, rp.errno, rp.holes, rp.dataChunks)
		}
	}
	if n := served.Load(); n != 4 {
		t.Fatalf("%d reads served inline, want 4", n)
	}
}
