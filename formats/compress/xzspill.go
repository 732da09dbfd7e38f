package compress

// Spilling read-ahead to a file.
//
// To decode block N+1 on a second core while block N is being delivered,
// the xz reader must read past block N's compressed bytes, which arrive
// from a plain io.Reader (a download) in order. Held in memory, the
// compressed look-ahead of an "xz -T2" file is 10-25 MiB on top of the
// helper's 24 MiB output and the 10 MiB window, which breaks a 64 MiB bound
// and leaves the Go heap at its limit (the collector then runs without
// pause). With a spill directory, read-ahead blocks are copied to an
// unlinked file there instead and read back with ReadAt (the page cache
// keeps them; RSS does not count it). Ranges are hole-punched when their
// block is done, so the disk space held is about the compressed size of the
// blocks in flight.

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// xzSpillLimit bounds the compressed bytes held in the spill file.
const xzSpillLimit = 1 << 30

// spillFile is the file read-ahead blocks are copied to.
type spillFile struct {
	dir  string
	f    *os.File
	end  int64 // next write offset
	held int64 // bytes written and not yet released
	buf  []byte
	err  error // the file could not be created: read ahead in memory
}

// open creates the file on first use: unlinked from the start (O_TMPFILE),
// or created and removed at once where O_TMPFILE is not supported.
func (s *spillFile) open() error {
	if s.f != nil || s.err != nil {
		return s.err
	}
	fd, err := unix.Open(s.dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		s.f = os.NewFile(uintptr(fd), s.dir+"/(xz read-ahead)")
	} else {
		f, cerr := os.CreateTemp(s.dir, ".#berth-xz-")
		if cerr != nil {
			s.err = fmt.Errorf("xz read-ahead file in %s: %w", s.dir, cerr)
			return s.err
		}
		os.Remove(f.Name())
		s.f = f
	}
	s.buf = make([]byte, 256<<10)
	return nil
}

// store copies n bytes from in to the end of the file and returns their
// offset.
func (s *spillFile) store(in io.Reader, n int64) (int64, error) {
	off := s.end
	for rem := n; rem > 0; {
		b := s.buf[:min(rem, int64(len(s.buf)))]
		if _, err := io.ReadFull(in, b); err != nil {
			s.release(off, n-rem)
			return 0, noEOF(err)
		}
		if _, err := s.f.WriteAt(b, s.end); err != nil {
			s.release(off, n-rem)
			return 0, fmt.Errorf("xz read-ahead file: %w", err)
		}
		s.end += int64(len(b))
		s.held += int64(len(b))
		rem -= int64(len(b))
	}
	return off, nil
}

// release gives the disk space of [off, off+n) back. When nothing is held
// the file starts over from offset 0.
func (s *spillFile) release(off, n int64) {
	if n <= 0 {
		return
	}
	_ = unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	s.held -= n
	if s.held == 0 {
		s.end = 0
		_ = s.f.Truncate(0)
	}
}

func (s *spillFile) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// fileSource is a blockSource over a block stored in the spill file. It
// reads through a buffer of its own, so helpers can use it concurrently.
type fileSource struct {
	f     *os.File
	base  int64 // offset of the block's data in f
	size  int64 // bytes stored (data, padding, check)
	off   int64 // bytes consumed
	limit int64 // end of the LZMA2 data, or -1
	buf   []byte
	lo    int // buf[lo:hi] holds bytes from base+off on
	hi    int
}

func (s *fileSource) reset(f *os.File, base, size, limit int64) {
	if s.buf == nil {
		s.buf = make([]byte, 256<<10)
	}
	s.f, s.base, s.size, s.off, s.limit, s.lo, s.hi = f, base, size, 0, limit, 0, 0
}

func (s *fileSource) consumed() int64 { return s.off }
func (s *fileSource) unlimit()        { s.limit = -1 }

func (s *fileSource) next(n int) ([]byte, error) {
	if s.limit >= 0 && s.off+int64(n) > s.limit {
		return nil, errCompressedSize
	}
	if s.off+int64(n) > s.size {
		return nil, io.ErrUnexpectedEOF
	}
	if n > len(s.buf) {
		return nil, errors.New("xz: read-ahead request larger than the buffer")
	}
	if s.hi-s.lo < n {
		k := copy(s.buf, s.buf[s.lo:s.hi])
		s.lo, s.hi = 0, k
		want := min(int64(len(s.buf)-k), s.size-(s.off+int64(k)))
		m, err := s.f.ReadAt(s.buf[k:k+int(want)], s.base+s.off+int64(k))
		s.hi += m
		if s.hi < n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("xz read-ahead file: %w", err)
		}
	}
	b := s.buf[s.lo : s.lo+n]
	s.lo += n
	s.off += int64(n)
	return b, nil
}
