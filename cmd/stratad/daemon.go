package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"strata/api"
	"strata/api/apitypes"
	"strata/cmd/internal/nbdvolume"
	"strata/layer"
	"strata/nbd"
	"strata/storage"
)

func errField(err error) zap.Field { return zap.Error(err) }

// storageOptions maps the config onto storage.Options: flags not given
// keep storage's measured defaults.
func (c *config) storageOptions() storage.Options {
	o := storage.DefaultOptions()
	if c.ChunkSize >= 0 {
		o.ChunkSize = int(c.ChunkSize)
	}
	if c.CompressionLevel >= 0 {
		o.CompressionLevel = int(c.CompressionLevel)
	}
	if c.GCGrace >= 0 {
		o.GCGrace = time.Duration(c.GCGrace)
	}
	if c.GCInterval >= 0 {
		o.GCInterval = time.Duration(c.GCInterval)
	}
	if c.Workers >= 0 {
		o.Workers = int(c.Workers)
	}
	switch {
	case c.HugeReadLimit == 0:
		o.HugeReadLimit = -1
	case c.HugeReadLimit > 0:
		o.HugeReadLimit = int64(c.HugeReadLimit)
	}
	return o
}

// layerOptions maps the config onto layer.Options.
func (c *config) layerOptions() layer.Options {
	o := layer.DefaultOptions()
	if c.CacheBytes >= 0 {
		o.CacheBytes = int64(c.CacheBytes)
	}
	if c.SealWorkers >= 0 {
		o.SealWorkers = int(c.SealWorkers)
	}
	return o
}

// cleanSpool empties the spool directory. Files there are uploads and
// exports of a run that crashed: their operations are aborted when the api
// starts, and with the data directory locked nothing else can own them.
func cleanSpool(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read spool directory: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return 0, fmt.Errorf("clean spool directory: %w", err)
		}
	}
	return len(entries), nil
}

// apiConfig maps the config onto api.Config.
func (c *config) apiConfig(spoolDir string, log *zap.Logger) api.Config {
	ac := api.Config{
		AllowWindowsImport: c.AllowWindowsImport,
		SpoolDir:           spoolDir,
		DefaultQuotas:      c.DefaultQuotas,
		Logger:             log,
	}
	for _, uid := range c.Admins {
		ac.Admins = append(ac.Admins, uint32(uid))
	}
	return ac
}

