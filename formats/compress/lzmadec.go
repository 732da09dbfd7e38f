package compress

// An LZMA2 decoder.
//
// github.com/ulikunitz/xz/lzma has one (lzma.Reader2), but it cannot be
// reused across xz blocks (every block needs a fresh Reader2 with a freshly
// allocated dictionary), it allocates on the heap for every match it
// decodes, and it decodes at about 30 MB/s. Those allocations make the Go
// heap grow to twice the live data between collections, which breaks the
// memory bound of a parallel decoder. This one writes straight into a
// window the caller owns (for a block decoded in one go, the block's output
// buffer is the dictionary), allocates nothing while decoding, and is as
// fast as liblzma's single-threaded decoder (both 3.1-3.4 s for the
// 201 MiB Debian tree made with "xz -6"; ulikunitz: 7 s): literal, align
// and distance-slot bits are decoded without branching on the bit value.
//
// The algorithm follows the LZMA specification (lzma-specification.txt in
// the LZMA SDK) and the LZMA2 chunk rules of liblzma's lzma2_decoder.c. The
// range decoder normalises before each bit and once more at the end of a
// chunk, so a chunk must consume exactly its compressed size and end with
// code == 0, which is what liblzma and xz-embedded require.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	lzmaStates        = 12
	lzmaPosStatesMax  = 1 << 4
	lzmaLitSize       = 0x300
	lzmaDistStates    = 4
	lzmaEndPosModel   = 14
	lzmaFullDistances = 1 << (lzmaEndPosModel / 2)
	lzmaMatchLenMin   = 2
	lzmaProbInit      = 1 << 10

	lzma2MaxChunkU = 2 << 20 // uncompressed bytes in one LZMA2 chunk
	lzma2MaxChunkC = 1 << 16 // compressed bytes in one LZMA2 chunk
)

var (
	errLZMACorrupt  = errors.New("lzma2: corrupt data")
	errLZMADistance = errors.New("lzma2: match distance beyond dictionary")
)

type prob uint16

// rcBufSize is the size of the buffer a chunk's compressed bytes are copied
// into: a power of two no smaller than any chunk (64 KiB), so that the
// range decoder can index it with a mask instead of a bounds check. Bytes
// read past the chunk are garbage; reading them is caught when the chunk
// ends (the decoder must have consumed exactly the chunk).
const rcBufSize = lzma2MaxChunkC

type rcBuf = [rcBufSize]byte

// rc is the range decoder's state. It is passed and returned by value so
// that, once rcBit is inlined, it lives in registers: kept in a struct
// behind a pointer it would have to be reloaded after every probability
// update (which might alias it), on the critical path of every bit.
type rc struct {
	rng  uint32
	code uint32
	pos  int
}

// rcBit decodes one bit with probability *p.
func rcBit(r rc, in *rcBuf, p *prob) (rc, uint32) {
	if r.rng < 1<<24 {
		r.rng <<= 8
		r.code = r.code<<8 | uint32(in[r.pos&(rcBufSize-1)])
		r.pos++
	}
	bound := (r.rng >> 11) * uint32(*p)
	if r.code < bound {
		r.rng = bound
		*p += (1<<11 - *p) >> 5
		return r, 0
	}
	r.rng -= bound
	r.code -= bound
	*p -= *p >> 5
	return r, 1
}

// rcBitNB decodes one bit like rcBit, but without a branch on the bit:
// the new range, code and probability are selected with a mask. Literal
// bits are close to unpredictable, and a mispredicted branch costs more
// than computing both outcomes. The caller refills first
// (rcBitNB(rcNormalize(r, in), p)): together the two would exceed Go's
// inlining budget, and a call per literal bit costs a fifth of the
// decoding time.
func rcBitNB(r rc, p *prob) (rc, uint32) {
	v := uint32(*p)
	bound := (r.rng >> 11) * v
	m := uint32((uint64(r.code) - uint64(bound)) >> 32) // all ones: bit 0
	r.rng = (r.rng-bound)&^m | bound&m
	r.code -= bound &^ m
	p1 := v - v>>5
	*p = prob(p1 ^ (v+(1<<11-v)>>5^p1)&m)
	return r, m + 1
}

