package compress

// The parallel xz reader.
//
// The input is a plain io.Reader (an HTTP body), so blocks can only be
// found in order. The reading goroutine (the caller of Read) parses block
// headers. When a block header records both sizes, the block's compressed
// bytes can be skipped over without decoding them: the reader then reads
// them into memory and hands the block to a helper goroutine, which decodes
// it into a buffer of exactly its uncompressed size (that buffer doubles as
// the LZMA2 dictionary). Blocks are handed out until the helpers are busy
// or the look-ahead budget is spent; the reading goroutine decodes the
// block it is currently delivering itself, streaming, through a window of
// dictionary size + 2 MiB, so the block being consumed is never buffered
// whole. Output is delivered strictly in order. Blocks without sizes in
// their headers (single-threaded xz) are decoded by the reading goroutine
// straight from the input.
//
// With a spill file (spill mode, xzspill.go) helpers decode streaming into
// the file instead of into memory, so they never wait for the consumer; the
// reading goroutine then only delivers, and decodes itself just the blocks
// that cannot be handed out.
//
// Memory: the streaming window (10 MiB for "xz -6"), plus at most
// xzReadBudget bytes of look-ahead (decoded helper output, and compressed
// blocks unless they are spilled to a file: see xzspill.go). For "xz -T2 -6"
// files (24 MiB blocks, ~6 MiB compressed) that is one helper block at a
// time, i.e. two blocks decoding in parallel.
//
// Every block's check (CRC32, CRC64 or SHA-256), padding and sizes are
// verified, and the records of all blocks are compared with the stream's
// index and footer, so truncation and tampering are errors.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"sync/atomic"
)

const (
	// xzReadBudget bounds the bytes held by look-ahead: compressed blocks
	// read ahead and the decoded output of helper goroutines.
	xzReadBudget = 40 << 20
	// xzWindowBudget bounds the decoding windows of spill-mode workers
	// (dictionary + 2 MiB each; at least one worker): three for "xz -6",
	// which with the goroutine writing the tree keeps four cores busy.
	xzWindowBudget = 32 << 20
	// xzMaxWindow refuses streams whose decoding would need a larger
	// dictionary (xz -9 needs 64 MiB).
	xzMaxWindow = 128 << 20
)

var errXzClosed = errors.New("xz: reader closed")

type xzReader struct {
	in      *input
	idle    []*xzWorker // helper slots not in use
	spare   int         // helper slots not created yet
	workers int
	abort   *atomic.Bool
	running []*xzItem // items handed to helpers and not yet finished

	check  byte // check ID of the current stream
	recs   xzIndexHash
	blocks int64 // blocks finished in the current stream
	parsed int64 // block headers read in the current stream
	eof    bool  // the last stream has been read

	queue  []*xzItem // items parsed ahead of the current one
	cur    *xzItem
	curOut []byte
	held   int64 // look-ahead bytes held
	own    xzBlockDecoder
	chunks [][]byte // free xzChunk-sized buffers for compressed data
	outs   bufPool  // helpers' output buffers
	hdrBuf [1024]byte
	err    error

	maxDict int // largest dictionary size seen in a block header

	spill *spillFile // where read-ahead blocks go; nil: memory

	// Spill mode (see xzspill.go): workers decode every block that has
	// sizes into the spill file and the reading goroutine delivers it.
	spillMode bool
	notify    chan struct{} // a worker made progress or finished
	ahead     int64         // uncompressed bytes of blocks handed to workers, not yet delivered
	unread    *xzItem       // the block whose header was parsed last, if its data is still in the input
	slots     int           // worker slots created
	rbuf      []byte        // delivery buffer for spilled output
}

