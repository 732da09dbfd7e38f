package main

import (
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/pull"
)

func (a *app) importRawCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "import-raw FILE|- [NAME]",
		Short: "Copy a disk image (any compression) into the image root as NAME.raw",
		Long: `Decompress FILE (xz, gzip, bzip2, zstd or none, detected from the content)
into a hidden sparse file in the image root and rename it to NAME.raw when
complete. NAME defaults to the file name without its suffixes.`,
		Args: rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.importFile(cmd, args, imageroot.RawName, pull.ImportRaw)
		},
	}
}

func (a *app) importFSCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "import-fs DIR [NAME]",
		Short: "Copy a directory tree into the image root as NAME",
		Long: `Copy DIR (owners, modes, extended attributes, hard links, device nodes;
not crossing mount points) into a hidden work directory in the image root
and rename it to NAME when complete. NAME defaults to DIR's base name.`,
		Args: rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			dir := args[0]
			name := filepath.Base(filepath.Clean(dir))
			if len(args) == 2 {
				name = args[1]
			}
			if err := imageroot.ValidName(name); err != nil {
				return usageError{fmt.Errorf("%w (give a NAME)", err)}
			}
			root, err := a.openRoot()
			if err != nil {
				return err
			}
			return pull.ImportFS(ctx, root, dir, name, pull.ImportOptions{
				InstallOptions: a.installOptions(),
				Log:            a.log,
			})
		},
	}
}

func (a *app) listImagesCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "list-images",
		Short: "List the images in the image root",
		Long: `List the images in the image root: NAME, TYPE (directory or raw), SIZE
(disk usage), RO (read-only) and MODIFIED. --all also lists hidden entries:
work files of running jobs, berth's download cache and systemd's caches.`,
		Args: rangeArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := a.openRoot()
			if err != nil {
				return err
			}
			imgs, err := pull.ListImages(cmd.Context(), root, all)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTYPE\tSIZE\tRO\tMODIFIED")
			for _, im := range imgs {
				ro := "no"
				if im.ReadOnly {
					ro = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", im.Name, im.Type, humanSize(im.Size), ro, im.Modified.Local().Format(time.DateTime))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "also list hidden work files and caches")
	return cmd
}

func (a *app) removeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME...",
		Short: "Remove images (read-only ones too) and their .nspawn settings",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("remove takes at least one NAME")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, n := range args {
				if err := imageroot.ValidName(n); err != nil {
					return usageError{err}
				}
			}
			root, err := a.openRoot()
			if err != nil {
				return err
			}
			for _, n := range args {
				if err := pull.RemoveImage(cmd.Context(), root, n); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%c", float64(n)/float64(div), "KMGTPE"[exp])
}
