// Package compress reads and writes the compressed streams that machine
// images travel in: xz, gzip, bzip2 and zstd (bzip2 is read-only).
//
// Why this package exists rather than calling the codecs directly:
//
//   - The format of an input is detected from its magic bytes, never from its
//     name. URLs and file names lie (".tar" files that are gzipped, ".raw.xz"
//     served as "download?id=3"); systemd-importd detects by magic too, and
//     berth must accept the same inputs. A file name is only used to choose
//     an output format ([KindFromSuffix]).
//
//   - Reading is strict. systemd 252 accepts a truncated gzip or xz stream as
//     a complete (shorter) image and ignores what follows the last stream;
//     here a stream that ends early is an error wrapping
//     io.ErrUnexpectedEOF, and bytes after the last stream (other than the
//     4-byte-aligned zero padding the xz format allows) are an error, so a
//     cut-off download can never become a silently truncated machine.
//     Concatenated streams (pigz, pbzip2, cat a.xz b.xz, multi-frame zstd)
//     are decoded completely.
//
//   - xz is the format systemd-importd (up to v257) understands best, and the
//     Go xz libraries are single-threaded. This package has its own .xz
//     container code: the writer compresses blocks in parallel (LZMA2 from
//     github.com/ulikunitz/xz/lzma) and records their sizes in the block
//     headers, and the reader decodes such blocks (ours and those of
//     "xz -T0") in parallel from a plain io.Reader, with its own
//     allocation-free LZMA2 decoder and a bounded amount of memory. See
//     [NewWriter] and [NewReader].
//
// Everything composes as io.Reader/io.Writer; nothing here seeks, and
// nothing keeps global mutable state.
package compress

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
)

// Kind names a compression format. Its string form is the name importctl
// and systemd use ("uncompressed", "gzip", "bzip2", "xz", "zstd").
type Kind string

// The supported kinds.
const (
	None  Kind = "uncompressed"
	Gzip  Kind = "gzip"
	Bzip2 Kind = "bzip2"
	Xz    Kind = "xz"
	Zstd  Kind = "zstd"
)

// Magic numbers, as systemd's import-compress.c and the format specs have
// them.
var (
	magicXz    = []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}
	magicGzip  = []byte{0x1F, 0x8B}
	magicBzip2 = []byte{'B', 'Z', 'h'}
	magicZstd  = []byte{0x28, 0xB5, 0x2F, 0xFD}
)

// magicLen is the number of bytes Detect needs to tell all kinds apart.
const magicLen = 6

// Detect reports the kind of a stream from its first bytes (at least 6 are
// needed to recognise xz; fewer bytes that match no magic are uncompressed).
// It never looks at names. A zstd skippable frame (magic 0x184D2A50 to
// 0x184D2A5F, little-endian) counts as zstd.
func Detect(head []byte) Kind {
	switch {
	case bytes.HasPrefix(head, magicXz):
		return Xz
	case bytes.HasPrefix(head, magicGzip):
		return Gzip
	case bytes.HasPrefix(head, magicBzip2):
		return Bzip2
	case bytes.HasPrefix(head, magicZstd):
		return Zstd
	case len(head) >= 4 && head[0]&0xF0 == 0x50 && head[1] == 0x2A && head[2] == 0x4D && head[3] == 0x18:
		return Zstd
	}
	return None
}

// ParseKind parses a format name as a user would type it:
// uncompressed|none, xz, gzip|gz, zstd|zst, bzip2|bz2. Case is ignored.
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "uncompressed", "none":
		return None, nil
	case "xz":
		return Xz, nil
	case "gzip", "gz":
		return Gzip, nil
	case "zstd", "zst":
		return Zstd, nil
	case "bzip2", "bz2":
		return Bzip2, nil
	}
	return "", fmt.Errorf("compress: unknown format %q (want uncompressed, xz, gzip, zstd or bzip2)", s)
}

