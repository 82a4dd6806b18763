package main

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"strata/storage"
)

// metrics holds the daemon's Prometheus registry. A private registry (not
// the global one) so that tests can run several daemons' worth of wiring
// in one process without duplicate-registration panics.
type metrics struct {
	reg *prometheus.Registry

	nbdOps     *prometheus.CounterVec
	nbdBytes   *prometheus.CounterVec
	nbdLatency *prometheus.HistogramVec
	nbdErrors  *prometheus.CounterVec
	nbdConns   *prometheus.GaugeVec

	gcRuns      prometheus.Counter
	gcFreed     prometheus.Counter
	gcFreedB    prometheus.Counter
	gcVlogBytes prometheus.Counter

	apiInFlight prometheus.Gauge
	apiRequests *prometheus.CounterVec
	apiLatency  *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m.nbdOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "strata", Subsystem: "nbd", Name: "ops_total",
		Help: "NBD commands completed, by export and command.",
	}, []string{"export", "op"})
	m.nbdBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "strata", Subsystem: "nbd", Name: "bytes_total",
		Help: "Payload bytes moved by NBD reads and writes, by export and command.",
	}, []string{"export", "op"})
	m.nbdLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "strata", Subsystem: "nbd", Name: "op_seconds",
		Help: "NBD command latency from request read to reply sent, by export and command.",
		// 25 µs .. ~0.8 s: a cached 4 KiB read to a slow seal-contended flush.
		Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16),
	}, []string{"export", "op"})
	m.nbdErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "strata", Subsystem: "nbd", Name: "errors_total",
		Help: "NBD commands answered with an error, by export and command.",
	}, []string{"export", "op"})
	m.nbdConns = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "strata", Subsystem: "nbd", Name: "connections",
		Help: "Open NBD connections, by export.",
	}, []string{"export"})
	m.gcRuns = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "strata", Subsystem: "gc", Name: "runs_total", Help: "Garbage collections run.",
	})
	m.gcFreed = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "strata", Subsystem: "gc", Name: "freed_chunks_total", Help: "Chunks freed by garbage collection.",
	})
	m.gcFreedB = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "strata", Subsystem: "gc", Name: "freed_bytes_total", Help: "Stored bytes of the chunks garbage collection freed.",
	})
	m.gcVlogBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "strata", Subsystem: "gc", Name: "vlog_reclaimed_bytes_total", Help: "Bytes Badger's value-log GC gave back to the file system.",
	})
	m.apiInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "strata", Subsystem: "api", Name: "requests_in_flight",
		Help: "Admin API requests being served (uploads and exports stay in flight while they stream).",
	})
	m.apiRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "strata", Subsystem: "api", Name: "requests_total",
		Help: "Admin API requests answered, by method and HTTP status.",
	}, []string{"method", "code"})
	m.apiLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "strata", Subsystem: "api", Name: "request_seconds",
		Help: "Admin API request duration, by method (an upload's includes the transfer).",
		// 100 µs .. ~100 s.
		Buckets: prometheus.ExponentialBuckets(1e-4, 4, 10),
	}, []string{"method"})
	m.reg.MustRegister(m.nbdOps, m.nbdBytes, m.nbdLatency, m.nbdErrors, m.nbdConns,
		m.gcRuns, m.gcFreed, m.gcFreedB, m.gcVlogBytes, m.apiInFlight, m.apiRequests, m.apiLatency)
	return m
}

// observeGC adds one collection's figures.
func (m *metrics) observeGC(s storage.GCStats) {
	m.gcRuns.Inc()
	m.gcFreed.Add(float64(s.FreedChunks))
	m.gcFreedB.Add(float64(s.FreedBytes))
	m.gcVlogBytes.Add(float64(s.VlogReclaimed))
}

// instrument counts admin API requests around h.
func (m *metrics) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.apiInFlight.Inc()
		defer m.apiInFlight.Dec()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		m.apiRequests.WithLabelValues(r.Method, strconv.Itoa(sw.code)).Inc()
		m.apiLatency.WithLabelValues(r.Method).Observe(time.Since(start).Seconds())
	})
}

