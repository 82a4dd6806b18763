package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"strata/api/apitypes"
)

// accessKinds are the resource kinds that carry access bindings.
var accessKinds = map[string]string{
	"folder": "folders", "image": "images", "disk": "disks", "snapshot": "snapshots",
}

// resourcePath turns "image ID" or "image/ID" into the API path of the
// resource.
func resourcePath(args []string) (string, error) {
	var kind, id string
	switch len(args) {
	case 1:
		var ok bool
		kind, id, ok = strings.Cut(args[0], "/")
		if !ok {
			return "", fmt.Errorf("%q: want KIND/ID or KIND ID (kind: folder, image, disk, snapshot)", args[0])
		}
	case 2:
		kind, id = args[0], args[1]
	default:
		return "", fmt.Errorf("want KIND ID")
	}
	plural, ok := accessKinds[kind]
	if !ok {
		return "", fmt.Errorf("kind %q: want folder, image, disk or snapshot", kind)
	}
	return "/compute/v1/" + plural + "/" + url.PathEscape(id), nil
}

// parseSubject reads "unixUser:1000", "unixGroup:100", "allAuthenticatedUsers"
// or "system:allAuthenticatedUsers".
func parseSubject(s string) (apitypes.Subject, error) {
	if s == apitypes.SystemAllAuthenticatedUsers || s == apitypes.SystemAllUsers {
		return apitypes.Subject{Type: apitypes.SubjectSystem, ID: s}, nil
	}
	typ, id, ok := strings.Cut(s, ":")
	if !ok || id == "" {
		return apitypes.Subject{}, fmt.Errorf("subject %q: want unixUser:UID, unixGroup:GID or system:allAuthenticatedUsers", s)
	}
	return apitypes.Subject{Type: typ, ID: id}, nil
}

// parseBinding reads ROLE=SUBJECT.
func parseBinding(s string) (apitypes.AccessBinding, error) {
	role, subj, ok := strings.Cut(s, "=")
	if !ok {
		return apitypes.AccessBinding{}, fmt.Errorf("binding %q: want ROLE=SUBJECT, e.g. compute.viewer=unixUser:1000", s)
	}
	sub, err := parseSubject(subj)
	return apitypes.AccessBinding{RoleID: role, Subject: sub}, err
}

var bindingColumns = []column[apitypes.AccessBinding]{
	{"ROLE", func(b apitypes.AccessBinding) string { return b.RoleID }},
	{"SUBJECT", func(b apitypes.AccessBinding) string { return b.Subject.Type + ":" + b.Subject.ID }},
}

func (a *app) accessCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "access",
		Short: "Access bindings: who may do what on a folder, image, disk or snapshot",
		Long: `Access bindings grant a role to a subject on a folder (and everything in it)
or on one resource. Roles: compute.viewer (read), compute.images.user (read
and use an image as a source or read-only NBD export), compute.editor
(create, change, delete), compute.admin (also change access). Subjects:
unixUser:UID, unixGroup:GID, system:allAuthenticatedUsers (everyone: a
public image). Resources are written KIND/ID or KIND ID, KIND being folder,
image, disk or snapshot.`,
	}
	list := &cobra.Command{
		Use:   "list KIND/ID",
		Short: "List the bindings on a resource",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := resourcePath(args)
			if err != nil {
				return err
			}
			items, err := listAll(a, cmd.Context(), path+":listAccessBindings", nil,
				func(r *apitypes.ListAccessBindingsResponse) ([]apitypes.AccessBinding, string) {
					return r.AccessBindings, r.NextPageToken
				})
			if err != nil {
				return err
			}
			return printList(a, apitypes.ListAccessBindingsResponse{AccessBindings: items}, items, bindingColumns)
		},
	}
	var bindings []string
	set := &cobra.Command{
		Use:   "set KIND/ID [--binding ROLE=SUBJECT]...",
		Short: "Replace every binding on a resource (none given: remove all)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := resourcePath(args)
			if err != nil {
				return err
			}
			req := apitypes.SetAccessBindingsRequest{AccessBindings: []apitypes.AccessBinding{}}
			for _, s := range bindings {
				b, err := parseBinding(s)
				if err != nil {
					return err
				}
				req.AccessBindings = append(req.AccessBindings, b)
			}
			return mutate[struct{}](a, cmd.Context(), http.MethodPost, path+":setAccessBindings", req, "", nil)
		},
	}
	set.Flags().StringArrayVar(&bindings, "binding", nil, "ROLE=SUBJECT, e.g. compute.viewer=unixUser:1000 (repeatable)")

	delta := func(use, short, action string) *cobra.Command {
		var role, subject string
		c := &cobra.Command{
			Use:   use + " KIND/ID --role ROLE --subject SUBJECT",
			Short: short,
			Args:  cobra.RangeArgs(1, 2),
			RunE: func(cmd *cobra.Command, args []string) error {
				path, err := resourcePath(args)
				if err != nil {
					return err
				}
				sub, err := parseSubject(subject)
				if err != nil {
					return err
				}
				req := apitypes.UpdateAccessBindingsRequest{AccessBindingDeltas: []apitypes.AccessBindingDelta{{
					Action: action, AccessBinding: apitypes.AccessBinding{RoleID: role, Subject: sub},
				}}}
				return mutate[struct{}](a, cmd.Context(), http.MethodPost, path+":updateAccessBindings", req, "", nil)
			},
		}
		c.Flags().StringVar(&role, "role", "", "compute.viewer, compute.images.user, compute.editor or compute.admin")
		c.Flags().StringVar(&subject, "subject", "", "unixUser:UID, unixGroup:GID or system:allAuthenticatedUsers")
		_ = c.MarkFlagRequired("role")
		_ = c.MarkFlagRequired("subject")
		return c
	}
	cmd.AddCommand(list, set,
		delta("add", "Grant a role to a subject", apitypes.ActionAdd),
		delta("remove", "Take a role from a subject", apitypes.ActionRemove))
	return cmd
}
