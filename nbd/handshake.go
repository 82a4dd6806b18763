package nbd

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
)

// negotiate runs the fixed newstyle handshake and option haggling. It
// returns true when the client chose an export (c.be is set) and the
// connection enters transmission; false means the connection must close
// (ABORT, a malformed or hostile handshake, a refused EXPORT_NAME).
func (c *conn) negotiate() bool {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], magicNBD)
	binary.BigEndian.PutUint64(hello[8:], magicOpt)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	c.bw.Write(hello[:])
	if c.bw.Flush() != nil {
		return false
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return false
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&^clientKnownFlags != 0 {
		// The spec asks the server to drop clients that set flags it
		// did not offer.
		return false
	}
	c.noZeroes = clientFlags&clientNoZeroes != 0

	var hdr [optionHeaderSize]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return false
		}
		if binary.BigEndian.Uint64(hdr[0:]) != magicOpt {
			return false
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		length := binary.BigEndian.Uint32(hdr[12:])
		if length > maxOptionLength {
			// Never allocate what the client claims: skip it through
			// the reader's own buffer, or give up if it is absurd.
			if opt == optExportName || length > maxOptionDrain {
				return false
			}
			if _, err := c.br.Discard(int(length)); err != nil {
				return false
			}
			if !c.optReply(opt, repErrTooBig, []byte("option payload too large")) || c.bw.Flush() != nil {
				return false
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return false
		}
		if c.tlsForced && !c.peer.TLS && opt != optStartTLS && opt != optAbort {
			if opt == optExportName {
				return false // cannot answer with an error: close
			}
			if !c.optReply(opt, repErrTLSReqd, []byte("TLS is required: send NBD_OPT_STARTTLS")) || c.bw.Flush() != nil {
				return false
			}
			continue
		}
		done, ok := c.option(opt, data)
		if !ok {
			return false
		}
		if c.bw.Flush() != nil {
			return false
		}
		if done {
			return true
		}
	}
}

