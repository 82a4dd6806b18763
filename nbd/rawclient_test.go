package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// rawClient speaks the protocol byte by byte so tests can send what no
// well-behaved client would.
type rawClient struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer

	scratch []byte
}

func dialRaw(t testing.TB, network, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A hung server must fail the test, not the whole run.
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return &rawClient{t: t, c: c, br: bufio.NewReader(c), bw: bufio.NewWriter(c)}
}

func (r *rawClient) setConn(c net.Conn) {
	r.c = c
	r.br = bufio.NewReader(c)
	r.bw = bufio.NewWriter(c)
}

// greet reads the server greeting and sends client flags.
func (r *rawClient) greet(clientFlags uint32) {
	r.t.Helper()
	var b [18]byte
	if _, err := io.ReadFull(r.br, b[:]); err != nil {
		r.t.Fatalf("greeting: %v", err)
	}
	if binary.BigEndian.Uint64(b[0:]) != magicNBD || binary.BigEndian.Uint64(b[8:]) != magicOpt {
		r.t.Fatalf("bad greeting %x", b)
	}
	if f := binary.BigEndian.Uint16(b[16:]); f != flagFixedNewstyle|flagNoZeroes {
		r.t.Fatalf("handshake flags %#x", f)
	}
	r.send(binary.BigEndian.AppendUint32(nil, clientFlags))
}

func (r *rawClient) send(b []byte) {
	r.t.Helper()
	r.bw.Write(b)
	if err := r.bw.Flush(); err != nil {
		r.t.Fatalf("send: %v", err)
	}
}

