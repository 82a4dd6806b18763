package main

import (
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"strata/api/apitypes"
)

var folderColumns = []column[apitypes.Folder]{
	{"ID", func(f apitypes.Folder) string { return f.ID }},
	{"NAME", func(f apitypes.Folder) string { return f.Name }},
	{"STATUS", func(f apitypes.Folder) string { return f.Status }},
	{"CREATED", func(f apitypes.Folder) string { return when(f.CreatedAt) }},
	{"LABELS", func(f apitypes.Folder) string { return labels(f.Labels) }},
	{"DESCRIPTION", func(f apitypes.Folder) string { return f.Description }},
}

func (a *app) printFolder(f apitypes.Folder) error { return printOne(a, f, folderColumns) }

func (a *app) folderCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "folder",
		Short: "Folders: the namespaces images, disks and snapshots live in",
	}
	var desc string
	var lbls []string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a folder (admins only)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := parseLabels(lbls)
			if err != nil {
				return err
			}
			req := apitypes.CreateFolderRequest{Name: args[0], Description: desc, Labels: l}
			return mutate(a, cmd.Context(), http.MethodPost, "/compute/v1/folders", req, "", a.printFolder)
		},
	}
	create.Flags().StringVar(&desc, "description", "", "free text")
	create.Flags().StringArrayVar(&lbls, "label", nil, "label key=value (repeatable)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the folders you can see",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			items, err := listAll(a, cmd.Context(), "/compute/v1/folders", nil,
				func(r *apitypes.ListFoldersResponse) ([]apitypes.Folder, string) { return r.Folders, r.NextPageToken })
			if err != nil {
				return err
			}
			return printList(a, apitypes.ListFoldersResponse{Folders: items}, items, folderColumns)
		},
	}
	get := &cobra.Command{
		Use:   "get FOLDER",
		Short: "Show a folder (id or name)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var f apitypes.Folder
			if err := a.c.do(cmd.Context(), http.MethodGet, "/compute/v1/folders/"+url.PathEscape(args[0]), nil, nil, &f); err != nil {
				return err
			}
			return a.printFolder(f)
		},
	}
	del := &cobra.Command{
		Use:   "delete FOLDER",
		Short: "Delete an empty folder",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mutate[struct{}](a, cmd.Context(), http.MethodDelete, "/compute/v1/folders/"+url.PathEscape(args[0]), nil, "", nil)
		},
	}
	cmd.AddCommand(create, list, get, del)
	return cmd
}
