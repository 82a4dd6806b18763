package main

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"strata/api/apitypes"
	"strata/cmd/internal/units"
)

var diskColumns = []column[apitypes.Disk]{
	{"ID", func(d apitypes.Disk) string { return d.ID }},
	{"NAME", func(d apitypes.Disk) string { return d.Name }},
	{"STATUS", func(d apitypes.Disk) string { return d.Status }},
	{"SIZE", func(d apitypes.Disk) string { return humanSize(d.Size) }},
	{"SOURCE", func(d apitypes.Disk) string { return diskSource(d) }},
	{"POOLED", func(d apitypes.Disk) string { return yesNo(d.Pooled) }},
	{"EXPORT", func(d apitypes.Disk) string { return d.ExportName }},
	{"CREATED", func(d apitypes.Disk) string { return when(d.CreatedAt) }},
}

var diskDetail = append(append([]column[apitypes.Disk]{}, diskColumns...),
	column[apitypes.Disk]{"FOLDER", func(d apitypes.Disk) string { return d.FolderID }},
	column[apitypes.Disk]{"OS", func(d apitypes.Disk) string { return d.OS.Type }},
	column[apitypes.Disk]{"DESCRIPTION", func(d apitypes.Disk) string { return d.Description }},
	column[apitypes.Disk]{"LABELS", func(d apitypes.Disk) string { return labels(d.Labels) }},
	column[apitypes.Disk]{"USAGE", func(d apitypes.Disk) string {
		if d.Usage == nil {
			return ""
		}
		return "unique " + humanSize(d.Usage.Unique) + ", shared " + humanSize(d.Usage.Shared)
	}},
)

func diskSource(d apitypes.Disk) string {
	switch {
	case d.SourceImageID != "":
		return "image/" + d.SourceImageID
	case d.SourceSnapshotID != "":
		return "snapshot/" + d.SourceSnapshotID
	}
	return "empty"
}

func (a *app) printDisk(d apitypes.Disk) error { return printOne(a, d, diskDetail) }

func (a *app) diskCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "disk",
		Short: "Disks: writable volumes over an image or a snapshot, served over NBD as disk/<id>",
	}
	var name, description, imageID, snapshotID, size, osType string
	var lbls []string
	create := &cobra.Command{
		Use:   "create --folder F (--image ID | --snapshot ID | --size SIZE)",
		Short: "Create a disk from an image or a snapshot, or an empty one",
		Long: `Create makes a disk. From an image or a snapshot it copies no data: the
disk is a writable overlay (on a pooled image, directly on its layer). The
size defaults to the image's minimum disk size or the snapshot's disk size;
a larger --size grows the disk. An empty disk needs --size.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			folder, err := a.needFolder()
			if err != nil {
				return err
			}
			l, err := parseLabels(lbls)
			if err != nil {
				return err
			}
			req := apitypes.CreateDiskRequest{FolderID: folder, Name: name, Description: description,
				Labels: l, ImageID: imageID, SnapshotID: snapshotID}
			if size != "" {
				if req.Size, err = units.ParseSize(size); err != nil {
					return err
				}
			}
			if osType != "" {
				req.OS = &apitypes.OS{Type: strings.ToUpper(osType)}
			}
			return mutate(a, cmd.Context(), http.MethodPost, "/compute/v1/disks", req, "", a.printDisk)
		},
	}
	a.folderFlag(create, "folder of the new disk")
	create.Flags().StringVar(&name, "name", "", "disk name, unique in the folder")
	create.Flags().StringVar(&description, "description", "", "free text")
	create.Flags().StringArrayVar(&lbls, "label", nil, "label key=value (repeatable)")
	create.Flags().StringVar(&imageID, "image", "", "source image id")
	create.Flags().StringVar(&snapshotID, "snapshot", "", "source snapshot id")
	create.Flags().StringVar(&size, "size", "", "size, e.g. 10G (required for an empty disk)")
	create.Flags().StringVar(&osType, "os-type", "", "linux or windows (empty disks only)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the disks of a folder",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			folder, err := a.needFolder()
			if err != nil {
				return err
			}
			items, err := listAll(a, cmd.Context(), "/compute/v1/disks", url.Values{"folderId": {folder}},
				func(r *apitypes.ListDisksResponse) ([]apitypes.Disk, string) { return r.Disks, r.NextPageToken })
			if err != nil {
				return err
			}
			return printList(a, apitypes.ListDisksResponse{Disks: items}, items, diskColumns)
		},
	}
	a.folderFlag(list, "folder to list")

	get := &cobra.Command{
		Use:   "get DISK_ID",
		Short: "Show a disk and its space usage",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var d apitypes.Disk
			if err := a.c.do(cmd.Context(), http.MethodGet, "/compute/v1/disks/"+url.PathEscape(args[0]), nil, nil, &d); err != nil {
				return err
			}
			return a.printDisk(d)
		},
	}

	var newSize, newName, newDesc string
	var newLabels []string
	update := &cobra.Command{
		Use:   "update DISK_ID [--size S] [--name N] [--description D] [--label k=v]...",
		Short: "Grow a disk or change its name, description or labels",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := apitypes.UpdateDiskRequest{Name: newName, Description: newDesc}
			var mask []string
			fl := cmd.Flags()
			if fl.Changed("size") {
				n, err := units.ParseSize(newSize)
				if err != nil {
					return err
				}
				req.Size = n
				mask = append(mask, "size")
			}
			if fl.Changed("name") {
				mask = append(mask, "name")
			}
			if fl.Changed("description") {
				mask = append(mask, "description")
			}
			if fl.Changed("label") {
				l, err := parseLabels(newLabels)
				if err != nil {
					return err
				}
				req.Labels = l
				mask = append(mask, "labels")
			}
			if len(mask) == 0 {
				return errors.New("nothing to change: give --size, --name, --description or --label")
			}
			req.UpdateMask = strings.Join(mask, ",")
			return mutate(a, cmd.Context(), http.MethodPatch, "/compute/v1/disks/"+url.PathEscape(args[0]), req, "", a.printDisk)
		},
	}
	update.Flags().StringVar(&newSize, "size", "", "new size (disks only grow)")
	update.Flags().StringVar(&newName, "name", "", "new name")
	update.Flags().StringVar(&newDesc, "description", "", "new description")
	update.Flags().StringArrayVar(&newLabels, "label", nil, "label key=value (repeatable; replaces all labels)")

	resize := &cobra.Command{
		Use:   "resize DISK_ID SIZE",
		Short: "Grow a disk (shorthand for update --size)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := units.ParseSize(args[1])
			if err != nil {
				return err
			}
			req := apitypes.UpdateDiskRequest{UpdateMask: "size", Size: n}
			return mutate(a, cmd.Context(), http.MethodPatch, "/compute/v1/disks/"+url.PathEscape(args[0]), req, "", a.printDisk)
		},
	}

	del := &cobra.Command{
		Use:   "delete DISK_ID",
		Short: "Delete a disk (refused while an NBD client has it open)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mutate[struct{}](a, cmd.Context(), http.MethodDelete, "/compute/v1/disks/"+url.PathEscape(args[0]), nil, "", nil)
		},
	}
	cmd.AddCommand(create, list, get, update, resize, del)
	return cmd
}
