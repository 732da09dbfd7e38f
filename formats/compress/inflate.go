package compress

// A DEFLATE decoder (RFC 1951) for gzip members.
//
// Gzip is decoded on one core, so in a .tar.gz pull the decoder is the
// critical path: klauspost/compress's inflate took 0.92-0.94 s of the
// 1.2-1.3 s pull of a 201 MiB tree, the tar side waiting on it; this one
// takes 0.62-0.68 s (the pull 1.0-1.1 s). It uses the
// techniques of libdeflate: a 64-bit bit buffer refilled with one 8-byte
// load per symbol, Huffman tables whose entries carry the symbol's base
// value and extra-bit count so that a symbol costs one lookup (two for
// long codes, through a subtable), and match copies 8 bytes at a time into
// a flat window that slides rarely. Input comes from a bufio.Reader through
// Peek and Discard, so that nothing past the end of the DEFLATE stream is
// consumed (the gzip trailer and the next member follow it).
//
// The decoder accepts what compress/flate accepts: complete Huffman codes,
// plus a single code of length 1 and an empty distance code (zlib's
// exceptions); a symbol the stream's code does not define is an error when
// it is used.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"math/bits"
	"sync"
)

const (
	inflateHist   = 32 << 10  // DEFLATE's window
	inflateOut    = 512 << 10 // output decoded between slides
	inflateMargin = 258 + 8   // a match, plus the 8-byte copy overshoot
	inflateWin    = inflateHist + inflateOut + inflateMargin

	litBits  = 10 // bits of the first-level literal/length table
	distBits = 8  // bits of the first-level distance table
	clenBits = 7  // code-length codes are at most 7 bits
)

// Table entries: bits 0-3 the bits to consume at this level, 4-7 the
// kind, 8-15 extra bits (or a subtable's index bits), 16-31 the value
// (literal byte, length or distance base, subtable offset).
const (
	kLit = iota << 4
	kLen
	kEOB
	kSub
	kBad
)

var (
	errInflateCode = errors.New("flate: corrupt input: invalid Huffman code")
	errInflateDist = errors.New("flate: corrupt input: distance too far back")
)

var (
	lenBase   = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lenExtra  = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	dstBase   = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	dstExtra  = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	clenOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
)

func litEntry(sym int) uint32 {
	switch {
	case sym < 256:
		return kLit | uint32(sym)<<16
	case sym == 256:
		return kEOB
	case sym < 286:
		return kLen | uint32(lenExtra[sym-257])<<8 | uint32(lenBase[sym-257])<<16
	}
	return kBad
}

func distEntry(sym int) uint32 {
	if sym < 30 {
		return uint32(dstExtra[sym])<<8 | uint32(dstBase[sym])<<16
	}
	return kBad
}

func clenEntry(sym int) uint32 { return uint32(sym) << 16 }

// buildTable fills t from the code lengths: a first level of 1<<tb
// entries and, for codes longer than tb, subtables after it. It returns
// false for an over-subscribed or (but for zlib's exceptions) incomplete
// code. t must hold 1<<tb + (1<<tb)<<(15-tb) entries.
func buildTable(t []uint32, tb uint, lens []uint8, entry func(int) uint32) bool {
	var count [16]int
	maxLen := 0
	for _, l := range lens {
		count[l]++
		maxLen = max(maxLen, int(l))
	}
	count[0] = 0
	first := t[:1<<tb]
	for i := range first {
		first[i] = kBad
	}
	if maxLen == 0 {
		return true // empty: fails when used
	}
	left := 1
	for l := 1; l <= 15; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return false
		}
	}
	if left != 0 && !(maxLen == 1 && count[1] == 1) {
		return false
	}
	var next [16]int
	code := 0
	for l := 1; l <= 15; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}
	subBits := uint(0)
	if uint(maxLen) > tb {
		subBits = uint(maxLen) - tb
	}
	subs := 0 // subtables made
	for sym, l := range lens {
		if l == 0 {
			continue
		}
		rev := int(bits.Reverse16(uint16(next[l])) >> (16 - l))
		next[l]++
		e := entry(sym)
		if uint(l) <= tb {
			for i := rev; i < 1<<tb; i += 1 << l {
				t[i] = e | uint32(l)
			}
			continue
		}
		lo := rev & (1<<tb - 1)
		if t[lo]&0xf0 != kSub {
			t[lo] = kSub | uint32(tb) | uint32(subBits)<<8 | uint32(1<<tb+subs<<subBits)<<16
			sub := t[1<<tb+subs<<subBits : 1<<tb+(subs+1)<<subBits]
			for i := range sub {
				sub[i] = kBad
			}
			subs++
		}
		sub := t[t[lo]>>16:]
		for i := rev >> tb; i < 1<<subBits; i += 1 << (uint(l) - tb) {
			sub[i] = e | uint32(uint(l)-tb)
		}
	}
	return true
}