// run is the daemon's life: open, serve until ctx ends, shut down.
func run(ctx context.Context, cfg *config, log *zap.Logger) (err error) {
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer lock.Unlock()

	// The store lives in a 0700 subdirectory: the data directory itself
	// must be traversable by every user who may reach the sockets in it.
	storeDir := filepath.Join(cfg.DataDir, "store")
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return fmt.Errorf("create store directory: %w", err)
	}
	spoolDir := filepath.Join(cfg.DataDir, "spool")
	if err := os.MkdirAll(spoolDir, 0o700); err != nil {
		return fmt.Errorf("create spool directory: %w", err)
	}
	if n, err := cleanSpool(spoolDir); err != nil {
		return err
	} else if n > 0 {
		log.Info("removed spool files a previous run left", zap.Int("files", n))
	}

	sopts, lopts := cfg.storageOptions(), cfg.layerOptions()
	started := time.Now()
	store, err := storage.Open(storeDir, sopts)
	if err != nil {
		return fmt.Errorf("open store in %s: %w", storeDir, err)
	}
	closeStore := func() {
		if err := store.Close(); err != nil {
			log.Error("close store", zap.Error(err))
		}
	}
	layers, err := layer.Open(store, lopts)
	if err != nil {
		closeStore()
		return fmt.Errorf("open layers: %w", err)
	}
	closeLayers := func() {
		if err := layers.Close(); err != nil {
			log.Error("close layers", zap.Error(err))
		}
	}
	svc, err := api.New(store, layers, cfg.apiConfig(spoolDir, log.Named("api")))
	if err != nil {
		closeLayers()
		closeStore()
		return fmt.Errorf("start api: %w", err)
	}
	log.Info("store open",
		zap.String("dir", storeDir),
		zap.Int("chunk_size", store.ChunkSize()),
		zap.Int("compression_level", sopts.CompressionLevel),
		zap.Duration("gc_grace", sopts.GCGrace),
		zap.Duration("gc_interval", sopts.GCInterval),
		zap.Int64("cache_bytes", lopts.CacheBytes),
		zap.Duration("took", time.Since(started)))
	if store.RecountedAtOpen() {
		logRecount(ctx, log, store.Counted(), started)
	}

	d := &daemon{cfg: cfg, log: log, store: store, layers: layers, svc: svc, met: newMetrics()}
	d.met.reg.MustRegister(newStoreCollector(store.Stats), newGCWatcher(d.met, store.LastGC),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "strata", Subsystem: "api", Name: "operations_in_flight",
			Help: "Operations (imports, seals, exports, deletes) running in the background.",
		}, func() float64 { return float64(svc.OperationsInFlight()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "strata", Subsystem: "cache", Name: "hits_total",
			Help: "Chunk reads served from the decoded-chunk cache shared by all disks and images.",
		}, func() float64 { return float64(layers.CacheStats().Hits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "strata", Subsystem: "cache", Name: "misses_total",
			Help: "Chunk reads that went to the store (once per chunk however many readers waited).",
		}, func() float64 { return float64(layers.CacheStats().Misses) }))

	serveErr := d.listen()
	if serveErr == nil {
		sdNotify("READY=1")
		log.Info("serving",
			zap.String("admin_socket", cfg.AdminSocket),
			zap.String("nbd_socket", cfg.NBDSocket),
			zap.String("nbd_tcp", cfg.NBDTCP),
			zap.Int("pid", os.Getpid()))
		select {
		case <-ctx.Done():
			log.Info("shutting down", zap.Duration("timeout", cfg.ShutdownTimeout))
		case serveErr = <-d.errs:
			log.Error("listener failed; shutting down", zap.Error(serveErr))
		}
	}
	sdNotify("STOPPING=1")
	d.shutdown()
	if err := svc.Close(); err != nil {
		log.Error("stop api", zap.Error(err))
	}
	closeLayers()
	closeStore()
	log.Info("stopped")
	return serveErr
}

// daemon holds what run wires together.
type daemon struct {
	cfg    *config
	log    *zap.Logger
	store  *storage.Store
	layers *layer.Manager
	svc    *api.Service
	met    *metrics

	httpSrv  *http.Server
	nbdSrv   *nbd.Server
	stopping atomic.Bool
	errs     chan error
	wg       sync.WaitGroup // accept loops
	handlers sync.WaitGroup // admin API requests being served
}

// listen opens the sockets and starts serving.
func (d *daemon) listen() error {
	cfg := d.cfg
	d.errs = make(chan error, 3)
	adminL, err := listenUnix(cfg.AdminSocket, 0o666)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	nbdL, err := listenUnix(cfg.NBDSocket, 0o666)
	if err != nil {
		adminL.Close()
		return fmt.Errorf("nbd socket: %w", err)
	}
	var tcpL net.Listener
	var tlsCfg *tls.Config
	if cfg.NBDTCP != "" {
		if cfg.TLSCert != "" {
			if tlsCfg, err = loadTLS(cfg); err != nil {
				adminL.Close()
				nbdL.Close()
				return err
			}
		}
		if tcpL, err = net.Listen("tcp", cfg.NBDTCP); err != nil {
			adminL.Close()
			nbdL.Close()
			return fmt.Errorf("nbd tcp: %w", err)
		}
		// Report the bound address (a port of 0 picks a free one).
		cfg.NBDTCP = tcpL.Addr().String()
	}

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.met.reg, promhttp.HandlerOpts{ErrorLog: zap.NewStdLog(d.log)}))
	mux.HandleFunc("/healthz", d.healthz)
	mux.Handle("/", d.met.instrument(d.svc.Handler()))
	// Every request is tracked: http.Server.Close does not wait for
	// handlers, and the store must not close under one still writing.
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.handlers.Add(1)
		defer d.handlers.Done()
		mux.ServeHTTP(w, r)
	})
	d.httpSrv = &http.Server{
		Handler:     handler,
		ConnContext: api.ConnContext,
		// Headers are small and local; a stuck client must not pin a
		// goroutine. Bodies (uploads) may take as long as they take.
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          zap.NewStdLog(d.log.Named("http")),
	}
	d.nbdSrv = &nbd.Server{
		Exports:          exports{svc: d.svc, log: d.log.Named("nbd")},
		TLSConfig:        tlsCfg,
		AllowInsecureTCP: cfg.NBDTCPInsecure,
		Metrics:          nbdMetrics{d.met},
		ErrorLog:         d.log.Named("nbd").Sugar().Infof,
	}
	d.serve("admin", func() error { return d.httpSrv.Serve(adminL) }, http.ErrServerClosed)
	d.serve("nbd", func() error { return d.nbdSrv.Serve(nbdL) }, nbd.ErrServerClosed)
	if tcpL != nil {
		d.serve("nbd-tcp", func() error { return d.nbdSrv.Serve(tcpL) }, nbd.ErrServerClosed)
	}
	return nil
}

