package main

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"strata/api/apitypes"
)

func (a *app) operationCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operation",
		Short: "Operations: the progress and result of every mutation",
	}
	get := &cobra.Command{
		Use:   "get OPERATION_ID",
		Short: "Show an operation",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := a.getOperation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printOperation(op)
		},
	}
	wait := &cobra.Command{
		Use:   "wait OPERATION_ID",
		Short: "Wait for an operation to finish; exit non-zero if it failed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := a.getOperation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if op, err = a.wait(cmd.Context(), op, op.Description); err != nil {
				return err
			}
			if err := a.printOperation(op); err != nil {
				return err
			}
			return opError(&op)
		},
	}
	var imageID, diskID, snapshotID string
	list := &cobra.Command{
		Use:   "list (--folder F | --image ID | --disk ID | --snapshot ID)",
		Short: "List operations of a folder or of one resource, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, q := "/operation", url.Values{}
			switch {
			case imageID != "":
				path = "/compute/v1/images/" + url.PathEscape(imageID) + "/operations"
			case diskID != "":
				path = "/compute/v1/disks/" + url.PathEscape(diskID) + "/operations"
			case snapshotID != "":
				path = "/compute/v1/snapshots/" + url.PathEscape(snapshotID) + "/operations"
			case a.folder != "":
				q.Set("folderId", a.folder)
			default:
				return errors.New("give --folder, --image, --disk or --snapshot")
			}
			items, err := listAll(a, cmd.Context(), path, q,
				func(r *apitypes.ListOperationsResponse) ([]apitypes.Operation, string) {
					return r.Operations, r.NextPageToken
				})
			if err != nil {
				return err
			}
			return printList(a, apitypes.ListOperationsResponse{Operations: items}, items, operationColumns)
		},
	}
	a.folderFlag(list, "folder whose operations to list")
	list.Flags().StringVar(&imageID, "image", "", "operations on this image")
	list.Flags().StringVar(&diskID, "disk", "", "operations on this disk")
	list.Flags().StringVar(&snapshotID, "snapshot", "", "operations on this snapshot")
	cancel := &cobra.Command{
		Use:   "cancel OPERATION_ID",
		Short: "Ask the daemon to stop an operation (it stops at a safe point)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var op apitypes.Operation
			if err := a.c.do(cmd.Context(), http.MethodPost, "/operation/"+url.PathEscape(args[0])+":cancel", nil, nil, &op); err != nil {
				return err
			}
			return a.printOperation(op)
		},
	}
	cmd.AddCommand(get, wait, list, cancel)
	return cmd
}
