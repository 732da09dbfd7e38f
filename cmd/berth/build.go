package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/build"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/formats/oci"
	"github.com/berth-dev/berth/formats/raw"
	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/progress"
	"github.com/berth-dev/berth/internal/scratch"
)

// Output classes of "berth build".
const (
	classTar = "tar"
	classRaw = "raw"
	classOCI = "oci"
)

// buildOutput is one output format of "berth build".
type buildOutput struct {
	format   string   // --format name
	suffixes []string // file name suffixes, longest match wins
	class    string   // classTar, classRaw or classOCI
	kind     compress.Kind
	// write writes the tree to the output: w is the atomic output file or
	// standard output (nil for an OCI layout directory, which is a
	// directory written atomically by oci.WriteLayout).
	write func(ctx context.Context, j *buildJob, w io.Writer) error
}

// buildJob is what a format writer gets.
type buildJob struct {
	a      *app
	sys    *build.System
	plan   build.PlanOptions
	out    buildOutput
	level  int
	output string
	file   *atomicfile.File // the output file; nil for standard output or a directory
	raw    build.RawOptions
	oci    *build.OCIImage // the image, built before any output is written
	ociOut []oci.Option    // options of the OCI writers
	tag    string          // docker archive tag
	prog   *progress.Progress
}

var buildOutputs = []buildOutput{
	{format: "tar", suffixes: []string{".tar"}, class: classTar, kind: compress.None, write: writeBuildTar},
	{format: "tar.xz", suffixes: []string{".tar.xz", ".txz"}, class: classTar, kind: compress.Xz, write: writeBuildTar},
	{format: "tar.zst", suffixes: []string{".tar.zst"}, class: classTar, kind: compress.Zstd, write: writeBuildTar},
	{format: "tar.gz", suffixes: []string{".tar.gz", ".tgz"}, class: classTar, kind: compress.Gzip, write: writeBuildTar},
	{format: "raw", suffixes: []string{".raw"}, class: classRaw, kind: compress.None, write: writeBuildRaw},
	{format: "raw.xz", suffixes: []string{".raw.xz"}, class: classRaw, kind: compress.Xz, write: writeBuildRaw},
	{format: "raw.zst", suffixes: []string{".raw.zst"}, class: classRaw, kind: compress.Zstd, write: writeBuildRaw},
	{format: "oci", suffixes: []string{".oci"}, class: classOCI, write: writeBuildOCILayout},
	{format: "oci.tar", suffixes: []string{".oci.tar"}, class: classOCI, write: writeBuildOCIArchive},
	{format: "docker.tar", suffixes: []string{".docker.tar"}, class: classOCI, write: writeBuildDockerArchive},
}

func buildFormatNames() string {
	var n []string
	for _, o := range buildOutputs {
		n = append(n, o.format)
	}
	return strings.Join(n, ", ")
}

// buildOutputFor picks the output format: --format wins, else the longest
// matching suffix of the output name.
func buildOutputFor(file, format string) (buildOutput, error) {
	if format != "" {
		f := strings.TrimPrefix(strings.ToLower(format), ".")
		for _, o := range buildOutputs {
			if o.format == f {
				return o, nil
			}
		}
		return buildOutput{}, usagef("--format %q: want one of %s", format, buildFormatNames())
	}
	if file == "-" {
		return buildOutput{}, usagef("writing to standard output needs --format")
	}
	best, bestLen := -1, 0
	for i, o := range buildOutputs {
		for _, s := range o.suffixes {
			if strings.HasSuffix(file, s) && len(s) > bestLen {
				best, bestLen = i, len(s)
			}
		}
	}
	if best < 0 {
		suffix := filepath.Ext(file)
		if suffix == "" {
			suffix = "(none)"
		}
		var all []string
		for _, o := range buildOutputs {
			all = append(all, o.suffixes...)
		}
		sort.Strings(all)
		return buildOutput{}, usagef("output %q: unknown suffix %s: use one of %s, or --format", file, suffix, strings.Join(all, " "))
	}
	return buildOutputs[best], nil
}

func writeBuildTar(ctx context.Context, j *buildJob, w io.Writer) error {
	tree := j.sys.Source(j.plan)
	defer tree.Close()
	prog := j.a.progress(ctx)
	bar := prog.Bar("writing "+filepath.Base(j.output), -1)
	err := build.WriteTar(ctx, tree, w, build.TarOptions{
		Compression: j.out.kind,
		Level:       j.level,
		Meter:       bar.Writer,
	})
	bar.Done(err == nil)
	prog.Wait()
	return err
}