// statusWriter remembers the status code a handler wrote. Unwrap lets
// http.ResponseController reach the connection's Flush and deadlines.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes through, so streamed exports are not held back.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// gcWatcher moves the background GC's results into the counters at scrape
// time: storage runs the loop and keeps only its last result, so each new
// result is added once, recognised by its time.
type gcWatcher struct {
	m      *metrics
	lastGC func() (storage.GCStats, time.Time, error)

	mu   sync.Mutex
	seen time.Time

	lastRun, lastErr *prometheus.Desc
}

func newGCWatcher(m *metrics, lastGC func() (storage.GCStats, time.Time, error)) *gcWatcher {
	return &gcWatcher{m: m, lastGC: lastGC,
		lastRun: prometheus.NewDesc("strata_gc_last_run_timestamp_seconds", "When the background GC last ran (0: not yet).", nil, nil),
		lastErr: prometheus.NewDesc("strata_gc_last_run_failed", "1 if the background GC's last run failed.", nil, nil),
	}
}

func (g *gcWatcher) Describe(ch chan<- *prometheus.Desc) { ch <- g.lastRun; ch <- g.lastErr }

func (g *gcWatcher) Collect(ch chan<- prometheus.Metric) {
	st, at, err := g.lastGC()
	g.mu.Lock()
	if at.After(g.seen) {
		g.seen = at
		if err == nil {
			g.m.observeGC(st)
		}
	}
	g.mu.Unlock()
	ts := 0.0
	if !at.IsZero() {
		ts = float64(at.UnixNano()) / 1e9
	}
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(g.lastRun, prometheus.GaugeValue, ts)
	ch <- prometheus.MustNewConstMetric(g.lastErr, prometheus.GaugeValue, failed)
}

// storeCollector reads storage.Stats at scrape time, so the figures are
// never older than the scrape and cost nothing between scrapes.
type storeCollector struct {
	stats func() storage.Stats

	chunks, raw, stored, referenced, corrupt, disk, dedup, compression, counting *prometheus.Desc
}

func newStoreCollector(stats func() storage.Stats) *storeCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("strata_store_"+name, help, nil, nil)
	}
	return &storeCollector{
		stats:       stats,
		chunks:      d("chunks", "Chunks stored (zero chunks are never stored)."),
		raw:         d("raw_bytes", "Raw bytes of the stored chunks."),
		stored:      d("stored_bytes", "Bytes of the stored chunks after compression."),
		referenced:  d("referenced_raw_bytes", "Raw bytes summed over every reference to a stored chunk."),
		corrupt:     d("corrupt_reads_total", "Chunk reads that failed their checksum since the daemon started."),
		disk:        d("disk_bytes", "Size of the Badger LSM tree and value log on disk."),
		dedup:       d("dedup_ratio", "Referenced raw bytes over stored raw bytes (1 = no sharing)."),
		compression: d("compression_ratio", "Raw bytes over compressed bytes of the stored chunks (1 = incompressible)."),
		counting:    d("counting", "1 while the chunk and byte figures are rebuilt after a start that followed no clean stop; they are left out meanwhile."),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.chunks, c.raw, c.stored, c.referenced, c.corrupt, c.disk, c.dedup, c.compression, c.counting} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	ch <- prometheus.MustNewConstMetric(c.corrupt, prometheus.CounterValue, float64(s.CorruptReads))
	g(c.disk, float64(s.DiskBytes))
	if s.Counting {
		// Partial figures would read as space freed: better none.
		g(c.counting, 1)
		return
	}
	g(c.counting, 0)
	g(c.chunks, float64(s.Chunks))
	g(c.raw, float64(s.RawBytes))
	g(c.stored, float64(s.StoredBytes))
	g(c.referenced, float64(s.ReferencedRaw))
	g(c.dedup, s.DedupRatio())
	g(c.compression, s.CompressionRatio())
}
