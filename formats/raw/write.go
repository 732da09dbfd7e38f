package raw

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/ctxio"
	"github.com/berth-dev/berth/internal/scratch"
)

// Options configure Write. The zero value makes an ext4 x86-64 image whose
// identifiers derive from the content.
type Options struct {
	// FS is the root file system: "ext4" (default, writable) or "squashfs"
	// (read-only, compressed with zstd).
	FS string
	// Arch selects the Discoverable Partitions root type: "x86-64"
	// (default), "arm64", … or a Go/Nix/uname name such as "amd64",
	// "aarch64-linux" (see RootType).
	Arch string
	// Label names the partition and, truncated to 16 bytes, the ext4 file
	// system. Default "root-<arch>".
	Label string
	// Seed determines every identifier in the image (disk GUID, partition
	// GUID, file-system UUID, ext4 directory hash seed). Nil means a SHA-256
	// of the entries themselves, so the same tree always gives the same
	// image; a caller that knows a cheaper identity of the tree (a Nix
	// closure hash) passes it here.
	Seed []byte
	// WorkDir holds the ext4 staging tree (default os.TempDir()). It should
	// be on a file system with room for the whole tree, ideally the one the
	// image is written to.
	WorkDir string
	// Compression is the squashfs compressor: "zstd" (default), "gzip",
	// "xz", "lz4" or "lzo". sqfstar 4.5.1 cannot take a level (its -X
	// options are broken), so each runs at its default: lz4 is some 40
	// times faster than zstd or gzip and makes images about 60% larger.
	// Ignored for ext4, which is not compressed.
	Compression string
	// Meter, if set, wraps a writer that is given the content of every
	// regular file as it is read from the source (progress counting: the
	// total is the sum of the file sizes; mkfs itself is not metered).
	Meter func(io.Writer) io.Writer
	// Log receives progress lines at Info and details at Debug. Nil means
	// slog.Default().
	Log *slog.Logger
}

// Supported file systems.
const (
	FSExt4     = "ext4"
	FSSquashfs = "squashfs"
)

// fakeTime is the time mke2fs and sqfstar record where the tree says
// nothing (superblocks, lost+found): the Nix store's epoch.
const fakeTime = 1

type config struct {
	Options
	typ      GUID
	arch     string
	partName string
}

