package dirtree

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats"
)

// SourceOptions configure NewSource. The zero value is ready to use.
type SourceOptions struct {
	// Logger receives warnings about a tree that changed while it was read
	// and debug lines about skipped sockets. Nil means slog.Default().
	Logger *slog.Logger
	// OneFileSystem stops the walk at mount points: a directory on another
	// file system is emitted, its contents are not. By default the walk
	// descends into every directory, like systemd's tar export; symlinks
	// are never followed either way.
	OneFileSystem bool
	// HardDereference emits every name of a multiply linked file as a
	// regular file with its content, never as a hard link (GNU tar
	// --hard-dereference). Use it where hard links are an accident of
	// storage rather than part of the tree, as in the Nix store, where
	// `nix-store --optimise` links identical files: the output then does not
	// depend on whether or how the store was optimised.
	HardDereference bool
}

// Source yields the entries of a directory tree: first the root ".", then
// depth first, the children of each directory sorted by name (byte order).
// It is not safe for concurrent use. Close releases its file descriptors.
type Source struct {
	log     *slog.Logger
	oneFS   bool
	deref   bool
	rootFd  int
	rootDev uint64
	started bool
	stack   []*frame
	links   map[fileID]string
	body    *fileBody
	err     error
	xr      xattrReader
	dirBuf  []byte
	linkBuf []byte
}

type frame struct {
	fd    int
	name  string // canonical name of the directory
	names []string
	next  int
}

type fileID struct{ dev, ino uint64 }

// NewSource opens the tree rooted at dir. The path dir itself is resolved
// normally (the caller names the tree); nothing below it is ever followed.
func NewSource(dir string, opts SourceOptions) (*Source, error) {
	fd, err := openat(unix.AT_FDCWD, dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", dir, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Source{
		log:     log,
		oneFS:   opts.OneFileSystem,
		deref:   opts.HardDereference,
		rootFd:  fd,
		rootDev: st.Dev,
		links:   make(map[fileID]string),
	}, nil
}

// Next returns the next entry, or io.EOF after the last one. The Body of a
// regular file is valid until the following call to Next or Close.
func (s *Source) Next() (*formats.Entry, error) {
	if s.err != nil {
		return nil, s.err
	}
	s.closeBody()
	e, err := s.next()
	if err != nil {
		s.err = err
	}
	return e, err
}

// Close releases every file descriptor held by the walk. It is safe to call
// more than once.
func (s *Source) Close() error {
	s.closeBody()
	for _, f := range s.stack {
		unix.Close(f.fd)
	}
	s.stack = nil
	if s.rootFd >= 0 {
		unix.Close(s.rootFd)
		s.rootFd = -1
	}
	if s.err == nil {
		s.err = errors.New("dirtree: source closed")
	}
	return nil
}

func (s *Source) closeBody() {
	if s.body != nil {
		unix.Close(s.body.fd)
		s.body = nil
	}
}

func (s *Source) next() (*formats.Entry, error) {
	if !s.started {
		s.started = true
		return s.root()
	}
	for len(s.stack) > 0 {
		f := s.stack[len(s.stack)-1]
		if f.next >= len(f.names) {
			unix.Close(f.fd)
			s.stack = s.stack[:len(s.stack)-1]
			continue
		}
		base := f.names[f.next]
		f.next++
		e, err := s.child(f, base)
		if err != nil {
			return nil, err
		}
		if e != nil {
			return e, nil
		}
	}
	return nil, io.EOF
}

