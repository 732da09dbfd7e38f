package export

import (
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/scratch"
)

// On btrfs a running machine's tree is exported from a read-only snapshot,
// which is atomic and costs nothing, so the machine is never stopped. As in
// systemd-export the snapshot is hidden next to the image, and unlike it
// (systemd#4050) it is deleted on every way out, also by the next job when
// this one was killed (it has a scratch name).

const (
	btrfsSuperMagic   = 0x9123683e
	btrfsFirstFreeID  = 256 // inode number of a subvolume's root directory
	btrfsNameMax      = 4039
	btrfsSubvolRDOnly = 1 << 1

	iocSnapCreateV2 = 0x50009417 // _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
)

type btrfsVolArgsV2 struct {
	Fd      int64
	Transid uint64
	Flags   uint64
	Unused  [4]uint64
	Name    [btrfsNameMax + 1]byte
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

// snapshotReadOnly makes a read-only snapshot of the subvolume dir next to
// it, under a scratch name this process owns (so that a later job removes
// it if this one is killed), and returns its path and a function deleting
// it.
func snapshotReadOnly(dir string) (string, func() error, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, err
	}
	parent := filepath.Dir(abs)
	src, err := os.Open(abs)
	if err != nil {
		return "", nil, err
	}
	defer src.Close()
	pd, err := os.Open(parent)
	if err != nil {
		return "", nil, err
	}
	defer pd.Close()
	it, err := scratch.New(parent, "snapshot", func(p string) error {
		args := btrfsVolArgsV2{Fd: int64(src.Fd()), Flags: btrfsSubvolRDOnly}
		copy(args.Name[:], filepath.Base(p))
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, pd.Fd(), iocSnapCreateV2, uintptr(unsafe.Pointer(&args))); errno != 0 {
			return errno // EEXIST matches fs.ErrExist
		}
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("btrfs snapshot of %s: %w", dir, err)
	}
	del := func() error {
		if err := it.Remove(); err != nil {
			return fmt.Errorf("deleting export snapshot: %w (remove it with: btrfs subvolume delete %s)", err, it.Path)
		}
		return nil
	}
	return it.Path, del, nil
}
