package export

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On btrfs a running machine's tree is exported from a read-only snapshot,
// which is atomic and costs nothing, so the machine is never stopped. As in
// systemd-export the snapshot is hidden next to the image (.#name.export…),
// and unlike it (systemd#4050) it is deleted on every way out.

const (
	btrfsSuperMagic   = 0x9123683e
	btrfsFirstFreeID  = 256 // inode number of a subvolume's root directory
	btrfsNameMax      = 4039
	btrfsPathMax      = 4087
	btrfsSubvolRDOnly = 1 << 1

	iocSnapCreateV2 = 0x50009417 // _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
	iocSnapDestroy  = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
)

type btrfsVolArgsV2 struct {
	Fd      int64
	Transid uint64
	Flags   uint64
	Unused  [4]uint64
	Name    [btrfsNameMax + 1]byte
}

type btrfsVolArgs struct {
	Fd   int64
	Name [btrfsPathMax + 1]byte
}

// isSubvolume reports whether dir is the root of a btrfs subvolume.
func isSubvolume(dir string) bool {
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil || uint32(sfs.Type) != btrfsSuperMagic {
		return false
	}
	var st unix.Stat_t
	return unix.Stat(dir, &st) == nil && st.Ino == btrfsFirstFreeID
}

// snapshotReadOnly makes a read-only snapshot of the subvolume dir next to it
// and returns its path and a function deleting it.
func snapshotReadOnly(dir string) (string, func() error, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, err
	}
	parent, base := filepath.Split(abs)
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := ".#" + base + ".export" + hex.EncodeToString(b[:])
	if len(name) > btrfsNameMax {
		name = ".#export" + hex.EncodeToString(b[:])
	}
	src, err := os.Open(abs)
	if err != nil {
		return "", nil, err
	}
	defer src.Close()
	pd, err := os.Open(parent)
	if err != nil {
		return "", nil, err
	}
	args := btrfsVolArgsV2{Fd: int64(src.Fd()), Flags: btrfsSubvolRDOnly}
	copy(args.Name[:], name)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, pd.Fd(), iocSnapCreateV2, uintptr(unsafe.Pointer(&args))); errno != 0 {
		pd.Close()
		return "", nil, fmt.Errorf("btrfs snapshot of %s: %w", dir, errno)
	}
	del := func() error {
		defer pd.Close()
		d := btrfsVolArgs{}
		copy(d.Name[:], name)
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, pd.Fd(), iocSnapDestroy, uintptr(unsafe.Pointer(&d))); errno != 0 {
			return fmt.Errorf("deleting export snapshot %s: %w (remove it with: btrfs subvolume delete %s)", filepath.Join(parent, name), errno, filepath.Join(parent, name))
		}
		return nil
	}
	return filepath.Join(parent, name), del, nil
}
