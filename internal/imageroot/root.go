package imageroot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/durable"
	"github.com/berth-dev/berth/internal/lockfile"
	"github.com/berth-dev/berth/internal/machinelock"
	"github.com/berth-dev/berth/internal/scratch"
)

// Default is where systemd-machined looks for images.
const Default = "/var/lib/machines"

// Root is an image root directory. It remembers the work paths it handed
// out, whose ownership locks it holds until they are installed or
// discarded.
type Root struct {
	Dir string
	Log *slog.Logger

	mu     sync.Mutex
	held   map[string]*scratch.Item
	reaped sync.Once
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
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("image root: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("image root %s is not a directory", dir)
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

// Reap removes what jobs that died (kill -9, power loss) left in the image
// root: their hidden work trees and files, and unfinished downloads in the
// cache. A running job's work is never touched (see package scratch).
func (r *Root) Reap(ctx context.Context) ([]string, error) {
	reaped, err := scratch.Reap(ctx, r.Dir, r.Log)
	if err != nil {
		return reaped, err
	}
	cache := filepath.Join(r.Dir, CacheDirName)
	more, err := scratch.Reap(ctx, cache, r.Log)
	for _, n := range more {
		reaped = append(reaped, filepath.Join(CacheDirName, n))
	}
	return reaped, err
}

func (r *Root) reapOnce() {
	r.reaped.Do(func() {
		if _, err := r.Reap(context.Background()); err != nil {
			r.Log.Warn("could not clean up after earlier jobs", "err", err)
		}
	})
}

// CacheDirName is the directory in the image root that berth keeps
// downloads in. It starts with ".#", which no image name may (of any berth
// version), so no image can ever be installed as the cache or reach it.
const CacheDirName = ".#berth.cache"

func (r *Root) hold(it *scratch.Item) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held == nil {
		r.held = make(map[string]*scratch.Item)
	}
	r.held[it.Path] = it
	return it.Path
}

// owner returns the work path handed out by WorkDir or WorkFile that is p
// or contains p (MangleOSTree's child), or p itself.
func (r *Root) owner(p string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for q := p; q != r.Dir && q != "/" && q != "."; q = filepath.Dir(q) {
		if _, ok := r.held[q]; ok {
			return q
		}
	}
	return p
}

// Release gives up ownership of a work path handed out by WorkDir or
// WorkFile after it was moved away or removed by other means.
func (r *Root) Release(work string) {
	r.mu.Lock()
	it := r.held[work]
	delete(r.held, work)
	r.mu.Unlock()
	it.Release()
}

// Discard removes a work path handed out by WorkDir or WorkFile and
// releases it.
func (r *Root) Discard(work string) error {
	err := scratch.RemoveTree(work)
	r.Release(work)
	return err
}

// WorkDir creates a hidden directory in the image root for a job to build
// the image name in. It is mode 0700 so that nothing outside berth uses a
// half-written tree, and this process holds its ownership lock until
// Install, Discard or Release, so that a later job's Reap removes it only
// after this process is gone.
//
// The first work path a Root hands out reaps the debris of dead jobs first,
// so every job that writes into the image root cleans up after its crashed
// predecessors.
func (r *Root) WorkDir(name string) (string, error) {
	r.reapOnce()
	it, err := scratch.Dir(r.Dir, "work")
	if err != nil {
		return "", fmt.Errorf("image %s: %w", name, err)
	}
	return r.hold(it), nil
}

// WorkFile creates a hidden file in the image root (mode 0644) for a job to
// write the raw image name in; ownership as for WorkDir.
func (r *Root) WorkFile(name string) (*os.File, error) {
	r.reapOnce()
	f, it, err := scratch.File(r.Dir, "raw", 0o644)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	r.hold(it)
	return f, nil
}

// InstallOptions say how an image is put in place.
type InstallOptions struct {
	Force    bool // replace an existing image of that name
	ReadOnly bool // mark the installed tree immutable (chattr +i), like systemd
	// NoSync skips making the image durable before it becomes visible
	// (systemd's --sync=no): faster, but a power loss right after the
	// job can leave a visible image with empty or missing files.
	NoSync bool
	// Settings, when not nil, is installed as NAME.nspawn together with
	// the image: both or neither. An existing settings file is kept
	// unless Force (as systemd-pull does).
	Settings []byte
}

// SettingsName returns the settings file name of the image installed as
// target ("web" or "web.raw": "web.nspawn").
func SettingsName(target string) string {
	return strings.TrimSuffix(target, ".raw") + ".nspawn"
}

// Install moves the finished work path (from WorkDir or WorkFile) into
// place as target (an image name, or NAME.raw), with its settings file.
//
//   - Without Force it fails if target exists (RENAME_NOREPLACE: no window
//     in which another job's image could be overwritten). With Force the
//     old image is swapped out atomically (RENAME_EXCHANGE) and then
//     deleted, so readers never see a missing image; an image a machine
//     runs from is never replaced.
//   - Unless NoSync, the tree and the settings file are on disk before
//     either becomes visible, and the new names are on disk when Install
//     returns.
//   - The image and its settings file are installed both or neither: the
//     settings file goes first (alone it is inert: no machine starts from
//     it), then the image; if the image cannot be put in place, the
//     settings file is taken back. Only a crash between the two renames
//     can leave the settings file without its image.
func (r *Root) Install(work, target string, opts InstallOptions) (err error) {
	name := strings.TrimSuffix(target, ".raw")
	dst := r.Path(target)
	if opts.ReadOnly {
		// Probe before anything is moved: a file system without
		// FS_IMMUTABLE_FL must fail the job, not leave a writable image.
		if err := scratch.SetImmutable(work, true); err != nil {
			return fmt.Errorf("cannot mark %s read-only in %s: %w", name, r.Dir, err)
		}
		// An immutable directory cannot be renamed; set it again below.
		if err := scratch.SetImmutable(work, false); err != nil {
			return fmt.Errorf("marking %s read-only: %w", name, err)
		}
	}
	if _, err := os.Lstat(dst); err == nil {
		if !opts.Force {
			return ExistsError(name, r.Dir)
		}
		// Neither the image nor its settings may change under a machine.
		lock, err := machinelock.Exclusive(dst)
		if err != nil {
			return r.inUse(name, err)
		}
		defer lock.Release()
	}
	var settings *settingsSwap
	if opts.Settings != nil {
		if settings, err = r.writeSettings(name, opts.Settings); err != nil {
			return err
		}
		defer settings.cleanup()
	}
	if !opts.NoSync {
		if err := durable.SyncFS(work); err != nil {
			return fmt.Errorf("installing %s: %w", name, err)
		}
	}
	if settings != nil {
		if err := settings.install(opts.Force, r.Log); err != nil {
			return err
		}
	}

	exchanged := false
	err = unix.Renameat2(unix.AT_FDCWD, work, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) && opts.Force {
		_ = scratch.SetImmutable(dst, false) // a read-only image cannot be swapped out otherwise
		if err = unix.Renameat2(unix.AT_FDCWD, work, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE); err == nil {
			exchanged = true // work now holds the old image
		}
	}
	if err != nil {
		if settings != nil {
			settings.undo() // both or neither
		}
		if errors.Is(err, unix.EEXIST) {
			return ExistsError(name, r.Dir)
		}
		return fmt.Errorf("installing %s: %w", name, err)
	}
	if !opts.NoSync {
		if err := durable.SyncDir(r.Dir); err != nil {
			return fmt.Errorf("installing %s: %w", name, err)
		}
	}
	// What is left under the work path (the replaced image, or the wrapper
	// directory MangleOSTree looked into) goes.
	if owner := r.owner(work); exchanged || owner != work {
		if err := r.Discard(owner); err != nil {
			r.Log.Warn("could not remove the replaced image", "image", name, "err", err)
		}
	} else {
		r.Release(work)
	}
	if opts.ReadOnly {
		if err := scratch.SetImmutable(dst, true); err != nil {
			return fmt.Errorf("marking %s read-only: %w", name, err)
		}
	}
	return nil
}

// settingsSwap is a settings file on its way to NAME.nspawn.
type settingsSwap struct {
	tmp, final string
	item       *scratch.Item
	installed  bool // final is ours now
	exchanged  bool // ... and tmp holds the file it replaced
}

// writeSettings writes data to a scratch file in the image root.
func (r *Root) writeSettings(name string, data []byte) (*settingsSwap, error) {
	f, it, err := scratch.File(r.Dir, "settings", 0o644)
	if err != nil {
		return nil, fmt.Errorf("settings file of %s: %w", name, err)
	}
	_, werr := f.Write(data)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	s := &settingsSwap{tmp: it.Path, final: r.Path(name + ".nspawn"), item: it}
	if werr != nil {
		s.cleanup()
		return nil, fmt.Errorf("writing the settings file of %s: %w", name, werr)
	}
	return s, nil
}

// install renames the settings file to NAME.nspawn. An existing one is
// kept unless force, as systemd-pull does; with force it is swapped out,
// so undo can put it back.
func (s *settingsSwap) install(force bool, log *slog.Logger) error {
	// A symlink is replaced like a file (a rename never follows it); a
	// directory or a device would be swapped into the scratch name.
	if st, err := os.Lstat(s.final); err == nil && !st.Mode().IsRegular() && st.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("%s exists and is not a file: remove it first", s.final)
	}
	err := unix.Renameat2(unix.AT_FDCWD, s.tmp, unix.AT_FDCWD, s.final, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		s.installed = true
	case errors.Is(err, unix.EEXIST) && !force:
		log.Warn("settings file already exists, not replacing it (use --force)", "path", s.final)
		return nil
	case errors.Is(err, unix.EEXIST):
		if err = unix.Renameat2(unix.AT_FDCWD, s.tmp, unix.AT_FDCWD, s.final, unix.RENAME_EXCHANGE); err == nil {
			s.installed, s.exchanged = true, true
		}
	}
	if err != nil {
		return fmt.Errorf("installing the settings file %s: %w", filepath.Base(s.final), err)
	}
	log.Info("installed settings", "path", s.final)
	return nil
}

