package dirtree

import (
	"errors"
	"path"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// ignoringEINTR retries f while it fails with EINTR (the Go runtime installs
// its signal handlers with SA_RESTART, but not every syscall honours it).
func ignoringEINTR[T any](f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if !errors.Is(err, unix.EINTR) {
			return v, err
		}
	}
}

func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	return ignoringEINTR(func() (int, error) {
		return unix.Openat(dirfd, name, flags|unix.O_CLOEXEC, mode)
	})
}

// procPath names the file base in the directory open as dirfd without
// following base itself when used with the l* xattr calls. It is the only way
// to reach the xattrs of a symlink or device node relative to a descriptor
// before Linux 6.13's getxattrat.
func procPath(dirfd int, base string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + base
}

// splitName splits a canonical name into its parent directory and last
// component: "a/b/c" gives "a/b", "c"; "c" gives ".", "c".
func splitName(name string) (dir, base string) {
	dir, base = path.Split(name)
	if dir == "" {
		return ".", base
	}
	return dir[:len(dir)-1], base
}

// xattrReader reads extended attributes into reusable buffers.
type xattrReader struct {
	names []byte
	value []byte
}

// read returns every readable extended attribute. list and get wrap the
// f*/l* syscall pair for one file. Attributes that vanish while read, or that
// are not readable for this process (trusted.* when unprivileged), are left
// out; skipped reports them.
func (x *xattrReader) read(list func([]byte) (int, error), get func(string, []byte) (int, error), skipped func(string, error)) (map[string]string, error) {
	if x.names == nil {
		x.names = make([]byte, 4096)
		x.value = make([]byte, 4096)
	}
	var n int
	for {
		var err error
		n, err = list(x.names)
		if errors.Is(err, unix.ERANGE) {
			size, err := list(nil)
			if err != nil && !errors.Is(err, unix.ERANGE) {
				return nil, err
			}
			x.names = make([]byte, max(size, 2*len(x.names)))
			continue
		}
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		break
	}
	if n == 0 {
		return nil, nil
	}
	var m map[string]string
	for _, name := range splitNUL(x.names[:n]) {
	retry:
		vn, err := get(name, x.value)
		switch {
		case errors.Is(err, unix.ERANGE):
			size, err := get(name, nil)
			if err != nil && !errors.Is(err, unix.ERANGE) {
				skipped(name, err)
				continue
			}
			x.value = make([]byte, max(size, 2*len(x.value)))
			goto retry
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES),
			errors.Is(err, unix.ENOTSUP):
			skipped(name, err)
			continue
		case err != nil:
			return nil, err
		}
		if m == nil {
			m = make(map[string]string)
		}
		m[name] = string(x.value[:vn])
	}
	return m, nil
}

func splitNUL(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := slices.Index(b, 0)
		if i < 0 {
			i = len(b)
		}
		if i > 0 {
			out = append(out, string(b[:i]))
		}
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return out
}
