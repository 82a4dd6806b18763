package main

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"testing"
)

// writeRecorder is a connection that keeps what is written to it and the
// size of each write.
type writeRecorder struct {
	net.Conn // nil: only Write is used
	got      bytes.Buffer
	sizes    []int
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.sizes = append(w.sizes, len(p))
	return w.got.Write(p)
}

// TestBulkConnSendsBodiesInLargeWrites: a body that reaches the
// connection as the HTTP transport hands it over (a LimitedReader) goes
// out whole, unchanged, in bulkCopySize writes rather than io.Copy's
// 32 KiB.
func TestBulkConnSendsBodiesInLargeWrites(t *testing.T) {
	src := make([]byte, 3*bulkCopySize+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	var rec writeRecorder
	c := bulkConn{&rec}
	var body io.Reader = io.LimitReader(bytes.NewReader(src), int64(len(src)))
	n, err := io.Copy(c, body) // dispatches to bulkConn.ReadFrom
	if err != nil || n != int64(len(src)) {
		t.Fatalf("copied %d of %d: %v", n, len(src), err)
	}
	if !bytes.Equal(rec.got.Bytes(), src) {
		t.Fatal("the connection got other bytes than the body")
	}
	want := []int{bulkCopySize, bulkCopySize, bulkCopySize, 12345}
	if len(rec.sizes) != len(want) {
		t.Fatalf("writes %v, want %v", rec.sizes, want)
	}
	for i := range want {
		if rec.sizes[i] != want[i] {
			t.Fatalf("writes %v, want %v", rec.sizes, want)
		}
	}
}
