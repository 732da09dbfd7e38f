package pull

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/imageroot"
)

// Image describes one entry of the image root, as list-images shows it.
type Image struct {
	Name     string
	Type     string // "directory" or "raw"
	Path     string
	Size     int64 // bytes allocated on disk (directory: whole tree)
	ReadOnly bool
	Modified time.Time
	Hidden   bool // a work file, cache or systemd cache (".#…", ".…")
}

// ListImages lists the images in root, sorted by name. Hidden entries
// (berth's and systemd's work files and caches, all starting with ".") are
// included only with all. Entries that are neither directories nor ".raw"
// files (settings files, locks) are not images.
func ListImages(ctx context.Context, root *imageroot.Root, all bool) ([]Image, error) {
	ents, err := os.ReadDir(root.Dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", root.Dir, err)
	}
	var out []Image
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := e.Name()
		hidden := strings.HasPrefix(n, ".")
		if hidden && !all {
			continue
		}
		p := filepath.Join(root.Dir, n)
		st, err := os.Lstat(p)
		if err != nil {
			continue // removed meanwhile
		}
		img := Image{Name: n, Path: p, Modified: st.ModTime(), Hidden: hidden}
		switch {
		case st.IsDir():
			img.Type = "directory"
			img.Size = treeUsage(p)
			img.ReadOnly = immutable(p)
		case st.Mode().IsRegular() && strings.HasSuffix(n, ".raw"):
			img.Type = "raw"
			img.Name = strings.TrimSuffix(n, ".raw")
			img.Size = usage(st)
			img.ReadOnly = immutable(p) || st.Mode().Perm()&0o222 == 0
		default:
			continue
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func usage(st fs.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Blocks * 512
	}
	return st.Size()
}

// treeUsage adds up the blocks of a tree, counting hard-linked files once.
func treeUsage(dir string) int64 {
	type ino struct{ dev, ino uint64 }
	seen := map[ino]bool{}
	var total int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		st, err := d.Info()
		if err != nil {
			return nil
		}
		if s, ok := st.Sys().(*syscall.Stat_t); ok {
			if s.Nlink > 1 && !d.IsDir() {
				k := ino{s.Dev, s.Ino}
				if seen[k] {
					return nil
				}
				seen[k] = true
			}
		}
		total += usage(st)
		return nil
	})
	return total
}

func immutable(p string) bool {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	return err == nil && flags&0x10 != 0
}

// RemoveImage removes the image name (directory or name.raw, read-only
// ones too) and its settings file name.nspawn, as machinectl remove does.
// It waits for the image's lock, so it never removes an image another
// berth job is writing, and refuses while a machine runs from it.
func RemoveImage(ctx context.Context, root *imageroot.Root, name string) error {
	if err := imageroot.ValidName(name); err != nil {
		return err
	}
	unlock, err := root.Lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	if err := root.Remove(name); err != nil {
		return err
	}
	root.Log.Info("removed", "image", name)
	return nil
}
