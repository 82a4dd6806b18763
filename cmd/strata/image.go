package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"strata/api/apitypes"
	"strata/cmd/internal/units"
	"strata/layer/imagefile"
)

var imageColumns = []column[apitypes.Image]{
	{"ID", func(i apitypes.Image) string { return i.ID }},
	{"NAME", func(i apitypes.Image) string { return i.Name }},
	{"FAMILY", func(i apitypes.Image) string { return i.Family }},
	{"STATUS", func(i apitypes.Image) string { return i.Status }},
	{"OS", func(i apitypes.Image) string { return i.OS.Type }},
	{"POOLED", func(i apitypes.Image) string { return yesNo(i.Pooled) }},
	{"SIZE", func(i apitypes.Image) string { return humanSize(i.VirtualSize) }},
	{"STORED", func(i apitypes.Image) string { return humanSize(i.StorageSize) }},
	{"CREATED", func(i apitypes.Image) string { return when(i.CreatedAt) }},
}

// imageDetail adds the fields too wide for a list.
var imageDetail = append(append([]column[apitypes.Image]{}, imageColumns...),
	column[apitypes.Image]{"FOLDER", func(i apitypes.Image) string { return i.FolderID }},
	column[apitypes.Image]{"DESCRIPTION", func(i apitypes.Image) string { return i.Description }},
	column[apitypes.Image]{"LABELS", func(i apitypes.Image) string { return labels(i.Labels) }},
	column[apitypes.Image]{"MIN_DISK_SIZE", func(i apitypes.Image) string { return humanSize(i.MinDiskSize) }},
	column[apitypes.Image]{"CHECKSUM", func(i apitypes.Image) string { return i.Checksum }},
	column[apitypes.Image]{"SOURCE", func(i apitypes.Image) string { return imageSource(i) }},
	column[apitypes.Image]{"EXPORT", func(i apitypes.Image) string { return i.ExportName }},
)

func imageSource(i apitypes.Image) string {
	switch {
	case i.SourceImageID != "":
		return "image/" + i.SourceImageID
	case i.SourceDiskID != "":
		return "disk/" + i.SourceDiskID
	case i.SourceSnapshotID != "":
		return "snapshot/" + i.SourceSnapshotID
	case i.SourceFormat != "":
		return "upload (" + i.SourceFormat + ")"
	}
	return ""
}

func (a *app) printImage(i apitypes.Image) error { return printOne(a, i, imageDetail) }

func (a *app) imageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Images: immutable disk images, imported from files or made from disks, snapshots and images",
	}
	cmd.AddCommand(a.imageList(), a.imageGet(), a.imageLatest(), a.imageImport(), a.imageCreate(),
		a.imageUpdate(), a.imageDelete(), a.imageExport())
	return cmd
}

func (a *app) imageList() *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "list",
		Short: "List the images of a folder",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			folder, err := a.needFolder()
			if err != nil {
				return err
			}
			q := url.Values{"folderId": {folder}}
			if name != "" {
				q.Set("filter", fmt.Sprintf("name=%q", name))
			}
			items, err := listAll(a, cmd.Context(), "/compute/v1/images", q,
				func(r *apitypes.ListImagesResponse) ([]apitypes.Image, string) { return r.Images, r.NextPageToken })
			if err != nil {
				return err
			}
			return printList(a, apitypes.ListImagesResponse{Images: items}, items, imageColumns)
		},
	}
	a.folderFlag(c, "folder to list")
	c.Flags().StringVar(&name, "name", "", "only the image with this name")
	return c
}

func (a *app) imageGet() *cobra.Command {
	return &cobra.Command{
		Use:   "get IMAGE_ID",
		Short: "Show an image",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var i apitypes.Image
			if err := a.c.do(cmd.Context(), http.MethodGet, "/compute/v1/images/"+url.PathEscape(args[0]), nil, nil, &i); err != nil {
				return err
			}
			return a.printImage(i)
		},
	}
}

