package compress

// Spilling read-ahead to a file.
//
// To decode block N+1 on another core while block N is being delivered,
// the xz reader must read past block N's compressed bytes, which arrive
// from a plain io.Reader (a download) in order, and must keep what it
// decodes ahead until the consumer wants it. Held in memory, that is the
// compressed look-ahead plus a whole decoded block per helper (24 MiB for
// "xz -T2 -6"), which within a 64 MiB bound leaves room for one block of
// look-ahead. With a spill directory both go to an unlinked file there
// instead and are read back with ReadAt (the page cache keeps them; RSS
// does not count it), and ranges are hole-punched once used. The first
// half of this file is that file; the second is spill mode, the way the
// reader schedules workers when it has one.

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

// reserve sets aside n bytes at the end of the file for a worker's output
// and returns their offset.
func (s *spillFile) reserve(n int64) int64 {
	off := s.end
	s.end += n
	s.held += n
	return off
}

// Spill mode.
//
// With a spill file, decoded output need not be held in memory either, so
// every block whose header records both sizes is decoded by a worker
// goroutine, streaming through a window of dictionary size + 2 MiB, into a
// reserved range of the spill file; the reading goroutine reads the output
// back in order as it is published and gives the space back. Workers never
// wait for the reader: as soon as one is free it gets the next block, so
// all cores decode all the time, and the reading goroutine (which also
// runs the consumer, e.g. tar extraction) shares them. Memory is the
// workers' windows, bounded by xzWindowBudget; disk is bounded by
// xzAheadLimit of output and xzSpillLimit of compressed data.

// xzAheadLimit bounds the uncompressed bytes of blocks handed to workers and
// not yet delivered.
const xzAheadLimit = 128 << 20

// collect gives the slots of finished workers back.
func (r *xzReader) collect() {
	for i := 0; i < len(r.running); {
		it := r.running[i]
		select {
		case <-it.done:
			r.idle = append(r.idle, it.w)
			r.running = append(r.running[:i], r.running[i+1:]...)
		default:
			i++
		}
	}
}

// feed hands the blocks after the ones already handed out to free workers,
// while the limits allow.
func (r *xzReader) feed() {
	if !r.spillMode {
		return
	}
	r.collect()
	for r.hasIdle() {
		it := r.nextUnassigned()
		if it == nil || !r.assign(it) {
			return
		}
	}
}

// nextUnassigned returns the first queued block not handed out, parsing
// the next header if every queued block is, or nil if there is none to
// hand out now (an error, the index, or a block whose data is being
// decoded from the input comes first).
func (r *xzReader) nextUnassigned() *xzItem {
	for _, it := range r.queue {
		if it.err != nil || it.index {
			return nil
		}
		if it.w == nil {
			return it
		}
	}
	if r.eof || r.unread != nil {
		return nil
	}
	it := r.parse()
	r.queue = append(r.queue, it)
	if it.err != nil || it.index {
		return nil
	}
	return it
}

// assign hands it to a worker if its sizes are known and the limits
// allow, reading its compressed data into the spill file first. A read
// error is left in it.err.
func (r *xzReader) assign(it *xzItem) bool {
	h := it.hdr
	if h.cSize < 0 || h.uSize < 0 || h.uSize > xzAheadLimit-r.ahead || !r.hasIdle() {
		return false
	}
	if !it.spilled {
		n := h.cSize + r.tailLen(h.cSize)
		if !r.canSpill(n) {
			return false
		}
		if err := r.readData(it, n, true); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				it.err = fmt.Errorf("xz: truncated stream in block at offset %d: %w", it.off, err)
			} else {
				it.err = fmt.Errorf("xz: block at offset %d: %w", it.off, err)
			}
			return false
		}
	}
	it.w, it.outSpilled = r.takeIdle(), true
	it.outOff = r.spill.reserve(h.uSize)
	it.notify = r.notify
	it.done = make(chan struct{})
	r.ahead += h.uSize
	r.running = append(r.running, it)
	go it.w.run(it, r.check, r.abort, nil, spillOutput(it, r.spill.f))
	return true
}

// spillOutput returns the emit function of a worker decoding it into the
// spill file: each piece is written to the block's range, then published.
func spillOutput(it *xzItem, f *os.File) func([]byte) error {
	var n int64
	return func(b []byte) error {
		if _, err := f.WriteAt(b, it.outOff+n); err != nil {
			return fmt.Errorf("xz read-ahead file: %w", err)
		}
		n += int64(len(b))
		it.written.Store(n)
		signal(it.notify)
		return nil
	}
}

// xzReleaseStep is how much delivered output is given back at once.
const xzReleaseStep = 4 << 20

// deliverSpilled makes the next published output of it available in
// r.curOut, waiting for its worker if needed, and finishes it at its end.
func (r *xzReader) deliverSpilled(it *xzItem) error {
	for {
		r.feed()
		finished := false
		select {
		case <-it.done:
			finished = true
		default:
		}
		if w := it.written.Load(); it.readPos < w {
			if r.rbuf == nil {
				r.rbuf = make([]byte, 512<<10)
			}
			b := r.rbuf[:min(w-it.readPos, int64(len(r.rbuf)))]
			if _, err := r.spill.f.ReadAt(b, it.outOff+it.readPos); err != nil {
				return fmt.Errorf("xz read-ahead file: %w", noEOF(err))
			}
			it.readPos += int64(len(b))
			if it.readPos-it.relPos >= xzReleaseStep {
				r.spill.release(it.outOff+it.relPos, it.readPos-it.relPos)
				it.relPos = it.readPos
			}
			r.curOut = b
			return nil
		}
		if !finished {
			<-r.notify
			continue
		}
		if it.werr != nil {
			return r.blockErr(it, it.werr)
		}
		r.spill.release(it.outOff+it.relPos, it.hdr.uSize-it.relPos)
		it.relPos = it.hdr.uSize
		r.ahead -= it.hdr.uSize
		r.finishItem(it, it.unpadded, it.hdr.uSize)
		return nil
	}
}
