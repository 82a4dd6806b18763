package main

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"strata/storage"
)

// gatherStore collects a storeCollector over st: metric name -> value.
func gatherStore(t *testing.T, st storage.Stats) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newStoreCollector(func() storage.Stats { return st }))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				out[mf.GetName()] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[mf.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// TestStoreMetricsLeaveOutPartialFigures: while the store recounts after
// an unclean stop, its chunk and byte figures are left out (a partial
// count would read as space freed) and strata_store_counting says why.
func TestStoreMetricsLeaveOutPartialFigures(t *testing.T) {
	st := storage.Stats{Chunks: 10, RawBytes: 40960, StoredBytes: 20480, ReferencedRaw: 81920, CorruptReads: 1, DiskBytes: 1 << 20}
	got := gatherStore(t, st)
	want := map[string]float64{
		"strata_store_chunks": 10, "strata_store_raw_bytes": 40960, "strata_store_stored_bytes": 20480,
		"strata_store_referenced_raw_bytes": 81920, "strata_store_corrupt_reads_total": 1,
		"strata_store_disk_bytes": 1 << 20, "strata_store_dedup_ratio": 2, "strata_store_compression_ratio": 2,
		"strata_store_counting": 0,
	}
	sameMetrics(t, "counted", got, want)

	st.Counting = true
	got = gatherStore(t, st)
	want = map[string]float64{"strata_store_corrupt_reads_total": 1, "strata_store_disk_bytes": 1 << 20, "strata_store_counting": 1}
	sameMetrics(t, "counting", got, want)
}

func sameMetrics(t *testing.T, when string, got, want map[string]float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: metrics %v, want %v", when, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %v, want %v", when, k, got[k], v)
		}
	}
}

// TestLogRecount: one line says the figures are being recounted and one,
// from the background, when they are done.
func TestLogRecount(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	counting := make(chan struct{})
	logRecount(context.Background(), zap.New(core), counting, time.Now())
	if got := logs.FilterMessageSnippet("recounting").Len(); got != 1 || logs.Len() != 1 {
		t.Fatalf("%d lines say the figures are recounted, want 1: %v", got, logs.All())
	}
	close(counting)
	// The line comes from a goroutine: wait for it (a failure ends at the
	// deadline rather than with the test binary's timeout).
	deadline := time.Now().Add(time.Minute)
	for logs.FilterMessage("store figures recounted").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no line for the end of the recount: %v", logs.All())
		}
		runtime.Gosched()
	}
}
