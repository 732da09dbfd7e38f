package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/export"
	"github.com/berth-dev/berth/formats/oci"
	"github.com/berth-dev/berth/internal/imageroot"
)

// exportFlags are shared by the export verbs.
type exportFlags struct {
	format       string
	level        int
	keepUIDShift bool
	live         bool
}

func (f *exportFlags) register(cmd *cobra.Command, tree bool) {
	cmd.Flags().StringVar(&f.format, "format", "", "compression: uncompressed, xz, gzip or zstd (default: from the suffix)")
	cmd.Flags().IntVar(&f.level, "level", 0, "compression level (codec-specific; 0 = default)")
	cmd.Flags().BoolVar(&f.live, "live", false, "read a running machine that can be neither snapshotted nor frozen as it changes, instead of refusing")
	if tree {
		cmd.Flags().BoolVar(&f.keepUIDShift, "keep-uid-shift", false, "keep the ids of a tree shifted by systemd-nspawn -U as they are on disk")
	}
}

// sizeEstimateLimit bounds the metadata walk that gives progress bars a total.
const sizeEstimateLimit = 2 * time.Second

func (a *app) exportTarCommand() *cobra.Command {
	var fl exportFlags
	cmd := &cobra.Command{
		Use:   "export-tar NAME|DIR FILE|-",
		Short: "Write a machine (or any directory) as a tarball",
		Long: `Write the image NAME from the image root, or the directory DIR (any argument
containing "/"), as a PAX tarball with numeric owners, all extended attributes
(file capabilities, ACLs), hard links and device nodes. The compression follows
the suffix of FILE (.tar, .tar.xz, .tar.zst, .tar.gz) or --format. FILE appears
only when complete; "-" writes to standard output.

A tree that systemd-nspawn -U shifted into a private UID range (its root
directory is owned by a multiple of 65536) is written with its ids shifted
back to 0-based, ACLs and file capabilities included (--keep-uid-shift keeps
them). A running machine is read consistently: from a read-only btrfs
snapshot, or with its cgroup frozen during the read (thawed afterwards, also
on error or Ctrl-C); if neither is possible berth refuses unless --live.`,
		Args: rangeArgs(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			kind, err := outputKind(args[1], fl.format)
			if err != nil {
				return err
			}
			dir, err := a.resolveMachine(args[0])
			if err != nil {
				return err
			}
			prog := a.progress(ctx)
			total := int64(-1)
			if prog.Enabled() {
				total = export.EstimateSize(ctx, dir, sizeEstimateLimit)
			}
			bar := prog.Bar("export "+filepath.Base(filepath.Clean(dir)), total)
			err = a.writeOutput(args[1], func(w io.Writer) error {
				return export.Tar(ctx, dir, w, export.TarOptions{
					Compression: kind, Level: fl.level, Log: a.log,
					KeepUIDShift: fl.keepUIDShift, Live: fl.live, Meter: bar.Writer,
				})
			})
			bar.Done(err == nil)
			prog.Wait()
			return err
		},
	}
	fl.register(cmd, true)
	return cmd
}

func (a *app) exportRawCommand() *cobra.Command {
	var fl exportFlags
	cmd := &cobra.Command{
		Use:   "export-raw NAME|FILE.raw FILE|-",
		Short: "Copy a raw disk image out of the image root, sparse and compressed",
		Long: `Copy the image NAME.raw from the image root (or a raw image file given by a
path containing "/") to FILE. Only the data extents are read: holes stay holes
in an uncompressed output file. The compression follows the suffix of FILE
(.raw, .raw.xz, .raw.zst, .raw.gz) or --format; "-" writes to standard output.
A running machine's image is frozen for the copy (or refused unless --live).`,
		Args: rangeArgs(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			kind, err := outputKind(args[1], fl.format)
			if err != nil {
				return err
			}
			image, err := a.resolveRaw(args[0])
			if err != nil {
				return err
			}
			var total int64 = -1
			if st, err := os.Stat(image); err == nil {
				total = st.Size()
			}
			prog := a.progress(ctx)
			bar := prog.Bar("export "+filepath.Base(image), total)
			err = a.writeOutput(args[1], func(w io.Writer) error {
				return export.Raw(ctx, image, w, export.RawOptions{
					Compression: kind, Level: fl.level, Live: fl.live, Log: a.log, Meter: bar.Reader,
				})
			})
			bar.Done(err == nil)
			prog.Wait()
			return err
		},
	}
	fl.register(cmd, false)
	return cmd
}

