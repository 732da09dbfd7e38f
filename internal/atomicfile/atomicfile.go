// Package atomicfile writes output files that appear under their final name
// only when complete and durable: data goes to a hidden scratch file in the
// same directory (package scratch), which is synced and renamed into place
// on Commit, and then the directory is synced. A job that fails or is
// interrupted calls Abort (or nothing, and the deferred Abort runs), and no
// partial file is left under the name a user or a script would pick up; a
// job killed outright leaves its scratch file, which the next Create in that
// directory removes once the killed job's lock is gone.
package atomicfile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/durable"
	"github.com/berth-dev/berth/internal/scratch"
)

// Options say how an output file is written.
type Options struct {
	// Replace lets Commit replace an existing file; without it Commit
	// fails if the name exists by then.
	Replace bool
	// NoSync skips syncing: faster, but a power loss right after the job
	// can leave the file visible with missing data.
	NoSync bool
	// Log receives a line about debris removed from the directory.
	Log *slog.Logger
}

// File is an output file being written.
type File struct {
	*os.File
	final string
	item  *scratch.Item
	opts  Options
	done  bool
}

// ExistsError is the error for an output that is already there.
func ExistsError(path string) error {
	return fmt.Errorf("output %s already exists (use --force to replace it)", path)
}

// Create starts writing the file path.
func Create(path string, opts Options) (*File, error) {
	dir := filepath.Dir(path)
	if !opts.Replace {
		if _, err := os.Lstat(path); err == nil {
			return nil, ExistsError(path)
		}
	}
	if _, err := scratch.Reap(context.Background(), dir, opts.Log); err != nil && opts.Log != nil {
		opts.Log.Warn("could not clean up after earlier jobs", "dir", dir, "err", err)
	}
	f, it, err := scratch.File(dir, "out", 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating output in %s: %w", dir, errors.Unwrap(err))
	}
	return &File{File: f, final: path, item: it, opts: opts}, nil
}

// Commit syncs the file and renames it to its final name.
func (f *File) Commit() error {
	if f.done {
		return errors.New("atomicfile: already committed or aborted")
	}
	f.done = true
	tmp := f.Name()
	defer f.item.Release()
	fail := func(err error) error {
		f.File.Close()
		os.Remove(tmp)
		return err
	}
	if !f.opts.NoSync {
		if err := f.Sync(); err != nil {
			return fail(fmt.Errorf("writing %s: %w", f.final, err))
		}
	}
	if err := f.File.Close(); err != nil {
		return fail(fmt.Errorf("writing %s: %w", f.final, err))
	}
	var flags uint
	if !f.opts.Replace {
		flags = unix.RENAME_NOREPLACE
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, f.final, flags); err != nil {
		os.Remove(tmp)
		if errors.Is(err, unix.EEXIST) {
			return ExistsError(f.final)
		}
		return fmt.Errorf("renaming output into place: %w", err)
	}
	if !f.opts.NoSync {
		if err := durable.SyncDir(filepath.Dir(f.final)); err != nil {
			return fmt.Errorf("writing %s: %w", f.final, err)
		}
	}
	return nil
}

// Abort discards the file. It is safe to call after Commit (it does nothing),
// so `defer f.Abort()` is the usual pattern.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.Name())
	f.item.Release()
}