// xzItem is a block (or the index) found in the input.
type xzItem struct {
	index bool
	err   error
	hdr   xzBlockHeader
	off   int64    // offset of the block header
	data  [][]byte // compressed data, padding and check, in pool chunks
	size  int64    // bytes in data (or in the spill file)
	held  int64    // bytes of memory held for the item

	spilled  bool // the compressed data is in the spill file
	spillOff int64
	spillF   *os.File

	// Spill mode: the worker writes the block's output to
	// [outOff, outOff+uSize) of the spill file and publishes how much it
	// has written; the reading goroutine delivers and releases it.
	outSpilled bool
	outOff     int64
	written    atomic.Int64
	readPos    int64
	relPos     int64
	notify     chan struct{}

	w         *xzWorker
	done      chan struct{}
	out       []byte
	outBuf    []byte
	delivered bool
	werr      error
	unpadded  int64
}

// xzWorker is a helper slot: the decoder state one helper goroutine uses.
type xzWorker struct {
	dec xzBlockDecoder
}

func newXzReader(in *input, procs int, spillDir string) (*xzReader, error) {
	r := &xzReader{in: in, abort: new(atomic.Bool)}
	if spillDir != "" {
		r.spill = &spillFile{dir: spillDir}
	}
	r.workers = max(procs-1, 0)
	if r.spill != nil && procs >= 2 && r.spill.open() == nil {
		r.spillMode = true
		r.workers = procs
		r.notify = make(chan struct{}, 1)
	}
	r.spare = r.workers
	r.outs.max = r.workers
	var h [xzHeaderLen]byte
	if _, err := io.ReadFull(in.br, h[:]); err != nil {
		return nil, truncated("xz", err)
	}
	if err := r.startStream(h[:]); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *xzReader) startStream(h []byte) error {
	check, err := parseXzStreamHeader(h)
	if err != nil {
		return err
	}
	if _, err := newXzCheck(check); err != nil {
		return err
	}
	r.check = check
	r.recs.reset()
	r.blocks, r.parsed = 0, 0
	return nil
}

func (r *xzReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && r.err == nil {
		if len(r.curOut) == 0 {
			r.err = r.advance()
			continue
		}
		k := copy(p[n:], r.curOut)
		r.curOut = r.curOut[k:]
		n += k
	}
	if n > 0 {
		return n, nil
	}
	return 0, r.err
}

// advance makes more output available in r.curOut, moving to the next
// block when the current one is done. It returns io.EOF at the end.
func (r *xzReader) advance() error {
	if r.cur == nil {
		it, err := r.nextBlock()
		if err != nil {
			return err
		}
		r.cur = it
	}
	it := r.cur
	if it.outSpilled {
		return r.deliverSpilled(it)
	}
	if it.w != nil {
		if !it.delivered {
			<-it.done
			r.forget(it)
			if it.werr != nil {
				return r.blockErr(it, it.werr)
			}
			it.delivered = true
			r.curOut = it.out
			// The helper has checked the block: its compressed data
			// can go back before the output is consumed.
			r.recycleData(it)
			return nil
		}
		r.idle = append(r.idle, it.w)
		r.outs.put(it.outBuf)
		r.finishItem(it, it.unpadded, it.hdr.uSize)
		return nil
	}
	r.feed()
	out, err := r.own.step()
	if err == io.EOF {
		unpadded, err := r.own.finish()
		if err != nil {
			return r.blockErr(it, err)
		}
		r.finishItem(it, unpadded, r.own.uDone)
		return nil
	}
	if err != nil {
		return r.blockErr(it, err)
	}
	r.curOut = out
	return nil
}

func (r *xzReader) blockErr(it *xzItem, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("xz: truncated stream in block %d at offset %d: %w", r.blocks+1, it.off, err)
	}
	return fmt.Errorf("xz: block %d at offset %d: %w", r.blocks+1, it.off, err)
}

// finishItem records a fully delivered block.
func (r *xzReader) finishItem(it *xzItem, unpadded, uncompressed int64) {
	if r.unread == it {
		r.unread = nil
	}
	r.recs.add(uint64(unpadded), uint64(uncompressed))
	r.blocks++
	r.recycleData(it)
	r.held -= it.held
	it.held = 0
	it.out, it.outBuf = nil, nil
	r.cur = nil
}