// fixedTables returns the tables of the fixed codes, built once and only
// read. Literal/length symbols 286 and 287 and distances 30 and 31 complete
// the codes and are invalid in a stream.
var fixedTables = sync.OnceValues(func() (lit, dist []uint32) {
	var ll [288]uint8
	for i := range ll {
		switch {
		case i < 144:
			ll[i] = 8
		case i < 256:
			ll[i] = 9
		case i < 280:
			ll[i] = 7
		default:
			ll[i] = 8
		}
	}
	var dl [32]uint8
	for i := range dl {
		dl[i] = 5
	}
	lit, dist = make([]uint32, litTableLen), make([]uint32, distTableLen)
	buildTable(lit, litBits, ll[:], litEntry)
	buildTable(dist, distBits, dl[:], distEntry)
	return lit, dist
})

const (
	litTableLen  = 1<<litBits + 1<<litBits<<(15-litBits)
	distTableLen = 1<<distBits + 1<<distBits<<(15-distBits)
)

// inflater decodes one DEFLATE stream; reset starts the next.
type inflater struct {
	in   *bufio.Reader
	view []byte // peeked input, from the first byte not discarded
	pos  int    // bytes of view loaded into bb
	bb   uint64 // bit buffer; bits above nb are input too, or zero
	nb   uint
	eof  bool // in has no more bytes than view

	win  []byte
	wpos int // end of the output in win
	rpos int // first byte not yet read

	inBlock bool
	final   bool
	done    bool
	stored  int // bytes left in a stored block
	err     error

	lit, dist []uint32 // the current block's tables: the fixed ones, or own
	ownLit    []uint32
	ownDist   []uint32
	clen      [1 << clenBits]uint32
	lens      [286 + 30]uint8
}

func newInflater(in *bufio.Reader) *inflater {
	f := &inflater{win: make([]byte, inflateWin), ownLit: make([]uint32, litTableLen), ownDist: make([]uint32, distTableLen)}
	f.reset(in)
	return f
}

func (f *inflater) reset(in *bufio.Reader) {
	f.in, f.view, f.pos, f.bb, f.nb, f.eof = in, nil, 0, 0, 0, false
	f.wpos, f.rpos = 0, 0
	f.inBlock, f.final, f.done, f.stored, f.err = false, false, false, 0, nil
}

// more gives back the input bytes already consumed and peeks at more,
// keeping the bit position.
func (f *inflater) more() {
	used := uint(f.pos)*8 - f.nb
	f.in.Discard(int(used / 8))
	f.view, _ = f.in.Peek(f.in.Size())
	f.eof = len(f.view) < f.in.Size()
	f.pos, f.bb, f.nb = 0, 0, 0
	if r := used % 8; r != 0 && len(f.view) > 0 {
		f.bb, f.nb, f.pos = uint64(f.view[0])>>r, 8-r, 1
	}
}

// refill makes at least 56 bits available, or all the input there is.
func (f *inflater) refill() {
	if f.pos+8 > len(f.view) {
		if !f.eof {
			f.more()
		}
		if f.pos+8 > len(f.view) {
			for f.nb <= 56 && f.pos < len(f.view) {
				f.bb |= uint64(f.view[f.pos]) << f.nb
				f.pos++
				f.nb += 8
			}
			return
		}
	}
	f.bb |= binary.LittleEndian.Uint64(f.view[f.pos:]) << f.nb
	f.pos += int((63 - f.nb) >> 3)
	f.nb |= 56
}

// bits takes n (at most 32) bits.
func (f *inflater) bits(n uint) (uint32, error) {
	if f.nb < n {
		f.refill()
		if f.nb < n {
			return 0, io.ErrUnexpectedEOF
		}
	}
	v := uint32(f.bb & (1<<n - 1))
	f.bb >>= n
	f.nb -= n
	return v, nil
}

