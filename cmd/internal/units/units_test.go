package units

import "testing"

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1073741824", 1 << 30, true},
		{"10G", 10 << 30, true},
		{"512M", 512 << 20, true},
		{"64KiB", 64 << 10, true},
		{"64KB", 64 << 10, true},
		{"64kb", 0, false}, // b is bits: refused rather than guessed
		{"1.5T", 3 << 39, true},
		{" 4K ", 4 << 10, true},
		{"", 0, false},
		{"G", 0, false},
		{"-1G", 0, false},
		{"ten", 0, false},
		{"9000000T", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if tc.ok && (err != nil || got != tc.want) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if !tc.ok && err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", tc.in, got)
		}
	}
}
