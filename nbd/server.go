package nbd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Exports resolves export names for a Server. It is the daemon's hook for
// authorization: Lookup sees who is asking (Peer) and may refuse.
type Exports interface {
	// Lookup returns the backend for name. Wrap ErrUnknownExport for a name
	// that does not exist and ErrPermission for a peer that may not use it;
	// the client sees NBD_REP_ERR_UNKNOWN and NBD_REP_ERR_POLICY. Any other
	// error is reported as unknown.
	//
	// The server calls Lookup once per NBD_OPT_INFO, NBD_OPT_GO or
	// NBD_OPT_EXPORT_NAME. If the returned Backend implements io.Closer, the
	// server closes it when done with it (after answering INFO, or when the
	// connection ends), so Lookup may return a fresh handle per call.
	Lookup(ctx context.Context, name string, peer Peer) (Backend, error)
	// List returns the exports NBD_OPT_LIST shows to peer.
	List(ctx context.Context, peer Peer) []ExportInfo
}

// ExportInfo is one entry of an export list.
type ExportInfo struct {
	Name        string
	Description string
}

// Describer is optionally implemented by a Backend to answer
// NBD_INFO_DESCRIPTION.
type Describer interface {
	Description() string
}

// Cacher is optionally implemented by a Backend to act on NBD_CMD_CACHE
// (prefetch the range). Without it the command succeeds and does nothing.
type Cacher interface {
	Cache(ctx context.Context, off, length int64) error
}

// TryReader is optionally implemented by a Backend that can often answer a
// read from memory (a cache hit). TryReadAt fills p and returns true only if
// it can do so without blocking on I/O or locks held across I/O; otherwise
// it returns false, touching nothing, and the server calls ReadAt on a
// worker. The server then answers small reads on the connection's reader
// goroutine, skipping the handoff to a worker: at 4 KiB that handoff (a
// thread wakeup and a scheduler pass) costs more than the read.
type TryReader interface {
	TryReadAt(p []byte, off int64) bool
}

// TryWriter is optionally implemented by a Backend whose writes can often
// complete without blocking (into memory, to be made durable by Flush).
// TryWriteAt either does the whole write and returns done=true with its
// result, or returns done=false having changed nothing, and the server
// calls WriteAt on a worker. p is valid only during the call. With fua the
// write must be durable on return, so most backends decline then.
type TryWriter interface {
	TryWriteAt(p []byte, off int64, fua bool) (done bool, err error)
}

// Peer identifies the client of a connection, for Exports to authorize.
type Peer struct {
	// Addr is the remote address ("@" or empty for most Unix clients).
	Addr net.Addr
	// Unix holds the socket's peer credentials (SO_PEERCRED); nil on TCP.
	Unix *UnixCred
	// TLS is true once STARTTLS completed.
	TLS bool
	// Certificate is the client certificate, set only when the TLS config
	// verified it against its ClientCAs (VerifiedChains is not empty).
	Certificate *x509.Certificate
}

// UnixCred are the credentials of the process that connected to a Unix
// socket, taken by the kernel at connect time.
type UnixCred struct {
	PID int32
	UID uint32
	GID uint32
}

// Op names an NBD command for metrics.
type Op uint8

// Ops reported to Metrics.
const (
	OpRead Op = iota
	OpWrite
	OpFlush
	OpTrim
	OpWriteZeroes
	OpBlockStatus
	OpCache
	OpOther
)

var opNames = [...]string{"read", "write", "flush", "trim", "write_zeroes", "block_status", "cache", "other"}

// String returns the lower-case command name, suitable as a metric label.
func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "other"
}

func opFor(typ uint16) Op {
	switch typ {
	case cmdRead:
		return OpRead
	case cmdWrite:
		return OpWrite
	case cmdFlush:
		return OpFlush
	case cmdTrim:
		return OpTrim
	case cmdWriteZeroes:
		return OpWriteZeroes
	case cmdBlockStatus:
		return OpBlockStatus
	case cmdCache:
		return OpCache
	}
	return OpOther
}

// Metrics receives per-request observations. Implementations must be safe
// for concurrent use and fast: they run on the request path. The daemon
// adapts this to Prometheus; nbd does not import it.
type Metrics interface {
	// Request is called once per answered request. bytes is the request
	// length; errno is the NBD error value sent (0 on success).
	Request(export string, op Op, bytes int64, latency time.Duration, errno uint32)
	// Connection is called with +1 when a connection enters transmission
	// on export and -1 when it ends.
	Connection(export string, delta int)
}

// Defaults. The payload maximum matches what qemu and nbdkit accept (32 MiB);
// the byte budget lets two maximal requests be in flight per connection.
const (
	DefaultMaxPayload       = 32 << 20
	DefaultMaxInFlightBytes = 64 << 20
	DefaultWorkers          = 32
	DefaultHandshakeTimeout = 30 * time.Second
	// maxOptionLength bounds an option payload we are willing to read:
	// the largest legal one is a meta context request with a few 4 KiB
	// names. Larger ones are skipped without being stored.
	maxOptionLength = 64 << 10
	// maxOptionDrain is how much of an oversized option we skip before
	// giving up on the connection.
	maxOptionDrain = 16 << 20
)

