package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/build"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/imageroot"
)

// buildOutput is one output format of "berth build". Formats whose write is
// nil are recognised (so their suffix is no usage error) but not available
// in this build.
type buildOutput struct {
	format   string   // --format name
	suffixes []string // file name suffixes, longest match wins
	kind     compress.Kind
	// write writes the tree to the output; tar formats stream to w.
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
}

var buildOutputs = []buildOutput{
	{format: "tar", suffixes: []string{".tar"}, kind: compress.None, write: writeBuildTar},
	{format: "tar.xz", suffixes: []string{".tar.xz", ".txz"}, kind: compress.Xz, write: writeBuildTar},
	{format: "tar.zst", suffixes: []string{".tar.zst"}, kind: compress.Zstd, write: writeBuildTar},
	{format: "tar.gz", suffixes: []string{".tar.gz", ".tgz"}, kind: compress.Gzip, write: writeBuildTar},
	{format: "raw", suffixes: []string{".raw"}},
	{format: "raw.xz", suffixes: []string{".raw.xz"}},
	{format: "raw.zst", suffixes: []string{".raw.zst"}},
	{format: "oci", suffixes: []string{".oci"}},
	{format: "oci.tar", suffixes: []string{".oci.tar"}},
	{format: "docker.tar", suffixes: []string{".docker.tar"}},
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

func (a *app) buildCommand() *cobra.Command {
	var (
		in       build.Input
		output   string
		format   string
		level    int
		adds     []string
		settings string
	)
	cmd := &cobra.Command{
		Use:   "build (--flake REF#NAME | --config FILE | --toplevel STOREPATH) -o OUTPUT",
		Short: "Build a NixOS configuration into a bootable nspawn image",
		Long: `Build a NixOS system with Nix and write its root tree as a systemd-nspawn
image: the closure under /nix/store (streamed from the store, nothing staged),
/sbin/init, /etc/os-release, the system profile, /nix-path-registration for the
first boot, and empty /proc, /sys and /dev.

The format follows the suffix of OUTPUT (.tar, .tar.xz, .tar.zst, .tar.gz) or
--format. Output is reproducible: the same system gives the same bytes, whether
or not the store was optimised. OUTPUT appears only when complete.`,
		Args: rangeArgs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := in.Validate(); err != nil {
				return usageError{err}
			}
			if output == "" {
				return usagef("build needs -o OUTPUT")
			}
			out, err := buildOutputFor(output, format)
			if err != nil {
				return err
			}
			if out.write == nil {
				return fmt.Errorf("output format %s is not available in this version of berth (use .tar, .tar.xz, .tar.zst or .tar.gz)", out.format)
			}
			plan := build.PlanOptions{Log: a.log}
			for _, s := range adds {
				ad, err := build.ParseAdd(s)
				if err != nil {
					return usageError{err}
				}
				if _, err := os.Lstat(ad.Src); err != nil {
					return fmt.Errorf("--add %s: %w", s, err)
				}
				plan.Adds = append(plan.Adds, ad)
			}
			if settings != "" {
				if output == "-" {
					return usagef("--settings needs an output file, not standard output")
				}
				if _, err := os.Stat(settings); err != nil {
					return fmt.Errorf("--settings: %w", err)
				}
			}

			// Open the output first: an unwritable directory or an existing
			// file fails now, not after a long Nix build.
			var dst io.Writer = a.stdout
			var file *atomicfile.File
			if output != "-" {
				if file, err = atomicfile.Create(output, a.force); err != nil {
					return err
				}
				defer file.Abort()
				dst = file
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
			a.log.Info("writing", "output", output, "format", out.format, "storePaths", len(sys.Closure), "narBytes", sys.NarSize)
			j := &buildJob{a: a, sys: sys, plan: plan, out: out, level: level, output: output}
			if err := out.write(ctx, j, dst); err != nil {
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
	f.IntVar(&level, "level", 0, "compression level (codec-specific; 0 = default)")
	f.StringArrayVar(&adds, "add", nil, "add a host file or directory to the tree as SRC:DEST (repeatable)")
	f.StringVar(&settings, "settings", "", "a .nspawn settings file to write next to the output as NAME.nspawn")
	return cmd
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
	f, err := atomicfile.Create(dst, a.force)
	if err != nil {
		return fmt.Errorf("--settings: %w", err)
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("--settings: writing %s: %w", dst, err)
	}
	return f.Commit()
}
