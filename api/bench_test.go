package api

import (
	"bytes"
	"context"
	"strconv"
	"testing"

	"strata/api/apitypes"
)

// BenchmarkCreateDiskOnPooledImage measures the API path of making a disk
// on a pooled image (validation, quota count, catalog write, layer
// CreateDisk, operation record, all in one transaction). DESIGN §6 wants
// it O(1) in the image size: compare -benchtime runs with imageMiB.
func BenchmarkCreateDiskOnPooledImage(b *testing.B) {
	for _, imageMiB := range []int{1, 64} {
		b.Run(byteSize(imageMiB), func(b *testing.B) {
			e := newBenchEnv(b)
			f := e.folderB(b, "bench")
			data := pattern(imageMiB<<20, 1)
			op, err := e.svc.UploadImage(context.Background(), root, "", UploadRequest{FolderID: f, Pooled: true}, bytes.NewReader(data))
			if err != nil {
				b.Fatal(err)
			}
			op, err = e.svc.WaitOperation(context.Background(), root, op.ID)
			if err != nil || op.Error != nil {
				b.Fatal(err, op.Error)
			}
			im := op.Metadata.ImageID
			b.ResetTimer()
			for range b.N {
				if _, err := e.svc.CreateDisk(root, "", apitypes.CreateDiskRequest{FolderID: f, ImageID: im}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUpload measures an import through the API: spooling the body
// to a file, format detection, the layer import, the checksum and the
// commit. Half of the pattern is data, half zeros.
func BenchmarkUpload(b *testing.B) {
	e := newBenchEnv(b)
	f := e.folderB(b, "bench")
	data := pattern(64<<20, 2)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := range b.N {
		data[0] = byte(i) // not all a dedup hit
		op, err := e.svc.UploadImage(context.Background(), root, "", UploadRequest{FolderID: f}, bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		if op, err = e.svc.WaitOperation(context.Background(), root, op.ID); err != nil || op.Error != nil {
			b.Fatal(err, op.Error)
		}
	}
}

func byteSize(mib int) string { return strconv.Itoa(mib) + "MiB" }

func newBenchEnv(b *testing.B) *env {
	e := &env{dir: b.TempDir(), defaultChunks: true, cfg: Config{SpoolDir: b.TempDir(), DefaultQuotas: map[string]int64{
		apitypes.QuotaDiskPoolsCount: 10, apitypes.QuotaDisksCount: 1 << 40, apitypes.QuotaImagesCount: 1 << 40, apitypes.QuotaImagesSize: 1 << 60,
	}}}
	e.openTB(b)
	b.Cleanup(func() { e.closeTB(b) })
	return e
}

func (e *env) folderB(b *testing.B, name string) string {
	op, err := e.svc.CreateFolder(root, "", apitypes.CreateFolderRequest{Name: name})
	if err != nil {
		b.Fatal(err)
	}
	return op.Metadata.FolderID
}
