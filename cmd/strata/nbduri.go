package main

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

func (a *app) nbdURICommand() *cobra.Command {
	var nbdSocket string
	c := &cobra.Command{
		Use:   "nbd-uri EXPORT",
		Short: "Print the nbd+unix:// URI of an export (disk/<id>, image/<id>, snapshot/<id>) for qemu or libnbd",
		Long: `nbd-uri prints the URI that qemu (-drive file=...), qemu-img, qemu-io,
nbdcopy and nbdinfo accept for an export. The NBD socket defaults to
nbd.sock next to the admin socket, which is where stratad puts it unless
told otherwise.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, id, ok := strings.Cut(args[0], "/")
			if !ok || id == "" || (kind != "disk" && kind != "image" && kind != "snapshot") {
				return fmt.Errorf("%q: want disk/<id>, image/<id> or snapshot/<id>", args[0])
			}
			sock := nbdSocket
			if sock == "" {
				sock = filepath.Join(filepath.Dir(a.c.socket), "nbd.sock")
			}
			abs, err := filepath.Abs(sock)
			if err != nil {
				return err
			}
			u := url.URL{Scheme: "nbd+unix", Path: "/" + args[0], RawQuery: "socket=" + abs}
			fmt.Fprintln(a.stdout, u.String())
			return nil
		},
	}
	c.Flags().StringVar(&nbdSocket, "nbd-socket", "", "NBD socket of stratad (default: nbd.sock beside the admin socket)")
	return c
}
