package nbd

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// fuzzConn is a net.Conn whose client side is a fixed byte string: reads
// drain it then see EOF, writes are discarded.
type fuzzConn struct{ r *bytes.Reader }

func (c fuzzConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c fuzzConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c fuzzConn) Close() error                     { return nil }
func (c fuzzConn) LocalAddr() net.Addr              { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }
func (c fuzzConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Name: "@", Net: "unix"} }
func (c fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c fuzzConn) SetWriteDeadline(time.Time) error { return nil }

func fuzzServer() *Server {
	ro := newMem(1 << 20)
	ro.readOnly = true
	return &Server{
		Exports:    &mapExports{m: map[string]Backend{"d": tryMem{newMem(1 << 20)}, "ro": ro}, deny: map[string]bool{"x": true}},
		MaxPayload: 64 << 10,
		Workers:    4,
	}
}

// clientPrefix is a valid negotiation: flags, optional structured replies
// and base:allocation, then GO on export.
func clientPrefix(export string, structured bool) []byte {
	b := binary.BigEndian.AppendUint32(nil, 3)
	if structured {
		b = append(b, optBytes(optStructuredReply, nil)...)
		b = append(b, optBytes(optSetMetaContext, metaBytes(export, metaContextBaseAllocation))...)
	}
	return append(b, optBytes(optGo, infoBytes(export, infoName, infoBlockSize))...)
}

// FuzzOptions feeds arbitrary bytes to the negotiation as the client stream.
// Run: go test ./nbd -run '^$' -fuzz FuzzOptions -fuzztime 20s
func FuzzOptions(f *testing.F) {
	f.Add(clientPrefix("d", true))
	f.Add(clientPrefix("ro", false))
	f.Add(append(binary.BigEndian.AppendUint32(nil, 3), optBytes(optList, nil)...))
	f.Add(append(binary.BigEndian.AppendUint32(nil, 1), optBytes(optExportName, []byte("d"))...))
	f.Add(append(binary.BigEndian.AppendUint32(nil, 3), optBytes(optInfo, infoBytes("x", 1, 2, 3))...))
	f.Add(append(binary.BigEndian.AppendUint32(nil, 3), optBytes(optListMetaContext, metaBytes("d", "base:", "x"))...))
	f.Add(append(binary.BigEndian.AppendUint32(nil, 3), optBytes(optStartTLS, nil)...))
	f.Add(append(binary.BigEndian.AppendUint32(nil, 3), optBytes(optAbort, nil)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The parsers alone: accepted input re-encodes to itself.
		if len(data) > 4 {
			if r, ok := parseInfoRequest(data[4:]); ok && !bytes.Equal(infoBytes(r.name, r.infos...), data[4:]) {
				t.Fatalf("info request does not round-trip: %q", data[4:])
			}
			if m, ok := parseMetaRequest(data[4:]); ok && !bytes.Equal(metaBytes(m.export, m.queries...), data[4:]) {
				t.Fatalf("meta request does not round-trip: %q", data[4:])
			}
		}
		fuzzServer().ServeConn(fuzzConn{bytes.NewReader(data)})
	})
}

// FuzzRequests feeds arbitrary bytes as the transmission-phase stream after
// a valid negotiation; the first byte picks the export and reply mode.
// Run: go test ./nbd -run '^$' -fuzz FuzzRequests -fuzztime 20s
func FuzzRequests(f *testing.F) {
	seed := func(mode byte, reqs ...[]byte) []byte {
		return append([]byte{mode}, bytes.Join(reqs, nil)...)
	}
	f.Add(seed(0, reqBytes(0, cmdWrite, 1, 0, 8, []byte("abcdefgh")), reqBytes(0, cmdRead, 2, 0, 8, nil)))
	f.Add(seed(1, reqBytes(cflagReqOne, cmdBlockStatus, 1, 0, 1<<20, nil), reqBytes(cflagDF, cmdRead, 2, 0, 64<<10, nil)))
	f.Add(seed(1, reqBytes(cflagFastZero|cflagNoHole, cmdWriteZeroes, 1, 4096, 4096, nil), reqBytes(0, cmdTrim, 2, 0, 8192, nil)))
	f.Add(seed(2, reqBytes(0, cmdWrite, 1, 0, 4, []byte("nope")), reqBytes(cflagFUA, cmdFlush, 2, 0, 0, nil)))
	f.Add(seed(3, reqBytes(0, cmdRead, 1, 1<<20-4, 8, nil), reqBytes(0, cmdCache, 2, 0, 100, nil), reqBytes(0, cmdDisc, 3, 0, 0, nil)))
	f.Add(seed(0, reqBytes(0, cmdWrite, 1, 0, 1<<30, nil)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		mode, stream := data[0], data[1:]
		// The validator alone: anything it accepts is inside the export
		// and within the payload limit.
		s := session{size: 1 << 20, structured: mode&1 != 0, meta: mode&1 != 0, maxPayload: 64 << 10, minBlock: 1}
		for p := stream; len(p) >= requestHeaderSize; p = p[requestHeaderSize:] {
			r, err := parseRequest(p)
			if err != nil || s.check(r) != 0 || r.typ == cmdFlush {
				continue
			}
			if r.offset+uint64(r.length) > uint64(s.size) || r.offset+uint64(r.length) < r.offset {
				t.Fatalf("accepted out-of-range request %+v", r)
			}
			if (r.typ == cmdRead || r.typ == cmdWrite) && r.length > s.maxPayload {
				t.Fatalf("accepted oversized request %+v", r)
			}
		}
		export := "d"
		if mode&2 != 0 {
			export = "ro"
		}
		in := append(clientPrefix(export, mode&1 != 0), stream...)
		fuzzServer().ServeConn(fuzzConn{bytes.NewReader(in)})
	})
}

// TestFuzzConnEndsAtEOF checks the harness itself: a session whose input
// ends returns instead of hanging, having answered what it read.
func TestFuzzConnEndsAtEOF(t *testing.T) {
	in := append(clientPrefix("d", true), reqBytes(0, cmdWrite, 1, 0, 3, []byte("xyz"))...)
	srv := fuzzServer()
	srv.ServeConn(fuzzConn{bytes.NewReader(in)})
	p := make([]byte, 3)
	be, _ := srv.Exports.Lookup(t.Context(), "d", Peer{})
	be.ReadAt(t.Context(), p, 0)
	if string(p) != "xyz" {
		t.Fatalf("write not applied: %q", p)
	}
}
