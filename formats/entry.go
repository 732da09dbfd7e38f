// Package formats turns file-system trees into streams of entries and back.
//
// Every berth job is copy(source, sink): a tarball, a directory, an OCI image
// or a Nix closure is read as a Source of entries, optionally passed through
// filters (UID shift, path prefix, normalisation), and written to a Sink (a
// tar stream, a directory, a disk image). Keeping one currency, the
// archive/tar header, means each format is written once and composes with all
// others, and nothing is staged on disk or held in memory beyond one entry.
//
// Entry names are canonical: slash-separated, relative, cleaned, without a
// leading "./" or "/" and without a trailing slash. The root directory of a
// tree is named ".". Hard-link targets (Linkname of a TypeLink entry) are
// canonical names of earlier entries in the same stream; symlink targets are
// kept verbatim.
//
// formats knows nothing of Nix, HTTP or signatures.
package formats

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// XattrPrefix is the PAX record prefix under which extended attributes travel
// (the form GNU tar, bsdtar and systemd agree on).
const XattrPrefix = "SCHILY.xattr."

// Entry is one file-system object: its header and, for regular files, its
// content. Body is valid only until the next call to Source.Next.
type Entry struct {
	Header *tar.Header
	Body   io.Reader
}

// Source yields entries in order. Next returns io.EOF after the last entry.
// Parents are yielded before their children.
type Source interface {
	Next() (*Entry, error)
}

// Sink consumes entries. Close finishes the output (a tar trailer, deferred
// directory metadata); an error from Close means the output is incomplete.
type Sink interface {
	WriteEntry(e *Entry) error
	Close() error
}

// Filter transforms entries between a source and a sink. It returns nil to
// drop an entry.
type Filter func(*Entry) (*Entry, error)

// Copy moves every entry of src through the filters into dst. It stops at the
// first error, which names the entry concerned, and checks ctx between
// entries. It does not close dst: the caller decides whether the output is to
// be finished or discarded.
func Copy(ctx context.Context, dst Sink, src Source, filters ...Filter) (entries int64, err error) {
	for {
		if err := ctx.Err(); err != nil {
			return entries, err
		}
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			return entries, nil
		}
		if err != nil {
			return entries, err
		}
		name := e.Header.Name
		for _, f := range filters {
			if e, err = f(e); err != nil {
				return entries, fmt.Errorf("%s: %w", name, err)
			}
			if e == nil {
				break
			}
		}
		if e == nil {
			continue
		}
		if e.Body == nil {
			e.Body = eofReader{}
		}
		if err := dst.WriteEntry(e); err != nil {
			return entries, err
		}
		entries++
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// ErrUnsafePath is returned for names that would leave the tree.
var ErrUnsafePath = errors.New("path leaves the tree")

// CleanName returns the canonical form of an archive name: "./a//b/" becomes
// "a/b", "/" and "./" become ".". A name that would climb out of the tree
// ("..", "a/../../b", or an absolute name when allowAbs is false) is refused
// with ErrUnsafePath: archives that need that are hostile, not sloppy.
func CleanName(name string, allowAbs bool) (string, error) {
	if name == "" {
		return "", fmt.Errorf("empty name: %w", ErrUnsafePath)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("name %q contains NUL: %w", name, ErrUnsafePath)
	}
	if strings.HasPrefix(name, "/") {
		if !allowAbs {
			return "", fmt.Errorf("absolute name %q: %w", name, ErrUnsafePath)
		}
		name = strings.TrimLeft(name, "/")
		if name == "" {
			return ".", nil
		}
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("name %q contains \"..\": %w", name, ErrUnsafePath)
		}
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") || strings.HasPrefix(c, "/") {
		return "", fmt.Errorf("name %q: %w", name, ErrUnsafePath)
	}
	return c, nil
}

// Xattrs returns the extended attributes carried by a header, keyed by
// attribute name.
func Xattrs(h *tar.Header) map[string]string {
	var m map[string]string
	for k, v := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, XattrPrefix); ok {
			if m == nil {
				m = make(map[string]string)
			}
			m[name] = v
		}
	}
	return m
}

// SetXattr records an extended attribute in a header.
func SetXattr(h *tar.Header, name, value string) {
	if h.PAXRecords == nil {
		h.PAXRecords = make(map[string]string)
	}
	h.PAXRecords[XattrPrefix+name] = value
}