// undo takes the installed settings file back (restoring the one it
// replaced).
func (s *settingsSwap) undo() {
	switch {
	case s.exchanged:
		_ = unix.Renameat2(unix.AT_FDCWD, s.tmp, unix.AT_FDCWD, s.final, unix.RENAME_EXCHANGE)
	case s.installed:
		_ = os.Remove(s.final)
	}
	s.installed, s.exchanged = false, false
}

// cleanup removes the scratch file (the unused new settings, or the
// replaced old ones) and releases it.
func (s *settingsSwap) cleanup() {
	if !s.installed || s.exchanged {
		_ = os.Remove(s.tmp)
	}
	s.item.Release()
}

// ExistsError is the error for an image name that is taken.
func ExistsError(name, dir string) error {
	return fmt.Errorf("image %q already exists in %s (use --force to replace it)", name, dir)
}

func (r *Root) inUse(name string, err error) error {
	if errors.Is(err, machinelock.ErrInUse) {
		return fmt.Errorf("image %q is %w: stop it first (machinectl stop %s, or end its systemd-nspawn)", name, err, name)
	}
	return fmt.Errorf("image %q: %w", name, err)
}

// Remove deletes the installed image NAME (directory or NAME.raw, read-only
// ones too) and its settings file NAME.nspawn, as machinectl remove does. It
// refuses while a machine runs from the image. The caller holds the name's
// lock (Lock).
func (r *Root) Remove(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	found := false
	for _, n := range []string{name, name + ".raw"} {
		p := r.Path(n)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		found = true
		lock, err := machinelock.Exclusive(p)
		if err != nil {
			return r.inUse(name, err)
		}
		err = scratch.RemoveTree(p)
		lock.Release()
		if err != nil {
			return fmt.Errorf("removing image %q: %w", name, err)
		}
	}
	if !found {
		return fmt.Errorf("no image %q in %s", name, r.Dir)
	}
	settings := r.Path(name + ".nspawn")
	if err := os.Remove(settings); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing settings file %s: %w", settings, err)
	}
	return nil
}

