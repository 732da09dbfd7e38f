package compress

// CRC-64 for xz block checks.
//
// hash/crc64 is table-driven (slicing-by-8): about 1 GB/s, so checking an
// image's 200 MiB costs 0.16-0.26 s of CPU, a tenth of a parallel decode.
// Where the CPU multiplies carry-less (PCLMULQDQ, amd64), the data is
// instead folded 64 bytes at a time into a 128-bit remainder, as in Intel's
// "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ"; the
// remainder and the last bytes then go through the table. The folding
// constants are computed from the polynomial, not copied in.

import (
	"hash"
	"hash/crc64"
	"math/bits"
)

// crc64FoldMin is the shortest input worth folding.
const crc64FoldMin = 256

// crc64Consts are the folding constants: x^(64+D-1) and x^(D-1) modulo the
// polynomial, bit-reflected, for a fold distance D of 512 bits (the 4
// lanes of the main loop) and of 128 bits (combining the lanes).
var crc64Consts = [4]uint64{crc64XPow(64 + 512 - 1), crc64XPow(512 - 1), crc64XPow(64 + 128 - 1), crc64XPow(128 - 1)}

// crc64XPow returns x^n modulo the ECMA-182 polynomial, bit-reflected as
// xz's CRC-64 is.
func crc64XPow(n int) uint64 {
	poly := bits.Reverse64(crc64.ECMA) // the polynomial without its x^64 term
	v := uint64(1)
	for range n {
		carry := v >> 63
		v <<= 1
		if carry != 0 {
			v ^= poly
		}
	}
	return bits.Reverse64(v)
}

// crc64Update is crc64.Update with the ECMA table.
func crc64Update(crc uint64, p []byte) uint64 {
	if haveCLMUL && len(p) >= crc64FoldMin {
		n := len(p) &^ 63
		var rem [16]byte
		crc64Fold(^crc, p[:n], &crc64Consts, &rem)
		// The remainder is a message of 16 bytes after a zero state.
		crc = crc64.Update(^uint64(0), crc64Table, rem[:])
		p = p[n:]
	}
	return crc64.Update(crc, crc64Table, p)
}

// xzCRC64 is a hash.Hash64 over crc64Update; Sum appends big-endian like
// hash/crc64's.
type xzCRC64 struct{ crc uint64 }

var _ hash.Hash64 = (*xzCRC64)(nil)

func (h *xzCRC64) Write(p []byte) (int, error) { h.crc = crc64Update(h.crc, p); return len(p), nil }
func (h *xzCRC64) Sum64() uint64               { return h.crc }
func (h *xzCRC64) Reset()                      { h.crc = 0 }
func (h *xzCRC64) Size() int                   { return 8 }
func (h *xzCRC64) BlockSize() int              { return 1 }
func (h *xzCRC64) Sum(b []byte) []byte {
	s := h.crc
	return append(b, byte(s>>56), byte(s>>48), byte(s>>40), byte(s>>32), byte(s>>24), byte(s>>16), byte(s>>8), byte(s))
}
