package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"strata/layer"
	"strata/storage"
)

// errAuditFound ends `stratad audit` with a non-zero status when the store
// is not clean.
var errAuditFound = errors.New("the audit found problems (see above)")

// auditListMax bounds the ids the text report lists per kind of problem.
const auditListMax = 20

func newAuditCommand() *cobra.Command {
	var dataDir, format string
	var verify bool
	cmd := &cobra.Command{
		Use:   "audit [flags]",
		Short: "Check the store of a stopped stratad: reference counts against the block maps, and with --verify every chunk's checksum",
		Long: `audit opens the store in --data-dir while no stratad runs on it (it takes
the directory's lock) and rebuilds every chunk's reference count from the
block maps of all images, snapshots and disks, in one snapshot of the
store, then compares them with the stored counts:

  leaked    a stored count above the maps' (space never given back)
  missing   a stored count below the maps' (a chunk that would be freed
            while still in use)
  dangling  referenced by a map but not stored
  corrupt   with --verify: a chunk whose body does not decode to its
            checksum, or a body no record accounts for

It exits 0 when the store is clean and 1 otherwise. --verify reads and
decodes every chunk, so it takes about as long as reading the whole store.
Memory: about 40 bytes per distinct referenced chunk, at most about 320 MB:
a store of more than 8 Mi chunks is audited in several passes over its ids,
each reading all the block maps again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("--format must be text or json, not %q", format)
			}
			rep, err := auditDataDir(cmd.Context(), dataDir, verify)
			if err != nil {
				return err
			}
			if err := writeAudit(cmd.OutOrStdout(), format, dataDir, verify, rep); err != nil {
				return err
			}
			if !rep.Clean() {
				return errAuditFound
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "./var", "data directory of the stratad to audit (it must not be running)")
	cmd.Flags().BoolVar(&verify, "verify", false, "also read and checksum every chunk")
	cmd.Flags().StringVar(&format, "format", "text", "report: text or json")
	return cmd
}

// auditDataDir audits the store of dataDir under the directory's lock.
func auditDataDir(ctx context.Context, dataDir string, verify bool) (storage.AuditReport, error) {
	storeDir := filepath.Join(dataDir, "store")
	if _, err := os.Stat(storeDir); err != nil {
		return storage.AuditReport{}, fmt.Errorf("no store in %s: %w", dataDir, err)
	}
	lock, err := lockDataDir(dataDir)
	if err != nil {
		return storage.AuditReport{}, err
	}
	defer lock.Unlock()
	opts := storage.DefaultOptions()
	opts.GCInterval = 0 // nothing but the audit changes what it reads
	store, err := storage.Open(storeDir, opts)
	if err != nil {
		return storage.AuditReport{}, fmt.Errorf("open store in %s: %w", storeDir, err)
	}
	rep, err := store.Audit(ctx, layer.Refs(), verify)
	if cerr := store.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close store: %w", cerr)
	}
	return rep, err
}

// auditJSON is the report as `--format json` prints it.
type auditJSON struct {
	Store    string            `json:"store"`
	Chunks   int64             `json:"chunks"`
	Verified bool              `json:"verified"`
	Clean    bool              `json:"clean"`
	Leaked   []storage.ChunkID `json:"leaked"`
	Missing  []storage.ChunkID `json:"missing"`
	Dangling []storage.ChunkID `json:"dangling"`
	Corrupt  []storage.ChunkID `json:"corrupt"`
}

func writeAudit(w io.Writer, format, dataDir string, verify bool, rep storage.AuditReport) error {
	if format == "json" {
		nonNil := func(ids []storage.ChunkID) []storage.ChunkID {
			if ids == nil {
				return []storage.ChunkID{}
			}
			return ids
		}
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(auditJSON{Store: dataDir, Chunks: rep.Chunks, Verified: verify, Clean: rep.Clean(),
			Leaked: nonNil(rep.Leaked), Missing: nonNil(rep.Missing), Dangling: nonNil(rep.Dangling), Corrupt: nonNil(rep.Corrupt)})
	}
	fmt.Fprintf(w, "store %s: %d chunks with reference records\n", dataDir, rep.Chunks)
	kinds := []struct {
		name     string
		ids      []storage.ChunkID
		verified bool // found only by --verify
	}{
		{"leaked (count above the maps')", rep.Leaked, false},
		{"missing (count below the maps')", rep.Missing, false},
		{"dangling (referenced, not stored)", rep.Dangling, false},
		{"corrupt (checksum or body)", rep.Corrupt, true},
	}
	for _, k := range kinds {
		if k.verified && !verify {
			fmt.Fprintf(w, "%-36s not checked (--verify)\n", k.name)
			continue
		}
		fmt.Fprintf(w, "%-36s %d", k.name, len(k.ids))
		for i, id := range k.ids {
			if i == auditListMax {
				fmt.Fprintf(w, " ... (%d more)", len(k.ids)-i)
				break
			}
			fmt.Fprintf(w, " %d", id)
		}
		fmt.Fprintln(w)
	}
	if rep.Clean() {
		fmt.Fprintln(w, "clean")
	}
	return nil
}
