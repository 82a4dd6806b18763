package imagefile

import "testing"

// TestExtentListIsBounded: a map of alternating runs longer than
// maxExtents folds the rest into data (always a safe answer) and still
// tiles the disk, so a hostile file cannot make Extents allocate without
// bound.
func TestExtentListIsBounded(t *testing.T) {
	var b extentBuilder
	const n = maxExtents + 1000
	for i := int64(0); i < n; i++ {
		b.add(i*512, 512, i%2 == 1)
	}
	out := b.finish(n * 512)
	if len(out) > maxExtents {
		t.Fatalf("%d extents, cap is %d", len(out), maxExtents)
	}
	var at int64
	for _, e := range out {
		if e.Offset != at {
			t.Fatalf("extent %+v does not continue at %d", e, at)
		}
		// A run marked zero must consist of odd (zero) units only.
		if e.Zero && (e.Length != 512 || (e.Offset/512)%2 != 1) {
			t.Fatalf("extent %+v is marked zero but covers data", e)
		}
		at += e.Length
	}
	if at != n*512 {
		t.Fatalf("extents end at %d, want %d", at, n*512)
	}
	if last := out[len(out)-1]; last.Zero || last.Length < 1000*512 {
		t.Fatalf("the overflow was not folded into one data run: %+v", last)
	}
}
