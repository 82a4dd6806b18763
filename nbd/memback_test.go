package nbd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memBackend is a sparse in-memory disk: 4 KiB blocks, absent blocks are
// holes. Extents reports them, so block status and hole chunks mean something.
type memBackend struct {
	size     int64
	readOnly bool
	desc     string

	mu     sync.RWMutex
	blocks map[int64][]byte

	flushes atomic.Int64
	writes  atomic.Int64
	closed  atomic.Int64
}

const memBlock = 4096

func newMem(size int64) *memBackend {
	return &memBackend{size: size, blocks: make(map[int64][]byte)}
}

func (m *memBackend) Size() int64    { return m.size }
func (m *memBackend) ReadOnly() bool { return m.readOnly }
func (m *memBackend) Description() string {
	return m.desc
}

func (m *memBackend) ReadAt(_ context.Context, p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > m.size {
		return fmt.Errorf("read %d+%d: %w", off, len(p), ErrInvalid)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	for len(p) > 0 {
		bi, bo := off/memBlock, int(off%memBlock)
		n := min(len(p), memBlock-bo)
		if b, ok := m.blocks[bi]; ok {
			copy(p[:n], b[bo:])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (m *memBackend) WriteAt(_ context.Context, p []byte, off int64, _ bool) error {
	if m.readOnly {
		return ErrPermission
	}
	if off < 0 || off+int64(len(p)) > m.size {
		return ErrNoSpace
	}
	m.writes.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(p) > 0 {
		bi, bo := off/memBlock, int(off%memBlock)
		n := min(len(p), memBlock-bo)
		b, ok := m.blocks[bi]
		if !ok {
			b = make([]byte, memBlock)
			m.blocks[bi] = b
		}
		copy(b[bo:], p[:n])
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (m *memBackend) Flush(context.Context) error {
	m.flushes.Add(1)
	return nil
}

// punch zeroes a range, deallocating whole blocks.
func (m *memBackend) punch(off, length int64, dealloc bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	end := off + length
	for off < end {
		bi, bo := off/memBlock, off%memBlock
		n := min(end-off, memBlock-bo)
		if b, ok := m.blocks[bi]; ok {
			if n == memBlock && dealloc {
				delete(m.blocks, bi)
			} else {
				clear(b[bo : bo+n])
			}
		} else if !dealloc {
			m.blocks[bi] = make([]byte, memBlock)
		}
		off += n
	}
}

func (m *memBackend) Trim(_ context.Context, off, length int64, _ bool) error {
	m.punch(off, length, true)
	return nil
}

// WriteZeroes is fast only when it may deallocate, so FAST_ZERO with
// NO_HOLE reports ErrNotFast: both answers can be tested.
func (m *memBackend) WriteZeroes(_ context.Context, off, length int64, mayTrim, fastOnly, _ bool) error {
	if fastOnly && !mayTrim {
		return ErrNotFast
	}
	m.punch(off, length, mayTrim)
	return nil
}

func (m *memBackend) Extents(_ context.Context, off, length int64) ([]Extent, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Extent
	end := min(off+length, m.size)
	for off < end {
		bi, bo := off/memBlock, off%memBlock
		n := min(end-off, memBlock-bo)
		_, ok := m.blocks[bi]
		if k := len(out) - 1; k >= 0 && out[k].Hole == !ok {
			out[k].Length += n
		} else {
			out = append(out, Extent{Length: n, Hole: !ok, Zero: !ok})
		}
		off += n
	}
	return out, nil
}

// reset drops all data.
func (m *memBackend) reset() {
	m.mu.Lock()
	clear(m.blocks)
	m.mu.Unlock()
}

// snapshot returns the whole content.
func (m *memBackend) snapshot() []byte {
	p := make([]byte, m.size)
	m.ReadAt(context.Background(), p, 0)
	return p
}

// fill writes data at off, for setting up fixtures.
func (m *memBackend) fill(off int64, data []byte) {
	ro := m.readOnly
	m.readOnly = false
	if err := m.WriteAt(context.Background(), data, off, false); err != nil {
		panic(err)
	}
	m.readOnly = ro
}

// tryMem adds TryReader to a memBackend, declining one block in three so
// that both the inline path and its fallback to a worker run.
type tryMem struct{ *memBackend }

func (t tryMem) TryReadAt(p []byte, off int64) bool {
	if (off/memBlock)%3 == 0 {
		return false
	}
	return t.ReadAt(context.Background(), p, off) == nil
}

// TryWriteAt declines the same blocks, and FUA writes.
func (t tryMem) TryWriteAt(p []byte, off int64, fua bool) (bool, error) {
	if (off/memBlock)%3 == 0 || fua {
		return false, nil
	}
	return true, t.WriteAt(context.Background(), p, off, fua)
}

// closingBackend counts Close calls, to check the io.Closer contract.
type closingBackend struct{ *memBackend }

func (c closingBackend) Close() error { c.closed.Add(1); return nil }

// mapExports serves a fixed set of backends and records who asked.
type mapExports struct {
	mu    sync.Mutex
	m     map[string]Backend
	deny  map[string]bool
	peers []Peer
}

func (e *mapExports) Lookup(_ context.Context, name string, peer Peer) (Backend, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.peers = append(e.peers, peer)
	if e.deny[name] {
		return nil, fmt.Errorf("export %q: %w", name, ErrPermission)
	}
	b, ok := e.m[name]
	if !ok {
		return nil, fmt.Errorf("export %q: %w", name, ErrUnknownExport)
	}
	return b, nil
}

func (e *mapExports) List(context.Context, Peer) []ExportInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []ExportInfo
	for name := range e.m {
		out = append(out, ExportInfo{Name: name, Description: "test export " + name})
	}
	return out
}

func (e *mapExports) lastPeer() Peer {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.peers) == 0 {
		return Peer{}
	}
	return e.peers[len(e.peers)-1]
}

// testServer runs srv on a Unix socket in a temp dir until the test ends.
type testServer struct {
	srv     *Server
	exports *mapExports
	sock    string
	dir     string
}

func startServer(t testing.TB, backends map[string]Backend, tweak func(*Server)) *testServer {
	t.Helper()
	dir := t.TempDir()
	// Unix socket paths are limited to 108 bytes; t.TempDir can be long.
	if len(dir) > 80 {
		d, err := os.MkdirTemp("", "nbd")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	sock := filepath.Join(dir, "nbd.sock")
	ex := &mapExports{m: backends, deny: map[string]bool{}}
	srv := &Server{Exports: ex, ErrorLog: func(f string, a ...any) { t.Logf(f, a...) }}
	if tweak != nil {
		tweak(srv)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return &testServer{srv: srv, exports: ex, sock: sock, dir: dir}
}

func (ts *testServer) uri(name string) string {
	return "nbd+unix:///" + name + "?socket=" + ts.sock
}

// pattern returns deterministic pseudo-random bytes.
func pattern(seed uint64, n int) []byte {
	p := make([]byte, n)
	x := seed*0x9e3779b97f4a7c15 + 1
	for i := range p {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p[i] = byte(x)
	}
	return p
}