// RemoveTree removes a file or tree, clearing immutable flags on the way so
// that read-only images (and systemd's +i caches) can be removed.
func RemoveTree(p string) error { return scratch.RemoveTree(p) }

// SetImmutable sets or clears FS_IMMUTABLE_FL on a file or directory.
func SetImmutable(p string, on bool) error { return scratch.SetImmutable(p, on) }

// Lock takes an exclusive lock on name, so that two berth operations on one
// image never race. It waits until the lock is free or ctx ends. Lock files
// live outside the image root (package lockfile), which therefore holds
// nothing but images; the lock is released by calling the returned
// function, or by the process exiting.
func (r *Root) Lock(ctx context.Context, name string) (unlock func(), err error) {
	abs, err := filepath.Abs(r.Dir)
	if err != nil {
		return nil, err
	}
	l, err := lockfile.Acquire(ctx, abs+"\x00"+name, false, func() {
		r.Log.Info("waiting for another berth operation on this image", "image", name)
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("image %q is busy (another berth operation holds its lock): %w", name, err)
		}
		return nil, fmt.Errorf("lock for %s: %w", name, err)
	}
	return l.Unlock, nil
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
// an OS tree but holds exactly one directory that is, that directory is what
// to install. It returns the path to install: dir itself or its child. The
// child stays inside dir, so dir's ownership covers it until Install moves
// it; Install discards the emptied wrapper.
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
	return child, nil
}
