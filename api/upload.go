package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"strata/api/apitypes"
	"strata/layer"
	"strata/layer/imagefile"
	"strata/storage"
)

// UploadRequest is an images:upload call's parameters (the query string).
type UploadRequest struct {
	FolderID    string
	Name        string
	Description string
	Labels      map[string]string
	Family      string
	MinDiskSize int64
	ProductIDs  []string
	// Format is the claimed format: raw, qcow2, vmdk, vhd, or "" to detect.
	Format string
	// Size is the body's length when the client sent it (Content-Length),
	// else 0. A raw upload of known size is imported as it arrives.
	Size   int64
	Pooled bool
	OSType string // LINUX (default) or WINDOWS
}

// UploadImage imports an image file streamed in body. The request is
// checked (rights, quotas, names) before the body is read, so a refused
// import costs no transfer. A raw upload of known size is imported as it
// arrives (see uploadRaw). Any other body is spooled to a file in the
// spool directory, its container format checked (INVALID_ARGUMENT for an
// unsafe, invalid or mislabelled file), and the import runs in the
// background: the image is CREATING until its layer commits in the same
// transaction that makes it READY.
func (s *Service) UploadImage(ctx context.Context, caller Identity, key string, req UploadRequest, body io.Reader) (apitypes.Operation, error) {
	claimed := imagefile.Format(strings.ToLower(req.Format))
	switch claimed {
	case "auto":
		claimed = ""
	case "", imagefile.Raw, imagefile.QCOW2, imagefile.VMDK, imagefile.VHD:
	default:
		return apitypes.Operation{}, errInvalid("format %q is unknown: use raw, qcow2, vmdk or vhd, or omit it to detect", req.Format)
	}
	osType, err := parseOS(req.OSType, apitypes.OSLinux)
	if err != nil {
		return apitypes.Operation{}, err
	}
	if osType == apitypes.OSWindows && !s.cfg.AllowWindowsImport {
		return apitypes.Operation{}, errf(apitypes.CodeFailedPrecondition,
			"importing WINDOWS images is disabled on this daemon: make the image from a disk or snapshot instead, or have the admin enable Windows imports in the daemon's config")
	}
	sp := &imageSpec{
		folder: req.FolderID, name: req.Name, description: req.Description, labels: req.Labels,
		family: req.Family, minDiskSize: req.MinDiskSize, productIDs: req.ProductIDs,
		osType: osType, pooled: req.Pooled,
	}
	if err := sp.validate(); err != nil {
		return apitypes.Operation{}, err
	}
	if err := authenticated(caller); err != nil {
		return apitypes.Operation{}, err
	}
	if err := checkIdemKey(key); err != nil {
		return apitypes.Operation{}, err
	}
	var prev *opRec
	err = s.view(func(tx *storage.Txn) error {
		var err error
		if prev, err = lookupIdem(tx, caller, key); err != nil || prev != nil {
			return err
		}
		_, _, err = s.addImage(tx, caller, sp, apitypes.StatusCreating, true)
		return err
	})
	if err != nil {
		return apitypes.Operation{}, toError(err)
	}
	if prev != nil {
		return s.live(prev), nil
	}

	if claimed == imagefile.Raw && req.Size > 0 {
		return s.uploadRaw(ctx, caller, key, sp, body, req.Size)
	}
	f, size, err := s.spool(ctx, body)
	if err != nil {
		return apitypes.Operation{}, err
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	img, err := imagefile.Open(f, size, claimed)
	if err != nil {
		return apitypes.Operation{}, importError(err)
	}
	sp.virtualSize = img.Size()
	if sp.virtualSize == 0 {
		return apitypes.Operation{}, errInvalid("the image is empty (virtual size 0); upload a disk image")
	}
	sp.lineage = apitypes.Image{SourceFormat: string(img.Format())}

	var id string
	op, _, err := s.startAsync(caller, key, "import image "+req.Name, apitypes.OperationMetadata{},
		func(tx *storage.Txn, op *opRec) error {
			r, _, err := s.addImage(tx, caller, sp, apitypes.StatusCreating, false)
			if err != nil {
				return err
			}
			r.OpID, id = op.ID, r.ID
			op.Metadata.FolderID, op.Metadata.ImageID = r.FolderID, r.ID
			return putJSON(tx, pfxImage+r.ID, r)
		},
		func(ctx context.Context, ro *runningOp) (finisher, error) {
			defer func() {
				f.Close()
				os.Remove(f.Name())
			}()
			return s.importImage(ctx, ro, id, img)
		})
	if err == nil {
		keep = true // the background import owns the spool file now
	}
	return op, err
}

// uploadRaw imports a raw upload of size bytes as it arrives: no spool
// file, so the data is read and written once. The layer is built from the
// body; once all of it is in, one transaction creates the READY image, its
// finished operation and the layer's commit (a failure anywhere leaves
// nothing behind). A body that names another format in its first bytes or
// in a VHD footer is refused, as a mislabelled spooled file is. The image
// record cannot show progress while the body streams; the client counts
// the bytes it sends.
func (s *Service) uploadRaw(ctx context.Context, caller Identity, key string, sp *imageSpec, body io.Reader, size int64) (apitypes.Operation, error) {
	sp.virtualSize = size
	sp.lineage = apitypes.Image{SourceFormat: string(imagefile.Raw)}
	// The size is known before the body: check the quota with it now.
	if err := s.view(func(tx *storage.Txn) error {
		_, _, err := s.addImage(tx, caller, sp, apitypes.StatusCreating, true)
		return err
	}); err != nil {
		return apitypes.Operation{}, toError(err)
	}
	h := sha256.New()
	var sniff formatSniffer
	in := &readCounter{r: io.LimitReader(ctxReader{ctx, body}, size)}
	p, err := s.layers.Import(ctx, io.TeeReader(in, io.MultiWriter(h, &sniff)), size, nil)
	if err != nil {
		if ctx.Err() != nil {
			return apitypes.Operation{}, toError(ctx.Err())
		}
		if in.n < size {
			return apitypes.Operation{}, errf(apitypes.CodeInvalidArgument, "the upload stopped after %d of %d bytes: %v; send the whole file again", in.n, size, err)
		}
		return apitypes.Operation{}, importError(err)
	}
	defer p.Abort() // a no-op once committed
	if in.n < size {
		return apitypes.Operation{}, errf(apitypes.CodeInvalidArgument, "the upload stopped after %d of %d bytes; send the whole file again", in.n, size)
	}
	if f := sniff.format(); f != imagefile.Raw {
		return apitypes.Operation{}, importError(fmt.Errorf("%w: the file is %s, not raw; upload it with its own format or without one", imagefile.ErrFormatMismatch, f))
	}
	sum := formatChecksum(h)
	stats := p.Stats()
	return s.mutate(caller, key, "import image "+sp.name, apitypes.OperationMetadata{}, func(tx *storage.Txn, op *opRec) (any, error) {
		r, _, err := s.addImage(tx, caller, sp, apitypes.StatusReady, false)
		if err != nil {
			return nil, err
		}
		if r.Layer, err = p.Commit(tx); err != nil {
			return nil, err
		}
		r.Checksum, r.StorageSize = sum, stats.StoredBytes
		op.Metadata.FolderID, op.Metadata.ImageID = r.FolderID, r.ID
		return r.public(), putJSON(tx, pfxImage+r.ID, r)
	})
}

// formatSniffer sees a stream go by and keeps what format detection needs:
// its first bytes (magic numbers) and its last 512 (a VHD footer).
type formatSniffer struct {
	head []byte
	tail [512]byte
	n    int64
}

func (f *formatSniffer) Write(p []byte) (int, error) {
	if need := 512 - len(f.head); need > 0 {
		f.head = append(f.head, p[:min(need, len(p))]...)
	}
	// Keep the last 512 bytes: shift in p's own last bytes.
	if len(p) >= len(f.tail) {
		copy(f.tail[:], p[len(p)-len(f.tail):])
	} else {
		copy(f.tail[:], f.tail[len(p):])
		copy(f.tail[len(f.tail)-len(p):], p)
	}
	f.n += int64(len(p))
	return len(p), nil
}

// format is what imagefile.Detect says of the bytes seen.
func (f *formatSniffer) format() imagefile.Format {
	tail := f.tail[max(0, int64(len(f.tail))-f.n):]
	r := sniffedFile{head: f.head, tail: tail, size: f.n}
	fm, err := imagefile.Detect(r, f.n)
	if err != nil {
		return ""
	}
	return fm
}

// sniffedFile answers Detect's reads from the head and tail a sniffer kept.
type sniffedFile struct {
	head, tail []byte
	size       int64
}

func (s sniffedFile) ReadAt(p []byte, off int64) (int, error) {
	switch {
	case off+int64(len(p)) <= int64(len(s.head)):
		return copy(p, s.head[off:]), nil
	case off >= s.size-int64(len(s.tail)) && off+int64(len(p)) <= s.size:
		return copy(p, s.tail[off-(s.size-int64(len(s.tail))):]), nil
	}
	return 0, fmt.Errorf("sniffed bytes do not cover [%d, +%d)", off, len(p))
}

// readCounter counts the bytes read through it.
type readCounter struct {
	r io.Reader
	n int64
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// importImage streams the logical content of img into a pending layer,
// hashing it on the way, and returns the finisher that commits the layer
// with the READY image record.
func (s *Service) importImage(ctx context.Context, ro *runningOp, id string, img imagefile.Image) (finisher, error) {
	size := img.Size()
	h := sha256.New()
	r := io.TeeReader(io.NewSectionReader(img, 0, size), h)
	ro.report("import", 0, 0, size)
	p, err := s.layers.Import(ctx, r, size, func(n int64) { ro.report("import", float64(n)/float64(size), n, size) })
	if err != nil {
		return nil, importError(err)
	}
	ro.after(p.Abort) // no-op once committed
	sum := formatChecksum(h)
	stats := p.Stats()
	return func(tx *storage.Txn) (any, error) {
		rec, err := getImage(tx, id)
		if err != nil {
			return nil, err
		}
		f, err := s.getFolder(tx, rec.FolderID)
		if err != nil {
			return nil, err
		}
		// The size was counted at start; recheck in case other imports
		// used the room meanwhile (this one counts already).
		if err := s.checkQuota(tx, f, map[string]int64{apitypes.QuotaImagesSize: 0}); err != nil {
			return nil, err
		}
		lid, err := p.Commit(tx)
		if err != nil {
			return nil, err
		}
		rec.Layer, rec.Status, rec.OpID = lid, apitypes.StatusReady, ""
		rec.Checksum, rec.StorageSize = sum, stats.StoredBytes
		return rec.public(), putJSON(tx, pfxImage+id, rec)
	}, nil
}

// importError translates the image file checks to INVALID_ARGUMENT with
// the reader's own explanation.
func importError(err error) error {
	switch {
	case errors.Is(err, imagefile.ErrUnsafe):
		return &Error{Code: apitypes.CodeInvalidArgument, err: err,
			Message: "the image refers to other files (a backing file, an external data file or extent), which strata never opens; flatten it first: " + err.Error()}
	case errors.Is(err, imagefile.ErrFormatMismatch), errors.Is(err, imagefile.ErrInvalid):
		return &Error{Code: apitypes.CodeInvalidArgument, err: err, Message: err.Error()}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Code: apitypes.CodeInvalidArgument, err: err, Message: "the image file is truncated: " + err.Error()}
	}
	return err
}

// spool copies body to a new file in the spool directory and returns it
// open, with its size.
func (s *Service) spool(ctx context.Context, body io.Reader) (*os.File, int64, error) {
	f, err := os.CreateTemp(s.cfg.spoolDir(), "upload-*")
	if err != nil {
		return nil, 0, errf(apitypes.CodeUnavailable, "cannot spool the upload: %v; check the daemon's spool directory", err)
	}
	n, err := io.Copy(f, ctxReader{ctx, body})
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		if ctx.Err() != nil {
			return nil, 0, toError(ctx.Err())
		}
		return nil, 0, errf(apitypes.CodeInvalidArgument, "the upload stopped after %d bytes: %v; send the whole file again", n, err)
	}
	return f, n, nil
}

