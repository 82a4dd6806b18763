package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "stratad: %v\n", err)
		os.Exit(1)
	}
}

// newCommand builds the daemon's command line.
func newCommand() *cobra.Command {
	var cfg config
	var configFile string
	cmd := &cobra.Command{
		Use:   "stratad [flags]",
		Short: "strata daemon: VM images and disks over NBD, managed over an admin socket",
		Long: `stratad keeps VM images, disks and snapshots in one data directory and serves
them over NBD (exports disk/<id> read-write, image/<id> and snapshot/<id>
read-only). The admin API (HTTP/JSON, used by the strata CLI), /metrics
and /healthz answer on the admin socket.

With no flags it uses ./var: run it from a checkout with 'make run', then
try 'bin/strata folder list'. Flags may also come from --config FILE, a
JSON object whose keys are the long flag names, e.g.
  {"data-dir": "/var/lib/strata", "admin-socket": "/run/strata/admin.sock",
   "cache-size": "1GiB", "log-format": "json"}
A flag on the command line wins over the file.

SIGTERM or SIGINT shuts down cleanly: NBD clients are drained and flushed,
operations stop at a point they resume from, the store is closed. A second
signal exits at once.

'stratad audit' checks the store of a stopped daemon.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" {
				if err := loadConfigFile(cmd.Flags(), configFile); err != nil {
					return err
				}
			}
			if err := cfg.resolve(); err != nil {
				return err
			}
			log, err := newLogger(cfg.LogFormat, cfg.LogLevel)
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck // stderr sync fails on a terminal; nothing to do
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			go func() {
				// After the first signal, restore the default action so a
				// second one kills a shutdown that hangs.
				<-ctx.Done()
				stop()
			}()
			err = run(ctx, &cfg, log)
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Error("stratad failed", errField(err))
				return err
			}
			return nil
		},
	}
	cmd.Flags().SortFlags = false
	cmd.Flags().StringVar(&configFile, "config", "", "JSON file of flag values (keys are long flag names); command-line flags win")
	cfg.registerFlags(cmd.Flags())
	cmd.AddCommand(newAuditCommand())
	return cmd
}
