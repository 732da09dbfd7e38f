package dirtree

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats"
)

// Options configure NewSink. The zero value is ready to use.
type Options struct {
	// Logger receives debug lines about superseded entries. Nil means
	// slog.Default().
	Logger *slog.Logger
	// IgnoreOwnership leaves every file owned by the extracting user
	// instead of applying the uid/gid of the entries. Without it an
	// unprivileged extraction fails at the first entry owned by someone
	// else.
	IgnoreOwnership bool
}

const (
	copyBufSize = 1 << 20  // read/write chunk for file contents
	holeSize    = 64 << 10 // runs of zeros this long (and aligned) become holes

	resolveStrict = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS |
		unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV
)

// Sink extracts entries into a directory and never writes outside it,
// whatever the entries say (see the package documentation for how). It is
// not safe for concurrent use.
//
// The first failing WriteEntry makes the sink unusable: later calls fail,
// and Close only releases descriptors and returns that first error. Call
// Abort to give up when the failure happened elsewhere (in the source).
type Sink struct {
	root        int // O_PATH descriptor of the extraction root
	log         *slog.Logger
	ignoreOwner bool

	cacheName string // parent directory of the previous entry ...
	cacheFd   int    // ... and its O_PATH descriptor, or -1

	dirs   []pendingDir
	buf    []byte
	zero   []byte
	err    error
	closed bool
}

// pendingDir is directory metadata applied in Close.
type pendingDir struct {
	name       string
	depth      int
	mode       uint32
	times      [2]unix.Timespec
	defaultACL *string // system.posix_acl_default, if any
}

// NewSink returns a sink extracting into dir, which must exist and should
// be empty. Entries replace what is already there (tar semantics), except
// that a non-empty directory is never replaced.
func NewSink(dir string, opts Options) (*Sink, error) {
	fd, err := openat(unix.AT_FDCWD, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	// Fail early, not at the first entry, on kernels without openat2.
	probe, err := unix.Openat2(fd, ".", &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: resolveStrict,
	})
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("%s: openat2 is unavailable (Linux 5.6 or later is required for safe extraction): %w", dir, err)
		}
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	unix.Close(probe)
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Sink{
		root:        fd,
		log:         log,
		ignoreOwner: opts.IgnoreOwnership,
		cacheFd:     -1,
	}, nil
}

// WriteEntry extracts one entry. Every error names the entry.
func (s *Sink) WriteEntry(e *formats.Entry) error {
	if s.closed {
		return errors.New("dirtree: write to closed sink")
	}
	if s.err != nil {
		return fmt.Errorf("dirtree: sink failed earlier: %w", s.err)
	}
	if err := s.write(e); err != nil {
		s.err = err
		return err
	}
	return nil
}

// Close applies the deferred directory modes, times and default ACLs,
// deepest directories first, and releases the sink. It returns the first
// error of the sink; after a failed WriteEntry it only releases descriptors.
func (s *Sink) Close() error {
	if s.closed {
		return s.err
	}
	defer s.release()
	if s.err != nil {
		return s.err
	}
	s.err = s.finishDirs()
	return s.err
}

// Abort releases the sink without applying deferred directory metadata. The
// files already extracted stay; removing them is the caller's business.
func (s *Sink) Abort() {
	if !s.closed {
		s.release()
	}
}

func (s *Sink) release() {
	s.closed = true
	s.dropCache()
	unix.Close(s.root)
	s.dirs, s.buf, s.zero = nil, nil, nil
}