// rcNormalize is the refill step of rcBit.
func rcNormalize(r rc, in *rcBuf) rc {
	if r.rng < 1<<24 {
		r.rng <<= 8
		r.code = r.code<<8 | uint32(in[r.pos&(rcBufSize-1)])
		r.pos++
	}
	return r
}

// rcTree3 decodes a 3-bit symbol with a bit tree.
func rcTree3(r rc, in *rcBuf, p *[8]prob) (rc, uint32) {
	var b uint32
	m := uint32(1)
	r, b = rcBit(r, in, &p[1])
	m = m<<1 | b
	r, b = rcBit(r, in, &p[m&7])
	m = m<<1 | b
	r, b = rcBit(r, in, &p[m&7])
	m = m<<1 | b
	return r, m - 8
}

// rcTree6 decodes a 6-bit symbol (a distance slot).
func rcTree6(r rc, in *rcBuf, p *[64]prob) (rc, uint32) {
	var b uint32
	m := uint32(1)
	for m < 64 {
		r, b = rcBitNB(rcNormalize(r, in), &p[m&63])
		m = m<<1 | b
	}
	return r, m - 64
}

// rcTree8 decodes an 8-bit symbol.
func rcTree8(r rc, in *rcBuf, p *[256]prob) (rc, uint32) {
	var b uint32
	m := uint32(1)
	for m < 256 {
		r, b = rcBit(r, in, &p[m&255])
		m = m<<1 | b
	}
	return r, m - 256
}

type lzmaLenDecoder struct {
	choice  prob
	choice2 prob
	low     [lzmaPosStatesMax][8]prob
	mid     [lzmaPosStatesMax][8]prob
	high    [256]prob
}

// decodeLen decodes a match length (2..273).
func (l *lzmaLenDecoder) decode(r rc, in *rcBuf, posState uint32) (rc, int) {
	var b, v uint32
	r, b = rcBit(r, in, &l.choice)
	if b == 0 {
		r, v = rcTree3(r, in, &l.low[posState&(lzmaPosStatesMax-1)])
		return r, lzmaMatchLenMin + int(v)
	}
	r, b = rcBit(r, in, &l.choice2)
	if b == 0 {
		r, v = rcTree3(r, in, &l.mid[posState&(lzmaPosStatesMax-1)])
		return r, lzmaMatchLenMin + 8 + int(v)
	}
	r, v = rcTree8(r, in, &l.high)
	return r, lzmaMatchLenMin + 16 + int(v)
}

// lzmaDecoder holds the LZMA model and the current chunk's input. It is
// about 100 KiB and is reused for every chunk and block a goroutine
// decodes.
type lzmaDecoder struct {
	lc, lp, pb uint32
	state      uint32
	rep        [4]uint32

	isMatch     [16 * lzmaPosStatesMax]prob // indexed by state<<4 | posState
	isRep       [16]prob                    // indexed by state (0..11)
	isRepG0     [16]prob
	isRepG1     [16]prob
	isRepG2     [16]prob
	isRep0Long  [16 * lzmaPosStatesMax]prob
	distSlot    [lzmaDistStates][64]prob
	distSpecial [1 + lzmaFullDistances - lzmaEndPosModel]prob
	align       [16]prob
	matchLen    lzmaLenDecoder
	repLen      lzmaLenDecoder
	literal     [lzmaLitSize << 4]prob // lc+lp <= 4 in LZMA2

	in    rcBuf
	inLen int
}

