package formats

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

const blockSize = 512

// TarSource reads entries from an uncompressed tar stream (decompress first:
// see formats/compress). It differs from a bare archive/tar.Reader in what it
// refuses and what it tolerates:
//
//   - names are canonicalised and names or hard-link targets that leave the
//     tree are an error naming the entry;
//   - a stream that ends without the end-of-archive marker is an error, so a
//     truncated download is never mistaken for a small image;
//   - concatenated archives are read as one (GNU tar --ignore-zeros, which is
//     what systemd-import does), and anything else after the end marker is an
//     error;
//   - bsdtar's LIBARCHIVE.xattr.* records are converted to SCHILY.xattr.*.
type TarSource struct {
	r      *tailReader
	tr     *tar.Reader
	prev   string
	nEntry int64
}

// NewTarSource returns a Source reading the tar stream r.
func NewTarSource(r io.Reader) *TarSource {
	t := &tailReader{r: bufio.NewReaderSize(r, 64<<10)}
	return &TarSource{r: t, tr: tar.NewReader(t)}
}

// Next returns the next entry, or io.EOF after the last one.
func (s *TarSource) Next() (*Entry, error) {
	for {
		h, err := s.tr.Next()
		if err == io.EOF { // archive/tar's own end, not an error of the stream below
			more, err := s.endOfArchive()
			if err != nil {
				return nil, err
			}
			if !more {
				return nil, io.EOF
			}
			s.tr = tar.NewReader(s.r)
			continue
		}
		if err != nil {
			return nil, s.wrap(err)
		}
		switch h.Typeflag {
		case tar.TypeXGlobalHeader:
			continue
		case tar.TypeRegA:
			h.Typeflag = tar.TypeReg
		case tar.TypeReg, tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		case tar.TypeGNUSparse:
			h.Typeflag = tar.TypeReg
		default:
			return nil, fmt.Errorf("%s: unsupported tar entry type %q", h.Name, h.Typeflag)
		}
		raw := h.Name
		if h.Name, err = CleanName(raw, false); err != nil {
			return nil, fmt.Errorf("tar entry %q: %w", raw, err)
		}
		if h.Typeflag == tar.TypeLink {
			if h.Linkname, err = CleanName(h.Linkname, false); err != nil {
				return nil, fmt.Errorf("%s: hard link target: %w", h.Name, err)
			}
			if h.Linkname == "." {
				return nil, fmt.Errorf("%s: hard link to the root directory", h.Name)
			}
		}
		convertLibarchiveXattrs(h)
		s.prev = h.Name
		s.nEntry++
		var body io.Reader
		if h.Typeflag == tar.TypeReg {
			body = s.tr
		}
		return &Entry{Header: h, Body: body}, nil
	}
}

func (s *TarSource) wrap(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("tar stream truncated after %d entries (last %q): %w", s.nEntry, s.prev, err)
	}
	if s.prev == "" {
		return fmt.Errorf("reading tar: %w", err)
	}
	return fmt.Errorf("reading tar after entry %q: %w", s.prev, err)
}

// endOfArchive is called when archive/tar reports the end. It accepts the end
// only if the last block read was a zero block (archive/tar also reports
// io.EOF when the stream simply stops at a header boundary), then looks at what
// follows: only zeros (record padding), or another archive.
func (s *TarSource) endOfArchive() (more bool, err error) {
	if s.r.n == 0 {
		return false, errors.New("reading tar: empty input")
	}
	if !s.r.lastBlockZero() {
		return false, fmt.Errorf("tar stream truncated after %d entries (last %q): no end-of-archive marker: %w",
			s.nEntry, s.prev, io.ErrUnexpectedEOF)
	}
	var blk [blockSize]byte
	for {
		n, err := io.ReadFull(s.r, blk[:])
		// Only io.ReadFull's own sentinels mean "the stream ended here";
		// an error of the stream below (a decompressor's truncated
		// stream, which wraps io.ErrUnexpectedEOF too, a failed check) is
		// never mistaken for the end of the padding.
		if n == 0 && err == io.EOF {
			return false, nil
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return false, fmt.Errorf("reading tar trailer: %w", err)
		}
		if n < blockSize {
			if bytes.Count(blk[:n], []byte{0}) == n {
				return false, nil
			}
			return false, fmt.Errorf("reading tar: %d bytes of trailing data after end of archive", n)
		}
		if blk == [blockSize]byte{} {
			continue
		}
		// A further archive follows (GNU tar --ignore-zeros semantics).
		s.r.unread(blk[:])
		return true, nil
	}
}