func (s *Source) root() (*formats.Entry, error) {
	// Walk a duplicate so that Close and the stack own separate descriptors.
	fd, err := ignoringEINTR(func() (int, error) {
		return unix.FcntlInt(uintptr(s.rootFd), unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil {
		return nil, fmt.Errorf(".: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf(".: stat: %w", err)
	}
	return s.dir(".", fd, &st)
}

// dir emits a directory entry for the open directory fd and pushes it for
// the walk (or closes it when the walk must not descend).
func (s *Source) dir(name string, fd int, st *unix.Stat_t) (*formats.Entry, error) {
	h := header(name, tar.TypeDir, st)
	if err := s.fdXattrs(h, fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: read xattrs: %w", name, err)
	}
	if s.oneFS && st.Dev != s.rootDev {
		s.log.Debug("not descending into another file system", "path", name)
		unix.Close(fd)
		return &formats.Entry{Header: h}, nil
	}
	names, err := s.readNames(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: read directory: %w", name, err)
	}
	s.stack = append(s.stack, &frame{fd: fd, name: name, names: names})
	return &formats.Entry{Header: h}, nil
}

func (s *Source) readNames(fd int) ([]string, error) {
	if s.dirBuf == nil {
		s.dirBuf = make([]byte, 32<<10)
	}
	var names []string
	for {
		n, err := ignoringEINTR(func() (int, error) { return unix.Getdents(fd, s.dirBuf) })
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(s.dirBuf[:n], -1, names)
	}
	slices.Sort(names)
	return names, nil
}

// child returns the entry for base in directory f, or nil when the name is
// to be skipped (a socket, or a file that vanished or changed type while
// the walk reached it).
func (s *Source) child(f *frame, base string) (*formats.Entry, error) {
	name := base
	if f.name != "." {
		name = f.name + "/" + base
	}
	var st unix.Stat_t
	if err := unix.Fstatat(f.fd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			s.log.Warn("file vanished while reading the tree, skipped", "path", name)
			return nil, nil
		}
		return nil, fmt.Errorf("%s: stat: %w", name, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		fd, err := openat(f.fd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			if s.changed(name, err) {
				return nil, nil
			}
			return nil, fmt.Errorf("%s: open: %w", name, err)
		}
		// The open directory is what the walk descends into, so it is
		// also what the header describes.
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("%s: stat: %w", name, err)
		}
		return s.dir(name, fd, &st)
	case unix.S_IFREG:
		// A further name of an inode already emitted needs no open.
		if e := s.seen(name, &st); e != nil {
			return e, nil
		}
		return s.regular(f, base, name)
	case unix.S_IFLNK:
		return s.symlink(f, base, name, &st)
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		if e := s.hardlink(name, &st); e != nil {
			return e, nil
		}
		typ := byte(tar.TypeFifo)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			typ = tar.TypeChar
		case unix.S_IFBLK:
			typ = tar.TypeBlock
		}
		h := header(name, typ, &st)
		if typ != tar.TypeFifo {
			h.Devmajor = int64(unix.Major(st.Rdev))
			h.Devminor = int64(unix.Minor(st.Rdev))
		}
		if err := s.pathXattrs(h, f.fd, base); err != nil {
			return nil, fmt.Errorf("%s: read xattrs: %w", name, err)
		}
		return &formats.Entry{Header: h}, nil
	case unix.S_IFSOCK:
		s.log.Debug("socket skipped", "path", name)
		return nil, nil
	default:
		s.log.Warn("file of unknown type skipped", "path", name, "mode", fmt.Sprintf("%#o", st.Mode))
		return nil, nil
	}
}

// changed reports (and logs) whether err means that the name vanished or
// was replaced by a different kind of file since it was listed.
func (s *Source) changed(name string, err error) bool {
	switch {
	case errors.Is(err, unix.ENOENT):
		s.log.Warn("file vanished while reading the tree, skipped", "path", name)
		return true
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.EINVAL):
		s.log.Warn("file changed type while reading the tree, skipped", "path", name, "err", err)
		return true
	}
	return false
}

func (s *Source) regular(f *frame, base, name string) (*formats.Entry, error) {
	// O_NONBLOCK: if the file was just swapped for a FIFO, do not hang in
	// open; the fstat below then notices the change.
	fd, err := openat(f.fd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		if s.changed(name, err) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s: open: %w", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: stat: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		s.log.Warn("file changed type while reading the tree, skipped", "path", name)
		return nil, nil
	}
	if e := s.hardlink(name, &st); e != nil {
		unix.Close(fd)
		return e, nil
	}
	h := header(name, tar.TypeReg, &st)
	h.Size = st.Size
	if err := s.fdXattrs(h, fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: read xattrs: %w", name, err)
	}
	s.body = &fileBody{fd: fd, name: name, size: st.Size, remain: st.Size, log: s.log}
	return &formats.Entry{Header: h, Body: s.body}, nil
}

func (s *Source) symlink(f *frame, base, name string, st *unix.Stat_t) (*formats.Entry, error) {
	if s.linkBuf == nil {
		s.linkBuf = make([]byte, 4096)
	}
	var target string
	for {
		n, err := unix.Readlinkat(f.fd, base, s.linkBuf)
		if err != nil {
			if s.changed(name, err) {
				return nil, nil
			}
			return nil, fmt.Errorf("%s: readlink: %w", name, err)
		}
		if n < len(s.linkBuf) {
			target = string(s.linkBuf[:n])
			break
		}
		s.linkBuf = make([]byte, 2*len(s.linkBuf))
	}
	if e := s.hardlink(name, st); e != nil {
		return e, nil
	}
	h := header(name, tar.TypeSymlink, st)
	h.Linkname = target
	if err := s.pathXattrs(h, f.fd, base); err != nil {
		return nil, fmt.Errorf("%s: read xattrs: %w", name, err)
	}
	return &formats.Entry{Header: h}, nil
}

// hardlink returns a TypeLink entry when st is a non-directory whose inode
// was already emitted under another name, and otherwise remembers the name
// for later links to the same inode.
func (s *Source) hardlink(name string, st *unix.Stat_t) *formats.Entry {
	if st.Nlink <= 1 || s.deref {
		return nil
	}
	if e := s.seen(name, st); e != nil {
		return e
	}
	s.links[fileID{dev: st.Dev, ino: st.Ino}] = name
	return nil
}

// seen returns a TypeLink entry if the inode of st was emitted before.
func (s *Source) seen(name string, st *unix.Stat_t) *formats.Entry {
	if st.Nlink <= 1 || s.deref {
		return nil
	}
	first, ok := s.links[fileID{dev: st.Dev, ino: st.Ino}]
	if !ok {
		return nil
	}
	h := header(name, tar.TypeLink, st)
	h.Linkname = first
	return &formats.Entry{Header: h}
}

func header(name string, typ byte, st *unix.Stat_t) *tar.Header {
	return &tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     int64(st.Mode & 0o7777),
		Uid:      int(st.Uid),
		Gid:      int(st.Gid),
		ModTime:  time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Format:   tar.FormatPAX,
	}
}

