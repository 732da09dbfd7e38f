// Package durable makes what berth writes survive a power loss before it
// becomes visible under its final name.
//
// A rename is atomic but not durable: without a sync the new name can reach
// the disk before the data it names, and after a crash the image or the
// output file is visible but empty or truncated. So berth syncs the file
// system holding a finished tree (syncfs: one call for any number of
// files, as systemd-pull --sync=yes does), then renames, then syncs the
// directory that holds the new name.
package durable

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// SyncFS writes out everything cached for the file system holding path.
func SyncFS(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// SyncDir makes the entries of directory dir (names created, renamed or
// removed in it) durable.
func SyncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
