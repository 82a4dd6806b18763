package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// phaseResult collects one phase's samples for each server.
type phaseResult struct {
	phase
	Strata, Qemu, Nbdkit []sample
}

func (r *phaseResult) add(server string, s sample) {
	switch server {
	case serverStrata:
		r.Strata = append(r.Strata, s)
	case serverQemu:
		r.Qemu = append(r.Qemu, s)
	case serverNbdkit:
		r.Nbdkit = append(r.Nbdkit, s)
	}
}

// median of xs (the mean of the middle two for an even count); NaN for
// none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func values(ss []sample) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.Value
	}
	return out
}

func cpus(ss []sample) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.CPU
	}
	return out
}

func clientCPUs(ss []sample) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.ClientCPU
	}
	return out
}

// machineShares are the parts of the machine (cores CPUs) that server and
// client used together in each sample, samples without a wall time left
// out: near 1, the phase was bound by the machine, not by either program.
func machineShares(ss []sample, cores int) []float64 {
	var out []float64
	for _, s := range ss {
		if s.Wall > 0 && cores > 0 {
			out = append(out, (s.CPU+s.ClientCPU)/(s.Wall*float64(cores)))
		}
	}
	return out
}

// costs are CPU seconds per unit of work, samples without work left out.
func costs(ss []sample) []float64 {
	var out []float64
	for _, s := range ss {
		if s.Work > 0 {
			out = append(out, s.CPU/s.Work)
		}
	}
	return out
}

// costRatio is strata's median CPU per unit of work over qemu-nbd's:
// below 1, strata spends less CPU for the same work.
func (r *phaseResult) costRatio() (float64, bool) {
	s, q := costs(r.Strata), costs(r.Qemu)
	if len(s) == 0 || len(q) == 0 || median(q) == 0 {
		return 0, false
	}
	return median(s) / median(q), true
}

// summary is one server's figures for one phase.
type summary struct {
	Median          float64 `json:"median"`
	CPUMedian       float64 `json:"cpu_seconds_median"`
	ClientCPUMedian float64 `json:"client_cpu_seconds_median"`
	// MachineShareMedian: (server + client CPU seconds) / (wall seconds x
	// cores), a fraction; absent when no sample has a wall time.
	MachineShareMedian *float64 `json:"machine_share_median,omitempty"`
	DiskReadMedian     float64  `json:"disk_read_mb_median"`
	Samples            []sample `json:"samples"`
}

func summarize(ss []sample, cores int) *summary {
	if len(ss) == 0 {
		return nil
	}
	sum := &summary{Median: median(values(ss)), CPUMedian: median(cpus(ss)), ClientCPUMedian: median(clientCPUs(ss)),
		DiskReadMedian: median(diskReads(ss)), Samples: ss}
	if sh := machineShares(ss, cores); len(sh) > 0 {
		m := median(sh)
		sum.MachineShareMedian = &m
	}
	return sum
}

func diskReads(ss []sample) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.DiskReadMB
	}
	return out
}

// jsonPhase is one phase in --json output.
type jsonPhase struct {
	Name        string   `json:"name"`
	Figure      string   `json:"figure"`
	Unit        string   `json:"unit"`
	TargetRatio float64  `json:"target_ratio"`
	Strata      *summary `json:"strata,omitempty"`
	Qemu        *summary `json:"qemu_nbd,omitempty"`
	// Nbdkit is nbdkit's memory plugin, a reference (see serverNbdkit).
	Nbdkit *summary `json:"nbdkit_memory,omitempty"`
	Ratio  *float64 `json:"ratio,omitempty"`
	Met    *bool    `json:"target_met,omitempty"`
	// OfNbdkit: strata's median over nbdkit's; QemuOfNbdkit: qemu-nbd's.
	OfNbdkit     *float64 `json:"strata_of_nbdkit,omitempty"`
	QemuOfNbdkit *float64 `json:"qemu_nbd_of_nbdkit,omitempty"`
	// CPUCostRatio: strata's CPU seconds per unit of work over qemu-nbd's.
	CPUCostRatio *float64 `json:"cpu_cost_ratio,omitempty"`
}

// json is the phase as --json prints it; cores is the machine's CPU
// count, for the machine share.
func (r *phaseResult) json(cores int) jsonPhase {
	j := jsonPhase{Name: r.Name, Figure: r.Figure, Unit: r.Unit, TargetRatio: r.Target,
		Strata: summarize(r.Strata, cores), Qemu: summarize(r.Qemu, cores), Nbdkit: summarize(r.Nbdkit, cores)}
	if ratio, ok := r.ratio(); ok {
		met := ratio >= r.Target
		j.Ratio, j.Met = &ratio, &met
	}
	if x, ok := medianRatio(r.Strata, r.Nbdkit); ok {
		j.OfNbdkit = &x
	}
	if x, ok := medianRatio(r.Qemu, r.Nbdkit); ok {
		j.QemuOfNbdkit = &x
	}
	if c, ok := r.costRatio(); ok {
		j.CPUCostRatio = &c
	}
	return j
}