// option handles one option. done means transmission starts; !ok means the
// connection must close.
func (c *conn) option(opt uint32, data []byte) (done, ok bool) {
	switch opt {
	case optExportName:
		return c.optExportName(string(data))
	case optAbort:
		c.optReply(opt, repAck, nil)
		c.bw.Flush()
		return false, false
	case optList:
		if len(data) != 0 {
			return false, c.optReply(opt, repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
		}
		for _, e := range c.srv.Exports.List(c.ctx, c.peer) {
			b := make([]byte, 4, 4+len(e.Name)+len(e.Description))
			binary.BigEndian.PutUint32(b, uint32(len(e.Name)))
			b = append(b, e.Name...)
			b = append(b, e.Description...)
			if !c.optReply(opt, repServer, b) {
				return false, false
			}
		}
		return false, c.optReply(opt, repAck, nil)
	case optStartTLS:
		return false, c.optStartTLS(data)
	case optInfo, optGo:
		return c.optInfo(opt, data)
	case optStructuredReply:
		if len(data) != 0 {
			return false, c.optReply(opt, repErrInvalid, []byte("NBD_OPT_STRUCTURED_REPLY takes no data"))
		}
		c.structured = true
		return false, c.optReply(opt, repAck, nil)
	case optListMetaContext, optSetMetaContext:
		return false, c.optMeta(opt, data)
	default:
		return false, c.optReply(opt, repErrUnsup, []byte("option not supported"))
	}
}

// optReply queues one option reply; the caller flushes.
func (c *conn) optReply(opt, typ uint32, data []byte) bool {
	var h [optionReplyHdrSize]byte
	binary.BigEndian.PutUint64(h[0:], magicOptReply)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	c.bw.Write(h[:])
	_, err := c.bw.Write(data)
	return err == nil
}

func (c *conn) lookup(name string) (Backend, error) {
	be, err := c.srv.Exports.Lookup(c.ctx, name, c.peer)
	if err == nil && be == nil {
		err = ErrUnknownExport
	}
	return be, err
}

func (c *conn) optExportName(name string) (done, ok bool) {
	be, err := c.lookup(name)
	if err != nil {
		c.srv.logf("nbd: export %q refused: %v", name, err)
		return false, false
	}
	c.startTransmission(name, be)
	var b [10 + exportNameZeroPad]byte
	binary.BigEndian.PutUint64(b[0:], uint64(c.sess.size))
	binary.BigEndian.PutUint16(b[8:], c.flags)
	n := len(b)
	if c.noZeroes {
		n = 10
	}
	if _, err := c.bw.Write(b[:n]); err != nil {
		return false, false
	}
	return true, true
}

func (c *conn) optInfo(opt uint32, data []byte) (done, ok bool) {
	req, valid := parseInfoRequest(data)
	if !valid {
		return false, c.optReply(opt, repErrInvalid, []byte("malformed NBD_OPT_INFO/GO payload"))
	}
	be, err := c.lookup(req.name)
	if err != nil {
		typ, msg := repErrUnknown, "unknown export"
		switch {
		case errors.Is(err, ErrPermission):
			typ, msg = repErrPolicy, "access to this export denied"
		case errors.Is(err, ErrShutdown):
			typ, msg = repErrShutdown, "server shutting down"
		case !errors.Is(err, ErrUnknownExport):
			c.srv.logf("nbd: lookup %q: %v", req.name, err)
			msg = "export unavailable"
		}
		return false, c.optReply(opt, typ, []byte(msg))
	}
	sess, flags := c.sessionFor(be)

	var b [18]byte
	binary.BigEndian.PutUint16(b[0:], infoExport)
	binary.BigEndian.PutUint64(b[2:], uint64(sess.size))
	binary.BigEndian.PutUint16(b[10:], flags)
	c.optReply(opt, repInfo, b[:12])
	// Block sizes are always sent: our minimum is 1 unless the backend
	// says otherwise, which clients that did not ask can still honour.
	minB, prefB := blockSizes(be)
	binary.BigEndian.PutUint16(b[0:], infoBlockSize)
	binary.BigEndian.PutUint32(b[2:], minB)
	binary.BigEndian.PutUint32(b[6:], prefB)
	binary.BigEndian.PutUint32(b[10:], sess.maxPayload)
	c.optReply(opt, repInfo, b[:14])
	for _, t := range req.infos {
		switch t {
		case infoName:
			p := make([]byte, 2, 2+len(req.name))
			binary.BigEndian.PutUint16(p, infoName)
			c.optReply(opt, repInfo, append(p, req.name...))
		case infoDescription:
			if d, ok := be.(Describer); ok {
				desc := d.Description()
				p := make([]byte, 2, 2+len(desc))
				binary.BigEndian.PutUint16(p, infoDescription)
				c.optReply(opt, repInfo, append(p, desc...))
			}
		}
	}
	if !c.optReply(opt, repAck, nil) {
		closeBackend(be)
		return false, false
	}
	if opt == optInfo {
		closeBackend(be)
		return false, true
	}
	c.startTransmission(req.name, be)
	return true, true
}

// optMeta answers LIST_META_CONTEXT and SET_META_CONTEXT. The only context
// is base:allocation; its id is metaContextIDBase.
func (c *conn) optMeta(opt uint32, data []byte) bool {
	if !c.structured {
		return c.optReply(opt, repErrInvalid, []byte("negotiate structured replies first"))
	}
	m, valid := parseMetaRequest(data)
	if !valid {
		return c.optReply(opt, repErrInvalid, []byte("malformed meta context request"))
	}
	sel := opt == optListMetaContext && len(m.queries) == 0
	for _, q := range m.queries {
		sel = sel || matchMeta(q)
	}
	if opt == optSetMetaContext {
		c.metaBase = sel
		c.metaExport = m.export
	}
	if sel {
		id := uint32(0) // LIST: the id is reserved and should be 0
		if opt == optSetMetaContext {
			id = metaContextIDBase
		}
		p := make([]byte, 4, 4+len(metaContextBaseAllocation))
		binary.BigEndian.PutUint32(p, id)
		if !c.optReply(opt, repMetaContext, append(p, metaContextBaseAllocation...)) {
			return false
		}
	}
	return c.optReply(opt, repAck, nil)
}

func (c *conn) optStartTLS(data []byte) bool {
	switch {
	case len(data) != 0:
		return c.optReply(optStartTLS, repErrInvalid, []byte("NBD_OPT_STARTTLS takes no data"))
	case c.srv.TLSConfig == nil:
		return c.optReply(optStartTLS, repErrUnsup, []byte("TLS not configured"))
	case c.peer.TLS:
		return c.optReply(optStartTLS, repErrInvalid, []byte("TLS already active"))
	}
	if !c.optReply(optStartTLS, repAck, nil) || c.bw.Flush() != nil {
		return false
	}
	if c.br.Buffered() != 0 {
		// The client sent data it had no right to send before the TLS
		// handshake; it would be read as plaintext.
		return false
	}
	tc := tls.Server(c.raw, c.srv.TLSConfig)
	// The raw connection's deadline (the handshake timeout) bounds this.
	if err := tc.HandshakeContext(context.Background()); err != nil {
		c.srv.logf("nbd: TLS handshake with %v: %v", c.raw.RemoteAddr(), err)
		return false
	}
	st := tc.ConnectionState()
	c.peer.TLS = true
	if len(st.VerifiedChains) > 0 && len(st.VerifiedChains[0]) > 0 {
		c.peer.Certificate = st.VerifiedChains[0][0]
	}
	c.mu.Lock()
	c.nc = tc
	c.mu.Unlock()
	c.br.Reset(tc)
	c.bw.Reset(tc)
	// Nothing negotiated in plaintext may carry over: a man in the middle
	// could have chosen it.
	c.structured = false
	c.metaBase = false
	c.metaExport = ""
	return true
}

// blockSizes returns the minimum and preferred block sizes to advertise.
func blockSizes(be Backend) (minimum, preferred uint32) {
	minimum, preferred = 1, 4096
	if bs, ok := be.(BlockSizer); ok {
		mn, pr, _ := bs.BlockSizes()
		if mn >= 1 && mn <= 64<<10 && mn&(mn-1) == 0 {
			minimum = mn
		}
		if pr >= minimum && pr&(pr-1) == 0 && pr <= 32<<20 {
			preferred = pr
		}
	}
	return minimum, max(preferred, minimum)
}

// sessionFor computes the transmission state and flags the client gets for
// be under the options negotiated so far.
func (c *conn) sessionFor(be Backend) (session, uint16) {
	s := session{
		size:       be.Size(),
		readOnly:   be.ReadOnly(),
		structured: c.structured,
		maxPayload: c.srv.maxPayload(),
	}
	s.minBlock, _ = blockSizes(be)
	if bs, ok := be.(BlockSizer); ok {
		if _, _, mx := bs.BlockSizes(); mx >= s.minBlock && mx < s.maxPayload && mx >= 4096 {
			s.maxPayload = mx
		}
	}
	f := tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendCache
	if !c.srv.DisableMultiConn {
		f |= tflagCanMultiConn
	}
	if s.structured {
		f |= tflagSendDF
	}
	if s.readOnly {
		f |= tflagReadOnly
	} else {
		f |= tflagSendTrim | tflagSendWriteZeroes | tflagSendFastZero
	}
	return s, f
}

// startTransmission fixes the export and the session for the connection.
func (c *conn) startTransmission(name string, be Backend) {
	c.be = be
	c.export = name
	c.sess, c.flags = c.sessionFor(be)
	// Contexts selected for another export name do not apply to this one.
	c.sess.meta = c.metaBase && c.metaExport == name
}