func (o Options) config() (config, error) {
	c := config{Options: o}
	switch c.FS {
	case "":
		c.FS = FSExt4
	case FSExt4, FSSquashfs:
	default:
		return c, fmt.Errorf("raw image: unknown file system %q (use ext4 or squashfs)", c.FS)
	}
	var err error
	if c.typ, c.arch, err = RootType(o.Arch); err != nil {
		return c, fmt.Errorf("raw image: %w", err)
	}
	if c.Label == "" {
		c.Label = "root-" + c.arch
	}
	c.partName = c.Label
	if r := []rune(c.partName); len(r) > 36 {
		c.partName = string(r[:36])
	}
	switch c.Compression {
	case "":
		c.Compression = "zstd"
	case "zstd", "gzip", "xz", "lz4", "lzo":
	default:
		return c, fmt.Errorf("raw image: unknown squashfs compression %q (use zstd, gzip, xz, lz4 or lzo)", c.Compression)
	}
	if c.WorkDir == "" {
		c.WorkDir = os.TempDir()
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c, nil
}

// Write makes a GPT disk image with one root partition holding the tree of
// src, in the form `systemd-nspawn -i` and `systemd-dissect` expect: the
// partition is typed "root-<arch>" by the Discoverable Partitions
// Specification, starts at 1 MiB, and the image ends with the backup table.
// out must be a regular file opened read-write; it is truncated, written
// sparse and left at the image's final size. On error out is truncated to
// zero and every temporary file is gone; making the output visible under
// its final name only on success is the caller's business (atomicfile).
//
// The same entries and Seed give a byte-identical image: mkfs runs with a
// fixed clock and identifiers derived from the seed, and the ext4 inode
// change and access times (which mke2fs takes from the staging tree) are
// reset to the modification times. Squashfs keeps one time for every inode,
// the root entry's (see writeSquashfs).
//
// ext4 needs root (the tree is staged with its owners and device nodes) and
// room for the tree in WorkDir; squashfs needs neither.
func Write(ctx context.Context, out *os.File, src formats.Source, opts Options) (err error) {
	c, err := opts.config()
	if err != nil {
		return err
	}
	fi, err := out.Stat()
	if err != nil {
		return fmt.Errorf("raw image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("raw image: %s is not a regular file (write to a file, then stream it)", out.Name())
	}
	if err := out.Truncate(0); err != nil {
		return fmt.Errorf("raw image: %w", err)
	}
	defer func() {
		if err != nil {
			out.Truncate(0)
		}
	}()
	start := time.Now()
	chk := newChecker(ctx)
	if c.Meter != nil {
		chk.out = io.MultiWriter(chk.h, c.Meter(io.Discard))
	}
	seed := func() []byte {
		if len(c.Seed) > 0 {
			return c.Seed
		}
		return chk.sum()
	}
	var fsSize int64
	switch c.FS {
	case FSExt4:
		fsSize, err = writeExt4(ctx, out, alignment, src, chk.filter, c, seed)
	case FSSquashfs:
		fsSize, err = writeSquashfs(ctx, out, alignment, src, chk.filter, c)
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("raw image: %w", ctx.Err())
		}
		return fmt.Errorf("raw image (%s): %w", c.FS, err)
	}
	s := seed()
	part := Partition{Type: c.typ, GUID: deriveGUID(s, "partition"), Name: c.partName}
	if c.FS == FSSquashfs {
		part.Attributes |= AttrReadOnly
	}
	l := newLayout(fsSize, deriveGUID(s, "disk"), part)
	if err := out.Truncate(l.size()); err != nil {
		return fmt.Errorf("raw image: sizing %s: %w", out.Name(), err)
	}
	if err := writeGPT(out, l); err != nil {
		return fmt.Errorf("raw image: %w", err)
	}
	c.Log.Info("raw image written", "fs", c.FS, "partition", c.partName, "bytes", l.size(),
		"fs_bytes", fsSize, "entries", chk.entries, "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// deriveGUID makes a version-4-shaped GUID from the seed and a purpose, as
// systemd-repart does with its --seed, so every identifier is stable and
// distinct.
func deriveGUID(seed []byte, purpose string) GUID {
	h := sha256.New()
	h.Write([]byte("berth raw image\x00"))
	h.Write(seed)
	h.Write([]byte{0})
	h.Write([]byte(purpose))
	var g GUID
	copy(g[:], h.Sum(nil))
	g[6] = g[6]&0x0f | 0x40
	g[8] = g[8]&0x3f | 0x80
	return g
}

// checker is the filter every entry passes on its way to mkfs: it refuses
// names that leave the tree (a Source is not trusted to have canonical
// names: mkfs -d and sqfstar would follow them), refuses entry types a
// file system image cannot hold, honours ctx inside long file bodies, and
// hashes the entries for the default seed.
type checker struct {
	ctx     context.Context
	h       hash.Hash
	out     io.Writer // h, or h and the meter
	entries int64
	buf     []byte
}

func newChecker(ctx context.Context) *checker {
	h := sha256.New()
	return &checker{ctx: ctx, h: h, out: h}
}

func (c *checker) filter(e *formats.Entry) (*formats.Entry, error) {
	if e.Header == nil {
		return nil, errors.New("entry without header")
	}
	h := *e.Header
	name, err := formats.CleanName(h.Name, false)
	if err != nil {
		return nil, err
	}
	h.Name = name
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		h.Typeflag = tar.TypeReg
	case tar.TypeDir, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	case tar.TypeLink:
		if h.Linkname, err = formats.CleanName(h.Linkname, false); err != nil {
			return nil, fmt.Errorf("hard link target: %w", err)
		}
		if h.Linkname == "." || h.Linkname == name {
			return nil, fmt.Errorf("hard link to %q: %w", h.Linkname, formats.ErrUnsafePath)
		}
	default:
		return nil, fmt.Errorf("entry type %q cannot be put in a disk image", h.Typeflag)
	}
	if name == "." && h.Typeflag != tar.TypeDir {
		return nil, errors.New("the root entry is not a directory")
	}
	if h.Typeflag != tar.TypeReg {
		h.Size = 0
	}
	if h.Size < 0 {
		return nil, fmt.Errorf("negative size %d", h.Size)
	}
	c.hashHeader(&h)
	c.entries++
	body := e.Body
	if h.Typeflag == tar.TypeReg && h.Size > 0 && body != nil {
		body = io.TeeReader(ctxio.Reader(c.ctx, body), c.out)
	}
	return &formats.Entry{Header: &h, Body: body}, nil
}

// hashHeader feeds the fields that end up in the image, length-prefixed.
func (c *checker) hashHeader(h *tar.Header) {
	b := c.buf[:0]
	str := func(s string) {
		b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
		b = append(b, s...)
	}
	num := func(n int64) { b = binary.LittleEndian.AppendUint64(b, uint64(n)) }
	b = append(b, h.Typeflag)
	str(h.Name)
	str(h.Linkname)
	num(h.Mode & 07777)
	num(int64(h.Uid))
	num(int64(h.Gid))
	num(h.ModTime.UnixNano())
	num(h.Size)
	num(h.Devmajor)
	num(h.Devminor)
	x := formats.Xattrs(h)
	keys := make([]string, 0, len(x))
	for k := range x {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	num(int64(len(keys)))
	for _, k := range keys {
		str(k)
		str(x[k])
	}
	c.h.Write(b)
	c.buf = b
}

func (c *checker) sum() []byte { return c.h.Sum(nil) }

// WriteCompressed writes the image to an unnamed temporary file in
// opts.WorkDir, then streams it through the compressor kind into dst (for
// .raw.xz and .raw.zst). kind compress.None copies the image as is.
func WriteCompressed(ctx context.Context, dst io.Writer, src formats.Source, opts Options, kind compress.Kind, wopts ...compress.WriterOption) error {
	dir := opts.WorkDir
	if dir == "" {
		dir = os.TempDir()
	}
	tmp, err := scratch.TempFile(dir)
	if err != nil {
		return fmt.Errorf("raw image: temporary file: %w", err)
	}
	defer tmp.Close()
	if err := Write(ctx, tmp, src, opts); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("raw image: %w", err)
	}
	cw, err := compress.NewWriter(dst, kind, wopts...)
	if err != nil {
		return fmt.Errorf("raw image: %w", err)
	}
	if _, err := io.Copy(cw, ctxio.Reader(ctx, tmp)); err != nil {
		cw.Close()
		return fmt.Errorf("raw image: compressing (%s): %w", kind, err)
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("raw image: compressing (%s): %w", kind, err)
	}
	return nil
}
