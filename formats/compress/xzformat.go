package compress

// The .xz container, xz-file-format-1.0.4 (tukaani.org/xz/xz-file-format.txt):
//
//	Stream  = Stream Header (12) · Block* · Index · Stream Footer (12)
//	Block   = Block Header · Compressed Data · Block Padding (to 4) · Check
//	Index   = 0x00 · count · (Unpadded Size, Uncompressed Size)* · pad (to 4) · CRC32
//
// Integers inside headers and the index are "multibyte integers" (7 bits per
// byte, little-endian groups, at most 9 bytes, at most 2^63-1).

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
)

const (
	xzHeaderLen = 12
	xzFooterLen = 12

	xzCheckNone   = 0x00
	xzCheckCRC32  = 0x01
	xzCheckCRC64  = 0x04
	xzCheckSHA256 = 0x0A

	xzFilterLZMA2 = 0x21

	xzMaxVLI = 1<<63 - 1
)

var (
	xzFooterMagic = []byte{'Y', 'Z'}
	crc64Table    = crc64.MakeTable(crc64.ECMA)
)

// xzCheckSize returns the size of a check field for a check ID; the spec
// fixes sizes even for IDs it does not define yet.
func xzCheckSize(id byte) int {
	if id == 0 {
		return 0
	}
	return 4 << ((id - 1) / 3)
}

// newXzCheck returns the hash for a check ID, or nil for "none".
func newXzCheck(id byte) (hash.Hash, error) {
	switch id {
	case xzCheckNone:
		return nil, nil
	case xzCheckCRC32:
		return crc32.NewIEEE(), nil
	case xzCheckCRC64:
		return &xzCRC64{}, nil
	case xzCheckSHA256:
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("xz: unsupported check type %#x", id)
}

// appendVLI appends x as a multibyte integer.
func appendVLI(b []byte, x uint64) []byte { return binary.AppendUvarint(b, x) }

var errVLI = errors.New("xz: invalid multibyte integer")

// decodeVLI decodes a multibyte integer from the front of b and returns it
// and its length. It rejects non-minimal encodings and values above 2^63-1,
// as liblzma does.
func decodeVLI(b []byte) (uint64, int, error) {
	var x uint64
	for i := 0; i < 9 && i < len(b); i++ {
		c := b[i]
		x |= uint64(c&0x7F) << (7 * i)
		if c < 0x80 {
			if i > 0 && c == 0 {
				return 0, 0, errVLI
			}
			if x > xzMaxVLI {
				return 0, 0, errVLI
			}
			return x, i + 1, nil
		}
	}
	return 0, 0, errVLI
}

// xzStreamFlags encodes the two stream flag bytes for a check ID.
func xzStreamFlags(check byte) [2]byte { return [2]byte{0, check} }

// appendXzStreamHeader appends a stream header.
func appendXzStreamHeader(b []byte, check byte) []byte {
	b = append(b, magicXz...)
	f := xzStreamFlags(check)
	b = append(b, f[:]...)
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(f[:]))
}

// parseXzStreamHeader checks a 12-byte stream header and returns the check
// ID.
func parseXzStreamHeader(h []byte) (byte, error) {
	if !bytes.Equal(h[:6], magicXz) {
		return 0, errors.New("xz: bad stream header magic")
	}
	if binary.LittleEndian.Uint32(h[8:12]) != crc32.ChecksumIEEE(h[6:8]) {
		return 0, errors.New("xz: stream header CRC32 mismatch")
	}
	if h[6] != 0 || h[7]&0xF0 != 0 {
		return 0, fmt.Errorf("xz: unsupported stream flags %#02x %#02x", h[6], h[7])
	}
	return h[7], nil
}

// appendXzFooter appends a stream footer for an index of indexLen bytes.
func appendXzFooter(b []byte, check byte, indexLen int) []byte {
	var f [10]byte
	binary.LittleEndian.PutUint32(f[4:8], uint32(indexLen/4-1))
	fl := xzStreamFlags(check)
	copy(f[8:], fl[:])
	binary.LittleEndian.PutUint32(f[0:4], crc32.ChecksumIEEE(f[4:10]))
	b = append(b, f[:]...)
	return append(b, xzFooterMagic...)
}

// parseXzFooter checks a 12-byte stream footer and returns the index size
// it records and the check ID.
func parseXzFooter(f []byte) (indexLen int64, check byte, err error) {
	if !bytes.Equal(f[10:12], xzFooterMagic) {
		return 0, 0, errors.New("xz: bad stream footer magic")
	}
	if binary.LittleEndian.Uint32(f[0:4]) != crc32.ChecksumIEEE(f[4:10]) {
		return 0, 0, errors.New("xz: stream footer CRC32 mismatch")
	}
	if f[8] != 0 || f[9]&0xF0 != 0 {
		return 0, 0, fmt.Errorf("xz: unsupported stream flags %#02x %#02x in footer", f[8], f[9])
	}
	return (int64(binary.LittleEndian.Uint32(f[4:8])) + 1) * 4, f[9], nil
}