// serve runs one accept loop; an unexpected end is reported on d.errs.
func (d *daemon) serve(name string, fn func() error, closed error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := fn(); err != nil && !errors.Is(err, closed) && !d.stopping.Load() {
			d.errs <- fmt.Errorf("%s: %w", name, err)
		}
	}()
}

// shutdown stops both servers together: NBD connections answer what they
// read and flush, API calls finish, both within the shutdown timeout,
// after which what is left is cut.
func (d *daemon) shutdown() {
	d.stopping.Store(true)
	if d.httpSrv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := d.nbdSrv.Shutdown(ctx); err != nil {
			d.log.Warn("nbd clients cut at shutdown timeout", zap.Error(err))
		}
	}()
	go func() {
		defer wg.Done()
		if err := d.httpSrv.Shutdown(ctx); err != nil {
			d.log.Warn("api requests cut at shutdown timeout", zap.Error(err))
			d.httpSrv.Close()
		}
	}()
	wg.Wait()
	d.wg.Wait()
	// Handlers of cut connections see their reads fail and return; wait
	// for them (bounded again) before the service and the store close.
	done := make(chan struct{})
	go func() {
		d.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d.cfg.ShutdownTimeout):
		d.log.Error("api handlers still running after the shutdown timeout; closing the store under them")
	}
}

// healthz answers 200 while the daemon serves and 503 once it stops, so a
// load balancer or a script waiting for restart sees the difference.
func (d *daemon) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if d.stopping.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "stopping")
		return
	}
	fmt.Fprintln(w, "ok")
}