func (r *xzReader) forget(it *xzItem) {
	for i, x := range r.running {
		if x == it {
			r.running = append(r.running[:i], r.running[i+1:]...)
			return
		}
	}
}

// nextBlock returns the next block to deliver, handling indexes, stream
// footers, padding and further streams on the way.
func (r *xzReader) nextBlock() (*xzItem, error) {
	for {
		var it *xzItem
		switch {
		case len(r.queue) > 0:
			it = r.queue[0]
			r.queue[0] = nil
			r.queue = r.queue[1:]
		case r.eof:
			return nil, io.EOF
		default:
			it = r.parse()
		}
		if it.err != nil {
			return nil, it.err
		}
		if it.index {
			if err := r.endStream(); err != nil {
				return nil, err
			}
			continue
		}
		if r.spillMode && it.w == nil {
			r.collect()
			r.assign(it)
			if it.err != nil {
				return nil, it.err
			}
		}
		if it.w == nil {
			if err := r.startOwn(it); err != nil {
				return nil, r.blockErr(it, err)
			}
		}
		return it, nil
	}
}

// parse reads the next block header or the index indicator from the
// input. Errors are returned inside the item so that they surface in
// order.
func (r *xzReader) parse() *xzItem {
	off := r.in.offset()
	b, err := r.in.br.ReadByte()
	if err != nil {
		return &xzItem{err: fmt.Errorf("xz: truncated stream: expected a block header or the index at offset %d: %w", off, noEOF(err))}
	}
	if b == 0 {
		return &xzItem{index: true, off: off}
	}
	size := (int(b) + 1) * 4
	h := r.hdrBuf[:size]
	h[0] = b
	if _, err := io.ReadFull(r.in.br, h[1:]); err != nil {
		return &xzItem{err: fmt.Errorf("xz: truncated stream: block header at offset %d: %w", off, noEOF(err))}
	}
	r.parsed++
	bh, err := parseXzBlockHeader(h)
	if err != nil {
		return &xzItem{err: fmt.Errorf("xz: block %d at offset %d: %w", r.parsed, off, err)}
	}
	r.maxDict = max(r.maxDict, bh.dictSize)
	it := &xzItem{hdr: bh, off: off}
	r.unread = it
	return it
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// tailLen returns the length of the block padding and check that follow
// cSize bytes of compressed data.
func (r *xzReader) tailLen(cSize int64) int64 {
	return (4-cSize%4)%4 + int64(xzCheckSize(r.check))
}

// startOwn prepares the reading goroutine to decode block it. If helpers
// are idle and the block's compressed size is known, the block is read
// into memory so that the blocks after it can be handed out.
func (r *xzReader) startOwn(it *xzItem) error {
	h := it.hdr
	if it.data == nil && !it.spilled && (r.spillMode || r.hasIdle()) && h.cSize > 0 {
		n := h.cSize + r.tailLen(h.cSize)
		if spill := r.canSpill(n); spill || (!r.spillMode && r.held+n <= xzReadBudget/2) {
			if err := r.readData(it, n, spill); err != nil {
				return err
			}
			if !r.spillMode {
				r.lookAhead()
			}
		}
	}
	src := r.own.readAhead(it, r.chunkDone)
	if src == nil {
		r.own.io = ioSource{r: r.in, limit: h.cSize, scratch: r.own.io.scratch}
		src = &r.own.io
	}
	return r.own.begin(h, r.check, src, nil)
}

// lookAhead parses the blocks after the current one and hands them to idle
// helpers while the budget allows. It stops at the first block it cannot
// hand out (that block stays queued with its data unread) and at the index.
func (r *xzReader) lookAhead() {
	for r.hasIdle() {
		it := r.parse()
		r.queue = append(r.queue, it)
		if it.err != nil || it.index {
			return
		}
		h := it.hdr
		if h.cSize < 0 || h.uSize < 0 {
			return
		}
		n := h.cSize + r.tailLen(h.cSize)
		spill := r.canSpill(n)
		mem := n
		if spill {
			mem = 0
		}
		if h.uSize > xzReadBudget || r.held+mem+h.uSize > xzReadBudget {
			return
		}
		if err := r.readData(it, n, spill); err != nil {
			it.err = fmt.Errorf("xz: truncated stream in block %d at offset %d: %w", r.parsed, it.off, err)
			return
		}
		w := r.takeIdle()
		it.w = w
		it.outBuf = r.outs.get(h.uSize)
		it.held += h.uSize
		r.held += h.uSize
		it.done = make(chan struct{})
		r.running = append(r.running, it)
		go w.run(it, r.check, r.abort, it.outBuf[:h.uSize], nil)
	}
}

func (r *xzReader) hasIdle() bool {
	if len(r.idle) > 0 {
		return true
	}
	if r.spare == 0 {
		return false
	}
	// A spill-mode worker holds a streaming window: create slots while
	// their windows fit the budget.
	win := int64(r.maxDict) + lzma2MaxChunkU
	return !r.spillMode || r.slots == 0 || int64(r.slots+1)*win <= xzWindowBudget
}

// takeIdle returns an idle helper slot; slots (each holds a ~100 KiB
// decoder) are created only when first needed.
func (r *xzReader) takeIdle() *xzWorker {
	if n := len(r.idle); n > 0 {
		w := r.idle[n-1]
		r.idle = r.idle[:n-1]
		return w
	}
	r.spare--
	r.slots++
	return new(xzWorker)
}

// run decodes a block: into out, a buffer of exactly its uncompressed
// size, or, if out is nil, streaming, giving each piece of output to emit.
// It is the body of a helper goroutine and touches nothing but the item,
// the worker and what emit touches.
func (w *xzWorker) run(it *xzItem, check byte, abort *atomic.Bool, out []byte, emit func([]byte) error) {
	defer func() {
		close(it.done)
		signal(it.notify)
	}()
	d := &w.dec
	if err := d.begin(it.hdr, check, d.readAhead(it, nil), out); err != nil {
		it.werr = err
		return
	}
	for {
		if abort.Load() {
			it.werr = errXzClosed
			return
		}
		b, err := d.step()
		if err == io.EOF {
			break
		}
		if err == nil && emit != nil {
			err = emit(b)
		}
		if err != nil {
			it.werr = err
			return
		}
	}
	it.unpadded, it.werr = d.finish()
	it.out = out
}

// signal wakes whoever waits on c (nil: nobody) without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// endStream reads the index (its indicator byte already consumed), checks
// it against the blocks delivered, reads the stream footer, skips stream
// padding and starts the next stream if there is one.
func (r *xzReader) endStream() error {
	start := r.in.offset() - 1
	ir := &indexReader{br: r.in, crc: crc32.NewIEEE(), n: 1}
	ir.crc.Write([]byte{0})
	count, err := ir.vli()
	if err != nil {
		return fmt.Errorf("xz: index at offset %d: %w", start, err)
	}
	if count != uint64(r.blocks) {
		return fmt.Errorf("xz: index at offset %d lists %d blocks, the stream has %d", start, count, r.blocks)
	}
	var idx xzIndexHash
	idx.reset()
	for i := uint64(0); i < count; i++ {
		unpadded, err := ir.vli()
		if err != nil {
			return fmt.Errorf("xz: index at offset %d: %w", start, err)
		}
		uncompressed, err := ir.vli()
		if err != nil {
			return fmt.Errorf("xz: index at offset %d: %w", start, err)
		}
		idx.add(unpadded, uncompressed)
	}
	for ir.n%4 != 0 {
		b, err := ir.byte()
		if err != nil {
			return fmt.Errorf("xz: index at offset %d: %w", start, err)
		}
		if b != 0 {
			return fmt.Errorf("xz: index at offset %d: non-zero padding", start)
		}
	}
	var tail [4 + xzFooterLen]byte
	if _, err := io.ReadFull(r.in.br, tail[:]); err != nil {
		return fmt.Errorf("xz: truncated stream: index CRC32 and stream footer: %w", noEOF(err))
	}
	if binary.LittleEndian.Uint32(tail[:4]) != ir.crc.Sum32() {
		return fmt.Errorf("xz: index at offset %d: CRC32 mismatch", start)
	}
	if !idx.equal(&r.recs) {
		return fmt.Errorf("xz: index at offset %d does not match the blocks of the stream", start)
	}
	indexLen, check, err := parseXzFooter(tail[4:])
	if err != nil {
		return err
	}
	if indexLen != ir.n+4 {
		return fmt.Errorf("xz: stream footer records an index of %d bytes, the index has %d", indexLen, ir.n+4)
	}
	if check != r.check {
		return errors.New("xz: stream footer flags differ from the stream header")
	}

	// Stream padding (multiples of four zero bytes), then EOF or another
	// stream.
	for {
		off := r.in.offset()
		b, err := r.in.br.Peek(4)
		if len(b) == 0 && err == io.EOF {
			r.eof = true
			return nil
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("xz: %w", err)
		}
		if len(b) == 4 && b[0]|b[1]|b[2]|b[3] == 0 {
			r.in.br.Discard(4)
			continue
		}
		h, _ := r.in.br.Peek(xzHeaderLen)
		if len(h) < len(magicXz) || string(h[:len(magicXz)]) != string(magicXz) {
			return fmt.Errorf("xz: trailing garbage after stream at offset %d", off)
		}
		if len(h) < xzHeaderLen {
			return fmt.Errorf("xz: truncated stream: stream header at offset %d: %w", off, io.ErrUnexpectedEOF)
		}
		var hdr [xzHeaderLen]byte
		copy(hdr[:], h)
		r.in.br.Discard(xzHeaderLen)
		if err := r.startStream(hdr[:]); err != nil {
			return fmt.Errorf("%w (stream at offset %d)", err, off)
		}
		return nil
	}
}

// indexReader reads index bytes, hashing and counting them.
type indexReader struct {
	br  *input
	crc hash.Hash32
	n   int64
	one [1]byte
}

func (x *indexReader) byte() (byte, error) {
	b, err := x.br.br.ReadByte()
	if err != nil {
		return 0, fmt.Errorf("truncated stream: %w", noEOF(err))
	}
	x.one[0] = b
	x.crc.Write(x.one[:])
	x.n++
	return b, nil
}

func (x *indexReader) vli() (uint64, error) {
	var buf [9]byte
	for i := range buf {
		b, err := x.byte()
		if err != nil {
			return 0, err
		}
		buf[i] = b
		if b < 0x80 {
			v, _, err := decodeVLI(buf[:i+1])
			return v, err
		}
	}
	return 0, errVLI
}

func (r *xzReader) Close() error {
	r.abort.Store(true)
	for _, it := range r.running {
		<-it.done
	}
	r.running = nil
	if r.err == nil || r.err == io.EOF {
		r.err = errXzClosed
	}
	r.queue, r.cur, r.curOut = nil, nil, nil
	r.chunks, r.outs = nil, bufPool{}
	if r.spill != nil {
		r.spill.close()
	}
	return nil
}

// xzChunk is the unit in which compressed blocks are held in memory. Fixed
// size buffers are reused exactly, whatever the block sizes, so reading
// ahead creates no garbage (garbage is what makes a Go heap grow to twice
// its live size).
const xzChunk = 1 << 20

// canSpill reports whether n bytes of read-ahead go to the spill file.
func (r *xzReader) canSpill(n int64) bool {
	return r.spill != nil && r.spill.open() == nil && r.spill.held+n <= xzSpillLimit
}

// readData reads n bytes of compressed block data (with padding and check)
// for it into the spill file or into chunks, and accounts for the memory.
func (r *xzReader) readData(it *xzItem, n int64, spill bool) error {
	if spill {
		off, err := r.spill.store(r.in.br, n)
		if err != nil {
			return err
		}
		it.spilled, it.spillOff, it.spillF, it.size = true, off, r.spill.f, n
		if r.unread == it {
			r.unread = nil
		}
		return nil
	}
	for rem := n; rem > 0; {
		var c []byte
		if k := len(r.chunks); k > 0 {
			c = r.chunks[k-1]
			r.chunks = r.chunks[:k-1]
		} else if rem >= xzChunk/4 {
			c = make([]byte, xzChunk)
		} else {
			c = make([]byte, rem) // small blocks: not worth a pooled chunk
		}
		c = c[:min(rem, xzChunk)]
		it.data = append(it.data, c)
		it.held += int64(len(c))
		r.held += int64(len(c))
		if _, err := io.ReadFull(r.in.br, c); err != nil {
			r.recycleData(it)
			return noEOF(err)
		}
		rem -= int64(len(c))
	}
	it.size = n
	if r.unread == it {
		r.unread = nil
	}
	return nil
}

// recycleData releases it's compressed data: spill file range, or chunks
// (full-size ones go back to the pool).
func (r *xzReader) recycleData(it *xzItem) {
	if it.spilled {
		r.spill.release(it.spillOff, it.size)
		it.spilled = false
		return
	}
	var n int64
	for _, c := range it.data {
		n += int64(len(c))
		r.putChunk(c)
	}
	it.held -= n
	r.held -= n
	it.data = nil
}

// xzPoolChunks is how many free chunks the pool keeps. Blocks are read
// ahead whole, so a pool that kept every chunk ever used would hold the
// largest pair of compressed blocks seen, for the whole run; chunks beyond
// this are left to the garbage collector.
const xzPoolChunks = 4

func (r *xzReader) putChunk(c []byte) {
	if cap(c) == xzChunk && len(r.chunks) < xzPoolChunks {
		r.chunks = append(r.chunks, c[:xzChunk])
	}
}

// chunkDone is called by the reading goroutine's memSource for each chunk
// of the current block it has read past: the chunk is released at once
// rather than when the block ends.
func (r *xzReader) chunkDone(c []byte) {
	r.held -= int64(len(c))
	r.cur.held -= int64(len(c))
	r.putChunk(c)
}

// bufPool recycles the helpers' output buffers. A pool never
// owns more than max buffers (those in use plus the free ones): when no free
// buffer is large enough, one is dropped before a larger one is allocated,
// so the memory a pool holds is bounded by max times the largest request.
type bufPool struct {
	free  [][]byte
	owned int
	max   int
}

// get returns a buffer of length n, reusing the smallest free one that is
// large enough. New buffers are rounded up (to 1 MiB, or 64 KiB for small
// ones) so that blocks of similar size can share them.
func (p *bufPool) get(n int64) []byte {
	best := -1
	for i, b := range p.free {
		if int64(cap(b)) >= n && (best < 0 || cap(b) < cap(p.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		b := p.free[best]
		p.free = append(p.free[:best], p.free[best+1:]...)
		return b[:n]
	}
	if p.owned >= p.max && len(p.free) > 0 {
		p.free = p.free[1:]
		p.owned--
	}
	p.owned++
	round := int64(1 << 20)
	if n < round {
		round = 64 << 10
	}
	return make([]byte, n, (n+round-1)&^(round-1))
}

func (p *bufPool) put(b []byte) {
	if cap(b) > 0 {
		p.free = append(p.free, b)
	}
}

// blockSource supplies a block's LZMA2 data and then its padding and check.
// While limited, it refuses to read past the compressed size in the block
// header (-1: no size); unlimit lifts that for the padding and check.
type blockSource interface {
	chunkSource
	consumed() int64
	unlimit()
}

// memSource is a blockSource over a block read into memory (in chunks).
type memSource struct {
	chunks  [][]byte
	size    int64
	off     int64
	limit   int64        // end of the LZMA2 data, or -1
	scratch []byte       // for reads that straddle two chunks
	done    func([]byte) // if set, gets each chunk read past (and owns it)
	freed   int          // chunks handed to done
}

var errCompressedSize = errors.New("LZMA2 data runs past the compressed size in the block header")

func (m *memSource) next(n int) ([]byte, error) {
	end := m.off + int64(n)
	if m.limit >= 0 && end > m.limit {
		return nil, errCompressedSize
	}
	if end > m.size {
		return nil, io.ErrUnexpectedEOF
	}
	i, o := m.off/xzChunk, int(m.off%xzChunk)
	m.off = end
	for ; m.done != nil && int64(m.freed) < i; m.freed++ {
		m.done(m.chunks[m.freed])
		m.chunks[m.freed] = nil
	}
	if o+n <= xzChunk {
		return m.chunks[i][o : o+n], nil
	}
	if cap(m.scratch) < n {
		m.scratch = make([]byte, max(n, lzma2MaxChunkC))
	}
	b := m.scratch[:n]
	k := copy(b, m.chunks[i][o:])
	copy(b[k:], m.chunks[i+1])
	return b, nil
}

func (m *memSource) consumed() int64 { return m.off }
func (m *memSource) unlimit()        { m.limit = -1 }

// ioSource is a blockSource reading straight from the input.
type ioSource struct {
	r       *input
	n       int64
	limit   int64
	scratch []byte
}

func (s *ioSource) consumed() int64 { return s.n }
func (s *ioSource) unlimit()        { s.limit = -1 }

func (s *ioSource) next(n int) ([]byte, error) {
	if s.limit >= 0 && s.n+int64(n) > s.limit {
		return nil, errCompressedSize
	}
	if cap(s.scratch) < n {
		s.scratch = make([]byte, max(n, lzma2MaxChunkC))
	}
	b := s.scratch[:n]
	k, err := io.ReadFull(s.r.br, b)
	s.n += int64(k)
	if err != nil {
		return nil, noEOF(err)
	}
	return b, nil
}

// xzBlockDecoder decodes one block at a time, either into a fixed buffer
// of the block's size (flat) or through a sliding window (streaming).
type xzBlockDecoder struct {
	lz2     lzma2Decoder
	win     lzmaWindow
	flat    bool
	maxWin  int
	hdr     xzBlockHeader
	src     blockSource
	checkID byte
	check   hash.Hash
	uDone   int64
	mem     memSource  // reused for blocks decoded from memory
	file    fileSource // reused for blocks decoded from the spill file
	io      ioSource   // reused for blocks decoded from the input
}

// readAhead returns a source over it's compressed data read ahead (into
// the spill file or into memory chunks, which done, if set, gets as they
// are read past), or nil if it was not read ahead.
func (d *xzBlockDecoder) readAhead(it *xzItem, done func([]byte)) blockSource {
	switch {
	case it.spilled:
		d.file.reset(it.spillF, it.spillOff, it.size, it.hdr.cSize)
		return &d.file
	case it.data != nil:
		d.mem = memSource{chunks: it.data, size: it.size, limit: it.hdr.cSize, scratch: d.mem.scratch, done: done}
		return &d.mem
	}
	return nil
}

// begin starts decoding a block. out, if not nil, is the flat output
// buffer of exactly the block's uncompressed size.
func (d *xzBlockDecoder) begin(h xzBlockHeader, checkID byte, src blockSource, out []byte) error {
	d.hdr = h
	d.src = src
	d.uDone = 0
	d.lz2.reset()
	if d.check == nil || d.checkID != checkID {
		c, err := newXzCheck(checkID)
		if err != nil {
			return err
		}
		d.check, d.checkID = c, checkID
	}
	if d.check != nil {
		d.check.Reset()
	}
	if h.dictSize <= 0 {
		return errors.New("LZMA2 block without dictionary size")
	}
	if out != nil {
		d.flat = true
		d.win = lzmaWindow{buf: out, dictSize: h.dictSize}
		d.maxWin = len(out)
		return nil
	}
	d.flat = false
	eff := int64(h.dictSize)
	if h.uSize >= 0 && h.uSize < eff {
		eff = h.uSize
	}
	if eff > xzMaxWindow {
		return fmt.Errorf("dictionary of %d MiB exceeds the %d MiB limit", eff>>20, xzMaxWindow>>20)
	}
	d.maxWin = h.dictSize + lzma2MaxChunkU
	if h.uSize >= 0 && h.uSize <= int64(d.maxWin) {
		d.maxWin = int(h.uSize)
	}
	d.win.pos, d.win.start, d.win.dictSize = 0, 0, h.dictSize
	return nil
}

var errBlockTooBig = errors.New("block is larger than the uncompressed size in its header")

// step decodes the next LZMA2 chunk and returns its output, which stays
// valid until the next call. It returns io.EOF at the end of the block's
// LZMA2 data.
func (d *xzBlockDecoder) step() ([]byte, error) {
	ch, err := d.lz2.header(d.src)
	if err != nil {
		return nil, err
	}
	if ch.end {
		return nil, io.EOF
	}
	if d.hdr.uSize >= 0 && d.uDone+int64(ch.u) > d.hdr.uSize {
		return nil, errBlockTooBig
	}
	if err := d.room(ch.u); err != nil {
		return nil, err
	}
	p0 := d.win.pos
	if err := d.lz2.decode(d.src, &d.win, ch); err != nil {
		return nil, err
	}
	out := d.win.buf[p0:d.win.pos]
	d.uDone += int64(len(out))
	if d.check != nil {
		d.check.Write(out)
	}
	return out, nil
}

// room makes space for n more bytes in the window.
func (d *xzBlockDecoder) room(n int) error {
	w := &d.win
	if len(w.buf)-w.pos >= n {
		return nil
	}
	if d.flat {
		return errBlockTooBig
	}
	if w.pos+n > d.maxWin {
		// Slide out what no match can reach any more.
		keep := w.history()
		shift := w.pos - keep
		copy(w.buf, w.buf[shift:w.pos])
		w.pos -= shift
		w.start -= shift
	}
	if w.pos+n > len(w.buf) {
		// Start small (most inputs are small, and a hostile header can
		// announce a huge dictionary), then go straight to full size:
		// doubling would leave a trail of garbage the size of the window.
		size := min(256<<10, d.maxWin)
		if len(w.buf) > 0 || w.pos+n > size {
			size = d.maxWin
		}
		size = max(size, w.pos+n)
		nb := make([]byte, size)
		copy(nb, w.buf[:w.pos])
		w.buf = nb
	}
	return nil
}

// finish verifies the end of a block after its LZMA2 end marker: sizes,
// padding and check. It returns the block's unpadded size.
func (d *xzBlockDecoder) finish() (int64, error) {
	c := d.src.consumed()
	if d.hdr.cSize >= 0 && c != d.hdr.cSize {
		return 0, fmt.Errorf("compressed size is %d, the block header says %d", c, d.hdr.cSize)
	}
	if d.hdr.uSize >= 0 && d.uDone != d.hdr.uSize {
		return 0, fmt.Errorf("uncompressed size is %d, the block header says %d", d.uDone, d.hdr.uSize)
	}
	pad := int((4 - c%4) % 4)
	cs := xzCheckSize(d.checkID)
	d.src.unlimit()
	t, err := d.src.next(pad + cs)
	if err != nil {
		return 0, err
	}
	for _, b := range t[:pad] {
		if b != 0 {
			return 0, errors.New("non-zero block padding")
		}
	}
	if d.check != nil && string(t[pad:]) != string(xzCheckSum(d.checkID, d.check)) {
		return 0, errors.New("check mismatch (the data is corrupt)")
	}
	return int64(d.hdr.size) + c + int64(cs), nil
}

// xzCheckSum returns the check as it is stored in the file.
func xzCheckSum(id byte, h hash.Hash) []byte {
	switch id {
	case xzCheckCRC32:
		return binary.LittleEndian.AppendUint32(nil, h.(hash.Hash32).Sum32())
	case xzCheckCRC64:
		return binary.LittleEndian.AppendUint64(nil, h.(hash.Hash64).Sum64())
	}
	return h.Sum(nil)
}