func optBytes(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func (r *rawClient) opt(opt uint32, data []byte) { r.send(optBytes(opt, data)) }

type optReplyMsg struct {
	opt, typ uint32
	data     []byte
}

func (r *rawClient) optReply() (optReplyMsg, error) {
	var h [optionReplyHdrSize]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return optReplyMsg{}, err
	}
	if binary.BigEndian.Uint64(h[0:]) != magicOptReply {
		return optReplyMsg{}, fmt.Errorf("bad option reply magic %x", h)
	}
	m := optReplyMsg{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	n := binary.BigEndian.Uint32(h[16:])
	if n > 1<<20 {
		return m, fmt.Errorf("option reply length %d", n)
	}
	m.data = make([]byte, n)
	_, err := io.ReadFull(r.br, m.data)
	return m, err
}

func (r *rawClient) mustOptReply() optReplyMsg {
	r.t.Helper()
	m, err := r.optReply()
	if err != nil {
		r.t.Fatalf("option reply: %v", err)
	}
	return m
}

// expectClosed checks that the server closes the connection (EOF or reset)
// without sending anything more.
func (r *rawClient) expectClosed() {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := r.br.ReadByte()
	if err == nil {
		r.t.Fatalf("server sent %#x, want close", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatal("server kept the connection open")
	}
}

func infoBytes(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func metaBytes(export string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	b = append(b, export...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// goExport negotiates (optionally structured replies and base:allocation)
// and enters transmission; it returns the export size and flags.
func (r *rawClient) goExport(name string, structured, meta bool) (int64, uint16) {
	r.t.Helper()
	if structured {
		r.opt(optStructuredReply, nil)
		if m := r.mustOptReply(); m.typ != repAck {
			r.t.Fatalf("structured reply: %#x", m.typ)
		}
	}
	if meta {
		r.opt(optSetMetaContext, metaBytes(name, metaContextBaseAllocation))
		m := r.mustOptReply()
		if m.typ != repMetaContext || binary.BigEndian.Uint32(m.data) != metaContextIDBase {
			r.t.Fatalf("set meta: %#x %q", m.typ, m.data)
		}
		if m := r.mustOptReply(); m.typ != repAck {
			r.t.Fatalf("set meta ack: %#x", m.typ)
		}
	}
	r.opt(optGo, infoBytes(name))
	var size int64
	var flags uint16
	for {
		m := r.mustOptReply()
		if m.typ == repAck {
			return size, flags
		}
		if m.typ != repInfo {
			r.t.Fatalf("GO %q: reply %#x %q", name, m.typ, m.data)
		}
		if binary.BigEndian.Uint16(m.data) == infoExport {
			size = int64(binary.BigEndian.Uint64(m.data[2:]))
			flags = binary.BigEndian.Uint16(m.data[10:])
		}
	}
}

func reqBytes(flags, typ uint16, cookie, off uint64, length uint32, payload []byte) []byte {
	return append(appendReq(nil, flags, typ, cookie, off, length), payload...)
}

func appendReq(b []byte, flags, typ uint16, cookie, off uint64, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, length)
}

// queue buffers a request without flushing (for pipelining).
func (r *rawClient) queue(flags, typ uint16, cookie, off uint64, length uint32, payload []byte) {
	r.scratch = appendReq(r.scratch[:0], flags, typ, cookie, off, length)
	r.bw.Write(r.scratch)
	r.bw.Write(payload)
}

func (r *rawClient) flush() {
	r.t.Helper()
	if err := r.bw.Flush(); err != nil {
		r.t.Fatalf("send: %v", err)
	}
}

// reply is one complete reply, simple or structured (all chunks).
type reply struct {
	cookie     uint64
	errno      uint32
	structured bool
	data       []byte // reassembled read data (holes as zeros)
	holes      int    // OFFSET_HOLE chunks seen
	dataChunks int
	extents    [][2]uint32 // block status descriptors
}

// readReply reads the next reply. pending maps cookies of outstanding reads
// to (offset, length) so simple read replies can be framed and structured
// ones reassembled. Structured chunks of different requests may
// interleave, so partial replies are kept in partial.
func (r *rawClient) readReply(pending map[uint64][2]uint64, partial map[uint64]*reply) (*reply, error) {
	for {
		var m [4]byte
		if _, err := io.ReadFull(r.br, m[:]); err != nil {
			return nil, err
		}
		switch binary.BigEndian.Uint32(m[:]) {
		case magicSimple:
			var h [12]byte
			if _, err := io.ReadFull(r.br, h[:]); err != nil {
				return nil, err
			}
			rp := &reply{errno: binary.BigEndian.Uint32(h[0:]), cookie: binary.BigEndian.Uint64(h[4:])}
			if rd, ok := pending[rp.cookie]; ok && rp.errno == 0 {
				rp.data = make([]byte, rd[1])
				if _, err := io.ReadFull(r.br, rp.data); err != nil {
					return nil, err
				}
			}
			return rp, nil
		case magicStructured:
			var h [16]byte
			if _, err := io.ReadFull(r.br, h[:]); err != nil {
				return nil, err
			}
			flags := binary.BigEndian.Uint16(h[0:])
			typ := binary.BigEndian.Uint16(h[2:])
			cookie := binary.BigEndian.Uint64(h[4:])
			n := binary.BigEndian.Uint32(h[12:])
			if n > 64<<20 {
				return nil, fmt.Errorf("chunk length %d", n)
			}
			payload := make([]byte, n)
			if _, err := io.ReadFull(r.br, payload); err != nil {
				return nil, err
			}
			rp := partial[cookie]
			if rp == nil {
				rp = &reply{cookie: cookie, structured: true}
				if rd, ok := pending[cookie]; ok {
					rp.data = make([]byte, rd[1])
				}
				partial[cookie] = rp
			}
			base := pending[cookie][0]
			switch typ {
			case chunkNone:
			case chunkOffsetData:
				o := binary.BigEndian.Uint64(payload) - base
				if o+uint64(n-8) > uint64(len(rp.data)) {
					return nil, fmt.Errorf("data chunk outside request")
				}
				copy(rp.data[o:], payload[8:])
				rp.dataChunks++
			case chunkOffsetHole:
				o := binary.BigEndian.Uint64(payload) - base
				l := binary.BigEndian.Uint32(payload[8:])
				if o+uint64(l) > uint64(len(rp.data)) || l == 0 {
					return nil, fmt.Errorf("hole chunk outside request")
				}
				clear(rp.data[o : o+uint64(l)])
				rp.holes++
			case chunkBlockStatus:
				for p := payload[4:]; len(p) >= 8; p = p[8:] {
					rp.extents = append(rp.extents, [2]uint32{binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:])})
				}
			case chunkError:
				rp.errno = binary.BigEndian.Uint32(payload)
			default:
				return nil, fmt.Errorf("unknown chunk type %d", typ)
			}
			if flags&replyFlagDone != 0 {
				delete(partial, cookie)
				return rp, nil
			}
		default:
			return nil, fmt.Errorf("bad reply magic %x", m)
		}
	}
}

// do sends one request and waits for its reply.
func (r *rawClient) do(flags, typ uint16, off uint64, length uint32, payload []byte) *reply {
	r.t.Helper()
	r.queue(flags, typ, 77, off, length, payload)
	r.flush()
	pending := map[uint64][2]uint64{}
	if typ == cmdRead {
		pending[77] = [2]uint64{off, uint64(length)}
	}
	rp, err := r.readReply(pending, map[uint64]*reply{})
	if err != nil {
		r.t.Fatalf("reply: %v", err)
	}
	if rp.cookie != 77 {
		r.t.Fatalf("cookie %d", rp.cookie)
	}
	return rp
}

func (r *rawClient) readFull(p []byte) (int, error) { return io.ReadFull(r.br, p) }
