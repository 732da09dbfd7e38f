// Package pull fetches and imports images into the image root.
//
// Whatever the transport (a local file, stdin, HTTP, a registry), an image is
// unpacked into a hidden work directory in the image root, checked, and only
// then renamed to its name. Nothing half-written is ever visible under an
// image name, and a failure, Ctrl-C or SIGTERM removes the work directory.
//
// HTTP pulls ([Pull]) follow systemd-pull's contract (sibling URLs of the
// original URL, SHA256SUMS/.sha256, .gpg signatures, .nspawn settings,
// image names) so that mirrors made for machinectl work unchanged, and fix
// where systemd is weak: the download is hashed, decompressed and unpacked
// in one streaming pass into quarantine, and nothing is renamed into place
// before the checksum and signature verify; a cached download is verified
// again (systemd trusts an ETag hit); broken connections are resumed with
// Range/If-Range instead of failing; stalls and truncation are errors with
// one clear line; raw images stay sparse.
package pull

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/formats/dirtree"
	"github.com/berth-dev/berth/internal/ctxio"
	"github.com/berth-dev/berth/internal/imageroot"
)

// ImportOptions control how an image is installed.
type ImportOptions struct {
	imageroot.InstallOptions
	Log *slog.Logger
}

// logOr returns opts.Log, or def when it is nil.
func (opts ImportOptions) logOr(def *slog.Logger) *slog.Logger {
	if opts.Log == nil {
		return def
	}
	return opts.Log
}

// lockImport is the common start of an import: it checks name, takes its
// lock in root and, unless force, refuses to go on if NAME or NAME.raw is
// already installed. The caller must call unlock when done.
func lockImport(ctx context.Context, root *imageroot.Root, name string, force bool) (unlock func(), err error) {
	if err := imageroot.ValidName(name); err != nil {
		return nil, err
	}
	unlock, err = root.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	if !force {
		// A directory image and a raw image share one name space, as
		// for machinectl: NAME and NAME.raw are the same machine.
		for _, n := range []string{name, name + ".raw"} {
			if root.Exists(n) {
				unlock()
				return nil, fmt.Errorf("image %q already exists in %s (use --force to replace it)", name, root.Dir)
			}
		}
	}
	return unlock, nil
}

// removeWorkOnError removes the work path *work of root if the import
// failed (*errp != nil). Imports defer it right after creating the path; it
// reads both through pointers so that it sees the final error and the final
// path.
func removeWorkOnError(root *imageroot.Root, log *slog.Logger, work *string, errp *error) {
	if *errp == nil {
		return
	}
	if rerr := root.Discard(*work); rerr != nil {
		log.Warn("could not remove work directory", "path", *work, "err", rerr)
	}
}

// ImportTar unpacks the tarball read from r (any supported compression,
// detected from its first bytes) and installs it as name.
func ImportTar(ctx context.Context, root *imageroot.Root, r io.Reader, name string, opts ImportOptions) (err error) {
	log := opts.logOr(slog.Default())
	unlock, err := lockImport(ctx, root, name, opts.Force)
	if err != nil {
		return err
	}
	defer unlock()
	work, err := root.WorkDir(name)
	if err != nil {
		return err
	}
	defer removeWorkOnError(root, log, &work, &err)

	dr, kind, err := compress.NewReader(ctxio.Reader(ctx, r), compress.WithSpillDir(root.Dir))
	if errors.Is(err, io.EOF) {
		return errors.New("reading image: input is empty")
	}
	if err != nil {
		return fmt.Errorf("reading image: %w", err)
	}
	// The readahead goroutine owns dr from here: decompression and writing
	// the tree run on two cores, as in pull.
	ra := newReadahead(dr, 4, 256<<10)
	defer ra.Close()
	log.Debug("unpacking", "image", name, "compression", kind, "into", work)

	if err := Unpack(ctx, work, formats.NewTarSource(ra), log); err != nil {
		return err
	}
	// The tar stream has ended; the compressed one must end too, with
	// every check it carries (a gzip trailer, an xz index and footer).
	if _, err := io.Copy(io.Discard, ra); err != nil {
		return fmt.Errorf("reading image: %w", err)
	}
	tree, err := imageroot.MangleOSTree(work)
	if err != nil {
		return fmt.Errorf("unpacking %s: %w", name, err)
	}
	if err := root.Install(tree, name, opts.InstallOptions); err != nil {
		return err
	}
	log.Info("imported", "image", name, "path", root.Path(name))
	return nil
}

// Unpack writes every entry of src into the empty directory dir. The root
// directory gets mode 0755 unless the stream carries its own "." entry.
func Unpack(ctx context.Context, dir string, src formats.Source, log *slog.Logger) error {
	sink, err := dirtree.NewSink(dir, dirtree.Options{Logger: log})
	if err != nil {
		return err
	}
	sawRoot := false
	noteRoot := func(e *formats.Entry) (*formats.Entry, error) {
		if e.Header.Name == "." && e.Header.Typeflag == tar.TypeDir {
			sawRoot = true
		}
		return e, nil
	}
	if _, err := formats.Copy(ctx, sink, src, noteRoot); err != nil {
		sink.Abort()
		return fmt.Errorf("unpacking: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("unpacking: %w", err)
	}
	if !sawRoot {
		if err := os.Chmod(dir, 0o755); err != nil {
			return fmt.Errorf("unpacking: %w", err)
		}
	}
	return nil
}
