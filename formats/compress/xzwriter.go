package compress

// The parallel xz writer.
//
// Input is cut into blocks of a fixed size. Each full block is compressed by
// its own goroutine (at most `concurrency` at a time) with a fresh
// lzma.Writer2, which starts with the dictionary reset an xz block needs,
// into memory. The caller's goroutine writes finished blocks in order, each
// with a block header that records both sizes (flags 0x40|0x80, like
// "xz -T"), block padding and a CRC64 of the uncompressed data; Close writes
// the index and stream footer. No goroutine outlives a block, so a writer
// that is abandoned leaks nothing, and Close always waits for the
// compressing goroutines.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync/atomic"

	"github.com/ulikunitz/xz/lzma"
)

// xzLevel is what a compression level means for the xz writer. ulikunitz's
// encoder needs about 5 bytes per dictionary byte plus a hash table of up to
// 8 MiB, and allocates all of it for every block; the dictionary is
// therefore kept small and levels mostly trade memory for ratio (a larger
// dictionary gains little on file-system trees: 29.0% with 512 KiB, 28.3%
// with 8 MiB). See NewWriter for measurements.
type xzLevel struct {
	dictCap   int
	blockSize int
}

var xzLevels = [10]xzLevel{
	0: {256 << 10, 2 << 20},
	1: {256 << 10, 2 << 20},
	2: {256 << 10, 2 << 20},
	3: {512 << 10, 2 << 20},
	4: {512 << 10, 2 << 20},
	5: {512 << 10, 2 << 20},
	6: {512 << 10, 2 << 20},
	7: {1 << 20, 4 << 20},
	8: {1 << 20, 4 << 20},
	9: {2 << 20, 8 << 20},
}

const xzDefaultLevel = 6

// xzPiece is how much input a compressing goroutine feeds the encoder
// between checks for an abort.
const xzPiece = 256 << 10

var (
	errXzWriterClosed = errors.New("xz: write after Close")
	errXzAborted      = errors.New("aborted")
)

type xzWriter struct {
	w       io.Writer
	lv      xzLevel
	workers int
	abort   *atomic.Bool

	cur     []byte // block being filled
	queue   []*xzWBlock
	freeIn  [][]byte
	freeOut []*bytes.Buffer

	started bool
	index   []byte // index records so far (VLI pairs)
	nBlocks uint64
	scratch []byte // block header, padding and check
	err     error
	closed  bool
}

type xzWBlock struct {
	in       []byte
	out      *bytes.Buffer
	dictByte byte
	crc      uint64
	err      error
	done     chan struct{}
}

func newXzWriter(w io.Writer, c writerConfig) (*xzWriter, error) {
	level := xzDefaultLevel
	if c.levelSet {
		level = c.level
	}
	if level < 0 || level > 9 {
		return nil, fmt.Errorf("xz: level %d out of range 0-9", c.level)
	}
	return newXzWriterLevel(w, xzLevels[level], c.concurrency), nil
}

func newXzWriterLevel(w io.Writer, lv xzLevel, workers int) *xzWriter {
	return &xzWriter{w: w, lv: lv, workers: max(workers, 1), abort: new(atomic.Bool)}
}

