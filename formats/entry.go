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
//
// A sparse regular file has a non-nil Sparse: Header.Size is then its
// logical size, Body yields only the bytes of the data fragments, in order
// (DataSize(Sparse) bytes), and everything between them is a hole that reads
// as zeros. Sources that know a file is sparse (a GNU sparse tar entry) say
// so instead of expanding the holes, because a hostile archive can declare
// a logical size of 2^62 bytes behind a few bytes of data: work must be
// proportional to the data, never to the declared size. Sinks that can
// write holes implement [SparseSink]; [Copy] expands sparse entries for the
// others.
type Entry struct {
	Header *tar.Header
	Body   io.Reader
	Sparse []Fragment
}

// Fragment is one data region of a sparse file: Length bytes at Offset.
type Fragment struct {
	Offset, Length int64
}

// SparseSink is implemented by sinks that write the holes of sparse entries
// as holes (seeking over them) in time proportional to the data.
type SparseSink interface {
	Sink
	WritesSparse()
}

// DataSize returns the number of data bytes of a sparse map.
func DataSize(frags []Fragment) int64 {
	var n int64
	for _, f := range frags {
		n += f.Length
	}
	return n
}

// ErrBadSparseMap is returned for sparse maps that overlap, go backwards,
// or reach past the file's size.
var ErrBadSparseMap = errors.New("invalid sparse map")

// ValidateSparse checks that frags are in ascending order, do not overlap,
// have no negative offsets or lengths, and end within size.
func ValidateSparse(frags []Fragment, size int64) error {
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", ErrBadSparseMap, size)
	}
	var end int64
	for i, f := range frags {
		switch {
		case f.Offset < 0 || f.Length < 0:
			return fmt.Errorf("%w: fragment %d has a negative offset or length", ErrBadSparseMap, i)
		case f.Offset < end:
			return fmt.Errorf("%w: fragment %d at %d overlaps or precedes the one before it", ErrBadSparseMap, i, f.Offset)
		case f.Length > size-f.Offset || f.Offset > size:
			return fmt.Errorf("%w: fragment %d (%d+%d) ends beyond the file size %d", ErrBadSparseMap, i, f.Offset, f.Length, size)
		}
		end = f.Offset + f.Length
	}
	return nil
}

// ExpandSparse returns a reader of the whole logical content of a sparse
// entry: the data fragments read from e.Body with zeros in the holes. It
// fails with ctx.Err() once ctx is done, also inside a long hole, so that a
// sink that cannot write holes stays interruptible. The sparse map must
// have been validated.
func ExpandSparse(ctx context.Context, e *Entry) io.Reader {
	return &sparseExpander{ctx: ctx, body: e.Body, frags: e.Sparse, size: e.Header.Size}
}

type sparseExpander struct {
	ctx   context.Context
	body  io.Reader
	frags []Fragment
	size  int64
	pos   int64
}

func (x *sparseExpander) Read(p []byte) (int, error) {
	if err := x.ctx.Err(); err != nil {
		return 0, err
	}
	if x.pos >= x.size {
		return 0, io.EOF
	}
	for len(x.frags) > 0 && x.frags[0].Offset+x.frags[0].Length <= x.pos {
		x.frags = x.frags[1:]
	}
	limit := x.size - x.pos
	if len(x.frags) > 0 && x.frags[0].Offset <= x.pos {
		// In a data fragment.
		limit = min(limit, x.frags[0].Offset+x.frags[0].Length-x.pos)
		n, err := x.body.Read(p[:min(int64(len(p)), limit)])
		x.pos += int64(n)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}
	// In a hole, up to the next fragment or the end.
	if len(x.frags) > 0 {
		limit = min(limit, x.frags[0].Offset-x.pos)
	}
	n := int(min(int64(len(p)), limit))
	clear(p[:n])
	x.pos += int64(n)
	return n, nil
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
		if e.Sparse != nil {
			if _, ok := dst.(SparseSink); !ok {
				e = &Entry{Header: e.Header, Body: ExpandSparse(ctx, e)}
			}
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
