package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/ctxio"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/pull"
)

func (a *app) importTarCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "import-tar FILE|- [NAME]",
		Short: "Unpack a tarball (any compression) into the image root as NAME",
		Long: `Unpack a tarball into a hidden work directory in the image root and rename it
to NAME only when complete. Compression (xz, gzip, bzip2, zstd or none) is
detected from the content. NAME defaults to the file name without its suffixes.`,
		Args: rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.importFile(cmd, args, imageroot.TarName, pull.ImportTar)
		},
	}
}

// importFile runs an import-tar or import-raw command line, FILE|- [NAME]:
// NAME defaults to defaultName(FILE) (standard input needs one), and
// FILE is imported with a progress bar by importer.
func (a *app) importFile(cmd *cobra.Command, args []string, defaultName func(string) string,
	importer func(context.Context, *imageroot.Root, io.Reader, string, pull.ImportOptions) error) error {
	ctx := cmd.Context()
	file := args[0]
	var name string
	if len(args) == 2 {
		name = args[1]
	} else if file == "-" {
		return usagef("%s from standard input needs a NAME", cmd.Name())
	} else {
		name = defaultName(file)
	}
	if err := imageroot.ValidName(name); err != nil {
		return usageError{err}
	}
	in, size, closeIn, err := a.openInput(ctx, file)
	if err != nil {
		return err
	}
	defer closeIn()
	root, err := a.openRoot()
	if err != nil {
		return err
	}
	prog := a.progress(ctx)
	bar := prog.Bar("import "+name, size)
	err = importer(ctx, root, bar.Reader(in), name, pull.ImportOptions{
		InstallOptions: a.installOptions(),
		Log:            a.log,
	})
	bar.Done(err == nil)
	prog.Wait()
	return err
}

// openInput opens FILE, or standard input for "-". size is -1 when unknown.
// Reading standard input stops when ctx ends, even in a blocked read.
func (a *app) openInput(ctx context.Context, file string) (r io.Reader, size int64, closeFn func(), err error) {
	if file == "-" {
		if f, ok := a.stdin.(*os.File); ok {
			r, undo := ctxio.Interruptible(ctx, f)
			return r, -1, undo, nil
		}
		return a.stdin, -1, func() {}, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, 0, nil, err
	}
	size = -1
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	return f, size, func() { f.Close() }, nil
}

// outputKind picks the compression of an output tarball or disk image:
// --format wins,
// then the suffix, as systemd-export reads it (".xz", ".gz"/".tgz", ".zst";
// ".txz" too); any other name, and standard output, is written
// uncompressed unless --format says otherwise.
func outputKind(file, format string) (compress.Kind, error) {
	if format != "" {
		k, err := compress.ParseKind(format)
		if err != nil {
			return "", usageError{err}
		}
		if k == compress.Bzip2 {
			return "", usagef("--format bzip2: berth reads bzip2 but does not write it; use xz, zstd or gzip")
		}
		return k, nil
	}
	if file == "-" {
		return compress.None, nil
	}
	if strings.HasSuffix(strings.ToLower(file), ".txz") {
		return compress.Xz, nil
	}
	k := compress.KindFromSuffix(file)
	if k == compress.Bzip2 {
		return "", usagef("%s: berth reads bzip2 but does not write it; name the file .xz, .zst or .gz, or give --format", file)
	}
	return k, nil
}

// resolveMachine turns NAME|DIR into a directory: an argument with a slash
// (or "." / "..") is a path, anything else an image in the image root.
func (a *app) resolveMachine(arg string) (string, error) {
	if strings.ContainsRune(arg, '/') || arg == "." || arg == ".." {
		st, err := os.Stat(arg)
		if err != nil {
			return "", err
		}
		if !st.IsDir() {
			return "", fmt.Errorf("%s is not a directory", arg)
		}
		return arg, nil
	}
	if err := imageroot.ValidName(arg); err != nil {
		return "", usageError{err}
	}
	p := filepath.Join(a.imageRoot, arg)
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("no image %q in %s (give a path containing \"/\" to export a directory)", arg, a.imageRoot)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("image %q in %s is not a directory tree", arg, a.imageRoot)
	}
	return p, nil
}

// writeOutput runs write against FILE so that FILE appears only when write
// succeeds, or against standard output for "-".
func (a *app) writeOutput(file string, write func(io.Writer) error) error {
	if file == "-" {
		return write(a.stdout)
	}
	f, err := atomicfile.Create(file, a.outputOptions())
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := write(f); err != nil {
		return err
	}
	return f.Commit()
}
