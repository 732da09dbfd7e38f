// Package lockfile gives berth's jobs named advisory locks that live outside
// any directory a user or an image controls.
//
// The lock files are in /run/berth/locks (root) or $XDG_RUNTIME_DIR/berth/locks,
// named by a hash of the key, so that an image root holds nothing but images
// and no name an image or a URL chooses can reach a lock file. Locks are BSD
// flocks: the kernel drops them when the holder exits, also on SIGKILL, so a
// lock never outlives its job and "held" always means "someone is working".
package lockfile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrBusy is returned by TryLock when another holder has the lock.
var ErrBusy = errors.New("lock is held by another process")

// Lock is a held lock; Unlock releases it.
type Lock struct{ f *os.File }

// Unlock releases the lock. It is safe to call more than once.
func (l *Lock) Unlock() {
	if l != nil && l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}

// Dir returns the directory lock files live in, creating it (mode 0700).
func Dir() (string, error) {
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
	st, err := os.Lstat(base)
	if err != nil {
		return "", fmt.Errorf("lock directory: %w", err)
	}
	if !st.IsDir() || st.Mode().Perm()&0o022 != 0 || !ownedByUs(st) {
		return "", fmt.Errorf("lock directory %s is not a private directory of this user", base)
	}
	return base, nil
}

func ownedByUs(st os.FileInfo) bool {
	s, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(s.Uid) == os.Geteuid()
}

func open(key string) (*os.File, error) {
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(key))
	p := filepath.Join(dir, hex.EncodeToString(sum[:12])+".lck")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	return f, nil
}

// TryLock takes the lock named key (exclusive, or shared with shared) if it
// is free, and fails with ErrBusy if it is not.
func TryLock(key string, shared bool) (*Lock, error) {
	f, err := open(key)
	if err != nil {
		return nil, err
	}
	if err := flock(f, shared, false); err != nil {
		f.Close()
		return nil, err
	}
	return &Lock{f: f}, nil
}

// Acquire takes the lock named key, waiting until it is free or ctx ends.
// waiting, if not nil, is called once when the lock is found busy.
func Acquire(ctx context.Context, key string, shared bool, waiting func()) (*Lock, error) {
	f, err := open(key)
	if err != nil {
		return nil, err
	}
	for {
		err := flock(f, shared, false)
		if err == nil {
			return &Lock{f: f}, nil
		}
		if !errors.Is(err, ErrBusy) {
			f.Close()
			return nil, err
		}
		if waiting != nil {
			waiting()
			waiting = nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func flock(f *os.File, shared, wait bool) error {
	how := unix.LOCK_EX
	if shared {
		how = unix.LOCK_SH
	}
	if !wait {
		how |= unix.LOCK_NB
	}
	for {
		err := unix.Flock(int(f.Fd()), how)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return ErrBusy
		}
		return fmt.Errorf("lock: %w", err)
	}
}
