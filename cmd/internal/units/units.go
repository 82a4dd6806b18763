// Package units parses the byte sizes the daemon's and the CLI's flags take.
package units

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSize reads a byte count with an optional binary suffix: 10G, 512M,
// 64KiB, 1.5T, 1073741824. K, M, G, T are powers of 1024, as for every disk
// size; a trailing B or iB is accepted.
func ParseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "i")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:len(t)-1]
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || f*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("size %q: want a byte count like 10G, 512MiB or 1073741824", v)
	}
	return int64(f * float64(mult)), nil
}
