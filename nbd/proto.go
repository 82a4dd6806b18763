package nbd

import (
	"encoding/binary"
	"errors"
)

// Wire constants from the NBD protocol (doc/proto.md in
// github.com/NetworkBlockDevice/nbd). Names follow the spec without the NBD_
// prefix so that a reader can grep the spec for them.
const (
	magicNBD        uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt        uint64 = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply   uint64 = 0x0003e889045565a9
	magicRequest    uint32 = 0x25609513
	magicSimple     uint32 = 0x67446698
	magicStructured uint32 = 0x668e33ef

	// Handshake flags (server) and client flags.
	flagFixedNewstyle         uint16 = 1 << 0
	flagNoZeroes              uint16 = 1 << 1
	clientFixedNewsty         uint32 = 1 << 0
	clientNoZeroes            uint32 = 1 << 1
	clientKnownFlags                 = clientFixedNewsty | clientNoZeroes
	exportNameZeroPad                = 124
	requestHeaderSize                = 28
	simpleReplySize                  = 16
	structuredHdrSize                = 20
	optionHeaderSize                 = 16
	optionReplyHdrSize               = 20
	metaContextBaseAllocation        = "base:allocation"
	metaContextIDBase         uint32 = 1
)

// Option types.
const (
	optExportName      uint32 = 1
	optAbort           uint32 = 2
	optList            uint32 = 3
	optStartTLS        uint32 = 5
	optInfo            uint32 = 6
	optGo              uint32 = 7
	optStructuredReply uint32 = 8
	optListMetaContext uint32 = 9
	optSetMetaContext  uint32 = 10
)

// Option reply types.
const (
	repAck         uint32 = 1
	repServer      uint32 = 2
	repInfo        uint32 = 3
	repMetaContext uint32 = 4
	repErrUnsup    uint32 = 1<<31 + 1
	repErrPolicy   uint32 = 1<<31 + 2
	repErrInvalid  uint32 = 1<<31 + 3
	repErrTLSReqd  uint32 = 1<<31 + 5
	repErrUnknown  uint32 = 1<<31 + 6
	repErrShutdown uint32 = 1<<31 + 7
	repErrTooBig   uint32 = 1<<31 + 9
)

// NBD_INFO types.
const (
	infoExport      uint16 = 0
	infoName        uint16 = 1
	infoDescription uint16 = 2
	infoBlockSize   uint16 = 3
)

// Transmission flags.
const (
	tflagHasFlags        uint16 = 1 << 0
	tflagReadOnly        uint16 = 1 << 1
	tflagSendFlush       uint16 = 1 << 2
	tflagSendFUA         uint16 = 1 << 3
	tflagSendTrim        uint16 = 1 << 5
	tflagSendWriteZeroes uint16 = 1 << 6
	tflagSendDF          uint16 = 1 << 7
	tflagCanMultiConn    uint16 = 1 << 8
	tflagSendCache       uint16 = 1 << 10
	tflagSendFastZero    uint16 = 1 << 11
)

// Commands.
const (
	cmdRead        uint16 = 0
	cmdWrite       uint16 = 1
	cmdDisc        uint16 = 2
	cmdFlush       uint16 = 3
	cmdTrim        uint16 = 4
	cmdCache       uint16 = 5
	cmdWriteZeroes uint16 = 6
	cmdBlockStatus uint16 = 7
)

// Command flags.
const (
	cflagFUA      uint16 = 1 << 0
	cflagNoHole   uint16 = 1 << 1
	cflagDF       uint16 = 1 << 2
	cflagReqOne   uint16 = 1 << 3
	cflagFastZero uint16 = 1 << 4
)

// Structured reply flags and chunk types.
const (
	replyFlagDone    uint16 = 1 << 0
	chunkNone        uint16 = 0
	chunkOffsetData  uint16 = 1
	chunkOffsetHole  uint16 = 2
	chunkBlockStatus uint16 = 5
	chunkError       uint16 = 1<<15 + 1
)

// base:allocation status flags.
const (
	stateHole uint32 = 1 << 0
	stateZero uint32 = 1 << 1
)

// errBadMagic ends a connection whose request stream lost framing.
var errBadMagic = errors.New("nbd: bad request magic")

// request is one transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
}

