package build

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/dirtree"
)

// Epoch is the modification time of every entry: the Nix store's.
var Epoch = time.Unix(1, 0).UTC()

// Add puts a host file or directory into the tree at Dest.
type Add struct {
	Src  string // host path; a directory is added with all its content
	Dest string // canonical name in the tree, e.g. "etc/nixos/flake.nix"
}

// ParseAdd parses "SRC:DEST" (DEST absolute or relative to the root; the
// last colon separates them). DEST may not be the root or lie in the store
// or in a generated file.
func ParseAdd(s string) (Add, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return Add{}, fmt.Errorf("--add %q: want SRC:DEST, e.g. ./motd:/etc/motd", s)
	}
	dest, err := formats.CleanName(s[i+1:], true)
	if err != nil {
		return Add{}, fmt.Errorf("--add %q: %w", s, err)
	}
	if dest == "." || dest == "nix" || dest == "nix/store" || strings.HasPrefix(dest, "nix/store/") {
		return Add{}, fmt.Errorf("--add %q: cannot replace /%s (the root and the Nix store come from the system)", s, dest)
	}
	return Add{Src: s[:i], Dest: dest}, nil
}

// PlanOptions shape the root tree.
type PlanOptions struct {
	// Adds are host files and directories added to the tree.
	Adds []Add
	// Log receives warnings; nil means slog.Default().
	Log *slog.Logger
}

// Tree is a formats.Source of a root tree or part of one. Close releases
// the file descriptors of the store paths being read.
type Tree struct {
	src    formats.Source
	closer func() error
}

// Next returns the next entry in tree order, or io.EOF.
func (t *Tree) Next() (*formats.Entry, error) { return t.src.Next() }

// Close releases open files. It is safe to call more than once.
func (t *Tree) Close() error {
	if t.closer == nil {
		return nil
	}
	err := t.closer()
	t.closer = nil
	return err
}

// Source returns the whole root tree as one normalised entry stream in tree
// order: the generated entries, the files added by opts.Adds and the
// closure read from the store.
func (s *System) Source(opts PlanOptions) *Tree {
	gen, adds := s.generated(opts)
	streams := append([]formats.Source{gen}, adds...)
	streams = append(streams, &storeSource{paths: s.Closure, log: s.logger(opts.Log)})
	return newTree(streams)
}

// GeneratedSource returns the root tree without the store paths' content:
// the root, the generated entries (nix and nix/store included, as
// directories) and the files added by opts.Adds. With one StorePathSource
// per closure path it makes the whole tree, as OCI layers do.
func (s *System) GeneratedSource(opts PlanOptions) *Tree {
	gen, adds := s.generated(opts)
	return newTree(append([]formats.Source{gen}, adds...))
}

// StorePathSource returns the entries of one store path, named
// nix/store/<base>/..., normalised like the whole tree. Its parents (nix,
// nix/store) are not included.
func (s *System) StorePathSource(storePath string) *Tree {
	return newTree([]formats.Source{&storeSource{paths: []string{storePath}, log: s.logger(nil)}})
}

func (s *System) logger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	if s.log != nil {
		return s.log
	}
	return slog.Default()
}

func newTree(streams []formats.Source) *Tree {
	m := &merge{}
	for _, st := range streams {
		m.streams = append(m.streams, &stream{src: st})
	}
	return &Tree{src: m, closer: m.Close}
}

