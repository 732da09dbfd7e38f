package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/ctxio"
)

// RawOptions control a raw image export.
type RawOptions struct {
	Compression compress.Kind // "" means none
	Level       int
	Live        bool
	Log         *slog.Logger
	// Meter, if set, wraps the reads from the image (progress counting).
	Meter func(io.Reader) io.Reader
}

// Raw copies the disk image file to w, compressed as asked. Only the data
// extents of the image are read (SEEK_DATA/SEEK_HOLE): holes become holes
// again when w is an uncompressed regular file, and zeros otherwise, which
// every compressor squeezes to nothing. A running machine's image is frozen
// for the copy like a tree (Options.Live to read it live instead).
func Raw(ctx context.Context, image string, w io.Writer, opts RawOptions) (err error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	f, err := os.Open(image)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", image)
	}
	t := &Tree{Dir: image, log: log}
	defer func() {
		if cerr := t.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := t.consistent(ctx, image, opts.Live); err != nil {
		return err
	}
	if t.Method == MethodSnapshot {
		// A snapshot is for directories; isSubvolume never holds for a file.
		return fmt.Errorf("%s: unexpected snapshot of an image file", image)
	}
	var copts []compress.WriterOption
	if opts.Level != 0 {
		copts = append(copts, compress.WithLevel(opts.Level))
	}
	var out io.Writer
	var sparse *sparseFile
	var cw io.WriteCloser
	var g *gate
	if opts.Compression == "" {
		opts.Compression = compress.None
	}
	if opts.Compression == compress.None {
		sparse = newSparseFile(w)
	}
	if sparse != nil {
		sparse.w = ctxio.Writer(ctx, w)
		out = sparse
	} else {
		g = &gate{w: ctxio.Writer(ctx, w)}
		cw, err = compress.NewWriter(g, opts.Compression, copts...)
		if err != nil {
			return err
		}
		out = cw
	}
	return promptly(ctx, func() error {
		if err := copySparse(ctx, f, st.Size(), out, opts.Meter); err != nil {
			if cw != nil {
				g.abandon(cw)
			}
			return fmt.Errorf("exporting %s: %w", image, err)
		}
		if sparse != nil {
			if err := sparse.finish(st.Size()); err != nil {
				return fmt.Errorf("exporting %s: %w", image, err)
			}
			return nil
		}
		if err := cw.Close(); err != nil {
			return fmt.Errorf("exporting %s: %w", image, err)
		}
		return nil
	})
}

// holeWriter is a writer that can skip over a hole.
type holeWriter interface {
	io.Writer
	skip(n int64) error
}

// copySparse copies size bytes of f to w, reading only data extents. Holes
// go to w.skip when w can, else as zeros.
func copySparse(ctx context.Context, f *os.File, size int64, w io.Writer, meter func(io.Reader) io.Reader) error {
	fd := int(f.Fd())
	var zeros []byte
	hole := func(n int64) error {
		if hw, ok := w.(holeWriter); ok {
			return hw.skip(n)
		}
		if zeros == nil {
			zeros = make([]byte, 1<<20)
		}
		for n > 0 {
			c := min(n, int64(len(zeros)))
			if _, err := w.Write(zeros[:c]); err != nil {
				return err
			}
			n -= c
		}
		return nil
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			data = size // only a hole remains
		} else if err != nil {
			data = off // no SEEK_DATA support: copy everything
		}
		if data > size {
			data = size
		}
		if data > off {
			if err := hole(data - off); err != nil {
				return err
			}
			off = data
			continue
		}
		end, err := unix.Seek(fd, off, unix.SEEK_HOLE)
		if err != nil || end > size {
			end = size
		}
		var r io.Reader = io.NewSectionReader(f, off, end-off)
		if meter != nil {
			r = meter(r)
		}
		n, err := io.CopyBuffer(onlyWriter{w}, r, buf)
		if err != nil {
			return err
		}
		if n != end-off {
			return fmt.Errorf("image shrank while read (at offset %d)", off+n)
		}
		off = end
	}
	return nil
}

// onlyWriter hides ReadFrom so that CopyBuffer uses our buffer.
type onlyWriter struct{ io.Writer }

// sparseFile writes to a regular file, seeking over holes.
type sparseFile struct {
	w     io.Writer
	fd    int
	start int64
}

// newSparseFile returns a sparse writer when w is a seekable regular file not
// opened for appending (an atomic output file, a redirected stdout), else nil.
func newSparseFile(w io.Writer) *sparseFile {
	x, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return nil
	}
	fd := int(x.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_APPEND != 0 {
		return nil
	}
	start, err := unix.Seek(fd, 0, io.SeekCurrent)
	if err != nil {
		return nil
	}
	return &sparseFile{w: w, fd: fd, start: start}
}

func (s *sparseFile) Write(p []byte) (int, error) { return s.w.Write(p) }

func (s *sparseFile) skip(n int64) error {
	_, err := unix.Seek(s.fd, n, io.SeekCurrent)
	return err
}

// finish sets the file length, so that a trailing hole exists.
func (s *sparseFile) finish(size int64) error {
	return unix.Ftruncate(s.fd, s.start+size)
}
