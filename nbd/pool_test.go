package nbd

import (
	"runtime"
	"testing"
)

// TestLargeBuffersSurviveGarbageCollection: a large buffer put back is
// handed out again after collections that would have emptied a sync.Pool,
// so a busy server does not write into fresh memory after every GC.
func TestLargeBuffersSurviveGarbageCollection(t *testing.T) {
	const n = 8 << 20 // a class no other test uses
	b := getBuf(n)
	putBuf(b)
	runtime.GC()
	runtime.GC()
	if again := getBuf(n); again != b {
		t.Fatal("a pooled 8 MiB buffer was lost to garbage collection")
	}
	small := getBuf(4096)
	if cap(*small) != 4096 || len(*small) != 4096 {
		t.Fatalf("4 KiB buffer: len %d cap %d", len(*small), cap(*small))
	}
}