func (s *Sink) write(e *formats.Entry) error {
	h := e.Header
	if h == nil {
		return errors.New("entry without header")
	}
	if h.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := formats.CleanName(h.Name, false)
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	switch h.Typeflag {
	case tar.TypeDir:
		err = s.dir(name, h)
	case tar.TypeReg, '\x00', tar.TypeGNUSparse: // '\x00' is the old TypeRegA
		err = s.file(name, h, e.Body)
	case tar.TypeSymlink:
		err = s.symlink(name, h)
	case tar.TypeLink:
		err = s.link(name, h)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		err = s.node(name, h)
	default:
		err = fmt.Errorf("unsupported entry type %q", h.Typeflag)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// unsafeError is a refusal to extract through or to something outside the
// tree's rules. It matches formats.ErrUnsafePath with errors.Is.
type unsafeError struct{ msg string }

func (e *unsafeError) Error() string { return e.msg }
func (e *unsafeError) Unwrap() error { return formats.ErrUnsafePath }

func refuse(format string, args ...any) error {
	return &unsafeError{msg: fmt.Sprintf(format, args...)}
}

// ---- entry types ----

func (s *Sink) dir(name string, h *tar.Header) error {
	parent, base := s.root, "."
	if name != "." {
		var err error
		if parent, base, err = s.parent(name); err != nil {
			return err
		}
		if err := s.create(parent, base, true, func() error {
			return unix.Mkdirat(parent, base, 0o700)
		}); err != nil {
			return err
		}
	}
	fd, err := openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer unix.Close(fd)
	if err := s.chown(h, func(uid, gid int) error { return unix.Fchown(fd, uid, gid) }); err != nil {
		return err
	}
	xattrs := formats.Xattrs(h)
	var defACL *string
	if v, ok := xattrs["system.posix_acl_default"]; ok {
		defACL = &v
		delete(xattrs, "system.posix_acl_default")
	}
	if err := setXattrs(xattrs, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) }); err != nil {
		return err
	}
	depth := strings.Count(name, "/")
	if name == "." {
		depth = -1 // the root comes last
	}
	s.dirs = append(s.dirs, pendingDir{
		name:       name,
		depth:      depth,
		mode:       uint32(h.Mode) & 0o7777,
		times:      timespecs(h),
		defaultACL: defACL,
	})
	return nil
}