func (a *app) imageLatest() *cobra.Command {
	var family string
	c := &cobra.Command{
		Use:   "latest --folder F --family FAMILY",
		Short: "Show the newest READY image of a family",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			folder, err := a.needFolder()
			if err != nil {
				return err
			}
			if family == "" {
				return errors.New("--family is required")
			}
			var i apitypes.Image
			q := url.Values{"folderId": {folder}, "family": {family}}
			if err := a.c.do(cmd.Context(), http.MethodGet, "/compute/v1/images:latestByFamily", q, nil, &i); err != nil {
				return err
			}
			return a.printImage(i)
		},
	}
	a.folderFlag(c, "folder of the family")
	c.Flags().StringVar(&family, "family", "", "image family")
	return c
}

// imageMeta are the flags every image creation shares.
type imageMeta struct {
	name, description, family string
	labels, productIDs        []string
	minDiskSize               string
	pooled                    bool
}

func (m *imageMeta) register(c *cobra.Command) {
	c.Flags().StringVar(&m.name, "name", "", "image name, unique in the folder ([a-z][-_a-z0-9]*, up to 63)")
	c.Flags().StringVar(&m.description, "description", "", "free text")
	c.Flags().StringVar(&m.family, "family", "", "family; strata image latest --family returns its newest READY image")
	c.Flags().StringArrayVar(&m.labels, "label", nil, "label key=value (repeatable)")
	c.Flags().StringArrayVar(&m.productIDs, "product-id", nil, "product id (repeatable)")
	c.Flags().StringVar(&m.minDiskSize, "min-disk-size", "", "smallest disk made from it, e.g. 20G (default: its size)")
	c.Flags().BoolVar(&m.pooled, "pooled", false,
		"optimized for deployment: disks are O(1) overlays sharing one cache (counts against compute.diskPools.count, 0 by default)")
}