func (x *xzWriter) Write(p []byte) (int, error) {
	if x.closed {
		return 0, errXzWriterClosed
	}
	if x.err != nil {
		return 0, x.err
	}
	n := 0
	for len(p) > 0 {
		if x.cur == nil {
			x.cur = x.getIn()
		}
		k := copy(x.cur[len(x.cur):cap(x.cur)], p)
		x.cur = x.cur[:len(x.cur)+k]
		p = p[k:]
		n += k
		if len(x.cur) == cap(x.cur) {
			if err := x.submit(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// submit hands the current block to a new goroutine, first writing out
// finished blocks until fewer than `workers` are in flight.
func (x *xzWriter) submit() error {
	for len(x.queue) >= x.workers {
		if err := x.flushOne(); err != nil {
			return err
		}
	}
	b := &xzWBlock{in: x.cur, out: x.getOut(), done: make(chan struct{})}
	x.cur = nil
	x.queue = append(x.queue, b)
	go b.compress(x.lv.dictCap, x.abort)
	return nil
}

// compress is the body of a compressing goroutine.
func (b *xzWBlock) compress(dictCap int, abort *atomic.Bool) {
	defer close(b.done)
	// A block never needs a dictionary larger than itself.
	dc := min(dictCap, max(len(b.in), lzma.MinDictCap))
	b.dictByte = lzma.EncodeDictCap(int64(dc))
	lw, err := lzma.Writer2Config{DictCap: dc}.NewWriter2(b.out)
	if err != nil {
		b.err = err
		return
	}
	h := &xzCRC64{}
	for p := b.in; len(p) > 0; {
		if abort.Load() {
			b.err = errXzAborted
			return
		}
		k := min(len(p), xzPiece)
		h.Write(p[:k])
		if _, err := lw.Write(p[:k]); err != nil {
			b.err = err
			return
		}
		p = p[k:]
	}
	// lzma.Writer2.Close drops Flush errors; flush first to see them.
	if err := lw.Flush(); err != nil {
		b.err = err
		return
	}
	if err := lw.Close(); err != nil {
		b.err = err
		return
	}
	b.crc = h.Sum64()
}

// flushOne waits for the oldest block and writes it out: block header,
// compressed data, block padding, CRC64.
func (x *xzWriter) flushOne() error {
	b := x.queue[0]
	<-b.done
	x.queue[0] = nil
	x.queue = x.queue[1:]
	defer x.recycle(b)
	n := x.nBlocks + 1
	if b.err != nil {
		return x.fail(fmt.Errorf("xz: compressing block %d: %w", n, b.err))
	}
	if err := x.start(); err != nil {
		return err
	}
	cSize, uSize := int64(b.out.Len()), int64(len(b.in))
	hdr := appendXzBlockHeader(x.scratch[:0], cSize, uSize, b.dictByte)
	hdrLen := len(hdr)
	if _, err := x.w.Write(hdr); err != nil {
		return x.fail(fmt.Errorf("xz: writing block %d: %w", n, err))
	}
	if _, err := x.w.Write(b.out.Bytes()); err != nil {
		return x.fail(fmt.Errorf("xz: writing block %d: %w", n, err))
	}
	tail := hdr[:0]
	for i := cSize; i%4 != 0; i++ {
		tail = append(tail, 0)
	}
	tail = binary.LittleEndian.AppendUint64(tail, b.crc)
	if _, err := x.w.Write(tail); err != nil {
		return x.fail(fmt.Errorf("xz: writing block %d: %w", n, err))
	}
	x.scratch = tail
	x.index = appendVLI(x.index, uint64(int64(hdrLen)+cSize+8))
	x.index = appendVLI(x.index, uint64(uSize))
	x.nBlocks = n
	return nil
}

func (x *xzWriter) fail(err error) error {
	if x.err == nil {
		x.err = err
	}
	return x.err
}

func (x *xzWriter) start() error {
	if x.started {
		return nil
	}
	x.started = true
	if _, err := x.w.Write(appendXzStreamHeader(nil, xzCheckCRC64)); err != nil {
		return x.fail(fmt.Errorf("xz: writing stream header: %w", err))
	}
	return nil
}

// Close writes the remaining blocks, the index and the stream footer. It
// does not close the underlying writer.
func (x *xzWriter) Close() error {
	if x.closed {
		return x.err
	}
	x.closed = true
	if x.err == nil && len(x.cur) > 0 {
		x.submit()
	}
	for len(x.queue) > 0 {
		if x.err != nil {
			x.abort.Store(true)
			for _, b := range x.queue {
				<-b.done
			}
			x.queue = nil
			break
		}
		x.flushOne()
	}
	x.cur, x.freeIn, x.freeOut = nil, nil, nil
	if x.err != nil {
		return x.err
	}
	if err := x.start(); err != nil {
		return err
	}
	idx := []byte{0}
	idx = appendVLI(idx, x.nBlocks)
	idx = append(idx, x.index...)
	for len(idx)%4 != 0 {
		idx = append(idx, 0)
	}
	idx = binary.LittleEndian.AppendUint32(idx, crc32.ChecksumIEEE(idx))
	idx = appendXzFooter(idx, xzCheckCRC64, len(idx))
	if _, err := x.w.Write(idx); err != nil {
		return x.fail(fmt.Errorf("xz: writing index: %w", err))
	}
	return nil
}

func (x *xzWriter) getIn() []byte {
	if n := len(x.freeIn); n > 0 {
		b := x.freeIn[n-1]
		x.freeIn = x.freeIn[:n-1]
		return b[:0]
	}
	return make([]byte, 0, x.lv.blockSize)
}

func (x *xzWriter) getOut() *bytes.Buffer {
	if n := len(x.freeOut); n > 0 {
		b := x.freeOut[n-1]
		x.freeOut = x.freeOut[:n-1]
		b.Reset()
		return b
	}
	return new(bytes.Buffer)
}

func (x *xzWriter) recycle(b *xzWBlock) {
	if x.closed {
		return
	}
	x.freeIn = append(x.freeIn, b.in)
	x.freeOut = append(x.freeOut, b.out)
	b.in, b.out = nil, nil
}
