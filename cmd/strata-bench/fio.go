package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// errFio: fio ran but its output says the job failed or did nothing.
var errFio = errors.New("fio")

// fioResult is the part of fio's JSON output the benchmark reads, summed
// over the jobs.
type fioResult struct {
	ReadIOPS, WriteIOPS   float64
	ReadBW, WriteBW       float64 // bytes per second
	ReadIOs, WriteIOs     int64   // completed requests
	ReadBytes, WriteBytes int64   // bytes moved
}

type fioStats struct {
	IOPS    float64 `json:"iops"`
	BWBytes float64 `json:"bw_bytes"`
	TotalIO int64   `json:"total_ios"`
	IOBytes int64   `json:"io_bytes"`
}

type fioJob struct {
	Name  string   `json:"jobname"`
	Error int      `json:"error"`
	Read  fioStats `json:"read"`
	Write fioStats `json:"write"`
}

type fioOutput struct {
	Jobs []fioJob `json:"jobs"`
}

// parseFio reads fio's --output-format=json output. fio may print notes
// ("fio: ...") before the JSON document, so parsing starts at the first
// '{'. A job with a non-zero error is an error; so is output with no jobs.
func parseFio(out []byte) (fioResult, error) {
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return fioResult{}, fmt.Errorf("%w: no JSON in output: %.200q", errFio, out)
	}
	var doc fioOutput
	if err := json.Unmarshal(out[i:], &doc); err != nil {
		return fioResult{}, fmt.Errorf("%w: parse output: %w", errFio, err)
	}
	if len(doc.Jobs) == 0 {
		return fioResult{}, fmt.Errorf("%w: no jobs in output", errFio)
	}
	var r fioResult
	for _, j := range doc.Jobs {
		if j.Error != 0 {
			return fioResult{}, fmt.Errorf("%w: job %q failed with error %d", errFio, j.Name, j.Error)
		}
		r.ReadIOPS += j.Read.IOPS
		r.WriteIOPS += j.Write.IOPS
		r.ReadBW += j.Read.BWBytes
		r.WriteBW += j.Write.BWBytes
		r.ReadIOs += j.Read.TotalIO
		r.WriteIOs += j.Write.TotalIO
		r.ReadBytes += j.Read.IOBytes
		r.WriteBytes += j.Write.IOBytes
	}
	if r.ReadIOs+r.WriteIOs == 0 {
		return fioResult{}, fmt.Errorf("%w: no I/O completed", errFio)
	}
	return r, nil
}

// fioJobSpec is one fio run against an NBD export.
type fioJobSpec struct {
	RW      string // randread, randwrite, read, write
	BS      int    // bytes
	IODepth int
	Runtime time.Duration
}

// fioArgs builds the command line: fio's nbd engine (libnbd) on uri, one
// job, one connection, time based, JSON into outFile.
func fioArgs(spec fioJobSpec, uri, outFile string) []string {
	return []string{
		"--name=" + spec.RW + "-" + strconv.Itoa(spec.BS),
		"--ioengine=nbd",
		"--uri=" + uri,
		"--rw=" + spec.RW,
		"--bs=" + strconv.Itoa(spec.BS),
		"--iodepth=" + strconv.Itoa(spec.IODepth),
		"--direct=1",
		"--time_based",
		"--runtime=" + strconv.FormatFloat(spec.Runtime.Seconds(), 'f', -1, 64) + "s",
		"--output-format=json",
		"--output=" + outFile,
	}
}

// runFio runs one fio job and parses its result; cpu is fio's CPU
// seconds, its job processes included.
func (b *bench) runFio(ctx context.Context, spec fioJobSpec, uri, tag string) (r fioResult, cpu float64, err error) {
	out := filepath.Join(b.dir, "fio-"+tag+".json")
	if _, cpu, err = b.procs.run(ctx, spec.Runtime+90*time.Second, "fio", fioArgs(spec, uri, out)...); err != nil {
		return r, cpu, err
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return r, cpu, err
	}
	r, err = parseFio(data)
	return r, cpu, err
}