func (a *app) imageImport() *cobra.Command {
	var meta imageMeta
	var format, osType string
	c := &cobra.Command{
		Use:   "import FILE",
		Short: "Import an image file (raw, qcow2, VMDK or VHD; the daemon detects the format)",
		Long: `Import streams FILE to the daemon, which detects its format by magic bytes
(raw, qcow2, VMDK monolithicSparse/streamOptimized, VHD fixed/dynamic),
refuses files that reference other files, and stores the raw content as
deduplicated, compressed chunks: importing the same content again adds
almost nothing. --format names the format you expect; a different detected
format is refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			folder, err := a.needFolder()
			if err != nil {
				return err
			}
			q := url.Values{"folderId": {folder}}
			set := func(k, v string) {
				if v != "" {
					q.Set(k, v)
				}
			}
			set("name", meta.name)
			set("description", meta.description)
			set("family", meta.family)
			set("format", strings.ToLower(format))
			set("osType", strings.ToUpper(osType))
			if meta.minDiskSize != "" {
				n, err := units.ParseSize(meta.minDiskSize)
				if err != nil {
					return err
				}
				q.Set("minDiskSize", strconv.FormatInt(n, 10))
			}
			if meta.pooled {
				q.Set("pooled", "true")
			}
			if _, err := parseLabels(meta.labels); err != nil {
				return err
			}
			q["labels"] = meta.labels
			q["productIds"] = meta.productIDs
			return a.upload(cmd.Context(), args[0], q)
		},
	}
	meta.register(c)
	a.folderFlag(c, "folder to import into")
	c.Flags().StringVar(&format, "format", "", "expected file format: raw, qcow2, vmdk or vhd (default: detect); output format here is -o")
	c.Flags().StringVar(&osType, "os-type", "", "linux (default) or windows (the daemon refuses Windows uploads unless configured to allow them)")
	return c
}

// upload streams the file to images:upload and waits for the import.
func (a *app) upload(ctx context.Context, path string, q url.Values) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if q.Get("format") == "" {
		// A file with no container format's magic is raw: say so, and the
		// daemon imports it as it arrives instead of spooling it first.
		// The daemon checks the claim against the bytes it receives.
		if f, err := imagefile.Detect(f, st.Size()); err == nil && f == imagefile.Raw {
			q.Set("format", string(imagefile.Raw))
		}
	}
	var body io.Reader = f
	var bar *progressbar.ProgressBar
	if a.showProgress() {
		bar = progressbar.NewOptions64(st.Size(),
			progressbar.OptionSetWriter(a.stderr),
			progressbar.OptionSetDescription("upload "+filepath.Base(path)),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetPredictTime(true),
		)
		body = io.TeeReader(f, bar)
	}
	req, err := a.c.newRequest(ctx, http.MethodPost, "/compute/v1/images:upload", q, body)
	if err != nil {
		return err
	}
	req.ContentLength = st.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	// The daemon checks the request (quota, name, access) before it reads
	// the body: with 100-continue a refusal arrives without sending
	// gigabytes first.
	req.Header.Set("Expect", "100-continue")
	var op apitypes.Operation
	err = a.c.send(req, &op)
	if bar != nil {
		_ = bar.Finish()
		_ = bar.Close()
	}
	if err != nil {
		return err
	}
	return finish(a, ctx, op, "import", a.printImage)
}

func (a *app) imageCreate() *cobra.Command {
	var meta imageMeta
	var imageID, diskID, snapshotID, osType string
	c := &cobra.Command{
		Use:   "create --folder F (--image ID | --disk ID | --snapshot ID)",
		Short: "Make an image from another image, a disk or a snapshot",
		Long: `Create makes an image from exactly one source. From an image or a snapshot
it is a new catalog entry over the same layer (O(1)); from a disk it
snapshots the disk first. The OS type is inherited from the source.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			folder, err := a.needFolder()
			if err != nil {
				return err
			}
			l, err := parseLabels(meta.labels)
			if err != nil {
				return err
			}
			req := apitypes.CreateImageRequest{
				FolderID: folder, Name: meta.name, Description: meta.description, Labels: l,
				Family: meta.family, ProductIDs: meta.productIDs,
				ImageID: imageID, DiskID: diskID, SnapshotID: snapshotID, Pooled: meta.pooled,
			}
			if meta.minDiskSize != "" {
				if req.MinDiskSize, err = units.ParseSize(meta.minDiskSize); err != nil {
					return err
				}
			}
			if osType != "" {
				req.OS = &apitypes.OS{Type: strings.ToUpper(osType)}
			}
			label := ""
			if diskID != "" {
				label = "snapshot"
			}
			return mutate(a, cmd.Context(), http.MethodPost, "/compute/v1/images", req, label, a.printImage)
		},
	}
	meta.register(c)
	a.folderFlag(c, "folder of the new image")
	c.Flags().StringVar(&imageID, "image", "", "source image id")
	c.Flags().StringVar(&diskID, "disk", "", "source disk id")
	c.Flags().StringVar(&snapshotID, "snapshot", "", "source snapshot id")
	c.Flags().StringVar(&osType, "os-type", "", "must match the source's OS type if given")
	return c
}