// KindFromSuffix chooses an output format from a file name's suffix
// (".xz", ".gz", ".tgz", ".zst", ".bz2"); any other name means None. It is
// meant for naming what berth writes: inputs are always detected with
// [Detect] or [NewReader].
func KindFromSuffix(name string) Kind {
	n := strings.ToLower(name)
	switch {
	case strings.HasSuffix(n, ".xz"):
		return Xz
	case strings.HasSuffix(n, ".gz"), strings.HasSuffix(n, ".tgz"):
		return Gzip
	case strings.HasSuffix(n, ".zst"):
		return Zstd
	case strings.HasSuffix(n, ".bz2"):
		return Bzip2
	}
	return None
}

// Ext returns the conventional file name suffix of k (".xz", ".gz", ".zst",
// ".bz2"), or "" for None and unknown kinds.
func (k Kind) Ext() string {
	switch k {
	case Xz:
		return ".xz"
	case Gzip:
		return ".gz"
	case Zstd:
		return ".zst"
	case Bzip2:
		return ".bz2"
	}
	return ""
}

// String returns the kind's name.
func (k Kind) String() string { return string(k) }

// NewReader detects the format of r from its magic bytes and returns a
// reader of the decompressed data, and the detected kind. Decoding is
// strict: a truncated stream yields an error wrapping io.ErrUnexpectedEOF
// and data after the last stream is an error, both from Read.
//
// Close releases the decoder's resources and waits for the xz reader's
// helper goroutines; it does not close r.
//
// gzip members are decoded by this package's own inflater (inflate.go), xz
// streams by its own LZMA2 decoder. Blocks whose
// headers record their sizes (written by this package and by "xz -T") are
// decoded in parallel by up to runtime.GOMAXPROCS(0) goroutines, other
// blocks sequentially. Memory is the LZMA2 dictionary plus 2 MiB (10 MiB for
// "xz -6") plus at most 40 MiB of blocks read ahead or, with [WithSpillDir],
// at most 32 MiB of decoding windows; dictionaries over 128 MiB are
// refused. Measured on the 201 MiB Debian tree's tar, 2 cores, to
// io.Discard: "xz -T2 -6" file (24 MiB blocks) 1.7-1.8 s with a spill
// directory, 2.3-2.5 s without; a single-block "xz -6" file 3.1 s (xz -dc:
// 3.2-3.4 s either way).
//
// zstd windows over 128 MiB (zstd --long=28 and up) are refused, as the
// zstd command does by default.
func NewReader(r io.Reader, opts ...ReaderOption) (io.ReadCloser, Kind, error) {
	var c readerConfig
	for _, o := range opts {
		o(&c)
	}
	in := newInput(r)
	head, err := in.br.Peek(magicLen)
	if err != nil && err != io.EOF {
		return nil, None, fmt.Errorf("compress: reading magic: %w", err)
	}
	k := Detect(head)
	var rc io.ReadCloser
	err = nil
	switch k {
	case Xz:
		rc, err = newXzReader(in, runtime.GOMAXPROCS(0), c.spillDir)
	case Gzip:
		rc, err = newGzipReader(in)
	case Bzip2:
		rc = newBzip2Reader(in)
	case Zstd:
		rc, err = newZstdReader(in)
	default:
		rc = io.NopCloser(in.br)
	}
	if err != nil {
		return nil, k, err
	}
	return rc, k, nil
}

// A ReaderOption configures [NewReader].
type ReaderOption func(*readerConfig)

type readerConfig struct {
	spillDir string
}

// WithSpillDir lets the xz reader keep what it reads and decodes ahead in an
// unlinked file in dir instead of in memory: the compressed blocks it reads
// ahead, and the output of the goroutines that decode them, so that these
// never wait for the consumer and every core decodes all the time (see
// xzspill.go). The disk space used is at most 128 MiB of output decoded
// ahead plus the compressed size of the blocks in flight. If the file cannot
// be created the reader reads ahead in memory.
func WithSpillDir(dir string) ReaderOption { return func(c *readerConfig) { c.spillDir = dir } }

// input is the buffered source every decoder reads from. It counts the
// bytes taken from the underlying reader so that errors can say where in
// the compressed stream they happened.
type input struct {
	cr countingReader
	br *bufio.Reader
}

func newInput(r io.Reader) *input {
	in := &input{cr: countingReader{r: r}}
	in.br = bufio.NewReaderSize(&in.cr, 64<<10)
	return in
}

