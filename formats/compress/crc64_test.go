package compress

import (
	"hash/crc64"
	"math/rand"
	"testing"
)

// The folded CRC-64 equals hash/crc64's for every length around the
// thresholds and the 64-byte steps, any starting CRC, and any alignment.
func TestCRC64(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	buf := make([]byte, 70016)
	rng.Read(buf)
	lengths := []int{0, 1, 15, 63, 64, 65, 127, 128, 255, 256, 257, 319, 320, 321, 1000, 4096, 65536, 69999}
	for n := crc64FoldMin - 70; n < crc64FoldMin+200; n++ {
		lengths = append(lengths, n)
	}
	for _, n := range lengths {
		for _, off := range []int{0, 1, 7, 8, 13} {
			p := buf[off : off+n]
			init := rng.Uint64()
			if got, want := crc64Update(init, p), crc64.Update(init, crc64Table, p); got != want {
				t.Fatalf("length %d at offset %d: %016x, want %016x", n, off, got, want)
			}
		}
	}
	// As a hash, written in pieces.
	h := &xzCRC64{}
	for p := buf; len(p) > 0; {
		k := min(len(p), 1+rng.Intn(5000))
		h.Write(p[:k])
		p = p[k:]
	}
	ref := crc64.New(crc64Table)
	ref.Write(buf)
	if h.Sum64() != ref.Sum64() || string(h.Sum([]byte("x"))) != string(ref.Sum([]byte("x"))) {
		t.Fatalf("hash: %016x, want %016x", h.Sum64(), ref.Sum64())
	}
	h.Reset()
	if h.Sum64() != 0 {
		t.Fatal("Reset does not start over")
	}
}

func FuzzCRC64(f *testing.F) {
	f.Add(uint64(0), make([]byte, 300))
	f.Fuzz(func(t *testing.T, init uint64, p []byte) {
		if got, want := crc64Update(init, p), crc64.Update(init, crc64Table, p); got != want {
			t.Fatalf("%d bytes: %016x, want %016x", len(p), got, want)
		}
	})
}

func BenchmarkCRC64(b *testing.B) {
	p := make([]byte, 2<<20)
	b.Run("fold", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		for range b.N {
			crc64Update(0, p)
		}
	})
	b.Run("hash/crc64", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		for range b.N {
			crc64.Update(0, crc64Table, p)
		}
	})
}