// sym decodes a symbol with table t (first level tb bits).
func (f *inflater) sym(t []uint32, tb uint) (uint32, error) {
	if f.nb < 15 {
		f.refill()
	}
	e := t[f.bb&(1<<tb-1)]
	if e&0xf0 == kSub {
		e = t[e>>16+uint32(f.bb>>tb)&(1<<(e>>8&0xff)-1)]
		e += uint32(tb) // consume both levels
	}
	n := uint(e & 0xf)
	if e&0xf0 == kBad {
		return 0, errInflateCode
	}
	if n > f.nb {
		return 0, io.ErrUnexpectedEOF
	}
	f.bb >>= n
	f.nb -= n
	return e, nil
}

// Read implements io.Reader; it returns io.EOF at the end of the stream,
// with the input positioned at the byte after it.
func (f *inflater) Read(p []byte) (int, error) {
	for f.rpos == f.wpos {
		if f.err != nil {
			return 0, f.err
		}
		if f.done {
			f.err = io.EOF
			// Give back the whole bytes past the end of the stream.
			used := uint(f.pos)*8 - f.nb
			f.in.Discard(int((used + 7) / 8))
			f.view = nil
			return 0, f.err
		}
		if f.wpos >= inflateHist+inflateOut {
			n := copy(f.win, f.win[f.wpos-inflateHist:f.wpos])
			f.wpos, f.rpos = n, n
		}
		if err := f.decode(); err != nil {
			f.err = err
		}
	}
	n := copy(p, f.win[f.rpos:f.wpos])
	f.rpos += n
	return n, nil
}

// decode adds output to the window until it is full or the stream ends.
func (f *inflater) decode() error {
	for f.wpos < inflateHist+inflateOut && !f.done {
		if f.stored > 0 {
			if err := f.copyStored(); err != nil {
				return err
			}
			continue
		}
		if !f.inBlock {
			if f.final {
				f.done = true
				return nil
			}
			if err := f.header(); err != nil {
				return err
			}
			continue
		}
		if err := f.huffman(); err != nil {
			return err
		}
	}
	return nil
}

// header reads a block header and, for Huffman blocks, the codes.
func (f *inflater) header() error {
	h, err := f.bits(3)
	if err != nil {
		return err
	}
	f.final = h&1 != 0
	switch h >> 1 {
	case 0:
		f.bb >>= f.nb % 8
		f.nb -= f.nb % 8
		v, err := f.bits(32)
		if err != nil {
			return err
		}
		if uint16(v) != ^uint16(v>>16) {
			return errors.New("flate: corrupt input: stored block length check")
		}
		// Hand the whole bytes in the bit buffer back to the view.
		f.pos -= int(f.nb / 8)
		f.bb, f.nb = 0, 0
		f.stored = int(uint16(v))
		if f.stored == 0 {
			f.inBlock = false
		}
		return nil
	case 1:
		f.lit, f.dist = fixedTables()
	case 2:
		if err := f.dynamic(); err != nil {
			return err
		}
	default:
		return errors.New("flate: corrupt input: reserved block type")
	}
	f.inBlock = true
	return nil
}

func (f *inflater) dynamic() error {
	v, err := f.bits(14)
	if err != nil {
		return err
	}
	nlit, ndist, nclen := int(v&31)+257, int(v>>5&31)+1, int(v>>10)+4
	if nlit > 286 || ndist > 30 {
		return errors.New("flate: corrupt input: too many length or distance codes")
	}
	var cl [19]uint8
	for i := range nclen {
		b, err := f.bits(3)
		if err != nil {
			return err
		}
		cl[clenOrder[i]] = uint8(b)
	}
	if !buildTable(f.clen[:], clenBits, cl[:], clenEntry) {
		return errInflateCode
	}
	lens := f.lens[:nlit+ndist]
	for i := 0; i < len(lens); {
		e, err := f.sym(f.clen[:], clenBits)
		if err != nil {
			return err
		}
		s := e >> 16
		if s < 16 {
			lens[i] = uint8(s)
			i++
			continue
		}
		var rep int
		var val uint8
		switch s {
		case 16:
			if i == 0 {
				return errors.New("flate: corrupt input: repeat without a previous length")
			}
			b, err := f.bits(2)
			if err != nil {
				return err
			}
			rep, val = 3+int(b), lens[i-1]
		case 17:
			b, err := f.bits(3)
			if err != nil {
				return err
			}
			rep = 3 + int(b)
		default:
			b, err := f.bits(7)
			if err != nil {
				return err
			}
			rep = 11 + int(b)
		}
		if i+rep > len(lens) {
			return errors.New("flate: corrupt input: code lengths overflow")
		}
		for range rep {
			lens[i] = val
			i++
		}
	}
	if lens[256] == 0 {
		return errors.New("flate: corrupt input: no end-of-block code")
	}
	if !buildTable(f.ownLit, litBits, lens[:nlit], litEntry) || !buildTable(f.ownDist, distBits, lens[nlit:], distEntry) {
		return errInflateCode
	}
	f.lit, f.dist = f.ownLit, f.ownDist
	return nil
}