// resetState resets the model (an LZMA2 "state reset").
func (d *lzmaDecoder) resetState() {
	d.state = 0
	d.rep = [4]uint32{}
	fill := func(p []prob) {
		for i := range p {
			p[i] = lzmaProbInit
		}
	}
	fill(d.isMatch[:])
	fill(d.isRep[:])
	fill(d.isRepG0[:])
	fill(d.isRepG1[:])
	fill(d.isRepG2[:])
	fill(d.isRep0Long[:])
	for i := range d.distSlot {
		fill(d.distSlot[i][:])
	}
	fill(d.distSpecial[:])
	fill(d.align[:])
	for _, l := range []*lzmaLenDecoder{&d.matchLen, &d.repLen} {
		l.choice, l.choice2 = lzmaProbInit, lzmaProbInit
		for i := range l.low {
			fill(l.low[i][:])
			fill(l.mid[i][:])
		}
		fill(l.high[:])
	}
	fill(d.literal[:lzmaLitSize<<(d.lc+d.lp)])
}

// setProps sets lc/lp/pb from an LZMA2 properties byte.
func (d *lzmaDecoder) setProps(b byte) error {
	if b >= 9*5*5 {
		return errors.New("lzma2: invalid properties byte")
	}
	lc, lp, pb := uint32(b%9), uint32(b/9%5), uint32(b/45)
	if lc+lp > 4 {
		return errors.New("lzma2: lc + lp > 4")
	}
	d.lc, d.lp, d.pb = lc, lp, pb
	return nil
}

// decodeDist decodes a match distance (0-based: the source is dist+1 bytes
// back) for a match of the given length.
func (d *lzmaDecoder) decodeDist(r rc, length int) (rc, uint32) {
	ls := length - lzmaMatchLenMin
	if ls > lzmaDistStates-1 {
		ls = lzmaDistStates - 1
	}
	in := &d.in
	r, slot := rcTree6(r, in, &d.distSlot[ls&(lzmaDistStates-1)])
	if slot < 4 {
		return r, slot
	}
	n := slot>>1 - 1 // number of extra bits, 1..30
	dist := (2 | slot&1) << n
	var b uint32
	if slot < lzmaEndPosModel {
		// Reverse bit tree; base+m stays below len(distSpecial) (115):
		// the largest base is 83 (slot 13) with m < 32.
		base := dist - slot
		m := uint32(1)
		for i := uint32(0); i < n; i++ {
			r, b = rcBitNB(rcNormalize(r, in), &d.distSpecial[base+m])
			m = m<<1 | b
			dist |= b << i
		}
		return r, dist
	}
	// Direct bits, then 4 reverse-coded align bits.
	var direct uint32
	for i := n - 4; i > 0; i-- {
		r = rcNormalize(r, in)
		r.rng >>= 1
		r.code -= r.rng
		t := 0 - (r.code >> 31) // all ones if code went "negative"
		r.code += r.rng & t
		direct = direct<<1 | (t + 1)
	}
	dist += direct << 4
	m := uint32(1)
	for i := uint32(0); i < 4; i++ {
		r, b = rcBitNB(rcNormalize(r, in), &d.align[m&15])
		m = m<<1 | b
		dist |= b << i
	}
	return r, dist
}

// lzmaWindow is the dictionary and output buffer. Decoded bytes are
// appended at pos; buf[:pos] holds at least min(pos-start, dictSize) bytes
// of history (the caller slides old data out between chunks).
type lzmaWindow struct {
	buf      []byte
	pos      int
	start    int // buf index of the last dictionary reset (negative after sliding)
	dictSize int
}

// history returns how far back a match may reach.
func (w *lzmaWindow) history() int {
	h := w.pos - w.start
	if h > w.dictSize {
		h = w.dictSize
	}
	return h
}

