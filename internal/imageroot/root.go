package imageroot

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Default is where systemd-machined looks for images.
const Default = "/var/lib/machines"

// Root is an image root directory.
type Root struct {
	Dir string
	Log *slog.Logger
}

// Open returns the image root at dir, creating it (0700, as systemd does) if
// it does not exist.
func Open(dir string, log *slog.Logger) (*Root, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("image root: %w", err)
	}
	return &Root{Dir: dir, Log: log}, nil
}

// Path returns the path of the image directory NAME.
func (r *Root) Path(name string) string { return filepath.Join(r.Dir, name) }

// Exists reports whether something is installed under name (directory,
// .raw file, or anything else), without following a symlink.
func (r *Root) Exists(name string) bool {
	_, err := os.Lstat(r.Path(name))
	return err == nil
}

// WorkDir creates a hidden directory "<root>/.#<name><16 hex>" for a job to
// build an image in. It is mode 0700 so that nothing outside berth uses a
// half-written tree. The caller removes it with RemoveAll on failure, or
// installs it with Install.
func (r *Root) WorkDir(name string) (string, error) {
	for range 10 {
		p := filepath.Join(r.Dir, ".#"+name+randHex())
		err := os.Mkdir(p, 0o700)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("creating work directory: %w", err)
		}
	}
	return "", fmt.Errorf("creating work directory in %s: too many collisions", r.Dir)
}

func randHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// InstallOptions say how an image is put in place.
type InstallOptions struct {
	Force    bool // replace an existing image of that name
	ReadOnly bool // mark the installed tree immutable (chattr +i), like systemd
}

// Install moves the finished work path into place as name. Without Force it
// fails if name exists (RENAME_NOREPLACE: no window in which another job's
// image could be overwritten). With Force the old image is swapped out
// atomically (RENAME_EXCHANGE) and then deleted, so readers never see a
// missing image.
func (r *Root) Install(work, name string, opts InstallOptions) error {
	if opts.ReadOnly {
		// Probe before anything is moved: a file system without
		// FS_IMMUTABLE_FL must fail the job, not leave a writable image.
		if err := SetImmutable(work, true); err != nil {
			return fmt.Errorf("cannot mark %s read-only in %s: %w", name, r.Dir, err)
		}
		// An immutable directory cannot be renamed; set it again below.
		if err := SetImmutable(work, false); err != nil {
			return fmt.Errorf("marking %s read-only: %w", name, err)
		}
	}
	dst := r.Path(name)
	err := unix.Renameat2(unix.AT_FDCWD, work, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
	case !errors.Is(err, unix.EEXIST):
		return fmt.Errorf("installing %s: %w", name, err)
	case !opts.Force:
		return fmt.Errorf("image %q already exists in %s (use --force to replace it)", name, r.Dir)
	default:
		_ = SetImmutable(dst, false) // a read-only image cannot be swapped out otherwise
		if err := unix.Renameat2(unix.AT_FDCWD, work, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE); err != nil {
			return fmt.Errorf("replacing %s: %w", name, err)
		}
		// work now holds the old image.
		if err := RemoveTree(work); err != nil {
			r.Log.Warn("could not remove replaced image", "path", work, "err", err)
		}
	}
	if opts.ReadOnly {
		if err := SetImmutable(dst, true); err != nil {
			return fmt.Errorf("marking %s read-only: %w", name, err)
		}
	}
	return nil
}

// Remove deletes an installed image, clearing the immutable flag first.
func (r *Root) Remove(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	p := r.Path(name)
	if _, err := os.Lstat(p); err != nil {
		return fmt.Errorf("no image %q in %s", name, r.Dir)
	}
	return RemoveTree(p)
}

// RemoveTree removes a file or tree, clearing immutable flags on the way so
// that read-only images (and systemd's +i caches) can be removed.
func RemoveTree(p string) error {
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

// SetImmutable sets or clears FS_IMMUTABLE_FL on a file or directory.
func SetImmutable(p string, on bool) error {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
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
	v := int(nf)
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, v); err != nil {
		return fmt.Errorf("setting inode flags: %w", err)
	}
	return nil
}

// Lock takes an exclusive lock on name, so that two berth operations on one
// image never race. It waits until the lock is free or ctx ends. Lock files
// live in /run/berth/locks (or $XDG_RUNTIME_DIR when not root), not in the
// image root, which therefore holds nothing but images; the lock is released
// by calling the returned function, or by the process exiting.
func (r *Root) Lock(ctx context.Context, name string) (unlock func(), err error) {
	p, err := r.lockPath(name)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock for %s: %w", name, err)
	}
	warned := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock for %s: %w", name, err)
		}
		if !warned {
			r.Log.Info("waiting for another berth operation on this image", "image", name)
			warned = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("image %q is busy (another berth operation holds its lock): %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *Root) lockPath(name string) (string, error) {
	base := "/run/berth/locks"
	if os.Geteuid() != 0 {
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			base = filepath.Join(d, "berth", "locks")
		} else {
			base = filepath.Join(os.TempDir(), fmt.Sprintf("berth-%d", os.Geteuid()), "locks")
		}
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", fmt.Errorf("lock directory: %w", err)
	}
	abs, err := filepath.Abs(r.Dir)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(abs + "\x00" + name))
	return filepath.Join(base, hex.EncodeToString(sum[:12])+".lck"), nil
}

// IsOSTree reports whether dir looks like an operating system tree: it has
// an os-release file (which may be a dangling absolute symlink, as on NixOS).
func IsOSTree(dir string) bool {
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
			return true
		}
	}
	return false
}

// MangleOSTree handles tarballs that wrap the OS tree in one top-level
// directory ("rootfs/", "fedora-39/"), as systemd-import does: if dir is not
// an OS tree but holds exactly one directory that is, that directory becomes
// the image. It returns the directory to install, which is dir itself or a
// new sibling work directory (dir is then removed). On error too, the
// returned path is the one the caller must clean up.
func MangleOSTree(dir string) (string, error) {
	if IsOSTree(dir) {
		return dir, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return dir, err
	}
	if len(ents) != 1 || !ents[0].IsDir() {
		return dir, nil
	}
	child := filepath.Join(dir, ents[0].Name())
	if !IsOSTree(child) {
		return dir, nil
	}
	moved := dir + "-os"
	if err := unix.Renameat2(unix.AT_FDCWD, child, unix.AT_FDCWD, moved, unix.RENAME_NOREPLACE); err != nil {
		return dir, fmt.Errorf("moving %s up: %w", ents[0].Name(), err)
	}
	if err := os.Remove(dir); err != nil {
		return moved, fmt.Errorf("removing wrapper directory: %w", err)
	}
	return moved, nil
}