// xzBlockHeader is the part of a block header this package uses.
type xzBlockHeader struct {
	size     int   // header length in bytes, a multiple of 4 in 8..1024
	cSize    int64 // compressed size, -1 if absent
	uSize    int64 // uncompressed size, -1 if absent
	dictSize int   // LZMA2 dictionary size from the filter properties
}

// appendXzBlockHeader appends a block header with both sizes present and
// a single LZMA2 filter.
func appendXzBlockHeader(b []byte, cSize, uSize int64, dictByte byte) []byte {
	start := len(b)
	b = append(b, 0, 0x40|0x80) // size placeholder; flags: 1 filter, both sizes
	b = appendVLI(b, uint64(cSize))
	b = appendVLI(b, uint64(uSize))
	b = append(b, xzFilterLZMA2, 1, dictByte)
	for (len(b)-start)%4 != 0 {
		b = append(b, 0)
	}
	b[start] = byte((len(b)-start+4)/4 - 1)
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start:]))
}

// parseXzBlockHeader parses a complete block header h (h[0] is the size
// byte, already known to be non-zero).
func parseXzBlockHeader(h []byte) (xzBlockHeader, error) {
	bh := xzBlockHeader{size: len(h), cSize: -1, uSize: -1}
	n := len(h) - 4
	if binary.LittleEndian.Uint32(h[n:]) != crc32.ChecksumIEEE(h[:n]) {
		return bh, errors.New("xz: block header CRC32 mismatch")
	}
	flags := h[1]
	if flags&0x3C != 0 {
		return bh, fmt.Errorf("xz: unsupported block flags %#02x", flags)
	}
	p := h[2:n]
	if flags&0x40 != 0 {
		v, k, err := decodeVLI(p)
		// The spec bounds the unpadded size (header + data + check) by the
		// largest multibyte integer; 2^62 leaves room for that arithmetic.
		if err != nil || v == 0 || v > 1<<62 {
			return bh, errors.New("xz: invalid compressed size in block header")
		}
		bh.cSize, p = int64(v), p[k:]
	}
	if flags&0x80 != 0 {
		v, k, err := decodeVLI(p)
		if err != nil {
			return bh, errors.New("xz: invalid uncompressed size in block header")
		}
		bh.uSize, p = int64(v), p[k:]
	}
	nFilters := int(flags&3) + 1
	for i := 0; i < nFilters; i++ {
		id, k, err := decodeVLI(p)
		if err != nil {
			return bh, errors.New("xz: invalid filter flags in block header")
		}
		p = p[k:]
		psize, k, err := decodeVLI(p)
		if err != nil || psize > uint64(len(p)-k) {
			return bh, errors.New("xz: invalid filter properties in block header")
		}
		props := p[k : k+int(psize)]
		p = p[k+int(psize):]
		if id != xzFilterLZMA2 || i != nFilters-1 {
			return bh, fmt.Errorf("xz: unsupported filter %#x (only LZMA2 without BCJ/delta filters is supported)", id)
		}
		if len(props) != 1 || props[0] > 40 {
			return bh, errors.New("xz: invalid LZMA2 filter properties")
		}
		bh.dictSize = lzma2DictSize(props[0])
	}
	for _, c := range p {
		if c != 0 {
			return bh, errors.New("xz: non-zero block header padding")
		}
	}
	return bh, nil
}

// lzma2DictSize decodes the LZMA2 dictionary size byte (0..40).
func lzma2DictSize(b byte) int {
	if b >= 40 {
		return 1<<32 - 1
	}
	return (2 | int(b&1)) << (b/2 + 11)
}

// xzIndexHash accumulates a stream's block records in constant space, so
// that they can be compared with the stream's index however many blocks
// there are (liblzma's index_hash does the same).
type xzIndexHash struct {
	count        uint64
	unpadded     uint64
	uncompressed uint64
	h            hash.Hash64
	buf          []byte
}

func (x *xzIndexHash) reset() {
	if x.h == nil {
		x.h = &xzCRC64{}
	}
	x.h.Reset()
	x.count, x.unpadded, x.uncompressed = 0, 0, 0
}

func (x *xzIndexHash) add(unpadded, uncompressed uint64) {
	x.count++
	x.unpadded += unpadded
	x.uncompressed += uncompressed
	x.buf = appendVLI(appendVLI(x.buf[:0], unpadded), uncompressed)
	x.h.Write(x.buf)
}

func (x *xzIndexHash) equal(y *xzIndexHash) bool {
	return x.count == y.count && x.unpadded == y.unpadded &&
		x.uncompressed == y.uncompressed && x.h.Sum64() == y.h.Sum64()
}