// writeBuildRaw writes a GPT disk image. An uncompressed image is written
// in place into the output file (sparse: raw.Write seeks over holes and
// reads back what mkfs wrote, so the temporary file is reopened read-write);
// compressed images and standard output go through an unlinked scratch
// image in the output's directory.
func writeBuildRaw(ctx context.Context, j *buildJob, w io.Writer) error {
	prog := j.a.progress(ctx)
	bar := prog.Bar("writing "+filepath.Base(j.output), -1)
	opts := j.raw
	opts.Meter = bar.Writer
	var err error
	if j.out.kind == compress.None && j.file != nil {
		var f *os.File
		// The atomic file is write-only; mkfs and the ext4 fix-up need to
		// read the image too.
		if f, err = os.OpenFile(j.file.Name(), os.O_RDWR, 0); err == nil {
			err = j.sys.WriteRaw(ctx, f, opts)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	} else {
		err = j.sys.WriteRawCompressed(ctx, w, opts, j.out.kind, j.level)
	}
	bar.Done(err == nil)
	prog.Wait()
	return err
}

func writeBuildOCILayout(ctx context.Context, j *buildJob, _ io.Writer) error {
	o := j.ociOut
	if j.a.force {
		o = append(o, oci.WithReplace())
	}
	return oci.WriteLayout(ctx, j.output, j.oci, o...)
}

func writeBuildOCIArchive(ctx context.Context, j *buildJob, w io.Writer) error {
	return oci.WriteArchive(ctx, w, j.oci, j.ociOut...)
}

func writeBuildDockerArchive(ctx context.Context, j *buildJob, w io.Writer) error {
	return oci.WriteDockerArchive(ctx, w, j.oci, j.tag, j.ociOut...)
}

// checkLayoutDest fails early, before the Nix build, when an OCI layout
// directory cannot be created at dir: it exists (without --force) or its
// parent is missing or not writable.
func checkLayoutDest(dir string, force bool) error {
	if !force {
		if _, err := os.Lstat(dir); err == nil {
			return fmt.Errorf("output %s already exists (use --force to replace it)", dir)
		}
	}
	parent := filepath.Dir(filepath.Clean(dir))
	probe, err := scratch.Dir(parent, "probe")
	if err != nil {
		return fmt.Errorf("creating output in %s: %w", parent, errors.Unwrap(err))
	}
	return probe.Remove()
}

func (a *app) buildCommand() *cobra.Command {
	var (
		in        build.Input
		output    string
		format    string
		level     int
		adds      []string
		settings  string
		fs        string
		sqfsComp  string
		layerComp string
		maxLayers int
		push      string
		tag       string
	)
	cmd := &cobra.Command{
		Use:   "build (--flake REF#NAME | --config FILE | --toplevel STOREPATH) (-o OUTPUT | --push REF)",
		Short: "Build a NixOS configuration into a bootable nspawn image",
		Long: `Build a NixOS system with Nix and write its root tree as a systemd-nspawn
image: the closure under /nix/store (streamed from the store, nothing staged),
/sbin/init, /etc/os-release, the system profile, /nix-path-registration for the
first boot, and empty /proc, /sys and /dev.

The format follows the suffix of OUTPUT or --format:
  .tar .tar.xz .tar.zst .tar.gz   nspawn tarball (import-tar, machinectl pull-tar)
  .raw .raw.xz .raw.zst           GPT disk image, one root partition typed for the
                                  system's architecture (systemd-nspawn -i): ext4
                                  (needs root), or --fs squashfs (read-only,
                                  lz4 by default: see --squashfs-compression;
                                  boot it with systemd-nspawn --volatile=overlay)
  .oci                            OCI image layout directory
  .oci.tar                        OCI image layout in a tar (oci-archive)
  .docker.tar                     "docker load" archive (gzip layers by default)
OCI images have one layer per store path, most popular (most depended on)
first as in nixpkgs' streamLayeredImage, the rest merged into the last store
layer (--max-layers), and a top layer with the generated files; /sbin/init is
the entrypoint. --push REF uploads the image to a registry with the docker
config credentials, with or without an OCI -o output.

Output is reproducible: the same system gives the same bytes and digests,
whether or not the store was optimised. OUTPUT appears only when complete.`,
		Args: rangeArgs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := in.Validate(); err != nil {
				return usageError{err}
			}
			var out buildOutput
			switch {
			case output == "" && push == "":
				return usagef("build needs -o OUTPUT (or --push REF)")
			case output == "" && format != "":
				return usagef("--format needs -o OUTPUT")
			case output == "":
				out = buildOutput{format: "registry", class: classOCI}
			default:
				var err error
				if out, err = buildOutputFor(output, format); err != nil {
					return err
				}
			}
			flags := cmd.Flags()
			if out.class != classRaw {
				for _, f := range []string{"fs", "squashfs-compression"} {
					if flags.Changed(f) {
						return usagef("--%s applies to raw disk images (.raw, .raw.xz, .raw.zst), not %s", f, out.format)
					}
				}
			}
			if out.class != classOCI {
				for _, f := range []string{"push", "layer-compression", "max-layers", "tag"} {
					if flags.Changed(f) {
						return usagef("--%s applies to OCI images (.oci, .oci.tar, .docker.tar), not %s", f, out.format)
					}
				}
			}
			switch fs {
			case raw.FSExt4, raw.FSSquashfs:
			default:
				return usagef("--fs %q: want ext4 or squashfs", fs)
			}
			switch sqfsComp {
			case "lz4", "zstd", "xz", "gzip", "lzo":
			default:
				return usagef("--squashfs-compression %q: want lz4, zstd, xz, gzip or lzo", sqfsComp)
			}
			if out.format == "docker.tar" && !flags.Changed("layer-compression") {
				layerComp = string(oci.Gzip) // docker load reads gzip layers as they are
			}
			comp, err := parseOCIFlags(maxLayers, layerComp, push)
			if err != nil {
				return err
			}
			if tag != "" {
				if _, err := name.NewTag(tag); err != nil {
					return usageError{fmt.Errorf("--tag %q: %w", tag, err)}
				}
			}
			if output == "-" && out.format == "oci" {
				return usagef("an OCI layout is a directory: it cannot go to standard output (use --format oci.tar)")
			}
			plan, err := a.buildPlan(adds)
			if err != nil {
				return err
			}
			if settings != "" {
				if output == "-" || output == "" {
					return usagef("--settings needs an output file")
				}
				if _, err := os.Stat(settings); err != nil {
					return fmt.Errorf("--settings: %w", err)
				}
			}

			// Open the output first: an unwritable directory or an existing
			// file fails now, not after a long Nix build.
			var dst io.Writer = a.stdout
			var file *atomicfile.File
			workDir := "" // scratch space (ext4 staging, OCI layer spools): the output's file system
			switch {
			case output == "" || output == "-":
			case out.format == "oci":
				if err := checkLayoutDest(output, a.force); err != nil {
					return err
				}
				dst, workDir = nil, filepath.Dir(output)
			default:
				if file, err = atomicfile.Create(output, a.outputOptions()); err != nil {
					return err
				}
				defer file.Abort()
				dst, workDir = file, filepath.Dir(output)
			}

			switch {
			case in.Flake != "":
				a.log.Info("building the system with nix", "flake", in.Flake)
			case in.Config != "":
				a.log.Info("building the system with nix", "config", in.Config)
			}
			top, err := build.Realise(ctx, in, a.log)
			if err != nil {
				return err
			}
			a.log.Info("reading the closure", "toplevel", top)
			sys, err := build.Load(ctx, top, a.log)
			if err != nil {
				return err
			}
			j := &buildJob{a: a, sys: sys, plan: plan, out: out, level: level, output: output, file: file, tag: tag,
				raw: build.RawOptions{Plan: plan, FS: fs, SquashfsCompression: sqfsComp, WorkDir: workDir, Log: a.log}}
			if out.class == classOCI {
				release, err := a.buildOCIImage(ctx, j, comp, maxLayers, workDir)
				if err != nil {
					return err
				}
				defer release()
				if push != "" {
					prog := a.progress(ctx)
					a.log.Info("pushing", "ref", push)
					err := oci.Push(ctx, push, j.oci, oci.WithProgress(prog))
					prog.Wait()
					if err != nil {
						return err
					}
					if d, err := j.oci.Digest(); err == nil {
						a.log.Info("pushed", "ref", push, "digest", d.String())
					}
				}
				if output == "" {
					return nil
				}
			}
			a.log.Info("writing", "output", output, "format", out.format, "storePaths", len(sys.Closure), "narBytes", sys.NarSize)
			err = out.write(ctx, j, dst)
			if j.prog != nil {
				j.prog.Wait()
			}
			if err != nil {
				return fmt.Errorf("writing %s: %w", output, err)
			}
			if settings != "" {
				if err := a.copySettings(settings, output); err != nil {
					return err
				}
			}
			if file != nil {
				return file.Commit()
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in.Flake, "flake", "", "build nixosConfigurations.NAME of the flake REF (REF#NAME)")
	f.StringVar(&in.Config, "config", "", "build a configuration.nix through <nixpkgs/nixos>")
	f.StringVar(&in.Toplevel, "toplevel", "", "pack a system already built (store path or ./result)")
	f.StringArrayVar(&in.NixOptions, "nix-option", nil, "pass NAME=VALUE to Nix as --option NAME VALUE (repeatable)")
	f.StringVarP(&output, "output", "o", "", "output file (format from the suffix; - for standard output with --format)")
	f.StringVar(&format, "format", "", "output format: "+buildFormatNames()+" (default: from the suffix)")
	f.IntVar(&level, "level", 0, "compression level of a tarball or compressed raw image (codec-specific; 0 = default)")
	f.StringArrayVar(&adds, "add", nil, "add a host file or directory to the tree as SRC:DEST (repeatable)")
	f.StringVar(&settings, "settings", "", "a .nspawn settings file to write next to the output as NAME.nspawn")
	f.StringVar(&fs, "fs", raw.FSExt4, "raw image root file system: ext4 (writable; building needs root) or squashfs (read-only)")
	f.StringVar(&sqfsComp, "squashfs-compression", build.DefaultSquashfsCompression,
		"squashfs compressor: lz4 (fast), zstd, xz, gzip or lzo (sqfstar runs these 40-100x slower, for images ~40% smaller)")
	f.StringVar(&layerComp, "layer-compression", string(oci.Zstd), "OCI layer compression: zstd, gzip or none (default gzip for .docker.tar)")
	f.IntVar(&maxLayers, "max-layers", build.DefaultMaxLayers, "OCI layer budget, generated layer included (at least 2)")
	f.StringVar(&push, "push", "", "push the OCI image to the registry reference REF (registry:5000/repo:tag), docker-config credentials")
	f.StringVar(&tag, "tag", "", "repo:tag recorded in a .docker.tar and as the ref name of an OCI layout/archive (default: none)")
	return cmd
}

// buildOCIImage writes the layers of the system's OCI image (one pass over
// the store) and sets j.oci and the writers' options. release frees the
// layers' spool files.
func (a *app) buildOCIImage(ctx context.Context, j *buildJob, comp oci.LayerCompression, maxLayers int, tmpDir string) (func() error, error) {
	prog := a.progress(ctx)
	bar := prog.Bar("layers", -1)
	a.log.Info("writing OCI layers", "storePaths", len(j.sys.Closure), "maxLayers", maxLayers, "compression", comp)
	img, err := j.sys.OCIImage(ctx, build.OCIOptions{
		Plan: j.plan, Compression: comp, MaxLayers: maxLayers, TmpDir: tmpDir, Meter: bar.Reader,
	})
	bar.Done(err == nil)
	prog.Wait()
	if err != nil {
		return nil, fmt.Errorf("building the OCI image: %w", err)
	}
	j.oci = img
	j.prog = a.progress(ctx)
	j.ociOut = []oci.Option{oci.WithProgress(j.prog)}
	if j.tag != "" {
		j.ociOut = append(j.ociOut, oci.WithRefName(j.tag))
	}
	if d, err := img.Digest(); err == nil {
		a.log.Info("OCI image ready", "layers", len(img.Groups)+1, "manifest", d.String())
	}
	return img.Close, nil
}

// copySettings writes the .nspawn file next to the output, named after the
// image as machinectl would name it (foo.tar.xz -> foo.nspawn).
func (a *app) copySettings(src, output string) error {
	name := imageroot.TarName(output)
	dst := filepath.Join(filepath.Dir(output), name+".nspawn")
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("--settings: %w", err)
	}
	f, err := atomicfile.Create(dst, a.outputOptions())
	if err != nil {
		return fmt.Errorf("--settings: %w", err)
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("--settings: writing %s: %w", dst, err)
	}
	return f.Commit()
}

// buildPlan turns --add SRC:DEST flags into the root tree plan, checking
// that every source exists before Nix runs.
func (a *app) buildPlan(adds []string) (build.PlanOptions, error) {
	plan := build.PlanOptions{Log: a.log}
	for _, s := range adds {
		ad, err := build.ParseAdd(s)
		if err != nil {
			return plan, usageError{err}
		}
		if _, err := os.Lstat(ad.Src); err != nil {
			return plan, fmt.Errorf("--add %s: %w", s, err)
		}
		plan.Adds = append(plan.Adds, ad)
	}
	return plan, nil
}

// parseOCIFlags checks the OCI flags build and publish share: the layer
// budget, the layer compression and the --push reference.
func parseOCIFlags(maxLayers int, layerComp, push string) (oci.LayerCompression, error) {
	if maxLayers < 2 {
		return "", usagef("--max-layers %d: at least 2 are needed (store paths and generated files)", maxLayers)
	}
	comp, err := oci.ParseLayerCompression(layerComp)
	if err != nil {
		return "", usageError{err}
	}
	if push != "" {
		if _, err := oci.ParseReference(push); err != nil {
			return "", usageError{fmt.Errorf("--push: %w", err)}
		}
	}
	return comp, nil
}
