package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) statusCommand() *cobra.Command {
	var wait time.Duration
	c := &cobra.Command{
		Use:   "status [--wait 30s]",
		Short: "Check that stratad answers on its admin socket (/healthz)",
		Long: `status asks the daemon's /healthz and prints "ok". With --wait it keeps
asking until the daemon answers or the time is up, so a script can start
stratad in the background and go on as soon as it serves.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			deadline := time.Now().Add(wait)
			delay := 10 * time.Millisecond
			for {
				// Resolve again each time: the default socket path
				// depends on which socket exists, and the daemon may
				// not have created its own yet.
				a.c = newClient(resolveSocket(a.socketFlag))
				err := a.healthz(ctx)
				if err == nil {
					fmt.Fprintln(a.stdout, "ok")
					return nil
				}
				if time.Now().Add(delay).After(deadline) {
					return err
				}
				select {
				case <-ctx.Done():
					return err
				case <-time.After(delay):
				}
				delay = min(delay*2, 250*time.Millisecond)
			}
		},
	}
	c.Flags().DurationVar(&wait, "wait", 0, "keep trying this long for the daemon to come up")
	return c
}

// healthz asks /healthz once.
func (a *app) healthz(ctx context.Context) error {
	req, err := a.c.newRequest(ctx, http.MethodGet, "/healthz", nil, nil)
	if err != nil {
		return err
	}
	return a.c.send(req, nil)
}