func (a *app) imageUpdate() *cobra.Command {
	var meta imageMeta
	c := &cobra.Command{
		Use:   "update IMAGE_ID [--name N] [--description D] [--label k=v]... [--min-disk-size S]",
		Short: "Change an image's name, description, labels or minimum disk size",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := apitypes.UpdateImageRequest{Name: meta.name, Description: meta.description}
			var mask []string
			fl := cmd.Flags()
			if fl.Changed("name") {
				mask = append(mask, "name")
			}
			if fl.Changed("description") {
				mask = append(mask, "description")
			}
			if fl.Changed("label") {
				l, err := parseLabels(meta.labels)
				if err != nil {
					return err
				}
				req.Labels = l
				mask = append(mask, "labels")
			}
			if fl.Changed("min-disk-size") {
				n, err := units.ParseSize(meta.minDiskSize)
				if err != nil {
					return err
				}
				req.MinDiskSize = n
				mask = append(mask, "minDiskSize")
			}
			if len(mask) == 0 {
				return errors.New("nothing to change: give --name, --description, --label or --min-disk-size")
			}
			req.UpdateMask = strings.Join(mask, ",")
			return mutate(a, cmd.Context(), http.MethodPatch, "/compute/v1/images/"+url.PathEscape(args[0]), req, "", a.printImage)
		},
	}
	c.Flags().StringVar(&meta.name, "name", "", "new name")
	c.Flags().StringVar(&meta.description, "description", "", "new description")
	c.Flags().StringArrayVar(&meta.labels, "label", nil, "label key=value (repeatable; replaces all labels)")
	c.Flags().StringVar(&meta.minDiskSize, "min-disk-size", "", "new minimum disk size")
	return c
}

func (a *app) imageDelete() *cobra.Command {
	return &cobra.Command{
		Use:   "delete IMAGE_ID",
		Short: "Delete an image (disks made from it keep working)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mutate[struct{}](a, cmd.Context(), http.MethodDelete, "/compute/v1/images/"+url.PathEscape(args[0]), nil, "", nil)
		},
	}
}

func (a *app) imageExport() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "export IMAGE_ID FILE",
		Short: "Write an image to a raw or qcow2 file",
		Long:  exportHelp("image"),
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.export(cmd.Context(), "/compute/v1/images/"+url.PathEscape(args[0])+":export", format, args[1])
		},
	}
	c.Flags().StringVar(&format, "format", "raw", "file format: raw or qcow2; output format here is -o")
	return c
}

// exportHelp is the long help of image and snapshot export.
func exportHelp(kind string) string {
	return "Writes the " + kind + "'s content to FILE as a raw or qcow2 file. The file appears\n" +
		"complete or not at all (it is written beside FILE, synced, then renamed),\n" +
		"and whole 4 KiB blocks of zeros are left as holes, so a raw file takes\n" +
		"the disk space of its data rather than of its size."
}

// export downloads path?format= into file. It writes a temporary file next
// to the target and renames it only when complete and synced, so an
// interrupted export never leaves a plausible-looking truncated image.
// Whole zero blocks become holes in the file (see sparseFile).
func (a *app) export(ctx context.Context, path, format, file string) error {
	format = strings.ToLower(format)
	if format != apitypes.FormatRaw && format != apitypes.FormatQCOW2 {
		return fmt.Errorf("--format %q: want raw or qcow2", format)
	}
	req, err := a.c.newRequest(ctx, http.MethodGet, path, url.Values{"format": {format}}, nil)
	if err != nil {
		return err
	}
	resp, err := a.c.http.Do(req)
	if err != nil {
		return a.c.dialError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		return decodeError(resp.StatusCode, data)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".part-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	out := &sparseFile{f: tmp}
	var w io.Writer = out
	if a.showProgress() {
		bar := progressbar.NewOptions64(resp.ContentLength,
			progressbar.OptionSetWriter(a.stderr),
			progressbar.OptionSetDescription("export "+filepath.Base(file)),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond),
		)
		defer bar.Close()
		w = io.MultiWriter(out, bar)
	}
	n, err := io.CopyBuffer(w, resp.Body, make([]byte, bulkCopySize))
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("export: got %d of %d bytes", n, resp.ContentLength)
	}
	if err := out.finish(); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return err
	}
	if a.format == "json" {
		return a.printJSON(map[string]any{"file": file, "format": format, "bytes": n})
	}
	fmt.Fprintf(a.stdout, "wrote %s (%s, %s)\n", file, format, humanSize(n))
	return nil
}