// decodeChunk decodes one LZMA chunk of exactly n bytes from the
// compressed bytes in into w.buf[w.pos:w.pos+n]. The caller guarantees the
// room.
func (d *lzmaDecoder) decodeChunk(w *lzmaWindow, compressed []byte, n int) error {
	if len(compressed) < 5 || len(compressed) > lzma2MaxChunkC || compressed[0] != 0 {
		return errLZMACorrupt
	}
	d.inLen = copy(d.in[:], compressed)
	in := &d.in
	r := rc{rng: 0xFFFFFFFF, code: binary.BigEndian.Uint32(compressed[1:5]), pos: 5}
	if r.code == r.rng {
		return errLZMACorrupt
	}

	buf := w.buf[:w.pos+n]
	pos := w.pos
	start := w.start
	dictSize := w.dictSize
	pbMask := uint32(1)<<d.pb - 1
	lpMask := uint32(1)<<d.lp - 1
	lc := d.lc
	state := d.state & 15
	rep0, rep1, rep2, rep3 := d.rep[0], d.rep[1], d.rep[2], d.rep[3]
	var b uint32
	var err error

	for pos < len(buf) {
		upos := uint32(pos - start)
		posState := upos & pbMask
		r, b = rcBit(r, in, &d.isMatch[(state<<4|posState)&255])
		if b == 0 {
			var prev uint32
			if pos > start && pos > 0 {
				prev = uint32(buf[pos-1])
			}
			ls := ((upos & lpMask) << lc) + prev>>(8-lc)
			probs := (*[lzmaLitSize]prob)(d.literal[(ls&15)*lzmaLitSize:])
			sym := uint32(1)
			if state < 7 {
				for sym < 0x100 {
					r, b = rcBitNB(rcNormalize(r, in), &probs[sym])
					sym = sym<<1 | b
				}
				if state < 4 {
					state = 0
				} else {
					state -= 3
				}
			} else {
				if uint64(rep0) >= uint64(pos-start) || uint64(rep0) >= uint64(pos) {
					err = errLZMADistance
					break
				}
				match := uint32(buf[pos-int(rep0)-1])
				offset := uint32(0x100)
				for sym < 0x100 {
					match <<= 1
					mbit := match & offset
					// offset and mbit are 0 or 0x100: the index is < 0x300.
					r, b = rcBitNB(rcNormalize(r, in), &probs[offset+mbit+sym])
					sym = sym<<1 | b
					// bit 1 keeps offset only where the match bit was
					// set, bit 0 only where it was clear.
					offset &= mbit ^ (b - 1)
				}
				if state < 10 {
					state -= 3
				} else {
					state -= 6
				}
			}
			buf[pos] = byte(sym)
			pos++
			continue
		}

		var length int
		r, b = rcBit(r, in, &d.isRep[state])
		if b == 0 {
			// A new match.
			rep3, rep2, rep1 = rep2, rep1, rep0
			r, length = d.matchLen.decode(r, in, posState)
			if state < 7 {
				state = 7
			} else {
				state = 10
			}
			r, rep0 = d.decodeDist(r, length)
		} else {
			r, b = rcBit(r, in, &d.isRepG0[state])
			if b == 0 {
				r, b = rcBit(r, in, &d.isRep0Long[(state<<4|posState)&255])
				if b == 0 {
					// A one-byte "short rep" at distance rep0.
					if state < 7 {
						state = 9
					} else {
						state = 11
					}
					h := min(pos-start, dictSize, pos)
					if uint64(rep0) >= uint64(h) {
						err = errLZMADistance
						break
					}
					buf[pos] = buf[pos-int(rep0)-1]
					pos++
					continue
				}
			} else {
				var dist uint32
				r, b = rcBit(r, in, &d.isRepG1[state])
				if b == 0 {
					dist = rep1
				} else {
					r, b = rcBit(r, in, &d.isRepG2[state])
					if b == 0 {
						dist = rep2
					} else {
						dist = rep3
						rep3 = rep2
					}
					rep2 = rep1
				}
				rep1 = rep0
				rep0 = dist
			}
			if state < 7 {
				state = 8
			} else {
				state = 11
			}
			r, length = d.repLen.decode(r, in, posState)
		}

		h := min(pos-start, dictSize, pos)
		if uint64(rep0) >= uint64(h) {
			err = errLZMADistance // also catches the end marker, which LZMA2 forbids
			break
		}
		if length > len(buf)-pos {
			err = errors.New("lzma2: match crosses the end of a chunk")
			break
		}
		src := pos - int(rep0) - 1
		if length <= 16 || int(rep0) < length {
			// Short, or overlapping (a repeated pattern): byte by byte.
			s := buf[src : src+length]
			dst := buf[pos : pos+length]
			for i := range dst {
				dst[i] = s[i]
			}
		} else {
			copy(buf[pos:pos+length], buf[src:src+length])
		}
		pos += length
	}

	d.state = state
	d.rep = [4]uint32{rep0, rep1, rep2, rep3}
	w.pos = pos
	if err != nil {
		return err
	}
	r = rcNormalize(r, in)
	if r.pos != d.inLen || r.code != 0 {
		return errLZMACorrupt
	}
	return nil
}

