package dirtree

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats"
)

// Remove deletes name and, when it is a directory, everything below it. The
// parent of name is resolved under the same rules as WriteEntry (beneath the
// root, through no symlink and no mount point), and nothing below name is
// ever followed: entries are unlinked relative to descriptors of their own
// directories. A name that does not exist is not an error.
//
// Layered formats need it: an OCI whiteout deletes what a lower layer
// extracted. Deferred metadata of removed directories is dropped, so a
// directory of the same name created later does not inherit it.
func (s *Sink) Remove(name string) error {
	if err := s.usable(); err != nil {
		return err
	}
	clean, err := formats.CleanName(name, false)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if clean == "." {
		return errors.New("dirtree: refusing to remove the root of the tree")
	}
	dir, base := splitName(clean)
	parent := s.root
	if dir != "." {
		fd, err := s.openBeneath(dir, unix.O_PATH|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil // no parent directory: nothing to remove
		}
		if err != nil {
			return fmt.Errorf("%s: %w", clean, s.parentError(dir, "parent", err))
		}
		defer unix.Close(fd)
		parent = fd
	}
	s.dropCache() // the cached parent may be name or below it
	if err := removeAt(parent, base); err != nil {
		return fmt.Errorf("%s: remove: %w", clean, err)
	}
	s.dirs = slices.DeleteFunc(s.dirs, func(d pendingDir) bool {
		return d.name == clean || strings.HasPrefix(d.name, clean+"/")
	})
	return nil
}

// Children returns the sorted names (last components) of the entries in
// directory name, resolved like Remove. A missing name, or one that is not a
// directory, has no children.
func (s *Sink) Children(name string) ([]string, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	clean, err := formats.CleanName(name, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	fd, err := s.openBeneath(clean, unix.O_RDONLY|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", clean, s.parentError(clean, "directory", err))
	}
	defer unix.Close(fd)
	names, err := readDirNames(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: read directory: %w", clean, err)
	}
	return names, nil
}

func (s *Sink) usable() error {
	if s.closed {
		return errors.New("dirtree: sink is closed")
	}
	if s.err != nil {
		return fmt.Errorf("dirtree: sink failed earlier: %w", s.err)
	}
	return nil
}

// removeAt removes base in the directory open as parent, recursively,
// never following symlinks.
func removeAt(parent int, base string) error {
	err := unix.Unlinkat(parent, base, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return err
	}
	fd, err := openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				err = fmt.Errorf("%s/%s: %w", base, n, err)
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(parent, base, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

func readDirNames(fd int) ([]string, error) {
	buf := make([]byte, 32<<10)
	var names []string
	for {
		n, err := ignoringEINTR(func() (int, error) { return unix.Getdents(fd, buf) })
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	slices.Sort(names)
	return names, nil
}
