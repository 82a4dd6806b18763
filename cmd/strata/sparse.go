package main

import (
	"bytes"
	"os"
)

// sparseBlock is the granularity at which sparseFile leaves holes: the
// page and file-system block size.
const sparseBlock = 4096

var zeroBlock [sparseBlock]byte

// sparseFile writes a stream to a new file sequentially but leaves a hole
// wherever a whole aligned block of it is zeros, as `cp --sparse=always`
// does. A raw image is typically half holes: exported, it then takes the
// disk space of its data, not of its size, and the zeros cost no writes.
// finish sets the file's length, which trailing holes do not.
type sparseFile struct {
	f   *os.File
	off int64 // bytes of the stream so far
}

// Write writes p at the stream's offset, skipping whole zero blocks.
func (s *sparseFile) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		// The run of non-zero blocks (or block pieces) ahead, written at
		// once; then the zero blocks after it, skipped.
		data := 0
		for data < len(p) {
			end := min(len(p), data+sparseBlock-int((s.off+int64(data))%sparseBlock))
			if end-data == sparseBlock && bytes.Equal(p[data:end], zeroBlock[:]) {
				break
			}
			data = end
		}
		if data > 0 {
			if _, err := s.f.WriteAt(p[:data], s.off); err != nil {
				return n - len(p), err
			}
			s.off += int64(data)
			p = p[data:]
		}
		for len(p) >= sparseBlock && s.off%sparseBlock == 0 && bytes.Equal(p[:sparseBlock], zeroBlock[:]) {
			s.off += sparseBlock
			p = p[sparseBlock:]
		}
	}
	return n, nil
}

// finish gives the file the stream's length.
func (s *sparseFile) finish() error {
	return s.f.Truncate(s.off)
}
