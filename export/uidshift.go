package export

import (
	"archive/tar"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/berth-dev/berth/formats"
)

// UID shifts as systemd-nspawn -U --private-users-ownership=chown leaves them:
// the whole tree is chowned into a 64K range starting at a base that is a
// multiple of 65536, and the root directory is owned by base:base (nspawn's
// determine_uid_shift reads the base back from there). An exported image must
// carry the ids the machine sees, 0-based, or it is unusable anywhere but in
// another nspawn -U with the same base (systemd-export keeps the shift).
const shiftRange = 0x10000

// DetectShift returns the UID/GID base of a tree shifted by systemd-nspawn -U
// (root directory owner & 0xffff0000), or 0 for an unshifted tree.
func DetectShift(dir string) (uint32, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return 0, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("%s: no ownership information", dir)
	}
	base := sys.Uid &^ (shiftRange - 1)
	if base == 0 {
		return 0, nil
	}
	if sys.Gid&^(shiftRange-1) != base {
		return 0, fmt.Errorf("%s: root directory owned by uid %d gid %d, which is no consistent nspawn UID shift (fix its owner, or export with --keep-uid-shift)", dir, sys.Uid, sys.Gid)
	}
	return base, nil
}

// ErrOutsideShift is returned for an owner (in the header, an ACL or a
// capability) outside the tree's shift range.
var ErrOutsideShift = errors.New("outside the UID shift range of this tree")

// Unshift returns a filter that moves every uid and gid of a tree shifted by
// base back to 0-based: the owner, the ids inside POSIX ACL xattrs
// (system.posix_acl_access/default) and the root id of a v3 file capability
// (security.capability), which is rewritten as a v2 capability when it comes
// back to 0, as the kernel itself stores it. Any id outside [base,
// base+65536) is an error: the tree is not what nspawn left, and silently
// exporting a stray host id would hand it to whoever imports the image. The
// one exception is what nspawn itself creates as host root after the chown:
// empty files and symlinks that are bind-mount points (/etc/localtime,
// /etc/resolv.conf); they stay root's, which they are in the image.
func Unshift(base uint32) formats.Filter {
	return func(e *formats.Entry) (*formats.Entry, error) {
		h := e.Header
		if nspawnStub(h) {
			return e, nil
		}
		uid, err := unshiftID(base, uint32(h.Uid), "owner uid")
		if err != nil {
			return nil, err
		}
		gid, err := unshiftID(base, uint32(h.Gid), "owner gid")
		if err != nil {
			return nil, err
		}
		h.Uid, h.Gid = int(uid), int(gid)
		for _, name := range []string{"system.posix_acl_access", "system.posix_acl_default"} {
			v, ok := h.PAXRecords[formats.XattrPrefix+name]
			if !ok {
				continue
			}
			nv, err := ShiftACL([]byte(v), func(id uint32, what string) (uint32, error) {
				return unshiftID(base, id, name+" "+what)
			})
			if err != nil {
				return nil, err
			}
			formats.SetXattr(h, name, string(nv))
		}
		if v, ok := h.PAXRecords[formats.XattrPrefix+"security.capability"]; ok {
			nv, err := ShiftCapability([]byte(v), func(id uint32) (uint32, error) {
				return unshiftID(base, id, "security.capability root id")
			})
			if err != nil {
				return nil, err
			}
			formats.SetXattr(h, "security.capability", string(nv))
		}
		return e, nil
	}
}

func unshiftID(base, id uint32, what string) (uint32, error) {
	if id < base || id-base >= shiftRange {
		return 0, fmt.Errorf("%s %d is %w [%d, %d): fix it, or export with --keep-uid-shift", what, id, ErrOutsideShift, base, uint64(base)+shiftRange)
	}
	return id - base, nil
}

// POSIX ACL xattr layout (linux/posix_acl_xattr.h): a little-endian u32
// version (2), then 8-byte entries {u16 tag, u16 perm, u32 id}. Only
// ACL_USER and ACL_GROUP entries carry an id.
const (
	aclVersion = 2
	aclUser    = 0x02
	aclGroup   = 0x08
)

// ShiftACL rewrites the uids and gids inside a POSIX ACL xattr value through
// shift, which is told whether the id is a "uid" or a "gid". A value that is
// not a well-formed version 2 ACL is an error.
func ShiftACL(v []byte, shift func(id uint32, what string) (uint32, error)) ([]byte, error) {
	if len(v) < 4 || (len(v)-4)%8 != 0 {
		return nil, fmt.Errorf("malformed POSIX ACL xattr (%d bytes)", len(v))
	}
	if ver := binary.LittleEndian.Uint32(v); ver != aclVersion {
		return nil, fmt.Errorf("POSIX ACL xattr version %d, want %d", ver, aclVersion)
	}
	out := append([]byte(nil), v...)
	for off := 4; off < len(out); off += 8 {
		tag := binary.LittleEndian.Uint16(out[off:])
		var what string
		switch tag {
		case aclUser:
			what = "uid"
		case aclGroup:
			what = "gid"
		default:
			continue
		}
		id, err := shift(binary.LittleEndian.Uint32(out[off+4:]), what)
		if err != nil {
			return nil, err
		}
		binary.LittleEndian.PutUint32(out[off+4:], id)
	}
	return out, nil
}

// File capability xattr layout (linux/capability.h): u32 magic_etc (revision
// in the top byte), two {permitted, inheritable} u32 pairs, and for revision
// 3 a u32 root id: the uid that counts as root for these capabilities.
const (
	capRevMask = 0xff000000
	capRev1    = 0x01000000
	capRev2    = 0x02000000
	capRev3    = 0x03000000
	capV1Size  = 12
	capV2Size  = 20
	capV3Size  = 24
)

// ShiftCapability maps the root id of a revision 3 file capability through
// shift. A result of 0 is written as revision 2, which means the same and is
// what the kernel stores for a capability set by real root. Revisions 1 and
// 2 carry no id and are returned as they are.
func ShiftCapability(v []byte, shift func(id uint32) (uint32, error)) ([]byte, error) {
	if len(v) < 4 {
		return nil, fmt.Errorf("malformed security.capability xattr (%d bytes)", len(v))
	}
	magic := binary.LittleEndian.Uint32(v)
	switch rev := magic & capRevMask; {
	case rev == capRev1 && len(v) == capV1Size, rev == capRev2 && len(v) == capV2Size:
		return v, nil
	case rev == capRev3 && len(v) == capV3Size:
	default:
		return nil, fmt.Errorf("malformed security.capability xattr (revision %#x, %d bytes)", rev>>24, len(v))
	}
	id, err := shift(binary.LittleEndian.Uint32(v[20:]))
	if err != nil {
		return nil, err
	}
	if id == 0 {
		out := append([]byte(nil), v[:capV2Size]...)
		binary.LittleEndian.PutUint32(out, magic&^capRevMask|capRev2)
		return out, nil
	}
	out := append([]byte(nil), v...)
	binary.LittleEndian.PutUint32(out[20:], id)
	return out, nil
}

// nspawnStub reports whether h is a mount-point stub or symlink that
// systemd-nspawn made as host root (0:0) in a shifted tree.
func nspawnStub(h *tar.Header) bool {
	if h.Uid != 0 || h.Gid != 0 {
		return false
	}
	return h.Typeflag == tar.TypeSymlink || (h.Typeflag == tar.TypeReg && h.Size == 0)
}
