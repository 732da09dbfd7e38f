// Package scratch creates the hidden files and directories a job writes
// before its result is complete, and removes the ones left by jobs that
// died (kill -9, power loss, OOM).
//
// Every scratch name starts with [Prefix] (".#berth-"): hidden from
// machinectl and list-images, impossible as an image name, and distinct
// from systemd's own hidden files (nspawn's ".#NAME.lck", importd's work
// trees), which berth never touches.
//
// Ownership is decided by a lock, never by age: the creating process holds a
// BSD flock on the item itself for as long as the item exists under its
// scratch name, and the kernel drops that lock when the process dies, also
// on SIGKILL. [Reap] removes exactly the items of this user that nobody
// holds, so a running job's work is never touched, however old. Creating and
// reaping in one directory are serialised by a short lock outside it, so a
// reaper never sees an item between its creation and its lock.
package scratch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/lockfile"
)

// Prefix starts the name of every scratch item.
const Prefix = ".#berth-"

// Item is a scratch file or directory owned by this process.
type Item struct {
	// Path is where the item is, under its scratch name.
	Path string
	lock *os.File
}

// Release gives up ownership: call it once the item has been renamed to its
// final name or removed. It is safe to call more than once.
func (it *Item) Release() {
	if it != nil && it.lock != nil {
		_ = it.lock.Close()
		it.lock = nil
	}
}

// Remove deletes the item (a whole tree for a directory, immutable files
// included) and releases it.
func (it *Item) Remove() error {
	if it == nil {
		return nil
	}
	err := RemoveTree(it.Path)
	it.Release()
	return err
}

// Name returns a new scratch name for tag ("work", "out", ...).
func Name(tag string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return Prefix + tag + "-" + hex.EncodeToString(b[:])
}

// IsName reports whether name (a last path component) is a scratch name.
func IsName(name string) bool { return strings.HasPrefix(name, Prefix) }

// dirKey names the lock that serialises creation and reaping in dir.
func dirKey(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return "scratch\x00" + abs, nil
}

// New makes one scratch item in parent with mk, which gets the path to
// create and must fail with an error matching fs.ErrExist on a collision,
// and locks it, under the directory's shared creation lock. Dir and File
// cover the common cases; New is for items made otherwise (a btrfs
// snapshot).
func New(parent, tag string, mk func(p string) error) (*Item, error) {
	key, err := dirKey(parent)
	if err != nil {
		return nil, err
	}
	guard, err := lockfile.Acquire(context.Background(), key, true, nil)
	if err != nil {
		return nil, err
	}
	defer guard.Unlock()
	for range 10 {
		p := filepath.Join(parent, Name(tag))
		err := mk(p)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			// The scratch name means nothing to a user: say what failed.
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, err
		}
		lock, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err == nil {
			err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err != nil {
				lock.Close()
			}
		}
		if err != nil {
			_ = RemoveTree(p)
			return nil, fmt.Errorf("locking %s: %w", p, err)
		}
		return &Item{Path: p, lock: lock}, nil
	}
	return nil, fmt.Errorf("creating a scratch name in %s: too many collisions", parent)
}

// Dir creates a scratch directory (mode 0700: nothing outside berth uses a
// half-written tree) in parent.
func Dir(parent, tag string) (*Item, error) {
	it, err := New(parent, tag, func(p string) error { return os.Mkdir(p, 0o700) })
	if err != nil {
		return nil, fmt.Errorf("creating a work directory in %s: %w", parent, err)
	}
	return it, nil
}

// File creates a scratch file in parent, exclusively, opened for reading
// and writing. Closing the file does not release the item.
func File(parent, tag string, perm fs.FileMode) (*os.File, *Item, error) {
	var f *os.File
	it, err := New(parent, tag, func(p string) error {
		var err error
		f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
		return err
	})
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, nil, fmt.Errorf("creating a work file in %s: %w", parent, err)
	}
	return f, it, nil
}

// Reap removes the scratch items in dir that belong to this user and that no
// living process holds, and returns their names. Everything else in dir
// (other users' items, symlinks, anything without the scratch prefix) is
// left alone. A missing dir has nothing to reap.
func Reap(ctx context.Context, dir string, log *slog.Logger) ([]string, error) {
	if log == nil {
		log = slog.Default()
	}
	key, err := dirKey(dir)
	if err != nil {
		return nil, err
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	names, err := readNames(dfd)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	var todo []string
	for _, n := range names {
		if IsName(n) {
			todo = append(todo, n)
		}
	}
	if len(todo) == 0 {
		return nil, nil
	}
	guard, err := lockfile.Acquire(ctx, key, false, nil)
	if err != nil {
		return nil, err
	}
	defer guard.Unlock()
	var reaped []string
	for _, n := range todo {
		if err := ctx.Err(); err != nil {
			return reaped, err
		}
		ok, err := reapOne(dfd, dir, n)
		if err != nil {
			log.Warn("could not remove the debris of an earlier job", "path", filepath.Join(dir, n), "err", err)
			continue
		}
		if ok {
			log.Debug("removed the debris of an earlier job", "path", filepath.Join(dir, n))
			reaped = append(reaped, n)
		}
	}
	return reaped, nil
}

// reapOne removes name in dfd if it is an unheld scratch item of this user.
func reapOne(dfd int, dir, name string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	typ := st.Mode & unix.S_IFMT
	if (typ != unix.S_IFDIR && typ != unix.S_IFREG) || int(st.Uid) != os.Geteuid() {
		return false, nil
	}
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	var st2 unix.Stat_t
	if err := unix.Fstat(fd, &st2); err != nil {
		return false, err
	}
	if st2.Dev != st.Dev || st2.Ino != st.Ino {
		return false, nil // replaced meanwhile
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil // its job is alive
		}
		return false, err
	}
	return true, RemoveTree(filepath.Join(dir, name))
}

func readNames(fd int) ([]string, error) {
	buf := make([]byte, 32<<10)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// RemoveTree removes a file or a tree without following symlinks, clearing
// immutable flags on the way so that read-only images (chattr +i, as
// systemd marks them) can be removed too. A missing path is no error.
func RemoveTree(p string) error {
	if isSubvolume(p) {
		if err := destroySubvolume(p); err == nil {
			return nil
		}
	}
	err := os.RemoveAll(p)
	if err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && (d.IsDir() || d.Type().IsRegular()) {
			_ = SetImmutable(q, false)
		}
		return nil
	})
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("removing %s: %w", p, err)
	}
	return nil
}

// fsImmutableFL is FS_IMMUTABLE_FL from linux/fs.h (chattr +i).
const fsImmutableFL = 0x00000010

// SetImmutable sets or clears FS_IMMUTABLE_FL on a file or directory,
// never following a symlink.
func SetImmutable(p string, on bool) error {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return fmt.Errorf("reading inode flags: %w", err)
	}
	nf := flags &^ fsImmutableFL
	if on {
		nf |= fsImmutableFL
	}
	if nf == flags {
		return nil
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(nf)); err != nil {
		return fmt.Errorf("setting inode flags: %w", err)
	}
	return nil
}

// TempFile returns an unnamed file in dir for data that is only needed
// while the job runs (a spool, a staging image): nothing is left behind
// whatever happens to the job. It uses O_TMPFILE, and where the file
// system lacks it a scratch file that is unlinked at once (a job killed in
// between leaves a scratch name, which Reap removes).
func TempFile(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dir, "(unnamed)")), nil
	}
	f, it, err := File(dir, "tmp", 0o600)
	if err != nil {
		return nil, err
	}
	_ = os.Remove(it.Path)
	it.Release()
	return f, nil
}