func (s *Source) fdXattrs(h *tar.Header, fd int) error {
	m, err := s.xr.read(
		func(b []byte) (int, error) { return unix.Flistxattr(fd, b) },
		func(n string, b []byte) (int, error) { return unix.Fgetxattr(fd, n, b) },
		s.skippedXattr(h.Name))
	if err != nil {
		return err
	}
	for k, v := range m {
		formats.SetXattr(h, k, v)
	}
	return nil
}

// pathXattrs reads the xattrs of a symlink or device node, which cannot be
// opened for flistxattr, through the /proc path of its parent descriptor.
func (s *Source) pathXattrs(h *tar.Header, dirfd int, base string) error {
	p := procPath(dirfd, base)
	m, err := s.xr.read(
		func(b []byte) (int, error) { return unix.Llistxattr(p, b) },
		func(n string, b []byte) (int, error) { return unix.Lgetxattr(p, n, b) },
		s.skippedXattr(h.Name))
	if errors.Is(err, unix.ENOENT) {
		// Either the file vanished (then it is reported with its
		// metadata, as it was when listed) or /proc is missing.
		s.log.Warn("cannot read xattrs (file vanished or /proc not mounted)", "path", h.Name)
		return nil
	}
	if err != nil {
		return err
	}
	for k, v := range m {
		formats.SetXattr(h, k, v)
	}
	return nil
}

func (s *Source) skippedXattr(name string) func(string, error) {
	return func(attr string, err error) {
		s.log.Debug("xattr not readable, skipped", "path", name, "xattr", attr, "err", err)
	}
}

// fileBody reads exactly size bytes of an open regular file, whatever
// happens to the file meanwhile: missing bytes read as zeros and extra bytes
// are ignored, each with a warning, so the archive stays consistent.
type fileBody struct {
	fd     int
	name   string
	size   int64
	remain int64
	pad    bool
	log    *slog.Logger
	probed bool
}

func (b *fileBody) Read(p []byte) (int, error) {
	if b.remain == 0 {
		b.probeGrowth()
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	if b.pad {
		clear(p)
		b.remain -= int64(len(p))
		return len(p), nil
	}
	n, err := ignoringEINTR(func() (int, error) { return unix.Read(b.fd, p) })
	if err != nil {
		return 0, fmt.Errorf("%s: read: %w", b.name, err)
	}
	if n == 0 {
		b.log.Warn("file shrank while read, padded with zeros",
			"path", b.name, "size", b.size, "read", b.size-b.remain)
		b.pad = true
		return b.Read(p)
	}
	b.remain -= int64(n)
	return n, nil
}

func (b *fileBody) probeGrowth() {
	if b.probed || b.pad {
		return
	}
	b.probed = true
	var one [1]byte
	n, _ := ignoringEINTR(func() (int, error) { return unix.Read(b.fd, one[:]) })
	if n > 0 {
		b.log.Warn("file grew while read, truncated", "path", b.name, "size", b.size)
	}
}