// generated returns the generated entries (with the parents that added
// files need) and one source per added file or directory.
func (s *System) generated(opts PlanOptions) (formats.Source, []formats.Source) {
	dir := func(name string, mode int64) *formats.Entry {
		return &formats.Entry{Header: &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
	}
	file := func(name string, mode int64, data []byte) *formats.Entry {
		return &formats.Entry{Header: &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, Body: bytes.NewReader(data)}
	}
	link := func(name, target string) *formats.Entry {
		return &formats.Entry{Header: &tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
	}
	ents := []*formats.Entry{
		dir(".", 0o755),
		dir("dev", 0o755),
		dir("etc", 0o755),
		// A regular file, not the NixOS link to /etc/static/os-release:
		// nspawn checks it before the first boot's activation creates
		// /etc/static, and activation replaces it as for nixpkgs' own
		// container tarballs.
		file("etc/os-release", 0o644, s.OSRelease),
		dir("nix", 0o755),
		file("nix-path-registration", 0o644, s.Registration),
		// Stage 2 makes it 1775 root:nixbld at boot; the group does not
		// exist yet here.
		dir("nix/store", 0o755),
		dir("nix/var", 0o755),
		dir("nix/var/nix", 0o755),
		dir("nix/var/nix/profiles", 0o755),
		// As nix-env leaves a profile: system -> system-1-link -> toplevel.
		link("nix/var/nix/profiles/system", "system-1-link"),
		link("nix/var/nix/profiles/system-1-link", s.Toplevel),
		dir("proc", 0o555),
		dir("sbin", 0o755),
		link("sbin/init", s.Toplevel+"/init"),
		dir("sys", 0o555),
	}
	have := make(map[string]bool, len(ents))
	for _, e := range ents {
		have[e.Header.Name] = true
	}
	var adds []formats.Source
	for _, a := range opts.Adds {
		for p := path.Dir(a.Dest); p != "."; p = path.Dir(p) {
			if !have[p] {
				have[p] = true
				ents = append(ents, dir(p, 0o755))
			}
		}
		adds = append(adds, &addSource{add: a, log: s.logger(opts.Log)})
	}
	slices.SortFunc(ents, func(a, b *formats.Entry) int { return CompareNames(a.Header.Name, b.Header.Name) })
	for _, e := range ents {
		normalise(e.Header)
	}
	return &sliceSource{ents: ents}, adds
}

// CompareNames orders canonical names as a depth-first walk with sorted
// children does (GNU tar --sort=name): component by component, byte-wise,
// a parent before its children. "." comes first.
func CompareNames(a, b string) int {
	if a == b {
		return 0
	}
	if a == "." {
		return -1
	}
	if b == "." {
		return 1
	}
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if ca == '/' {
			return -1
		}
		if cb == '/' {
			return 1
		}
		if ca < cb {
			return -1
		}
		return 1
	}
	if len(a) < len(b) {
		return -1
	}
	return 1
}

// normalise makes a header depend only on the tree: owner root, mtime 1,
// no names, no extended attributes, no access or change times.
func normalise(h *tar.Header) {
	h.Uid, h.Gid = 0, 0
	h.Uname, h.Gname = "", ""
	h.ModTime = Epoch
	h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
	h.PAXRecords = nil
	h.Format = tar.FormatPAX
	h.Mode &= 0o7777
}

type sliceSource struct {
	ents []*formats.Entry
	i    int
}

func (s *sliceSource) Next() (*formats.Entry, error) {
	if s.i >= len(s.ents) {
		return nil, io.EOF
	}
	e := s.ents[s.i]
	s.i++
	if r, ok := e.Body.(*bytes.Reader); ok {
		r.Seek(0, io.SeekStart)
	}
	return e, nil
}

// storeSource streams store paths one after the other, opening each only
// when it is reached, so that any closure size holds one walk open.
type storeSource struct {
	paths []string
	log   *slog.Logger
	cur   *prefixed
}

func (s *storeSource) Next() (*formats.Entry, error) {
	for {
		if s.cur == nil {
			if len(s.paths) == 0 {
				return nil, io.EOF
			}
			p := s.paths[0]
			s.paths = s.paths[1:]
			base, ok := strings.CutPrefix(p, StoreDir+"/")
			if !ok || !validStoreBase(base) {
				return nil, fmt.Errorf("%s is not a store path", p)
			}
			src, err := openHostPath(p, s.log)
			if err != nil {
				return nil, fmt.Errorf("reading %s from the store: %w", p, err)
			}
			s.cur = &prefixed{src: src, prefix: "nix/store/" + base, store: true}
		}
		e, err := s.cur.Next()
		if errors.Is(err, io.EOF) {
			s.cur.Close()
			s.cur = nil
			continue
		}
		return e, err
	}
}

func (s *storeSource) Close() error {
	if s.cur != nil {
		s.cur.Close()
		s.cur = nil
	}
	s.paths = nil
	return nil
}

// addSource streams one --add SRC:DEST, opened on first use.
type addSource struct {
	add Add
	log *slog.Logger
	cur *prefixed
}

func (s *addSource) Next() (*formats.Entry, error) {
	if s.cur == nil {
		src, err := openHostPath(s.add.Src, s.log)
		if err != nil {
			return nil, fmt.Errorf("--add %s: %w", s.add.Src, err)
		}
		s.cur = &prefixed{src: src, prefix: s.add.Dest}
	}
	return s.cur.Next()
}

func (s *addSource) Close() error {
	if s.cur != nil {
		return s.cur.Close()
	}
	return nil
}

// closingSource is a Source with Close.
type closingSource interface {
	formats.Source
	Close() error
}

// openHostPath returns a source for a host directory, file or symlink,
// with entries named relative to it ("." for p itself). Hard links are
// dereferenced.
func openHostPath(p string, log *slog.Logger) (closingSource, error) {
	st, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	switch {
	case st.IsDir():
		return dirtree.NewSource(p, dirtree.SourceOptions{Logger: log, HardDereference: true})
	case st.Mode().IsRegular():
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		fst, err := f.Stat()
		if err != nil || !fst.Mode().IsRegular() {
			f.Close()
			return nil, fmt.Errorf("%s changed while opened", p)
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: ".", Mode: int64(fst.Mode().Perm()), Size: fst.Size()}
		if fst.Mode()&os.ModeSetuid != 0 {
			h.Mode |= 0o4000
		}
		if fst.Mode()&os.ModeSetgid != 0 {
			h.Mode |= 0o2000
		}
		return &oneEntry{e: &formats.Entry{Header: h, Body: io.LimitReader(f, fst.Size())}, close: f.Close}, nil
	case st.Mode()&os.ModeSymlink != 0:
		t, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		return &oneEntry{e: &formats.Entry{Header: &tar.Header{Typeflag: tar.TypeSymlink, Name: ".", Linkname: t, Mode: 0o777}}}, nil
	}
	return nil, fmt.Errorf("%s is neither a directory, a regular file nor a symlink", p)
}

type oneEntry struct {
	e     *formats.Entry
	done  bool
	close func() error
}

func (o *oneEntry) Next() (*formats.Entry, error) {
	if o.done {
		return nil, io.EOF
	}
	o.done = true
	return o.e, nil
}

func (o *oneEntry) Close() error {
	if o.close != nil {
		err := o.close()
		o.close = nil
		return err
	}
	return nil
}

// prefixed renames the entries of a host source under prefix and
// normalises them; store entries also get the NAR's modes.
type prefixed struct {
	src    closingSource
	prefix string
	store  bool
}

func (p *prefixed) Next() (*formats.Entry, error) {
	e, err := p.src.Next()
	if err != nil {
		return nil, err
	}
	h := e.Header
	rel := h.Name
	if rel == "." {
		h.Name = p.prefix
	} else {
		h.Name = p.prefix + "/" + rel
	}
	normalise(h)
	if p.store {
		switch h.Typeflag {
		case tar.TypeDir:
			h.Mode = 0o555
		case tar.TypeReg:
			if h.Mode&0o111 != 0 {
				h.Mode = 0o555
			} else {
				h.Mode = 0o444
			}
		case tar.TypeSymlink:
			h.Mode = 0o777
		default:
			return nil, fmt.Errorf("%s: a store path holds only directories, files and symlinks, found type %q", h.Name, h.Typeflag)
		}
	} else if h.Typeflag == tar.TypeLink {
		// Not produced with HardDereference; refuse rather than write a
		// link to a name outside the prefix.
		return nil, fmt.Errorf("%s: unexpected hard link", h.Name)
	}
	if h.Typeflag == tar.TypeSymlink {
		h.Mode = 0o777
	}
	return e, nil
}

func (p *prefixed) Close() error { return p.src.Close() }

// merge interleaves sorted streams into one sorted stream. A name that
// comes from two streams is written once if it is a directory in both (the
// first stream's entry wins) and is an error otherwise.
type merge struct {
	streams []*stream
	last    *stream // stream of the entry returned last; refilled lazily
	prev    string
	started bool
}

type stream struct {
	src  formats.Source
	head *formats.Entry
	eof  bool
	err  error
	used bool // head was returned or skipped: fetch the next one
}

func (st *stream) fill() {
	if st.eof || st.err != nil || (st.head != nil && !st.used) {
		return
	}
	e, err := st.src.Next()
	st.used = false
	switch {
	case errors.Is(err, io.EOF):
		st.eof, st.head = true, nil
	case err != nil:
		st.err, st.head = err, nil
	default:
		st.head = e
	}
}

func (m *merge) Next() (*formats.Entry, error) {
	var best *stream
	for _, st := range m.streams {
		st.fill()
		if st.err != nil {
			return nil, st.err
		}
		if st.eof {
			continue
		}
		if best == nil || CompareNames(st.head.Header.Name, best.head.Header.Name) < 0 {
			best = st
		}
	}
	if best == nil {
		return nil, io.EOF
	}
	name := best.head.Header.Name
	for _, st := range m.streams {
		if st == best || st.eof || st.head.Header.Name != name {
			continue
		}
		if st.head.Header.Typeflag != tar.TypeDir || best.head.Header.Typeflag != tar.TypeDir {
			return nil, fmt.Errorf("/%s would be written twice (an --add collides with the system or another --add)", name)
		}
		st.used = true
	}
	if m.started && CompareNames(m.prev, name) >= 0 {
		return nil, fmt.Errorf("entry %q after %q: the tree is not in order", name, m.prev)
	}
	m.started, m.prev = true, name
	best.used = true
	return best.head, nil
}

func (m *merge) Close() error {
	var errs []error
	for _, st := range m.streams {
		if c, ok := st.src.(interface{ Close() error }); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
