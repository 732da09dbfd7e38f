package compress

import (
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// gzipReader decodes a sequence of gzip members (pigz output, cat a.gz
// b.gz) and refuses anything after the last member. klauspost's own
// multistream mode reports trailing bytes only as "invalid header"; we run it
// member by member to say where the garbage starts.
type gzipReader struct {
	in     *input
	z      *gzip.Reader
	member int
	err    error
}

func newGzipReader(in *input) (*gzipReader, error) {
	z, err := gzip.NewReader(in.br) // *bufio.Reader is a flate.Reader: no read-ahead past a member
	if err != nil {
		return nil, truncated("gzip", err)
	}
	z.Multistream(false)
	return &gzipReader{in: in, z: z, member: 1}, nil
}

func (g *gzipReader) Read(p []byte) (int, error) {
	for g.err == nil {
		n, err := g.z.Read(p)
		if err == nil {
			return n, nil
		}
		if err != io.EOF {
			g.err = truncated("gzip", err)
			return n, g.err
		}
		// The member ended and its CRC and size matched.
		g.err = g.nextMember()
		if n > 0 || len(p) == 0 {
			if g.err == io.EOF {
				return n, nil // report EOF on the next call
			}
			return n, g.err
		}
	}
	return 0, g.err
}

// nextMember starts the next member, or returns io.EOF at the end of the
// input, or an error for trailing garbage.
func (g *gzipReader) nextMember() error {
	off := g.in.offset()
	head, err := g.in.br.Peek(len(magicGzip))
	switch {
	case len(head) == 0 && err == io.EOF:
		return io.EOF
	case err != nil && err != io.EOF:
		return fmt.Errorf("gzip: %w", err)
	case !bytes.Equal(head, magicGzip):
		return fmt.Errorf("gzip: trailing garbage after member %d at offset %d", g.member, off)
	}
	if err := g.z.Reset(g.in.br); err != nil {
		return fmt.Errorf("gzip: member %d at offset %d: %w", g.member+1, off, truncated("header", err))
	}
	g.z.Multistream(false)
	g.member++
	return nil
}

func (g *gzipReader) Close() error {
	if g.err == nil {
		g.err = errors.New("gzip: reader closed")
	}
	return g.z.Close()
}

// bzip2Reader wraps the standard library decoder, which already decodes
// concatenated streams (pbzip2) and rejects trailing garbage; it only needs
// its errors labelled.
type bzip2Reader struct {
	r   io.Reader
	err error
}

func newBzip2Reader(in *input) *bzip2Reader { return &bzip2Reader{r: bzip2.NewReader(in.br)} }

func (b *bzip2Reader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = truncated("bzip2", err)
	}
	b.err = err
	return n, err
}

func (b *bzip2Reader) Close() error {
	if b.err == nil {
		b.err = errors.New("bzip2: reader closed")
	}
	return nil
}

// zstdMaxWindow is the largest zstd window accepted when reading: the zstd
// command's own default limit (--memory=128MB; larger windows need
// --long=28 or more on both sides).
const zstdMaxWindow = 128 << 20

type zstdReader struct {
	d   *zstd.Decoder
	err error
}

func newZstdReader(in *input) (*zstdReader, error) {
	d, err := zstd.NewReader(in.br,
		// One decoder goroutine is faster than the default on 2 cores and
		// runs synchronously (see go-libs.md).
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(zstdMaxWindow),
		zstd.WithDecoderLowmem(true),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	return &zstdReader{d: d}, nil
}

func (z *zstdReader) Read(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	n, err := z.d.Read(p)
	if err != nil && err != io.EOF {
		err = truncated("zstd", err)
	}
	z.err = err
	return n, err
}

func (z *zstdReader) Close() error {
	if z.err == nil {
		z.err = errors.New("zstd: reader closed")
	}
	z.d.Close()
	return nil
}

func newGzipWriter(w io.Writer, c writerConfig) (io.WriteCloser, error) {
	level := 6 // gzip(1)'s default
	if c.levelSet {
		level = c.level
	}
	if level < 1 || level > 9 {
		return nil, fmt.Errorf("gzip: level %d out of range 1-9", c.level)
	}
	z, err := gzip.NewWriterLevel(w, level)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return z, nil
}

func newZstdWriter(w io.Writer, c writerConfig) (io.WriteCloser, error) {
	level := 3 // zstd(1)'s default
	if c.levelSet {
		level = c.level
	}
	if level < 1 || level > 22 {
		return nil, fmt.Errorf("zstd: level %d out of range 1-22", c.level)
	}
	return newZstdParallelWriter(w, level, c.concurrency)
}
