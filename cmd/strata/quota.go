package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"strata/api/apitypes"
	"strata/cmd/internal/units"
)

var quotaColumns = []column[apitypes.Quota]{
	{"NAME", func(q apitypes.Quota) string { return q.Name }},
	{"LIMIT", func(q apitypes.Quota) string { return quotaNumber(q.Name, q.Limit) }},
	{"USAGE", func(q apitypes.Quota) string { return quotaNumber(q.Name, q.Usage) }},
}

// quotaNumber prints sizes as sizes and counts as counts.
func quotaNumber(name string, n int64) string {
	if strings.HasSuffix(name, ".size") {
		return humanSize(n)
	}
	return strconv.FormatInt(n, 10)
}

func (a *app) quotaCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quota",
		Short: "Folder quotas: hard limits on images, their size, disks, snapshots and pooled images",
	}
	get := &cobra.Command{
		Use:   "get --folder F",
		Short: "Show a folder's limits and usage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			folder, err := a.needFolder()
			if err != nil {
				return err
			}
			var ql apitypes.QuotaList
			if err := a.c.do(cmd.Context(), http.MethodGet, "/compute/v1/folders/"+url.PathEscape(folder)+"/quotas", nil, nil, &ql); err != nil {
				return err
			}
			return printList(a, ql, ql.Quotas, quotaColumns)
		},
	}
	a.folderFlag(get, "folder")
	set := &cobra.Command{
		Use:   "set --folder F NAME=LIMIT...",
		Short: "Set limits (admins only), e.g. compute.diskPools.count=2 compute.images.size=100G",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			folder, err := a.needFolder()
			if err != nil {
				return err
			}
			req := apitypes.SetQuotasRequest{Limits: map[string]int64{}}
			for _, kv := range args {
				name, val, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("%q: want NAME=LIMIT", kv)
				}
				n, err := units.ParseSize(val)
				if err != nil {
					return errors.New(name + ": " + err.Error())
				}
				req.Limits[name] = n
			}
			return mutate(a, cmd.Context(), http.MethodPost, "/compute/v1/folders/"+url.PathEscape(folder)+"/quotas", req, "",
				func(ql apitypes.QuotaList) error { return printList(a, ql, ql.Quotas, quotaColumns) })
		},
	}
	a.folderFlag(set, "folder")
	cmd.AddCommand(get, set)
	return cmd
}