func (f *inflater) copyStored() error {
	for f.stored > 0 && f.wpos < inflateHist+inflateOut {
		if f.pos == len(f.view) {
			if f.eof {
				return io.ErrUnexpectedEOF
			}
			f.more()
			continue
		}
		n := copy(f.win[f.wpos:inflateHist+inflateOut], f.view[f.pos:min(len(f.view), f.pos+f.stored)])
		f.wpos += n
		f.pos += n
		f.stored -= n
	}
	if f.stored == 0 {
		f.inBlock = false
	}
	return nil
}

// huffman decodes symbols of a Huffman block until the block ends or the
// window is full.
func (f *inflater) huffman() error {
	win := f.win[:inflateWin]
	lit, dist := f.lit[:litTableLen], f.dist[:distTableLen]
	bb, nb, wpos := f.bb, f.nb, f.wpos
	defer func() { f.bb, f.nb, f.wpos = bb, nb, wpos }()
	for wpos < inflateHist+inflateOut {
		if nb < 48 {
			if f.pos+8 <= len(f.view) {
				bb |= binary.LittleEndian.Uint64(f.view[f.pos:]) << nb
				f.pos += int((63 - nb) >> 3)
				nb |= 56
			} else {
				f.bb, f.nb = bb, nb
				f.refill()
				bb, nb = f.bb, f.nb
			}
		}
		e := lit[bb&(1<<litBits-1)]
		if e&0xf0 == kSub {
			e = lit[e>>16+uint32(bb>>litBits)&(1<<(e>>8&0xff)-1)] + litBits
		}
		n := uint(e & 0xf)
		if n > nb {
			if e&0xf0 == kBad {
				return errInflateCode
			}
			return io.ErrUnexpectedEOF
		}
		bb >>= n
		nb -= n
		switch e & 0xf0 {
		case kLit:
			win[wpos] = byte(e >> 16)
			wpos++
			continue
		case kLen:
		case kEOB:
			f.inBlock = false
			return nil
		default:
			return errInflateCode
		}
		x := uint(e >> 8 & 0xff)
		if x > nb {
			return io.ErrUnexpectedEOF
		}
		length := int(e>>16) + int(bb&(1<<x-1))
		bb >>= x
		nb -= x

		d := dist[bb&(1<<distBits-1)]
		if d&0xf0 == kSub {
			d = dist[d>>16+uint32(bb>>distBits)&(1<<(d>>8&0xff)-1)] + distBits
		}
		n = uint(d&0xf) + uint(d>>8&0xff)
		if d&0xf0 == kBad {
			return errInflateCode
		}
		if n > nb {
			return io.ErrUnexpectedEOF
		}
		bb >>= d & 0xf
		x = uint(d >> 8 & 0xff)
		off := int(d>>16) + int(bb&(1<<x-1))
		bb >>= x
		nb -= n
		if off > wpos {
			return errInflateDist
		}
		src := wpos - off
		switch {
		case off >= 8:
			for i := 0; i < length; i += 8 {
				binary.LittleEndian.PutUint64(win[wpos+i:], binary.LittleEndian.Uint64(win[src+i:]))
			}
		case off == 1: // a run of one byte (tar's zero padding)
			v := uint64(win[src]) * 0x0101010101010101
			for i := 0; i < length; i += 8 {
				binary.LittleEndian.PutUint64(win[wpos+i:], v)
			}
		default:
			for i := range length {
				win[wpos+i] = win[src+i]
			}
		}
		wpos += length
	}
	return nil
}
