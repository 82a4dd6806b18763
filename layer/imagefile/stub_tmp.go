package imagefile

import "io"

func openVMDK(r io.ReaderAt, size int64) (Image, error) { return nil, ErrInvalid }
func openVHD(r io.ReaderAt, size int64) (Image, error)  { return nil, ErrInvalid }
