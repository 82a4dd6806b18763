package main

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"strata/api/apitypes"
)

var snapshotColumns = []column[apitypes.Snapshot]{
	{"ID", func(s apitypes.Snapshot) string { return s.ID }},
	{"NAME", func(s apitypes.Snapshot) string { return s.Name }},
	{"STATUS", func(s apitypes.Snapshot) string { return s.Status }},
	{"DISK", func(s apitypes.Snapshot) string { return s.SourceDiskID }},
	{"DISK_SIZE", func(s apitypes.Snapshot) string { return humanSize(s.DiskSize) }},
	{"STORED", func(s apitypes.Snapshot) string { return humanSize(s.StorageSize) }},
	{"CREATED", func(s apitypes.Snapshot) string { return when(s.CreatedAt) }},
}

var snapshotDetail = append(append([]column[apitypes.Snapshot]{}, snapshotColumns...),
	column[apitypes.Snapshot]{"FOLDER", func(s apitypes.Snapshot) string { return s.FolderID }},
	column[apitypes.Snapshot]{"OS", func(s apitypes.Snapshot) string { return s.OS.Type }},
	column[apitypes.Snapshot]{"DESCRIPTION", func(s apitypes.Snapshot) string { return s.Description }},
	column[apitypes.Snapshot]{"LABELS", func(s apitypes.Snapshot) string { return labels(s.Labels) }},
	column[apitypes.Snapshot]{"CHECKSUM", func(s apitypes.Snapshot) string { return s.Checksum }},
	column[apitypes.Snapshot]{"EXPORT", func(s apitypes.Snapshot) string { return s.ExportName }},
)

func (a *app) printSnapshot(s apitypes.Snapshot) error { return printOne(a, s, snapshotDetail) }

func (a *app) snapshotCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Snapshots: point-in-time copies of disks, also taken while a client writes",
	}
	var diskID, name, description string
	var lbls []string
	create := &cobra.Command{
		Use:   "create --disk DISK_ID",
		Short: "Snapshot a disk: it holds every write acknowledged before the call",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if diskID == "" {
				return errors.New("--disk is required")
			}
			l, err := parseLabels(lbls)
			if err != nil {
				return err
			}
			req := apitypes.CreateSnapshotRequest{FolderID: a.folder, DiskID: diskID, Name: name, Description: description, Labels: l}
			return mutate(a, cmd.Context(), http.MethodPost, "/compute/v1/snapshots", req, "snapshot", a.printSnapshot)
		},
	}
	a.folderFlag(create, "folder of the snapshot (default: the disk's)")
	create.Flags().StringVar(&diskID, "disk", "", "disk to snapshot")
	create.Flags().StringVar(&name, "name", "", "snapshot name, unique in the folder")
	create.Flags().StringVar(&description, "description", "", "free text")
	create.Flags().StringArrayVar(&lbls, "label", nil, "label key=value (repeatable)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the snapshots of a folder",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			folder, err := a.needFolder()
			if err != nil {
				return err
			}
			items, err := listAll(a, cmd.Context(), "/compute/v1/snapshots", url.Values{"folderId": {folder}},
				func(r *apitypes.ListSnapshotsResponse) ([]apitypes.Snapshot, string) {
					return r.Snapshots, r.NextPageToken
				})
			if err != nil {
				return err
			}
			return printList(a, apitypes.ListSnapshotsResponse{Snapshots: items}, items, snapshotColumns)
		},
	}
	a.folderFlag(list, "folder to list")

	get := &cobra.Command{
		Use:   "get SNAPSHOT_ID",
		Short: "Show a snapshot",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var s apitypes.Snapshot
			if err := a.c.do(cmd.Context(), http.MethodGet, "/compute/v1/snapshots/"+url.PathEscape(args[0]), nil, nil, &s); err != nil {
				return err
			}
			return a.printSnapshot(s)
		},
	}
	del := &cobra.Command{
		Use:   "delete SNAPSHOT_ID",
		Short: "Delete a snapshot (images and disks made from it keep working)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mutate[struct{}](a, cmd.Context(), http.MethodDelete, "/compute/v1/snapshots/"+url.PathEscape(args[0]), nil, "", nil)
		},
	}
	var format string
	export := &cobra.Command{
		Use:   "export SNAPSHOT_ID FILE",
		Short: "Write a snapshot to a raw or qcow2 file",
		Long:  exportHelp("snapshot"),
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.export(cmd.Context(), "/compute/v1/snapshots/"+url.PathEscape(args[0])+":export", format, args[1])
		},
	}
	export.Flags().StringVar(&format, "format", "raw", "file format: raw or qcow2; output format here is -o")
	cmd.AddCommand(create, list, get, del, export)
	return cmd
}
