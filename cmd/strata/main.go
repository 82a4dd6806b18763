package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// app is the state every command shares: where the daemon is and how to
// print.
type app struct {
	socketFlag string
	format     string
	async      bool
	quiet      bool
	folder     string
	idemKey    string

	c      *client
	stdout io.Writer
	stderr io.Writer
}

func main() {
	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	root := a.rootCommand()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			fmt.Fprintf(a.stderr, "strata: %s\n", ae.Error())
		} else {
			fmt.Fprintf(a.stderr, "strata: %v\n", err)
		}
		os.Exit(1)
	}
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "strata",
		Short: "Manage images, disks and snapshots of a strata daemon",
		Long: `strata manages the VM images, disks, snapshots, folders, access bindings and
quotas of a stratad daemon over its admin Unix socket.

The daemon identifies you by your Unix uid and gid; root and the daemon's
own user are admins. Folder arguments take a folder's id or name; set
STRATA_FOLDER to skip --folder.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch a.format {
			case "table", "json", "id":
			default:
				return fmt.Errorf("--format %q: want table, json or id", a.format)
			}
			a.c = newClient(resolveSocket(a.socketFlag))
			a.c.idemKey = a.idemKey
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.socketFlag, "socket", "",
		"admin socket of stratad (default $STRATA_SOCKET, else ./var/admin.sock if it exists, else /run/strata/admin.sock)")
	pf.StringVar(&a.format, "format", "table", "output: table, json (the API's own JSON) or id (just the id, for scripts)")
	// -o is the same setting, for the commands whose --format names a file
	// format (image import/export, snapshot export).
	pf.StringVarP(&a.format, "output", "o", "table", "output: table, json or id (same as --format)")
	pf.BoolVar(&a.async, "async", false, "do not wait for a mutation's operation; print it and return")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "no progress bars")
	pf.StringVar(&a.idemKey, "idempotency-key", "",
		"send this Idempotency-Key with the mutation: repeating the command with the same key returns the first operation instead of doing the work twice")
	root.AddCommand(
		a.folderCommand(),
		a.imageCommand(),
		a.diskCommand(),
		a.snapshotCommand(),
		a.operationCommand(),
		a.accessCommand(),
		a.quotaCommand(),
		a.nbdURICommand(),
		a.statusCommand(),
	)
	return root
}

// folderFlag adds --folder (default $STRATA_FOLDER) to cmd.
func (a *app) folderFlag(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&a.folder, "folder", os.Getenv("STRATA_FOLDER"), what+" (id or name; default $STRATA_FOLDER)")
}

// needFolder returns the folder or a usage error.
func (a *app) needFolder() (string, error) {
	if a.folder == "" {
		return "", errors.New("--folder is required (or set STRATA_FOLDER)")
	}
	return a.folder, nil
}

// showProgress reports whether to draw progress bars: only for a person
// watching a terminal, so scripts and logs stay clean.
func (a *app) showProgress() bool {
	if a.quiet || a.async {
		return false
	}
	f, ok := a.stderr.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