func (s *Sink) file(name string, h *tar.Header, body io.Reader) error {
	if name == "." {
		return errors.New("the root can only be a directory")
	}
	if h.Size < 0 {
		return fmt.Errorf("negative size %d", h.Size)
	}
	parent, base, err := s.parent(name)
	if err != nil {
		return err
	}
	var fd int
	if err := s.create(parent, base, false, func() (err error) {
		fd, err = openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
		return err
	}); err != nil {
		return err
	}
	defer unix.Close(fd)
	if body == nil {
		body = bytes.NewReader(nil)
	}
	if err := s.copyBody(fd, body, h.Size); err != nil {
		return err
	}
	if err := s.chown(h, func(uid, gid int) error { return unix.Fchown(fd, uid, gid) }); err != nil {
		return err
	}
	// After chown, which clears setuid/setgid.
	if err := unix.Fchmod(fd, uint32(h.Mode)&0o7777); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	// After chown, which clears security.capability.
	if err := setXattrs(formats.Xattrs(h), func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) }); err != nil {
		return err
	}
	// base is the file just created: nothing else writes below the root.
	ts := timespecs(h)
	if err := unix.UtimesNanoAt(parent, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func (s *Sink) symlink(name string, h *tar.Header) error {
	if name == "." {
		return errors.New("the root can only be a directory")
	}
	if h.Linkname == "" {
		return errors.New("symlink with empty target")
	}
	parent, base, err := s.parent(name)
	if err != nil {
		return err
	}
	if err := s.create(parent, base, false, func() error {
		return unix.Symlinkat(h.Linkname, parent, base)
	}); err != nil {
		return err
	}
	return s.pathMetadata(parent, base, h, false)
}

func (s *Sink) node(name string, h *tar.Header) error {
	if name == "." {
		return errors.New("the root can only be a directory")
	}
	mode := uint32(h.Mode) & 0o7777
	var dev uint64
	switch h.Typeflag {
	case tar.TypeChar, tar.TypeBlock:
		if h.Devmajor < 0 || h.Devminor < 0 || h.Devmajor > 0xfff || h.Devminor > 0xfffff {
			return fmt.Errorf("invalid device number %d:%d", h.Devmajor, h.Devminor)
		}
		dev = unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		if h.Typeflag == tar.TypeChar {
			mode |= unix.S_IFCHR
		} else {
			mode |= unix.S_IFBLK
		}
	default:
		mode |= unix.S_IFIFO
	}
	parent, base, err := s.parent(name)
	if err != nil {
		return err
	}
	err = s.create(parent, base, false, func() error {
		return unix.Mknodat(parent, base, mode, int(dev))
	})
	if errors.Is(err, unix.EPERM) && h.Typeflag != tar.TypeFifo {
		return fmt.Errorf("cannot create device node: berth must run as root to import device nodes: %w", err)
	}
	if err != nil {
		return err
	}
	return s.pathMetadata(parent, base, h, true)
}

// pathMetadata sets owner, mode (if chmod), xattrs and times of a file that
// cannot be opened (symlink, device, FIFO), never following base.
func (s *Sink) pathMetadata(parent int, base string, h *tar.Header, chmod bool) error {
	if err := s.chown(h, func(uid, gid int) error {
		return unix.Fchownat(parent, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	}); err != nil {
		return err
	}
	if chmod {
		// fchmodat2 refuses to follow; before Linux 6.6 fall back to
		// fchmodat, safe here because base was created by this sink
		// under a parent nobody else writes to.
		mode := uint32(h.Mode) & 0o7777
		err := unix.Fchmodat(parent, base, mode, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
			err = unix.Fchmodat(parent, base, mode, 0)
		}
		if err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if x := formats.Xattrs(h); len(x) > 0 {
		p := procPath(parent, base)
		err := setXattrs(x, func(k string, v []byte) error { return unix.Lsetxattr(p, k, v, 0) })
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%w (is /proc mounted?)", err)
		}
		if err != nil {
			return err
		}
	}
	ts := timespecs(h)
	if err := unix.UtimesNanoAt(parent, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func (s *Sink) link(name string, h *tar.Header) error {
	if name == "." {
		return errors.New("the root can only be a directory")
	}
	target, err := formats.CleanName(h.Linkname, false)
	if err != nil {
		return refuse("hard link target %q leaves the tree", h.Linkname)
	}
	if target == "." {
		return fmt.Errorf("hard link target %q is a directory", h.Linkname)
	}
	parent, base, err := s.parent(name)
	if err != nil {
		return err
	}
	dir, _ := splitName(name)
	tdir, tbase := splitName(target)
	tparent := parent
	switch {
	case tdir == dir:
	case tdir == ".":
		tparent = s.root
	default:
		fd, err := s.openBeneath(tdir, unix.O_PATH|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("hard link target %q does not exist", h.Linkname)
		}
		if err != nil {
			return s.parentError(tdir, fmt.Sprintf("hard link target %q", h.Linkname), err)
		}
		defer unix.Close(fd)
		tparent = fd
	}
	var tst unix.Stat_t
	if err := unix.Fstatat(tparent, tbase, &tst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("hard link target %q does not exist", h.Linkname)
		}
		return fmt.Errorf("hard link target %q: %w", h.Linkname, err)
	}
	if tst.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("hard link target %q is a directory", h.Linkname)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Dev == tst.Dev && st.Ino == tst.Ino {
		return nil // already linked (or a link to itself)
	}
	// Flags 0: a symlink target is linked itself, never followed.
	return s.create(parent, base, false, func() error {
		return unix.Linkat(tparent, tbase, parent, base, 0)
	})
}

// ---- helpers ----

// create runs mk, which creates base in parent. If base exists, a
// directory is kept when dir is set (the caller then updates its
// metadata), and anything else is removed and mk retried once; a non-empty
// directory is never removed.
func (s *Sink) create(parent int, base string, dir bool, mk func() error) error {
	err := mk()
	if !errors.Is(err, unix.EEXIST) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat existing file: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if dir {
			return nil
		}
		if err := unix.Unlinkat(parent, base, unix.AT_REMOVEDIR); err != nil {
			if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
				return errors.New("refusing to replace a non-empty directory")
			}
			return fmt.Errorf("remove existing directory: %w", err)
		}
		// The removed directory may be the cached parent.
		s.dropCache()
	} else if err := unix.Unlinkat(parent, base, 0); err != nil {
		return fmt.Errorf("remove existing file: %w", err)
	}
	return mk()
}

// parent returns an O_PATH descriptor of the directory containing name
// (owned by the sink's cache: do not close it) and name's last component,
// creating missing directories. It refuses parents reached through a
// symlink or a mount point.
func (s *Sink) parent(name string) (int, string, error) {
	dir, base := splitName(name)
	if dir == "." {
		return s.root, base, nil
	}
	if s.cacheFd >= 0 && s.cacheName == dir {
		return s.cacheFd, base, nil
	}
	fd, err := s.openBeneath(dir, unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) {
		fd, err = s.mkdirAll(dir)
	}
	if err != nil {
		return -1, "", s.parentError(dir, "parent", err)
	}
	s.dropCache()
	s.cacheName, s.cacheFd = dir, fd
	return fd, base, nil
}

func (s *Sink) dropCache() {
	if s.cacheFd >= 0 {
		unix.Close(s.cacheFd)
	}
	s.cacheName, s.cacheFd = "", -1
}

// openBeneath opens p below the root under the strict resolution rules.
func (s *Sink) openBeneath(p string, flags int) (int, error) {
	return openBeneath(s.root, p, flags)
}

func openBeneath(dirfd int, p string, flags int) (int, error) {
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveStrict}
	var err error
	for range 64 {
		var fd int
		fd, err = unix.Openat2(dirfd, p, how)
		// EAGAIN: a concurrent rename made the kernel give up on a
		// RESOLVE_BENEATH lookup; it asks to be retried.
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
	return -1, err
}

// mkdirAll creates the missing directories of dir (mode 0755, owned by the
// extracting user, as tar does) and returns an O_PATH descriptor of dir.
func (s *Sink) mkdirAll(dir string) (int, error) {
	cur := s.root
	for comp := range strings.SplitSeq(dir, "/") {
		next, err := openBeneath(cur, comp, unix.O_PATH|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) {
			if err = unix.Mkdirat(cur, comp, 0o755); err == nil {
				// Mkdirat is subject to the umask; 0755 is meant.
				err = unix.Fchmodat(cur, comp, 0o755, 0)
			}
			if err == nil || errors.Is(err, unix.EEXIST) {
				next, err = openBeneath(cur, comp, unix.O_PATH|unix.O_DIRECTORY)
			}
		}
		if cur != s.root {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = next
	}
	return cur, nil
}

// parentError explains why directory dir could not be opened for what
// ("parent", "hard link target ..."), naming the offending component.
func (s *Sink) parentError(dir, what string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		if p, ok := s.firstBad(dir, unix.S_IFLNK); ok {
			if what == "parent" {
				return refuse("parent %q is a symlink: refusing to extract through it", p)
			}
			return refuse("%s: %q is a symlink: refusing to resolve through it", what, p)
		}
		return refuse("%s %q goes through a symlink: refusing to extract through it", what, dir)
	case errors.Is(err, unix.ENOTDIR):
		p, ok := s.firstBad(dir, 0)
		if !ok {
			p = dir
		}
		if what == "parent" {
			return fmt.Errorf("parent %q is not a directory", p)
		}
		return fmt.Errorf("%s: %q is not a directory", what, p)
	case errors.Is(err, unix.EXDEV):
		return refuse("%s %q crosses a mount point: refusing to extract through it", what, dir)
	}
	return fmt.Errorf("%s %q: %w", what, dir, err)
}

// firstBad returns the first prefix of dir that is a symlink (typ S_IFLNK)
// or, with typ 0, not a directory. Only used to word an error: it walks
// prefixes in order, so it never resolves through the symlink it looks for.
func (s *Sink) firstBad(dir string, typ uint32) (string, bool) {
	for i := 0; i <= len(dir); i++ {
		if i < len(dir) && dir[i] != '/' {
			continue
		}
		p := dir[:i]
		var st unix.Stat_t
		if err := unix.Fstatat(s.root, p, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return "", false
		}
		ft := st.Mode & unix.S_IFMT
		if (typ != 0 && ft == typ) || (typ == 0 && ft != unix.S_IFDIR) {
			return p, true
		}
	}
	return "", false
}

func (s *Sink) chown(h *tar.Header, chown func(uid, gid int) error) error {
	if s.ignoreOwner {
		return nil
	}
	if h.Uid < 0 || h.Gid < 0 || h.Uid > 0xfffffffe || h.Gid > 0xfffffffe {
		return fmt.Errorf("invalid owner %d:%d", h.Uid, h.Gid)
	}
	if err := chown(h.Uid, h.Gid); err != nil {
		if errors.Is(err, unix.EPERM) && os.Geteuid() != 0 {
			return fmt.Errorf("chown to %d:%d: %w (extract as root, or ignore ownership)", h.Uid, h.Gid, err)
		}
		return fmt.Errorf("chown to %d:%d: %w", h.Uid, h.Gid, err)
	}
	return nil
}

func setXattrs(x map[string]string, set func(string, []byte) error) error {
	for _, k := range slices.Sorted(maps.Keys(x)) {
		if err := set(k, []byte(x[k])); err != nil {
			return fmt.Errorf("set xattr %s: %w", k, err)
		}
	}
	return nil
}

// timespecs returns the utimensat times of h: atime and mtime, each left
// alone (UTIME_OMIT) when the header does not carry it.
func timespecs(h *tar.Header) [2]unix.Timespec {
	ts := func(t time.Time) unix.Timespec {
		if t.IsZero() {
			return unix.Timespec{Nsec: unix.UTIME_OMIT}
		}
		return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
	}
	return [2]unix.Timespec{ts(h.AccessTime), ts(h.ModTime)}
}

// copyBody writes exactly size bytes of r to fd, leaving holes for aligned
// all-zero blocks of holeSize.
func (s *Sink) copyBody(fd int, r io.Reader, size int64) error {
	if size == 0 {
		return nil
	}
	if s.buf == nil {
		s.buf = make([]byte, copyBufSize)
		s.zero = make([]byte, holeSize)
	}
	var off int64
	holes := false
	for off < size {
		n := int(min(int64(len(s.buf)), size-off))
		m, err := io.ReadFull(r, s.buf[:n])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("body truncated: got %d of %d bytes: %w", off+int64(m), size, io.ErrUnexpectedEOF)
		}
		if err != nil {
			// The stream below says why (a truncated or corrupt download).
			return fmt.Errorf("reading the body (%d of %d bytes): %w", off+int64(m), size, err)
		}
		chunk := s.buf[:m]
		for i := 0; i < m; {
			if s.isHole(chunk[i:]) {
				i += holeSize
				holes = true
				continue
			}
			j := i + min(holeSize, m-i)
			for j < m && !s.isHole(chunk[j:]) {
				j += min(holeSize, m-j)
			}
			if err := pwriteAll(fd, chunk[i:j], off+int64(i)); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			i = j
		}
		off += int64(m)
	}
	if holes {
		if err := unix.Ftruncate(fd, size); err != nil {
			return fmt.Errorf("truncate: %w", err)
		}
	}
	return nil
}