// offset returns the offset of the next unread byte of the compressed
// stream.
func (in *input) offset() int64 { return in.cr.n - int64(in.br.Buffered()) }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// truncated wraps err, which ended a stream of the given codec early, so that
// it reads "xz: truncated stream: unexpected EOF" and still matches
// io.ErrUnexpectedEOF.
func truncated(codec string, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: truncated stream: %w", codec, err)
	}
	return fmt.Errorf("%s: %w", codec, err)
}

// WriterOption configures [NewWriter].
type WriterOption func(*writerConfig)

type writerConfig struct {
	level       int
	levelSet    bool // false: the codec's default level
	concurrency int  // 0 means runtime.GOMAXPROCS(0)
}

// WithLevel sets the compression level as the codec's command line tool
// numbers it: gzip 1-9 (default 6), zstd 1-22 (default 3, mapped to the
// nearest klauspost/compress speed), xz 0-9 (default 6). For xz the level
// picks the LZMA2 dictionary and block size, not liblzma's presets; see
// [NewWriter]. Out-of-range levels make NewWriter fail.
func WithLevel(n int) WriterOption {
	return func(c *writerConfig) { c.level, c.levelSet = n, true }
}

// WithConcurrency sets how many goroutines compress in parallel (xz and
// zstd); n <= 0 means runtime.GOMAXPROCS(0). gzip always uses one.
func WithConcurrency(n int) WriterOption { return func(c *writerConfig) { c.concurrency = n } }

// NewWriter returns a writer that compresses into w in format k. Close
// flushes and finishes the stream (for xz: the index and stream footer) but
// does not close w; without Close the output is incomplete. After an error
// from Write, Close still releases resources and returns the error.
//
// xz output is one stream of independent blocks that are compressed in
// parallel; every block header records its compressed and uncompressed
// sizes, so "xz -dc -T0" and this package's reader decode it in parallel
// too, and liblzma (xz, systemd-importd) reads it. The LZMA2 encoder is
// github.com/ulikunitz/xz/lzma's: it compresses worse than "xz -1", and its
// memory (about 9 bytes per dictionary byte, allocated afresh for every
// block) is what the levels trade. Measured on a 234 MB tar of /usr with
// 2 goroutines on 2 cores (size as a share of the input, peak RSS of the
// whole process):
//
//	level  dictionary  block   size    MB/s   peak RSS
//	0-2    256 KiB     2 MiB   29.3%   18.5    40 MB
//	3-6    512 KiB     2 MiB   29.0%   15.4    52 MB   (default; 7.3 MB/s on one goroutine)
//	7-8    1 MiB       4 MiB   28.5%   14.2    93 MB
//	9      2 MiB       8 MiB   28.3%    9.9   165 MB
//
// For comparison: ulikunitz's own writer (8 MiB dictionary, one goroutine)
// 28.3% at 3.3 MB/s and 107 MB; "xz -6 -T2" 22.4% at 3.3 MB/s; "xz -1 -T2"
// 26.3% at 18 MB/s. Memory grows with the concurrency: at most
// concurrency+1 blocks and concurrency encoders exist at once, and the Go
// heap can reach twice that between collections (GOMEMLIMIT bounds it: the
// default level stays at 42 MB with GOMEMLIMIT=40MiB).
//
// Bzip2 cannot be written (systemd reads it, nothing needs to produce it).
func NewWriter(w io.Writer, k Kind, opts ...WriterOption) (io.WriteCloser, error) {
	var c writerConfig
	for _, o := range opts {
		o(&c)
	}
	if c.concurrency <= 0 {
		c.concurrency = runtime.GOMAXPROCS(0)
	}
	switch k {
	case None:
		if c.levelSet {
			return nil, fmt.Errorf("compress: level %d given for uncompressed output", c.level)
		}
		return nopWriteCloser{w}, nil
	case Xz:
		return newXzWriter(w, c)
	case Gzip:
		return newGzipWriter(w, c)
	case Zstd:
		return newZstdWriter(w, c)
	case Bzip2:
		return nil, errors.New("compress: bzip2 output is not supported (bzip2 is read-only here); use xz, zstd or gzip")
	}
	return nil, fmt.Errorf("compress: unknown format %q", string(k))
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