// tailReader counts bytes and remembers the last block read, so that the end
// of a tar stream can be told from its truncation; it can push one block back.
type tailReader struct {
	r       *bufio.Reader
	n       int64
	tail    [blockSize]byte
	pending []byte
}

func (t *tailReader) Read(p []byte) (int, error) {
	var n int
	var err error
	if len(t.pending) > 0 {
		n = copy(p, t.pending)
		t.pending = t.pending[n:]
	} else {
		n, err = t.r.Read(p)
	}
	if n > 0 {
		t.n += int64(n)
		if n >= blockSize {
			copy(t.tail[:], p[n-blockSize:n])
		} else {
			copy(t.tail[:], t.tail[n:])
			copy(t.tail[blockSize-n:], p[:n])
		}
	}
	return n, err
}

func (t *tailReader) lastBlockZero() bool { return t.tail == [blockSize]byte{} }

func (t *tailReader) unread(b []byte) { t.pending = append([]byte(nil), b...); t.n -= int64(len(b)) }

func convertLibarchiveXattrs(h *tar.Header) {
	for k, v := range h.PAXRecords {
		name, ok := strings.CutPrefix(k, "LIBARCHIVE.xattr.")
		if !ok {
			continue
		}
		delete(h.PAXRecords, k)
		if _, dup := h.PAXRecords[XattrPrefix+name]; dup {
			continue
		}
		if dec, err := base64.StdEncoding.DecodeString(v); err == nil {
			SetXattr(h, name, string(dec))
		} else if dec, err := base64.RawStdEncoding.DecodeString(v); err == nil {
			SetXattr(h, name, string(dec))
		}
	}
}

// TarOptions control how a TarSink writes entries.
type TarOptions struct {
	// ModTime, when non-zero, replaces every entry's modification time (for
	// reproducible output; the Nix store uses 1970-01-01T00:00:01Z).
	ModTime time.Time
	// Owner, when true, forces uid and gid to 0.
	RootOwner bool
}

// TarSink writes entries as a PAX tar stream with numeric owners only: no
// user or group names, which would be looked up on the host and mean nothing
// inside a container. Access and change times are never written, so output
// depends only on the tree.
type TarSink struct {
	tw   *tar.Writer
	opts TarOptions
	buf  []byte
}

// NewTarSink returns a Sink writing a tar stream to w. Close writes the end
// of the archive but does not close w.
func NewTarSink(w io.Writer, opts TarOptions) *TarSink {
	return &TarSink{tw: tar.NewWriter(w), opts: opts}
}

// WriteEntry writes one entry; a regular file's Body must hold Size bytes.
func (s *TarSink) WriteEntry(e *Entry) error {
	src := e.Header
	h := &tar.Header{
		Typeflag: src.Typeflag,
		Name:     src.Name,
		Linkname: src.Linkname,
		Size:     0,
		Mode:     src.Mode & 07777,
		Uid:      src.Uid,
		Gid:      src.Gid,
		ModTime:  src.ModTime,
		Devmajor: src.Devmajor,
		Devminor: src.Devminor,
		Format:   tar.FormatPAX,
	}
	if x := Xattrs(src); len(x) > 0 {
		h.PAXRecords = make(map[string]string, len(x))
		for k, v := range x {
			h.PAXRecords[XattrPrefix+k] = v
		}
	}
	if !s.opts.ModTime.IsZero() {
		h.ModTime = s.opts.ModTime
	}
	if s.opts.RootOwner {
		h.Uid, h.Gid = 0, 0
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if h.Name == "." {
			h.Name = "./"
		} else {
			h.Name += "/"
		}
	case tar.TypeReg:
		h.Size = src.Size
	}
	if err := s.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: writing tar header: %w", src.Name, err)
	}
	if h.Typeflag != tar.TypeReg || h.Size == 0 {
		return nil
	}
	if s.buf == nil {
		s.buf = make([]byte, 256<<10)
	}
	n, err := io.CopyBuffer(s.tw, io.LimitReader(e.Body, h.Size), s.buf)
	if err != nil {
		return fmt.Errorf("%s: %w", src.Name, err)
	}
	if n != h.Size {
		return fmt.Errorf("%s: file is %d bytes, header said %d: %w", src.Name, n, h.Size, io.ErrUnexpectedEOF)
	}
	return nil
}

// Close writes the end-of-archive marker.
func (s *TarSink) Close() error {
	if err := s.tw.Close(); err != nil {
		return fmt.Errorf("finishing tar: %w", err)
	}
	return nil
}
