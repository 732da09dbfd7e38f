// Package machinelock tells whether a machine runs from an image, using the
// locks systemd-nspawn itself takes, and keeps nspawn from starting one
// while berth reads, replaces or removes it.
//
// nspawn (src/shared/machine-image.c image_path_lock) locks a tree or raw
// image it runs twice, exclusively unless --read-only: a "local" lock next
// to the image (/path/.#NAME.lck) and a "global" one keyed by device and
// inode (/run/systemd/nspawn/locks/inode-DEV:INO). systemd 250 and later
// take open-file-description locks (fcntl F_OFD_SETLK), older ones BSD
// flocks; the two kinds do not conflict, so both are probed and taken. The
// lock files outlive a killed nspawn, so only the lock state, not a file's
// existence, says "running". machinectl remove refuses an image in use the
// same way.
//
// A process whose root directory is the image tree (the container's
// processes, also of an nspawn started without locking) counts as a user
// too.
package machinelock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrInUse is returned when a machine runs from the image.
var ErrInUse = errors.New("in use by a running machine")

// NspawnLockDir is where nspawn keeps its global image locks.
const NspawnLockDir = "/run/systemd/nspawn/locks"

// Lock is a held image lock; Release drops it.
type Lock struct {
	files  []*os.File
	remove []string // lock files this Lock created, removed on release
}

// Release drops the locks (and removes the lock files it created, as
// systemd's release_lock_file does).
func (l *Lock) Release() {
	if l == nil {
		return
	}
	for _, p := range l.remove {
		_ = os.Remove(p)
	}
	for _, f := range l.files {
		_ = f.Close()
	}
	l.files, l.remove = nil, nil
}

// Paths returns nspawn's local and global lock file for the image at path.
func Paths(path string) ([]string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return nil, err
	}
	dir, base := filepath.Split(abs)
	return []string{
		filepath.Join(dir, ".#"+base+".lck"),
		fmt.Sprintf("%s/inode-%d:%d", NspawnLockDir, st.Dev, st.Ino),
	}, nil
}

// Shared reports whether a machine holds the image lock of path
// exclusively (a machine that can write its tree). When not, the returned
// lock holds shared locks on the existing local lock file and on the global
// one (created if need be, as nspawn does), so that an nspawn started while
// berth reads the tree fails to lock it instead of changing it.
func Shared(path string) (l *Lock, running bool, err error) {
	paths, err := Paths(path)
	if err != nil {
		return nil, false, err
	}
	l = &Lock{}
	for i, p := range paths {
		flags := os.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i == 1 {
			// The global lock lives in /run, not next to the user's image:
			// creating it leaves nothing in the image root.
			if err := os.MkdirAll(NspawnLockDir, 0o700); err == nil {
				flags = os.O_RDWR | os.O_CREATE | unix.O_NOFOLLOW | unix.O_CLOEXEC
			}
		}
		f, err := os.OpenFile(p, flags, 0o600)
		if err != nil {
			continue // no lock file, or none can be made: nobody locked it this way
		}
		held, err := lock(f, false)
		if errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			l.Release()
			return nil, true, nil
		}
		if err != nil || !held {
			f.Close()
			continue
		}
		l.files = append(l.files, f)
	}
	return l, false, nil
}

// Exclusive takes nspawn's locks of the image at path exclusively, for
// removing or replacing it. It fails with an error wrapping ErrInUse when a
// machine holds either lock or a process has the tree as its root.
func Exclusive(path string) (*Lock, error) {
	paths, err := Paths(path)
	if err != nil {
		return nil, err
	}
	l := &Lock{}
	for i, p := range paths {
		if i == 1 {
			if err := os.MkdirAll(NspawnLockDir, 0o700); err != nil {
				continue
			}
		}
		f, err := os.OpenFile(p, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		created := false
		if errors.Is(err, os.ErrNotExist) {
			f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
			created = err == nil
		}
		if err != nil {
			continue // cannot be made (read-only file system): nobody locked it this way either
		}
		if _, err := lock(f, true); err != nil {
			f.Close()
			if created {
				_ = os.Remove(p)
			}
			l.Release()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, ErrInUse
			}
			return nil, fmt.Errorf("locking %s: %w", p, err)
		}
		l.files = append(l.files, f)
		if created {
			l.remove = append(l.remove, p)
		}
	}
	if pid := rootUser(path); pid > 0 {
		l.Release()
		return nil, fmt.Errorf("%w (process %d runs in it)", ErrInUse, pid)
	}
	return l, nil
}

// lock takes a lock of both kinds systemd has used for image locks on f:
// an open-file-description lock and a BSD flock. It returns EWOULDBLOCK
// when either is held against it, and whether at least one was taken.
func lock(f *os.File, exclusive bool) (bool, error) {
	fd := int(f.Fd())
	typ, how := int16(unix.F_RDLCK), unix.LOCK_SH
	if exclusive {
		typ, how = unix.F_WRLCK, unix.LOCK_EX
	}
	ofd := unix.Flock_t{Type: typ}
	err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &ofd)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return false, unix.EWOULDBLOCK
	}
	ofdOK := err == nil
	err = unix.Flock(fd, how|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return false, err
	}
	return ofdOK || err == nil, nil
}

// rootUser returns the PID of a process whose root directory is path, or 0.
func rootUser(path string) int {
	target, err := os.Stat(path)
	if err != nil || !target.IsDir() {
		return 0
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		st, err := os.Stat("/proc/" + e.Name() + "/root")
		if err == nil && os.SameFile(st, target) {
			return pid
		}
	}
	return 0
}
