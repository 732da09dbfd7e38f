package scratch

import (
	"fmt"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A btrfs snapshot (export reads a running machine from one) is a scratch
// item too, and a read-only one cannot be emptied file by file: it is
// destroyed with the subvolume ioctl, as "btrfs subvolume delete" does.

const (
	btrfsSuperMagic  = 0x9123683e
	btrfsFirstFreeID = 256 // inode number of a subvolume's root directory
	btrfsPathMax     = 4087
	iocSnapDestroy   = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
)

type btrfsVolArgs struct {
	Fd   int64
	Name [btrfsPathMax + 1]byte
}

// isSubvolume reports whether p (not followed if a symlink) is the root
// directory of a btrfs subvolume.
func isSubvolume(p string) bool {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Ino != btrfsFirstFreeID {
		return false
	}
	var sfs unix.Statfs_t
	return unix.Statfs(p, &sfs) == nil && uint32(sfs.Type) == btrfsSuperMagic
}

// destroySubvolume deletes the subvolume p, read-only or not.
func destroySubvolume(p string) error {
	parent, name := filepath.Split(filepath.Clean(p))
	if parent == "" {
		parent = "."
	}
	if len(name) > btrfsPathMax {
		return fmt.Errorf("%s: name too long", p)
	}
	fd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var a btrfsVolArgs
	copy(a.Name[:], name)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocSnapDestroy, uintptr(unsafe.Pointer(&a))); errno != 0 {
		return fmt.Errorf("deleting the btrfs subvolume %s: %w", p, errno)
	}
	return nil
}