// ctxReader stops a copy when the request's context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// WriteExport writes the content of an image or snapshot (kind "images"
// or "snapshots") to w as a raw or qcow2 file and returns its length
// first through size (called before any byte is written, so an HTTP
// handler can set Content-Length). qcow2 is built in a spool file first:
// its tables are written after the data.
func (s *Service) WriteExport(ctx context.Context, caller Identity, kind, id, format string, size func(int64), w io.Writer) error {
	k := singular(kind)
	if k != "image" && k != "snapshot" {
		return errf(apitypes.CodeNotFound, "only images and snapshots can be exported")
	}
	switch format {
	case "", apitypes.FormatRaw, apitypes.FormatQCOW2:
	default:
		return errInvalid("export format %q is unknown: use raw or qcow2", format)
	}
	lid, err := s.readableLayer(caller, k, id)
	if err != nil {
		return err
	}
	v, err := s.layers.OpenLayer(lid)
	if err != nil {
		return toError(err)
	}
	defer v.Close()
	src := volumeReader{ctx: ctx, v: v}
	if format != apitypes.FormatQCOW2 {
		size(v.Size())
		return exportErr(imagefile.WriteRaw(w, src, v.Size()))
	}
	ext, err := extentsOf(ctx, v)
	if err != nil {
		return toError(err)
	}
	tmp, err := os.CreateTemp(s.cfg.spoolDir(), "export-*.qcow2")
	if err != nil {
		return errf(apitypes.CodeUnavailable, "cannot make the qcow2 file: %v; check the daemon's spool directory", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	if err := imagefile.WriteQCOW2(tmp, src, v.Size(), ext); err != nil {
		return exportErr(err)
	}
	n, err := tmp.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		return toError(err)
	}
	size(n)
	_, err = io.Copy(w, tmp)
	return err
}

func exportErr(err error) error {
	if err == nil {
		return nil
	}
	return toError(err)
}

// extentsOf lists a volume's zero runs for the qcow2 writer.
func extentsOf(ctx context.Context, v layer.Volume) ([]imagefile.Extent, error) {
	var out []imagefile.Extent
	size := v.Size()
	for off := int64(0); off < size; {
		es, err := v.Extents(ctx, off, size-off)
		if err != nil {
			return nil, err
		}
		if len(es) == 0 {
			return nil, fmt.Errorf("%w at offset %d", errShortExtents, off)
		}
		for _, e := range es {
			n := min(e.Length, size-off)
			if n <= 0 {
				break
			}
			out = append(out, imagefile.Extent{Offset: off, Length: n, Zero: e.Hole || e.Zero})
			off += n
		}
	}
	return out, nil
}
