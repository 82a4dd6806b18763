package main

import (
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
	m.reg.MustRegister(m.nbdOps, m.nbdBytes, m.nbdLatency, m.nbdErrors, m.nbdConns,
		m.gcRuns, m.gcFreed, m.gcFreedB, m.gcVlogBytes)
	return m
}

// observeGC adds one collection's figures.
func (m *metrics) observeGC(s storage.GCStats) {
	m.gcRuns.Inc()
	m.gcFreed.Add(float64(s.FreedChunks))
	m.gcFreedB.Add(float64(s.FreedBytes))
	m.gcVlogBytes.Add(float64(s.VlogReclaimed))
}

// storeCollector reads storage.Stats at scrape time, so the figures are
// never older than the scrape and cost nothing between scrapes.
type storeCollector struct {
	stats func() storage.Stats

	chunks, raw, stored, referenced, corrupt, disk, dedup, compression *prometheus.Desc
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
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.chunks, c.raw, c.stored, c.referenced, c.corrupt, c.disk, c.dedup, c.compression} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	g(c.chunks, float64(s.Chunks))
	g(c.raw, float64(s.RawBytes))
	g(c.stored, float64(s.StoredBytes))
	g(c.referenced, float64(s.ReferencedRaw))
	ch <- prometheus.MustNewConstMetric(c.corrupt, prometheus.CounterValue, float64(s.CorruptReads))
	g(c.disk, float64(s.DiskBytes))
	g(c.dedup, ratio(s.ReferencedRaw, s.RawBytes))
	g(c.compression, ratio(s.RawBytes, s.StoredBytes))
}

// ratio is a/b, and 1 for an empty store (nothing shared, nothing shrunk).
func ratio(a, b int64) float64 {
	if b <= 0 {
		return 1
	}
	return float64(a) / float64(b)
}