// parseRequest decodes a request header. Only the magic can make it fail:
// every other field is judged later against the negotiated state.
func parseRequest(b []byte) (request, error) {
	if len(b) < requestHeaderSize {
		return request{}, errBadMagic
	}
	if binary.BigEndian.Uint32(b[0:4]) != magicRequest {
		return request{}, errBadMagic
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:6]),
		typ:    binary.BigEndian.Uint16(b[6:8]),
		cookie: binary.BigEndian.Uint64(b[8:16]),
		offset: binary.BigEndian.Uint64(b[16:24]),
		length: binary.BigEndian.Uint32(b[24:28]),
	}, nil
}

// session is the part of the negotiated state that decides which requests
// are valid.
type session struct {
	size       int64
	readOnly   bool
	structured bool
	meta       bool // base:allocation selected
	maxPayload uint32
	minBlock   uint32 // advertised minimum block size; 1 means any
}

// check validates a request against the negotiated state and returns the
// NBD error value the spec asks for, or 0. It never looks at the payload.
func (s *session) check(r request) uint32 {
	allowed := cflagFUA // valid on every command once SEND_FUA is advertised
	switch r.typ {
	case cmdRead:
		if s.structured {
			allowed |= cflagDF
		}
	case cmdWrite, cmdTrim, cmdFlush, cmdCache:
	case cmdWriteZeroes:
		if !s.readOnly {
			allowed |= cflagNoHole | cflagFastZero
		}
	case cmdBlockStatus:
		allowed |= cflagReqOne
	default:
		return errnoINVAL
	}
	if r.flags&^allowed != 0 {
		return errnoINVAL
	}
	switch r.typ {
	case cmdFlush:
		return 0
	case cmdWrite, cmdTrim, cmdWriteZeroes:
		if s.readOnly {
			return errnoPERM
		}
	case cmdBlockStatus:
		if !s.meta {
			return errnoINVAL
		}
	}
	if s.minBlock > 1 && (r.offset|uint64(r.length))%uint64(s.minBlock) != 0 {
		return errnoINVAL
	}
	if (r.typ == cmdRead || r.typ == cmdWrite) && r.length > s.maxPayload {
		// Past the advertised maximum payload: refused before any buffer
		// is allocated for it.
		return errnoINVAL
	}
	end := r.offset + uint64(r.length)
	if end < r.offset || end > uint64(s.size) {
		switch r.typ {
		case cmdWrite, cmdTrim, cmdWriteZeroes:
			return errnoNOSPC
		}
		return errnoINVAL
	}
	if r.length == 0 && r.typ == cmdBlockStatus {
		return errnoINVAL
	}
	return 0
}

// infoRequest is the payload of NBD_OPT_INFO and NBD_OPT_GO.
type infoRequest struct {
	name  string
	infos []uint16
}

// parseInfoRequest decodes NBD_OPT_INFO/GO data: u32 name length, name, u16
// count, count u16 info types. The lengths must account for every byte.
func parseInfoRequest(b []byte) (infoRequest, bool) {
	if len(b) < 6 {
		return infoRequest{}, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-6) {
		return infoRequest{}, false
	}
	name := string(b[4 : 4+n])
	rest := b[4+n:]
	count := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*count {
		return infoRequest{}, false
	}
	infos := make([]uint16, count)
	for i := range infos {
		infos[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return infoRequest{name: name, infos: infos}, true
}

// metaRequest is the payload of NBD_OPT_LIST/SET_META_CONTEXT.
type metaRequest struct {
	export  string
	queries []string
}

// parseMetaRequest decodes u32 export length, export, u32 query count, then
// count times (u32 length, query).
func parseMetaRequest(b []byte) (metaRequest, bool) {
	var m metaRequest
	if len(b) < 8 {
		return m, false
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	if uint64(n) > uint64(len(b)-4) {
		return m, false
	}
	m.export = string(b[:n])
	b = b[n:]
	count := binary.BigEndian.Uint32(b)
	b = b[4:]
	// Each query needs at least its 4-byte length: refuse counts the
	// payload cannot hold before allocating for them.
	if uint64(count)*4 > uint64(len(b)) {
		return m, false
	}
	m.queries = make([]string, 0, count)
	for range count {
		if len(b) < 4 {
			return m, false
		}
		q := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(q) > uint64(len(b)) {
			return m, false
		}
		m.queries = append(m.queries, string(b[:q]))
		b = b[q:]
	}
	return m, len(b) == 0
}

// matchMeta reports whether a meta context query selects base:allocation.
// We know one context; a query names it exactly or asks for its whole
// namespace ("base:"). An empty query list (LIST only) means all contexts.
func matchMeta(q string) bool {
	return q == metaContextBaseAllocation || q == "base:"
}
