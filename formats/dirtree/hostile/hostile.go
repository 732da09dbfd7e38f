// Package hostile is a corpus of archives that try to make an extractor
// write outside its root, for tests of every path that ends in a directory
// sink (the dirtree sink itself, import-tar, pull-tar).
//
// The corpus is built at test time, as entry streams or as tar files, so no
// binary blobs are committed. Cases aim at a victim directory that must be
// a sibling of the extraction root (relative escapes such as "../victim"
// assume that layout) and that must be unchanged after each case, as must
// everything else outside the root.
package hostile

import (
	"archive/tar"
	"io"
	"path"
	"strings"
	"time"

	"github.com/berth-dev/berth/formats"
)

// Case is one hostile archive.
type Case struct {
	Name string
	// Bad is the name of the entry that must be refused, as the error
	// names it: the error text starts with Bad + ": ". When Bad is "", the
	// archive must extract without error (it only tries to trick the
	// extractor into writing through a symlink it replaces).
	Bad string
	// Unprivileged marks cases that only fail without root (device nodes).
	Unprivileged bool

	items []item
}

type item struct {
	hdr  tar.Header
	body string
}

func file(name, body string) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: body}
}

func dir(name string, mode int64) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}

func symlink(name, target string) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func hardlink(name, target string) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

// Cases returns the corpus aimed at victim, an absolute directory path next
// to the extraction root.
func Cases(victim string) []Case {
	vb := path.Base(victim)
	longUp := strings.Repeat("a/", 60) + strings.Repeat("../", 62) + "evil"
	return []Case{
		{Name: "dotdot", Bad: "../evil", items: []item{file("../evil", "x")}},
		{Name: "dotdot-nested", Bad: "a/../../evil", items: []item{dir("a", 0o755), file("a/../../evil", "x")}},
		{Name: "dotdot-long-name", Bad: longUp, items: []item{file(longUp, "x")}},
		{Name: "absolute", Bad: "/etc/evil", items: []item{file("/etc/evil", "x")}},
		{Name: "absolute-victim", Bad: victim + "/evil", items: []item{file(victim+"/evil", "x")}},
		{Name: "symlink-absolute-parent", Bad: "a/x", items: []item{symlink("a", victim), file("a/x", "x")}},
		{Name: "symlink-relative-parent", Bad: "a/x", items: []item{symlink("a", "../"+vb), file("a/x", "x")}},
		{Name: "symlink-loop", Bad: "a/a/x", items: []item{symlink("a", "."), file("a/a/x", "x")}},
		{Name: "symlink-in-root-parent", Bad: "a/x", items: []item{dir("b", 0o755), symlink("a", "b"), file("a/x", "x")}},
		{Name: "symlink-missing-parents", Bad: "d/l/sub/x", items: []item{dir("d", 0o755), symlink("d/l", victim), file("d/l/sub/x", "x")}},
		{Name: "symlink-parent-of-dir", Bad: "a/sub", items: []item{symlink("a", victim), dir("a/sub", 0o777)}},
		{Name: "symlink-parent-of-symlink", Bad: "a/s", items: []item{symlink("a", victim), symlink("a/s", "x")}},
		{Name: "symlink-over-full-dir", Bad: "d", items: []item{dir("d", 0o755), file("d/f", "x"), symlink("d", victim)}},
		{Name: "hardlink-dotdot", Bad: "x", items: []item{hardlink("x", "../../etc/passwd")}},
		{Name: "hardlink-absolute", Bad: "x", items: []item{hardlink("x", victim+"/passwd")}},
		{Name: "hardlink-directory", Bad: "x", items: []item{dir("d", 0o755), hardlink("x", "d")}},
		{Name: "hardlink-root", Bad: "x", items: []item{hardlink("x", ".")}},
		{Name: "hardlink-symlink-parent", Bad: "x", items: []item{symlink("l", victim), hardlink("x", "l/passwd")}},
		{Name: "hardlink-missing", Bad: "x", items: []item{hardlink("x", "nope")}},
		{Name: "root-as-file", Bad: ".", items: []item{file(".", "x")}},
		{Name: "unsupported-type", Bad: "c", items: []item{{hdr: tar.Header{Typeflag: tar.TypeCont, Name: "c", Mode: 0o644}}}},
		{Name: "device-unprivileged", Bad: "dev/null", Unprivileged: true, items: []item{
			dir("dev", 0o755),
			{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
		}},
		// The following must extract, replacing the symlink rather than
		// writing through it.
		{Name: "file-over-symlink", items: []item{symlink("a", victim+"/passwd"), file("a", "pwned")}},
		{Name: "dir-over-symlink", items: []item{symlink("d", victim), dir("d", 0o777), file("d/x", "pwned")}},
		{Name: "symlink-over-dir-before-chmod", items: []item{dir("d", 0o777), symlink("d", victim)}},
		{Name: "file-over-hardlinked-symlink", items: []item{symlink("s", victim+"/passwd"), hardlink("h", "s"), file("h", "pwned")}},
		{Name: "fifo-over-symlink", items: []item{symlink("p", victim+"/passwd"),
			{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "p", Mode: 0o666}}}},
	}
}

func (it item) header() *tar.Header {
	h := it.hdr
	h.ModTime = time.Unix(1700000000, 0)
	h.Format = tar.FormatPAX
	return &h
}

// Source returns the case as a fresh entry stream.
func (c Case) Source() formats.Source {
	return &source{items: c.items}
}

type source struct {
	items []item
}

func (s *source) Next() (*formats.Entry, error) {
	if len(s.items) == 0 {
		return nil, io.EOF
	}
	it := s.items[0]
	s.items = s.items[1:]
	return &formats.Entry{Header: it.header(), Body: strings.NewReader(it.body)}, nil
}

// WriteTar writes the case as an uncompressed PAX tar archive.
func (c Case) WriteTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, it := range c.items {
		if err := tw.WriteHeader(it.header()); err != nil {
			return err
		}
		if _, err := io.WriteString(tw, it.body); err != nil {
			return err
		}
	}
	return tw.Close()
}