// Server serves NBD exports. Set the fields before calling Serve; a Server
// must not be copied after first use.
type Server struct {
	// Exports resolves names. Required.
	Exports Exports
	// TLSConfig enables NBD_OPT_STARTTLS. On TCP listeners TLS is then
	// mandatory (the spec's FORCEDTLS mode); on Unix sockets it is offered.
	// To accept client certificates set ClientAuth and ClientCAs; a
	// verified certificate reaches Exports.Lookup in Peer.Certificate.
	TLSConfig *tls.Config
	// AllowInsecureTCP lets Serve accept a TCP listener without TLSConfig.
	AllowInsecureTCP bool
	// MaxPayload is the largest READ or WRITE accepted and advertised in
	// NBD_INFO_BLOCK_SIZE (default DefaultMaxPayload).
	MaxPayload uint32
	// MaxInFlightBytes bounds read and write buffers held per connection
	// (default DefaultMaxInFlightBytes; raised to MaxPayload if smaller).
	MaxInFlightBytes int64
	// Workers bounds the requests served at once per connection.
	Workers int
	// HandshakeTimeout bounds option negotiation (default 30 s).
	HandshakeTimeout time.Duration
	// DisableMultiConn stops advertising NBD_FLAG_CAN_MULTI_CONN, for
	// backends that cannot keep Flush's cross-connection promise.
	DisableMultiConn bool
	// Metrics, if set, observes every request.
	Metrics Metrics
	// ErrorLog, if set, receives connection-level failures.
	ErrorLog func(format string, args ...any)

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	done      chan struct{} // closed by Shutdown/Close
	connWG    sync.WaitGroup
}

func (s *Server) maxPayload() uint32 {
	if s.MaxPayload == 0 {
		return DefaultMaxPayload
	}
	return s.MaxPayload
}

func (s *Server) budget() int64 {
	b := s.MaxInFlightBytes
	if b <= 0 {
		b = DefaultMaxInFlightBytes
	}
	if b < int64(s.maxPayload()) {
		b = int64(s.maxPayload())
	}
	return b
}

func (s *Server) workers() int {
	if s.Workers <= 0 {
		return DefaultWorkers
	}
	return s.Workers
}

func (s *Server) handshakeTimeout() time.Duration {
	if s.HandshakeTimeout <= 0 {
		return DefaultHandshakeTimeout
	}
	return s.HandshakeTimeout
}

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog(format, args...)
	}
}

func (s *Server) init() {
	if s.done == nil {
		s.done = make(chan struct{})
		s.listeners = make(map[net.Listener]struct{})
		s.conns = make(map[*conn]struct{})
	}
}

// ListenAndServe listens on network ("unix" or "tcp") and address and
// serves until Shutdown. TCP is refused without TLS unless AllowInsecureTCP.
func (s *Server) ListenAndServe(network, address string) error {
	if isTCP(network) && !s.tcpAllowed() {
		return ErrInsecureTCP
	}
	l, err := net.Listen(network, address)
	if err != nil {
		return fmt.Errorf("nbd: listen: %w", err)
	}
	return s.Serve(l)
}

func isTCP(network string) bool {
	return network == "tcp" || network == "tcp4" || network == "tcp6"
}

func (s *Server) tcpAllowed() bool { return s.TLSConfig != nil || s.AllowInsecureTCP }

// Serve accepts connections on l until Shutdown or Close, and then returns
// ErrServerClosed. It refuses (ErrInsecureTCP) a TCP listener when TLS is
// not configured and AllowInsecureTCP is false. Serve closes l.
func (s *Server) Serve(l net.Listener) error {
	if isTCP(l.Addr().Network()) && !s.tcpAllowed() {
		l.Close()
		return ErrInsecureTCP
	}
	if s.Exports == nil {
		l.Close()
		return errors.New("nbd: Server.Exports is nil")
	}
	s.mu.Lock()
	s.init()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			select {
			case <-s.done:
				return ErrServerClosed
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Temporary (EMFILE and the like): back off, keep serving.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		backoff = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.connWG.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// ServeConn serves one already accepted connection and returns when it ends.
// The daemon may use it for sockets it accepted itself; tests use it too.
func (s *Server) ServeConn(nc net.Conn) {
	s.mu.Lock()
	s.init()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	defer s.connWG.Done()
	c.serve()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting, closes connections still negotiating, lets
// connections in transmission answer the requests they already read, flushes
// the backends they wrote to, and closes them. If ctx ends first the
// remaining connections are closed at once and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.init()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.beginShutdown()
	}
	s.mu.Unlock()
	finished := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		s.closeConns()
		<-finished
		return ctx.Err()
	}
}

// Close stops the server at once: listeners and connections are closed
// without waiting for requests in flight.
func (s *Server) Close() error {
	s.mu.Lock()
	s.init()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	s.closeConns()
	s.connWG.Wait()
	return nil
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.abort()
	}
}

// closeBackend releases a handle returned by Lookup.
func closeBackend(b Backend) {
	if c, ok := b.(io.Closer); ok {
		c.Close()
	}
}
