package nbd

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// gateBackend blocks writes until the gate opens.
type gateBackend struct {
	*memBackend
	entered chan struct{}
	gate    chan struct{}
}

func (g *gateBackend) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	g.entered <- struct{}{}
	<-g.gate
	return g.memBackend.WriteAt(ctx, p, off, fua)
}

func TestShutdownAnswersInFlightRequestsAndFlushes(t *testing.T) {
	g := &gateBackend{memBackend: newMem(1 << 20), entered: make(chan struct{}, 1), gate: make(chan struct{})}
	ts := startServer(t, map[string]Backend{"d": g}, nil)

	rc := dialRaw(t, "unix", ts.sock)
	rc.greet(3)
	rc.goExport("d", true, false)
	rc.queue(0, cmdWrite, 5, 0, 4, []byte("data"))
	rc.flush()
	<-g.entered

	negotiating := dialRaw(t, "unix", ts.sock)
	negotiating.greet(3)

	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(context.Background()) }()
	// A connection still negotiating is closed at once.
	negotiating.expectClosed()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(g.gate)
	rp, err := rc.readReply(nil, map[uint64]*reply{})
	if err != nil || rp.cookie != 5 || rp.errno != 0 {
		t.Fatalf("in-flight write: %+v %v", rp, err)
	}
	rc.expectClosed()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if g.flushes.Load() != 1 {
		t.Fatalf("backend flushed %d times at shutdown", g.flushes.Load())
	}
	if _, err := net.Dial("unix", ts.sock); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

func TestShutdownDeadlineClosesStuckConnections(t *testing.T) {
	g := &gateBackend{memBackend: newMem(1 << 20), entered: make(chan struct{}, 1), gate: make(chan struct{})}
	ts := startServer(t, map[string]Backend{"d": g}, nil)
	rc := dialRaw(t, "unix", ts.sock)
	rc.greet(3)
	rc.goExport("d", false, false)
	rc.queue(0, cmdWrite, 5, 0, 4, []byte("data"))
	rc.flush()
	<-g.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := ts.srv.Shutdown(ctx); err != context.Canceled {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	rc.expectClosed()
	close(g.gate) // the stuck backend call returns; Shutdown can finish
	wg.Wait()
}

type recMetrics struct {
	mu    sync.Mutex
	reqs  map[Op][3]int64 // count, bytes, errors
	conns map[string]int
}

func (m *recMetrics) Request(export string, op Op, bytes int64, _ time.Duration, errno uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.reqs[op]
	r[0]++
	r[1] += bytes
	if errno != 0 {
		r[2]++
	}
	m.reqs[op] = r
}

func (m *recMetrics) Connection(export string, delta int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns[export] += delta
}

func TestMetricsSeeEveryRequest(t *testing.T) {
	met := &recMetrics{reqs: map[Op][3]int64{}, conns: map[string]int{}}
	ts := startServer(t, map[string]Backend{"d": newMem(1 << 20)}, func(s *Server) { s.Metrics = met })
	rc := dialRaw(t, "unix", ts.sock)
	rc.greet(3)
	rc.goExport("d", false, false)
	rc.do(0, cmdWrite, 0, 4096, make([]byte, 4096))
	rc.do(0, cmdRead, 0, 8192, nil)
	rc.do(0, cmdRead, 1<<20, 512, nil) // EINVAL
	rc.do(0, cmdFlush, 0, 0, nil)
	met.mu.Lock()
	if met.conns["d"] != 1 {
		t.Errorf("connections %v", met.conns)
	}
	met.mu.Unlock()
	rc.send(reqBytes(0, cmdDisc, 0, 0, 0, nil))
	rc.expectClosed()
	ts.srv.Shutdown(context.Background())
	met.mu.Lock()
	defer met.mu.Unlock()
	if met.conns["d"] != 0 {
		t.Errorf("connections after disconnect %v", met.conns)
	}
	if got := met.reqs[OpWrite]; got != [3]int64{1, 4096, 0} {
		t.Errorf("write metrics %v", got)
	}
	if got := met.reqs[OpRead]; got != [3]int64{2, 8704, 1} {
		t.Errorf("read metrics %v", got)
	}
	if got := met.reqs[OpFlush]; got[0] != 1 {
		t.Errorf("flush metrics %v", got)
	}
	if OpBlockStatus.String() != "block_status" || Op(200).String() != "other" {
		t.Error("op names")
	}
}