// lzma2Decoder parses LZMA2 chunks.
type lzma2Decoder struct {
	lz            lzmaDecoder
	needDictReset bool
	needProps     bool
}

// reset prepares for a new LZMA2 stream (an xz block).
func (d *lzma2Decoder) reset() {
	d.needDictReset = true
	d.needProps = true
}

// chunkSource supplies the compressed bytes of an LZMA2 stream.
type chunkSource interface {
	// next returns the next n bytes; the slice is valid until the next
	// call. A short stream is an error wrapping io.ErrUnexpectedEOF.
	next(n int) ([]byte, error)
}

// lzma2Chunk describes the chunk header just parsed.
type lzma2Chunk struct {
	end   bool // end-of-stream marker
	u     int  // uncompressed size
	c     int  // compressed size (LZMA chunks only)
	lzma  bool
	reset byte // control byte, for the reset decisions
}

// header reads and validates the next chunk header.
func (d *lzma2Decoder) header(src chunkSource) (lzma2Chunk, error) {
	var ch lzma2Chunk
	b, err := src.next(1)
	if err != nil {
		return ch, err
	}
	ctl := b[0]
	ch.reset = ctl
	switch {
	case ctl == 0x00:
		ch.end = true
		return ch, nil
	case ctl == 0x01 || ctl == 0x02:
		if ctl == 0x01 {
			d.needDictReset, d.needProps = false, true
		} else if d.needDictReset {
			return ch, errors.New("lzma2: first chunk does not reset the dictionary")
		}
		b, err := src.next(2)
		if err != nil {
			return ch, err
		}
		ch.u = int(binary.BigEndian.Uint16(b)) + 1
		return ch, nil
	case ctl < 0x80:
		return ch, fmt.Errorf("lzma2: invalid chunk control byte %#02x", ctl)
	}
	if ctl >= 0xE0 {
		d.needDictReset = false
	} else if d.needDictReset {
		return ch, errors.New("lzma2: first chunk does not reset the dictionary")
	}
	hdrLen := 4
	if ctl >= 0xC0 {
		hdrLen = 5
	}
	b, err = src.next(hdrLen)
	if err != nil {
		return ch, err
	}
	ch.lzma = true
	ch.u = int(ctl&0x1F)<<16 + int(binary.BigEndian.Uint16(b[0:2])) + 1
	ch.c = int(binary.BigEndian.Uint16(b[2:4])) + 1
	switch {
	case ctl >= 0xC0:
		if err := d.lz.setProps(b[4]); err != nil {
			return ch, err
		}
		d.needProps = false
	case d.needProps:
		return ch, errors.New("lzma2: LZMA chunk without properties after a dictionary reset")
	}
	return ch, nil
}

// decode decodes the body of chunk ch (header already read) from src into
// w; the caller has made room for ch.u bytes.
func (d *lzma2Decoder) decode(src chunkSource, w *lzmaWindow, ch lzma2Chunk) error {
	if ch.reset == 0x01 || ch.reset >= 0xE0 {
		w.start = w.pos
	}
	if !ch.lzma {
		b, err := src.next(ch.u)
		if err != nil {
			return err
		}
		copy(w.buf[w.pos:], b)
		w.pos += ch.u
		return nil
	}
	if ch.reset >= 0xA0 {
		d.lz.resetState()
	}
	in, err := src.next(ch.c)
	if err != nil {
		return err
	}
	return d.lz.decodeChunk(w, in, ch.u)
}