// ratio is strata's median over qemu-nbd's, when both were measured.
func (r *phaseResult) ratio() (float64, bool) { return medianRatio(r.Strata, r.Qemu) }

// medianRatio is a's median value over b's, when both have samples.
func medianRatio(a, b []sample) (float64, bool) {
	if len(a) == 0 || len(b) == 0 {
		return 0, false
	}
	d := median(values(b))
	if d == 0 {
		return 0, false
	}
	return median(values(a)) / d, true
}

// report is the whole run, as --json prints it.
type report struct {
	Config  configJSON    `json:"config"`
	Import  *importResult `json:"strata_import,omitempty"`
	Phases  []jsonPhase   `json:"phases"`
	Seconds float64       `json:"seconds"`
}

func writeJSON(w io.Writer, rep report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// writeTable prints the medians side by side; cores is the machine's CPU
// count, for the machine share. nbdkit's columns appear when it was
// measured.
func writeTable(w io.Writer, results []phaseResult, rounds, cores int) error {
	withNbdkit := slices.ContainsFunc(results, func(r phaseResult) bool { return len(r.Nbdkit) > 0 })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{fmt.Sprintf("figure (median of %d)", rounds), "unit", "strata", "qemu-nbd", "ratio", "target", ""}
	if withNbdkit {
		header = append(header, "nbdkit mem", "strata", "qemu")
	}
	header = append(header, "cpu strata", "client", "cpu qemu", "client", "cpu/work s:q", "machine strata", "qemu", "disk strata", "qemu")
	writeRow(tw, header)
	for i := range results {
		r := &results[i]
		ratio, verdict := "-", ""
		if x, ok := r.ratio(); ok {
			ratio = fmt.Sprintf("%.2fx", x)
			verdict = "met"
			if x < r.Target {
				verdict = "MISSED"
			}
		}
		cost := "-"
		if c, ok := r.costRatio(); ok {
			cost = fmt.Sprintf("%.2fx", c)
		}
		row := []string{r.Figure, r.Unit, medianCell(r.Strata, r.Unit), medianCell(r.Qemu, r.Unit), ratio,
			fmt.Sprintf(">=%.1fx", r.Target), verdict}
		if withNbdkit {
			row = append(row, medianCell(r.Nbdkit, r.Unit), shareOfCell(r.Strata, r.Nbdkit), shareOfCell(r.Qemu, r.Nbdkit))
		}
		row = append(row, secondsCell(r.Strata, cpus), secondsCell(r.Strata, clientCPUs), secondsCell(r.Qemu, cpus),
			secondsCell(r.Qemu, clientCPUs), cost, shareCell(r.Strata, cores), shareCell(r.Qemu, cores),
			diskCell(r.Strata), diskCell(r.Qemu))
		writeRow(tw, row)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	nbdkitNote := ""
	if withNbdkit {
		nbdkitNote = "nbdkit mem: nbdkit's memory plugin holding the same data (no disk, no format,\n" +
			"nothing to decode), and strata's and qemu-nbd's medians as a share of it.\n"
	}
	_, err := fmt.Fprintf(w, "\nratio: strata / qemu-nbd, medians. cpu: the server process's CPU seconds during the\n"+
		"measurement; client: the client tool's (fio's or nbdcopy's) CPU seconds, from its rusage.\n"+
		"cpu/work s:q: strata's CPU per request (or per MB) over qemu-nbd's; below 1 strata is\n"+
		"cheaper. On a shared machine the CPU figures are steadier than the throughput.\n"+
		nbdkitNote+
		"machine: (server + client CPU seconds) / (wall seconds x %d cores), in %%: near 100 %%\n"+
		"the phase was bound by the machine (other users' load not counted).\n"+
		"disk: MB the server read from the disk during the phase (page-cache misses).\n", cores)
	return err
}

// writeRow writes one tab-separated row of cells.
func writeRow(w io.Writer, cells []string) {
	fmt.Fprint(w, strings.Join(cells, "\t")+"\t\n")
}

func medianCell(ss []sample, unit string) string {
	if len(ss) == 0 {
		return "-"
	}
	return fmtValue(median(values(ss)), unit)
}

// shareOfCell prints a's median as a share of ref's.
func shareOfCell(a, ref []sample) string {
	x, ok := medianRatio(a, ref)
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.0f %%", 100*x)
}

func diskCell(ss []sample) string {
	if len(ss) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", median(diskReads(ss)))
}

// secondsCell prints the median of the seconds field picks from ss.
func secondsCell(ss []sample, field func([]sample) []float64) string {
	if len(ss) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", median(field(ss)))
}

func shareCell(ss []sample, cores int) string {
	sh := machineShares(ss, cores)
	if len(sh) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f %%", 100*median(sh))
}

// fmtValue prints IOPS in thousands and MB/s whole.
func fmtValue(v float64, unit string) string {
	if unit == "IOPS" {
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

// fmtBytes prints a byte count in binary units.
func fmtBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	s := fmt.Sprintf("%.1f", f)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string(units[i]) + "iB"
}