func (s *Sink) isHole(b []byte) bool {
	return len(b) >= holeSize && bytes.Equal(b[:holeSize], s.zero)
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := ignoringEINTR(func() (int, error) { return unix.Pwrite(fd, b, off) })
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// finishDirs applies deferred directory metadata, deepest first, so that a
// read-only directory is made read-only only after everything below it.
func (s *Sink) finishDirs() error {
	s.dropCache()
	sort.SliceStable(s.dirs, func(i, j int) bool { return s.dirs[i].depth > s.dirs[j].depth })
	for _, d := range s.dirs {
		if err := s.finishDir(d); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	return nil
}

func (s *Sink) finishDir(d pendingDir) error {
	// Reopen under the strict rules: a later entry may have replaced
	// the directory, even with a symlink, which must not be followed.
	fd, err := s.openBeneath(d.name, unix.O_RDONLY|unix.O_DIRECTORY)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ENOENT) {
		s.log.Debug("directory replaced by a later entry, metadata not applied", "path", d.name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reopen directory: %w", err)
	}
	defer unix.Close(fd)
	if d.defaultACL != nil {
		if err := unix.Fsetxattr(fd, "system.posix_acl_default", []byte(*d.defaultACL), 0); err != nil {
			return fmt.Errorf("set xattr system.posix_acl_default: %w", err)
		}
	}
	if err := unix.Fchmod(fd, d.mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	// "." relative to the directory's own descriptor is the directory.
	if err := unix.UtimesNanoAt(fd, ".", d.times[:], 0); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}