// resolveRaw turns NAME|FILE into a raw image file.
func (a *app) resolveRaw(arg string) (string, error) {
	p := arg
	if !strings.ContainsRune(arg, '/') {
		name := strings.TrimSuffix(arg, ".raw")
		if err := imageroot.ValidName(name); err != nil {
			return "", usageError{err}
		}
		p = filepath.Join(a.imageRoot, name+".raw")
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("no raw image %q in %s (give a path containing \"/\" to export a file)", name+".raw", a.imageRoot)
		}
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a raw image file", p)
	}
	return p, nil
}

func (a *app) exportOCICommand() *cobra.Command {
	var fl exportFlags
	var push bool
	var layerComp, arch, settings, tag string
	cmd := &cobra.Command{
		Use:   "export-oci NAME|DIR DEST",
		Short: "Write a machine as an OCI image: layout dir, archive, docker archive or registry",
		Long: `Write the image NAME from the image root, or the directory DIR (any argument
containing "/"), as a one-layer OCI image. DEST is an OCI layout directory
(.oci), an OCI archive (.oci.tar), a "docker load" archive (.docker.tar), or
with --push a registry reference (registry:5000/repo:tag). The image
configuration comes from the machine's .nspawn settings where present
(Boot=/Parameters= as the command, Environment=, WorkingDirectory=, User=).
The UID shift of systemd-nspawn -U is undone and a running machine is read
consistently, as for export-tar; it is held only while the layer is written.`,
		Args: rangeArgs(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			dest := args[1]
			comp, err := oci.ParseLayerCompression(layerComp)
			if err != nil {
				return usageError{err}
			}
			var write func(img v1.Image, o []oci.Option) error
			switch {
			case push:
				if _, err := oci.ParseReference(dest); err != nil {
					return usageError{err}
				}
				write = func(img v1.Image, o []oci.Option) error { return oci.Push(ctx, dest, img, o...) }
			case strings.HasSuffix(dest, ".oci"):
				write = func(img v1.Image, o []oci.Option) error {
					if a.force {
						o = append(o, oci.WithReplace())
					}
					return oci.WriteLayout(ctx, dest, img, o...)
				}
			case strings.HasSuffix(dest, ".oci.tar"):
				write = func(img v1.Image, o []oci.Option) error {
					return a.writeOutput(dest, func(w io.Writer) error { return oci.WriteArchive(ctx, w, img, o...) })
				}
			case strings.HasSuffix(dest, ".docker.tar"):
				write = func(img v1.Image, o []oci.Option) error {
					return a.writeOutput(dest, func(w io.Writer) error { return oci.WriteDockerArchive(ctx, w, img, tag, o...) })
				}
			default:
				return usagef("cannot tell what to write to %q: use a .oci directory, .oci.tar, .docker.tar, or --push REF", dest)
			}
			dir, err := a.resolveMachine(args[0])
			if err != nil {
				return err
			}
			if !push && !strings.HasSuffix(dest, ".oci") && !a.force {
				if _, err := os.Lstat(dest); err == nil {
					return fmt.Errorf("output %s already exists (use --force to replace it)", dest)
				}
			}
			prog := a.progress(ctx)
			total := int64(-1)
			if prog.Enabled() {
				total = export.EstimateSize(ctx, dir, sizeEstimateLimit)
			}
			bar := prog.Bar("layer "+filepath.Base(filepath.Clean(dir)), total)
			tmp := ""
			if !push {
				tmp = filepath.Dir(dest) // the layer spools next to the output
			}
			img, release, err := export.OCIImage(ctx, dir, export.OCIOptions{
				KeepUIDShift: fl.keepUIDShift, Live: fl.live, Log: a.log,
				Compression: comp, Arch: arch, Settings: settings, TmpDir: tmp, Meter: bar.Reader,
			})
			bar.Done(err == nil)
			if err != nil {
				prog.Wait()
				return err
			}
			defer release()
			err = write(img, []oci.Option{oci.WithProgress(prog)})
			prog.Wait()
			return err
		},
	}
	cmd.Flags().BoolVar(&push, "push", false, "DEST is a registry reference to push to")
	cmd.Flags().StringVar(&layerComp, "layer-compression", "zstd", "layer compression: zstd, gzip or none")
	cmd.Flags().StringVar(&arch, "arch", "", "image architecture (GOARCH name; default: this machine's)")
	cmd.Flags().StringVar(&settings, "settings", "", "the machine's .nspawn settings file (default: looked up as nspawn does)")
	cmd.Flags().StringVar(&tag, "tag", "", "repo:tag recorded in a .docker.tar (default: untagged)")
	cmd.Flags().BoolVar(&fl.live, "live", false, "read a running machine that can be neither snapshotted nor frozen as it changes, instead of refusing")
	cmd.Flags().BoolVar(&fl.keepUIDShift, "keep-uid-shift", false, "keep the ids of a tree shifted by systemd-nspawn -U as they are on disk")
	return cmd
}
