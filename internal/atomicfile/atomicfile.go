// Package atomicfile writes output files that appear under their final name
// only when complete: data goes to a hidden temporary file in the same
// directory, which is synced and renamed into place on Commit. A job that
// fails or is interrupted calls Abort (or nothing, and the deferred Abort
// runs), and no partial file is left under the name a user or a script
// would pick up.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// File is an output file being written.
type File struct {
	*os.File
	final   string
	replace bool
	done    bool
}

// Create starts writing the file path. With replace false, Commit fails if
// path exists by then.
func Create(path string, replace bool) (*File, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if !replace {
		if _, err := os.Lstat(path); err == nil {
			return nil, fmt.Errorf("output %s already exists (use --force to replace it)", path)
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	tmp := filepath.Join(dir, ".#"+base+"."+hex.EncodeToString(b[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating output in %s: %w", dir, err)
	}
	return &File{File: f, final: path, replace: replace}, nil
}

// Commit syncs the file and renames it to its final name.
func (f *File) Commit() error {
	if f.done {
		return errors.New("atomicfile: already committed or aborted")
	}
	f.done = true
	tmp := f.Name()
	fail := func(err error) error {
		f.File.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("writing %s: %w", f.final, err))
	}
	if err := f.File.Close(); err != nil {
		return fail(fmt.Errorf("writing %s: %w", f.final, err))
	}
	var flags uint
	if !f.replace {
		flags = unix.RENAME_NOREPLACE
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, f.final, flags); err != nil {
		os.Remove(tmp)
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("output %s already exists (use --force to replace it)", f.final)
		}
		return fmt.Errorf("renaming output into place: %w", err)
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
}
