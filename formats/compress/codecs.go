package compress

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// gzipReader decodes a sequence of gzip members (pigz output, cat a.gz
// b.gz) with this package's inflater, checking each member's CRC-32 and
// size, and refuses anything after the last member, saying where it starts.
type gzipReader struct {
	in     *input
	f      *inflater
	crc    uint32
	size   uint32
	member int
	err    error
}

var errGzipHeader = errors.New("invalid header")

func newGzipReader(in *input) (*gzipReader, error) {
	if err := readGzipHeader(in.br); err != nil {
		return nil, truncated("gzip", err)
	}
	return &gzipReader{in: in, f: newInflater(in.br), member: 1}, nil
}

// readGzipHeader reads a member header (RFC 1952), checking its CRC-16 if
// it has one.
func readGzipHeader(br *bufio.Reader) error {
	var h [10]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return noEOF(err)
	}
	if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 || h[3]&0xe0 != 0 {
		return errGzipHeader
	}
	flg := h[3]
	crc := crc32.NewIEEE()
	crc.Write(h[:])
	if flg&4 != 0 { // FEXTRA
		var x [2]byte
		if _, err := io.ReadFull(br, x[:]); err != nil {
			return noEOF(err)
		}
		crc.Write(x[:])
		if _, err := io.CopyN(crc, br, int64(binary.LittleEndian.Uint16(x[:]))); err != nil {
			return noEOF(err)
		}
	}
	for _, bit := range []byte{8, 16} { // FNAME, FCOMMENT: zero-terminated
		if flg&bit == 0 {
			continue
		}
		s, err := br.ReadSlice(0)
		for err == bufio.ErrBufferFull {
			crc.Write(s)
			s, err = br.ReadSlice(0)
		}
		if err != nil {
			return noEOF(err)
		}
		crc.Write(s)
	}
	if flg&2 != 0 { // FHCRC
		var x [2]byte
		if _, err := io.ReadFull(br, x[:]); err != nil {
			return noEOF(err)
		}
		if binary.LittleEndian.Uint16(x[:]) != uint16(crc.Sum32()) {
			return errGzipHeader
		}
	}
	return nil
}

func (g *gzipReader) Read(p []byte) (int, error) {
	for g.err == nil {
		n, err := g.f.Read(p)
		if err == nil {
			g.crc = crc32.Update(g.crc, crc32.IEEETable, p[:n])
			g.size += uint32(n)
			return n, nil
		}
		if err != io.EOF {
			g.err = truncated("gzip", fmt.Errorf("member %d: %w", g.member, err))
			return 0, g.err
		}
		// The member's DEFLATE stream ended: its trailer, then the
		// next member or the end.
		var t [8]byte
		if _, err := io.ReadFull(g.in.br, t[:]); err != nil {
			g.err = truncated("gzip", fmt.Errorf("member %d trailer: %w", g.member, noEOF(err)))
			return 0, g.err
		}
		if binary.LittleEndian.Uint32(t[:4]) != g.crc || binary.LittleEndian.Uint32(t[4:]) != g.size {
			g.err = fmt.Errorf("gzip: member %d: CRC-32 or size mismatch (the data is corrupt)", g.member)
			return 0, g.err
		}
		g.err = g.nextMember()
	}
	if g.err == io.EOF {
		return 0, io.EOF
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
	if err := readGzipHeader(g.in.br); err != nil {
		return fmt.Errorf("gzip: member %d at offset %d: %w", g.member+1, off, truncated("header", err))
	}
	g.f.reset(g.in.br)
	g.crc, g.size = 0, 0
	g.member++
	return nil
}

func (g *gzipReader) Close() error {
	if g.err == nil || g.err == io.EOF {
		g.err = errors.New("gzip: reader closed")
	}
	return nil
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
