// Package treecmp snapshots directory trees and reports how two snapshots
// differ, for tests that check a round trip (directory → archive →
// directory) or compare berth's output with another tool's.
//
// A snapshot keeps everything an nspawn root depends on: type, permission
// bits, numeric owner, mtime to the nanosecond, content hash, symlink
// target, device numbers, every extended attribute, and hard-link groups
// (by name, so snapshots of different file systems compare). Access and
// change times, directory sizes and inode numbers are left out: no archive
// round trip preserves them. Callers that want to ignore more (say the
// root directory's mtime) edit the maps before calling Diff.
package treecmp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Node describes one file of a tree.
type Node struct {
	Type     string    // "dir", "file", "symlink", "char", "block", "fifo", "socket"
	Mode     uint32    // permission bits including setuid, setgid and sticky (07777)
	UID, GID uint32    // numeric owner
	ModTime  time.Time // mtime with nanoseconds
	Size     int64     // regular files only
	SHA256   string    // hex digest of the content of regular files
	Target   string    // symlink target, verbatim
	Major    uint32    // device number of char and block devices
	Minor    uint32
	Xattrs   map[string]string // every extended attribute, nil when none
	// HardLink is, for a non-directory with other names in the same tree,
	// the smallest of those names (byte order, itself included); "" for
	// a file with one name in the tree.
	HardLink string
}

// Snapshot describes every file under dir, keyed by canonical name: "."
// for dir itself, "a/b" below it. Symlinks are described, never followed.
func Snapshot(dir string) (map[string]Node, error) {
	type ino struct{ dev, ino uint64 }
	nodes := make(map[string]Node)
	groups := make(map[ino][]string)
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		n := Node{
			Mode:    st.Mode & 0o7777,
			UID:     st.Uid,
			GID:     st.Gid,
			ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			n.Type = "dir"
		case unix.S_IFREG:
			n.Type = "file"
			n.Size = st.Size
			if n.SHA256, err = hashFile(p); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		case unix.S_IFLNK:
			n.Type = "symlink"
			if n.Target, err = os.Readlink(p); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			n.Type = "char"
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				n.Type = "block"
			}
			n.Major, n.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
		case unix.S_IFIFO:
			n.Type = "fifo"
		case unix.S_IFSOCK:
			n.Type = "socket"
		default:
			n.Type = fmt.Sprintf("unknown(%#o)", st.Mode&unix.S_IFMT)
		}
		if n.Xattrs, err = xattrs(p); err != nil {
			return fmt.Errorf("%s: xattrs: %w", name, err)
		}
		if n.Type != "dir" && st.Nlink > 1 {
			id := ino{st.Dev, st.Ino}
			groups[id] = append(groups[id], name)
		}
		nodes[name] = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, names := range groups {
		if len(names) < 2 {
			continue
		}
		first := slices.Min(names)
		for _, name := range names {
			n := nodes[name]
			n.HardLink = first
			nodes[name] = n
		}
	}
	return nodes, nil
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 4096)
	var n int
	for {
		var err error
		n, err = unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		break
	}
	var m map[string]string
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 4096)
		for {
			vn, err := unix.Lgetxattr(p, name, val)
			if errors.Is(err, unix.ERANGE) {
				val = make([]byte, 2*len(val))
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			val = val[:vn]
			break
		}
		if m == nil {
			m = make(map[string]string)
		}
		m[name] = string(val)
	}
	return m, nil
}

// Diff lists the differences between snapshots a and b, one line per
// differing field ("etc/passwd: mode 0644 != 0600", "x: only in b"),
// sorted by name. It returns nil when the trees are equal.
func Diff(a, b map[string]Node) []string {
	names := slices.Sorted(maps.Keys(a))
	for name := range b {
		if _, ok := a[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var out []string
	for _, name := range names {
		na, inA := a[name]
		nb, inB := b[name]
		switch {
		case !inA:
			out = append(out, name+": only in b")
			continue
		case !inB:
			out = append(out, name+": only in a")
			continue
		}
		diff := func(field string, x, y any) {
			out = append(out, fmt.Sprintf("%s: %s %v != %v", name, field, x, y))
		}
		if na.Type != nb.Type {
			diff("type", na.Type, nb.Type)
			continue
		}
		if na.Mode != nb.Mode {
			diff("mode", fmt.Sprintf("%04o", na.Mode), fmt.Sprintf("%04o", nb.Mode))
		}
		if na.UID != nb.UID || na.GID != nb.GID {
			diff("owner", fmt.Sprintf("%d:%d", na.UID, na.GID), fmt.Sprintf("%d:%d", nb.UID, nb.GID))
		}
		if !na.ModTime.Equal(nb.ModTime) {
			diff("mtime", na.ModTime.UTC().Format(time.RFC3339Nano), nb.ModTime.UTC().Format(time.RFC3339Nano))
		}
		if na.Size != nb.Size {
			diff("size", na.Size, nb.Size)
		}
		if na.SHA256 != nb.SHA256 {
			diff("sha256", na.SHA256, nb.SHA256)
		}
		if na.Target != nb.Target {
			diff("target", fmt.Sprintf("%q", na.Target), fmt.Sprintf("%q", nb.Target))
		}
		if na.Major != nb.Major || na.Minor != nb.Minor {
			diff("device", fmt.Sprintf("%d:%d", na.Major, na.Minor), fmt.Sprintf("%d:%d", nb.Major, nb.Minor))
		}
		if na.HardLink != nb.HardLink {
			diff("hard link group", fmt.Sprintf("%q", na.HardLink), fmt.Sprintf("%q", nb.HardLink))
		}
		for _, k := range slices.Sorted(maps.Keys(union(na.Xattrs, nb.Xattrs))) {
			va, okA := na.Xattrs[k]
			vb, okB := nb.Xattrs[k]
			switch {
			case !okA:
				out = append(out, fmt.Sprintf("%s: xattr %s only in b", name, k))
			case !okB:
				out = append(out, fmt.Sprintf("%s: xattr %s only in a", name, k))
			case va != vb:
				diff("xattr "+k, fmt.Sprintf("%x", va), fmt.Sprintf("%x", vb))
			}
		}
	}
	return out
}

func union(a, b map[string]string) map[string]string {
	m := maps.Clone(a)
	if m == nil {
		m = make(map[string]string)
	}
	maps.Copy(m, b)
	return m
}
