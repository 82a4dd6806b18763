package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"strata/cmd/internal/nbdvolume"
	"strata/layer"
	"strata/nbd"
	"strata/storage"
)

// exportName is the one export both servers offer.
const exportName = "disk"

// serveMain is the hidden `serve` subcommand: the strata side of the
// benchmark in a process of its own, so its CPU time can be read from
// /proc and nothing of the harness (or of the other server's clients)
// is counted. It opens the store, opens (or first creates) a disk and
// serves it as export "disk" on a Unix socket until SIGTERM.
func serveMain(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	dir := fs.String("store", "", "store directory")
	sock := fs.String("socket", "", "Unix socket to listen on")
	disk := fs.Uint64("disk", 0, "serve this existing disk")
	base := fs.Uint64("fresh-from", 0, "create a new standard disk over this layer and serve it")
	size := fs.Int64("disk-size", 0, "size of the new disk (default: the layer's)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile here, from SIGUSR1 until the end")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := serve(*dir, *sock, layer.DiskID(*disk), layer.LayerID(*base), *size, *cpuprofile); err != nil {
		fmt.Fprintf(os.Stderr, "strata-bench serve: %v\n", err)
		return 1
	}
	return 0
}

func serve(dir, sock string, diskID layer.DiskID, base layer.LayerID, size int64, cpuprofile string) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if cpuprofile != "" {
		// The profile starts on SIGUSR1, which the harness sends when the
		// measurement starts, so start-up (opening the store) stays out.
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		defer signal.Stop(usr1)
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		started := make(chan struct{})
		go func() {
			select {
			case <-usr1:
				if pprof.StartCPUProfile(f) == nil {
					close(started)
				}
			case <-ctx.Done():
			}
		}()
		defer func() {
			select {
			case <-started:
				pprof.StopCPUProfile()
			default:
			}
			err = errors.Join(err, f.Close())
		}()
	}
	store, err := storage.Open(dir, storage.DefaultOptions())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	m, err := layer.Open(store, layer.DefaultOptions())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, m.Close()) }()
	if base != 0 {
		if size == 0 {
			info, err := m.LayerInfo(base)
			if err != nil {
				return err
			}
			size = info.Size
		}
		if err := store.Update(func(tx *storage.Txn) error {
			diskID, err = m.CreateDisk(tx, base, size, false)
			return err
		}); err != nil {
			return fmt.Errorf("create disk: %w", err)
		}
	}
	if diskID == 0 {
		return errors.New("serve: need --disk or --fresh-from")
	}
	// One handle held for the process's life: the disk stays open (and its
	// caches warm) between the probe connection and the clients'.
	hold, err := m.OpenDisk(diskID)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, hold.Close()) }()

	_ = os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	srv := &nbd.Server{
		Exports:  benchExports{m: m, disk: diskID},
		ErrorLog: func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-served; serr != nil && !errors.Is(serr, nbd.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// benchExports offers one disk as export "disk", to anyone on the socket.
type benchExports struct {
	m    *layer.Manager
	disk layer.DiskID
}

func (e benchExports) Lookup(ctx context.Context, name string, peer nbd.Peer) (nbd.Backend, error) {
	if name != exportName {
		return nil, fmt.Errorf("%w: %q", nbd.ErrUnknownExport, name)
	}
	v, err := e.m.OpenDisk(e.disk)
	if err != nil {
		return nil, err
	}
	return nbdvolume.New(v, "strata-bench "+name), nil
}

func (e benchExports) List(ctx context.Context, peer nbd.Peer) []nbd.ExportInfo {
	return []nbd.ExportInfo{{Name: exportName}}
}

// importDataSet builds the strata side's store: the raw data set imported
// as a layer (with the one holder an image record would be), and a disk
// over it for the read phases. It runs in the harness process, before any
// server starts, and closes the store so the serve children can open it.
func importDataSet(ctx context.Context, storeDir, raw string, chunkSize int) (img layer.LayerID, readDisk layer.DiskID, st importResult, err error) {
	f, err := os.Open(raw)
	if err != nil {
		return 0, 0, st, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, st, err
	}
	opts := storage.DefaultOptions()
	if chunkSize != 0 {
		opts.ChunkSize = chunkSize
	}
	store, err := storage.Open(storeDir, opts)
	if err != nil {
		return 0, 0, st, err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	m, err := layer.Open(store, layer.DefaultOptions())
	if err != nil {
		return 0, 0, st, err
	}
	defer func() { err = errors.Join(err, m.Close()) }()
	start := time.Now()
	p, err := m.Import(ctx, f, fi.Size(), nil)
	if err != nil {
		return 0, 0, st, fmt.Errorf("import: %w", err)
	}
	if err := store.Update(func(tx *storage.Txn) error {
		var err error
		if img, err = p.Commit(tx); err != nil {
			return err
		}
		readDisk, err = m.CreateDisk(tx, img, fi.Size(), false)
		return err
	}); err != nil {
		p.Abort()
		return 0, 0, st, fmt.Errorf("commit import: %w", err)
	}
	if err := store.Sync(); err != nil {
		return 0, 0, st, err
	}
	st.Seconds = time.Since(start).Seconds()
	st.Bytes = fi.Size()
	st.ChunkSize = store.ChunkSize()
	st.Store = store.Stats()
	return img, readDisk, st, nil
}

// importResult is what the import of the data set cost.
type importResult struct {
	Bytes     int64         `json:"bytes"`
	ChunkSize int           `json:"chunk_size"`
	Seconds   float64       `json:"seconds"`
	Store     storage.Stats `json:"store"`
}

// reopenStore opens and closes the store once, so that the value-log file
// the import filled is no longer the head. Opening a store reads its head
// value-log file through mmap to find the valid end, which maps those
// pages into the serve child, where dropping the page cache cannot evict
// them: the first read phase would then read the image from memory while
// qemu-nbd reads it from the disk. Each open starts a new head file.
func reopenStore(dir string) error {
	store, err := storage.Open(dir, storage.DefaultOptions())
	if err != nil {
		return err
	}
	return store.Close()
}

// copyDir copies the regular files of directory src (a closed store: Badger
// keeps it flat) into a new directory dst.
func copyDir(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", filepath.Join(src, e.Name()))
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, out.Close()) }()
	_, err = io.Copy(out, in)
	return err
}