// loadTLS builds the NBD TCP listener's TLS config. With a client CA,
// clients must present a certificate it signed.
func loadTLS(cfg *config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.TLSClientCA != "" {
		pem, err := os.ReadFile(cfg.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca %s: no PEM certificates in it", cfg.TLSClientCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// exports resolves NBD export names through the api service, which
// checks the caller's rights exactly as it does for the admin API.
type exports struct {
	svc *api.Service
	log *zap.Logger
}

func (e exports) Lookup(ctx context.Context, name string, peer nbd.Peer) (nbd.Backend, error) {
	id, err := peerIdentity(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", nbd.ErrPermission, err)
	}
	vol, err := e.openExport(ctx, name, id)
	if err != nil {
		e.log.Info("export refused", zap.String("export", name), zap.String("peer", id.Subject()), zap.Error(err))
		switch api.ErrorCode(err) {
		case apitypes.CodeNotFound, apitypes.CodeInvalidArgument:
			return nil, fmt.Errorf("%w: %w", nbd.ErrUnknownExport, err)
		case apitypes.CodeUnavailable:
			return nil, fmt.Errorf("%w: %w", nbd.ErrShutdown, err)
		default:
			return nil, fmt.Errorf("%w: %w", nbd.ErrPermission, err)
		}
	}
	return nbdvolume.New(vol, "strata "+name), nil
}

// writerGrace is how long a new writer waits for the previous one's
// connection to finish closing. The slot is freed only after the old
// connection's final flush, which can trail the old client's exit: a
// hypervisor restarting its VM at once should not be refused for that.
const writerGrace = 3 * time.Second

// openExport asks the api for the export, waiting up to writerGrace while
// the disk's previous writer is still being closed.
func (e exports) openExport(ctx context.Context, name string, id api.Identity) (layer.Volume, error) {
	deadline := time.Now().Add(writerGrace)
	delay := 5 * time.Millisecond
	for {
		vol, err := e.svc.OpenExport(ctx, name, id)
		if err == nil || !errors.Is(err, api.ErrWriterBusy) || time.Now().Add(delay).After(deadline) {
			return vol, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

func (e exports) List(ctx context.Context, peer nbd.Peer) []nbd.ExportInfo {
	id, err := peerIdentity(peer)
	if err != nil {
		return nil
	}
	names, err := e.svc.Exports(id)
	if err != nil {
		e.log.Warn("list exports", zap.Error(err))
		return nil
	}
	out := make([]nbd.ExportInfo, len(names))
	for i, n := range names {
		out[i] = nbd.ExportInfo{Name: n}
	}
	return out
}

// errNoIdentity: an NBD client the daemon cannot identify.
var errNoIdentity = errors.New("no client identity: connect over the Unix socket, or present a TLS client certificate whose common name is unixUser:<uid>")

// peerIdentity turns the NBD peer into the api's caller identity: Unix
// socket credentials, or a verified client certificate whose common name
// is "unixUser:<uid>" (a CA the operator trusts vouches for the uid).
func peerIdentity(p nbd.Peer) (api.Identity, error) {
	if p.Unix != nil {
		id := api.Identity{UID: p.Unix.UID, GID: p.Unix.GID, PID: p.Unix.PID, Known: true,
			Groups: groupsOf(p.Unix.UID)}
		return id, nil
	}
	if p.Certificate != nil {
		cn := p.Certificate.Subject.CommonName
		uid, ok := strings.CutPrefix(cn, apitypes.SubjectUnixUser+":")
		if !ok {
			uid = cn
		}
		n, err := strconv.ParseUint(uid, 10, 32)
		if err != nil {
			return api.Identity{}, fmt.Errorf("client certificate %q: %w", cn, errNoIdentity)
		}
		return api.Identity{UID: uint32(n), GID: uint32(n), PID: tlsClientID(p), Known: true}, nil
	}
	return api.Identity{}, errNoIdentity
}

// tlsClientID stands in for a process id on TCP, where there is none: the
// api lets one writer at a time open a disk and recognises the writer's
// further connections (multi-conn, as nbdcopy and qemu make) by PID. The
// same certificate from the same host is taken as the same client. The
// value is negative so it never equals a real process id, and never 0
// (unknown).
func tlsClientID(p nbd.Peer) int32 {
	h := fnv.New32a()
	h.Write(p.Certificate.Raw)
	if a, ok := p.Addr.(*net.TCPAddr); ok {
		h.Write(a.IP)
	}
	return -int32(h.Sum32()&0x7fffffff) - 1
}

// nbdMetrics feeds the nbd server's observations into Prometheus.
type nbdMetrics struct{ m *metrics }

func (n nbdMetrics) Request(export string, op nbd.Op, bytes int64, latency time.Duration, errno uint32) {
	o := op.String()
	n.m.nbdOps.WithLabelValues(export, o).Inc()
	if op == nbd.OpRead || op == nbd.OpWrite {
		n.m.nbdBytes.WithLabelValues(export, o).Add(float64(bytes))
	}
	n.m.nbdLatency.WithLabelValues(export, o).Observe(latency.Seconds())
	if errno != 0 {
		n.m.nbdErrors.WithLabelValues(export, o).Inc()
	}
}

func (n nbdMetrics) Connection(export string, delta int) {
	n.m.nbdConns.WithLabelValues(export).Add(float64(delta))
}

// groupsOf returns the supplementary groups of uid from the system
// database, so unixGroup bindings apply on NBD as on the admin socket.
// An unknown uid has none beyond its primary group.
func groupsOf(uid uint32) []uint32 {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil
	}
	gids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	out := make([]uint32, 0, len(gids))
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			out = append(out, uint32(n))
		}
	}
	return out
}

// logRecount tells the operator that the store's figures are being
// rebuilt (the last stop was not clean) and when they are ready again.
func logRecount(ctx context.Context, log *zap.Logger, counted <-chan struct{}, started time.Time) {
	log.Info("recounting the store's chunk and byte figures in the background (the last stop was not clean); /metrics leaves them out until done")
	go func() {
		select {
		case <-counted:
			log.Info("store figures recounted", zap.Duration("took", time.Since(started)))
		case <-ctx.Done():
		}
	}()
}
