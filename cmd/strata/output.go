package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// column is one table column of a resource type.
type column[T any] struct {
	header string
	value  func(T) string
}

// printJSON writes v indented, as the API sent it.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printList prints items as a table, raw (the whole API reply) as JSON, or
// one id per line.
func printList[T any](a *app, raw any, items []T, cols []column[T]) error {
	switch a.format {
	case "json":
		return a.printJSON(raw)
	case "id":
		for _, it := range items {
			fmt.Fprintln(a.stdout, cols[0].value(it))
		}
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	for i, c := range cols {
		if i > 0 {
			io.WriteString(tw, "\t")
		}
		io.WriteString(tw, c.header)
	}
	io.WriteString(tw, "\n")
	for _, it := range items {
		for i, c := range cols {
			if i > 0 {
				io.WriteString(tw, "\t")
			}
			io.WriteString(tw, cell(c.value(it)))
		}
		io.WriteString(tw, "\n")
	}
	return tw.Flush()
}

// printOne prints one resource as FIELD/VALUE rows, or as JSON.
func printOne[T any](a *app, item T, cols []column[T]) error {
	switch a.format {
	case "json":
		return a.printJSON(item)
	case "id":
		// The first column of every resource is its id: handy in scripts,
		// DISK=$(strata disk create ... -o id).
		_, err := fmt.Fprintln(a.stdout, cols[0].value(item))
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t%s\n", c.header, cell(c.value(item)))
	}
	return tw.Flush()
}

// cell keeps a table cell on one line and visibly empty.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.ReplaceAll(s, "\n", " ")
}

// humanSize prints a byte count with a binary unit.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func labels(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sortStrings(parts)
	return strings.Join(parts, ",")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// parseLabels reads k=v pairs.
func parseLabels(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("label %q: want key=value", kv)
		}
		m[k] = v
	}
	return m, nil
}
