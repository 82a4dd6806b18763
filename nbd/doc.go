// Package nbd is a Network Block Device server: it speaks the NBD protocol
// (doc/proto.md in github.com/NetworkBlockDevice/nbd) to qemu, libnbd, nbdkit's
// clients and the kernel, and serves each export from a Backend. It imports
// nothing else of strata, so it is tested with an in-memory backend and could
// serve anything block-shaped.
//
// # Model
//
// A Server accepts connections (Serve on a Unix or TCP listener). Each
// connection negotiates (fixed newstyle, NO_ZEROES; options EXPORT_NAME,
// ABORT, LIST, INFO, GO, STRUCTURED_REPLY, LIST/SET_META_CONTEXT for
// base:allocation, STARTTLS), picks one export by name through the Exports
// hook, and then carries requests for that export until it disconnects.
// Exports.Lookup is where the daemon authorizes: it sees the Peer (Unix
// socket credentials, or the verified TLS client certificate) and returns a
// Backend, or ErrUnknownExport / ErrPermission.
//
// In transmission one reader goroutine per connection parses requests and
// hands them to worker goroutines (at most Server.Workers, started on demand
// and kept for the connection); at most Server.MaxInFlightBytes of read and
// write data are held. Replies go out as requests finish, out of order,
// under one write lock per connection; replies that finish together share
// one write syscall. Small reads and writes that the backend can serve
// without blocking (TryReader, TryWriter) are answered by the reader itself,
// which saves a thread wakeup per request (writes also skip a copy: the
// backend sees the payload in the reader's buffer). Buffers are pooled; the request path allocates nothing.
// Several connections may serve the same export (NBD_FLAG_CAN_MULTI_CONN).
//
// # The Backend contract
//
//   - Concurrency: every method may be called concurrently with every other,
//     from many connections and many requests per connection. Overlapping
//     writes in flight at the same time land in no defined order, as on any
//     disk; a read concurrent with a write to the same range may see either.
//   - Bounds: the server checks offsets and lengths against Size before
//     calling, refuses writes, trims and zeroing on a ReadOnly backend, and
//     never calls with length 0 (except Flush, which has none).
//   - Durability: Flush returns after every write, trim and zeroing that had
//     completed (returned nil) before Flush was called is durable, whichever
//     connection issued it. This cross-connection promise is what lets the
//     server advertise CAN_MULTI_CONN (Server.DisableMultiConn turns that
//     off for a backend that cannot keep it). fua=true makes that one
//     operation durable before it returns. The server also flushes a
//     connection's backend when the connection ends after writing.
//   - Reads: ReadAt fills all of p or fails; a corrupt block is an error,
//     never data. Trimmed and zeroed ranges read as zeros.
//   - Extents reports allocation for [off, off+length) in order from off,
//     covering a prefix of the range (it may stop early; the client asks
//     again). Hole means not allocated and implies zeros; Zero means reads as
//     zeros even if allocated. The server answers NBD_CMD_BLOCK_STATUS from
//     it and, for reads of 64 KiB or more with structured replies, sends
//     zero runs as hole chunks instead of data.
//   - WriteZeroes: mayTrim allows deallocating (the client did not send
//     NO_HOLE); fastOnly (FAST_ZERO) asks for ErrNotFast instead of slow work.
//   - Optional interfaces: BlockSizer (NBD_INFO_BLOCK_SIZE; a minimum above 1
//     makes the server reject unaligned requests), Describer (export
//     description), Cacher (NBD_CMD_CACHE), TryReader and TryWriter (a read
//     or write that cannot block, e.g. a cache hit or a write into memory;
//     the backend declines by returning false and gets the normal call on a
//     worker), io.Closer (the server closes the handle Lookup returned when
//     done with it).
//
// # Errors
//
// Backend errors become NBD error values in one place (errnoFor), matched
// with errors.Is so they may be wrapped:
//
//	ErrNotFast, syscall.ENOTSUP           -> NBD_ENOTSUP (95)
//	ErrNoSpace, ENOSPC, EDQUOT, EFBIG     -> NBD_ENOSPC (28)
//	ErrInvalid, EINVAL                    -> NBD_EINVAL (22)
//	ErrPermission, EPERM, EACCES, EROFS   -> NBD_EPERM (1)
//	ErrShutdown, context.Canceled         -> NBD_ESHUTDOWN (108)
//	anything else                         -> NBD_EIO (5), and logged
//
// The server itself answers bad requests without calling the backend: reads,
// block status and cache past the end get EINVAL, writes, trims and zeroing
// past the end ENOSPC, writes to a read-only export EPERM, READ or WRITE
// longer than the advertised maximum payload EINVAL (a write's payload is
// skipped, never buffered), unknown commands and flags not valid for the
// command or not negotiated (DF without structured replies, FAST_ZERO on a
// read-only export) EINVAL. A request with a bad magic, or a malformed
// handshake, ends the connection. A panic in a backend becomes EIO.
//
// # TLS
//
// With Server.TLSConfig set, STARTTLS is offered. On TCP connections TLS is
// then required (options other than STARTTLS and ABORT get
// NBD_REP_ERR_TLS_REQD, EXPORT_NAME closes); on Unix sockets it is optional.
// Serve refuses a TCP listener without TLS unless AllowInsecureTCP is set.
//
// # Shutdown
//
// Server.Shutdown stops accepting, closes connections still negotiating,
// stops reading new requests, answers every request already read, flushes
// backends that were written and closes. Metrics, if set, observes each
// request (export, op, bytes, latency, error) and connection counts, so the
// daemon can export them without this package importing Prometheus.
package nbd
