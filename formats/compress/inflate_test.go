package compress

import (
	"bufio"
	"bytes"
	"compress/flate"
	"io"
	"math/rand"
	"testing"
)

// inflateAll decodes a raw DEFLATE stream followed by tail and checks that
// the input is left at tail.
func inflateAll(t testing.TB, z, tail []byte) ([]byte, error) {
	br := bufio.NewReaderSize(&oddReader{r: bytes.NewReader(append(append([]byte{}, z...), tail...))}, 64<<10)
	f := newInflater(br)
	out, err := io.ReadAll(f)
	if err == nil {
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(rest, tail) {
			t.Fatalf("input after the stream: %d bytes, want %d", len(rest), len(tail))
		}
	}
	return out, err
}

func deflateLevel(t testing.TB, data []byte, level int) []byte {
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

// Every kind of block (stored, fixed, dynamic; long and short matches,
// overlapping copies, long codes through subtables) decodes as
// compress/flate decodes it, and the input is left right after the stream.
func TestInflate(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	random := make([]byte, 300<<10)
	rng.Read(random)
	runs := bytes.Repeat([]byte("abcabcabd"), 50000)
	skewed := make([]byte, 1<<20)
	for i := range skewed {
		// A geometric distribution gives long codes.
		b := byte(0)
		for rng.Intn(2) == 0 && b < 40 {
			b++
		}
		skewed[i] = b
	}
	inputs := map[string][]byte{
		"empty": nil, "one": {7}, "corpus": corpus(3 << 20), "random": random,
		"runs": runs, "zeros": make([]byte, 2<<20), "skewed": skewed,
	}
	for name, data := range inputs {
		for _, level := range []int{flate.NoCompression, flate.BestSpeed, 6, flate.BestCompression, flate.HuffmanOnly} {
			z := deflateLevel(t, data, level)
			got, err := inflateAll(t, z, []byte("trailer"))
			if err != nil {
				t.Fatalf("%s, level %d: %v", name, level, err)
			}
			mustEqual(t, name, got, data)
		}
	}
	// Fixed Huffman blocks: what zlib writes for short inputs.
	fixed := []byte{0x4b, 0x4c, 0x4a, 0x4e, 0x4c, 0x02, 0x00} // "abcab" from zlib.compress
	got, err := inflateAll(t, fixed, nil)
	if err != nil || string(got) != "abcab" {
		t.Fatalf("fixed block: %q, %v", got, err)
	}
}

// Truncated and corrupt streams are errors, never panics, and agree with
// compress/flate on whether they are errors.
func TestInflateCorrupt(t *testing.T) {
	data := corpus(200 << 10)
	z := deflateLevel(t, data, 6)
	for _, n := range []int{0, 1, 2, 10, len(z) / 2, len(z) - 1} {
		if _, err := inflateAll(t, z[:n], nil); err == nil {
			t.Fatalf("truncated at %d: no error", n)
		}
	}
	rng := rand.New(rand.NewSource(3))
	for range 300 {
		b := append([]byte{}, z...)
		for range 1 + rng.Intn(3) {
			b[rng.Intn(len(b))] ^= byte(1 << rng.Intn(8))
		}
		compareInflate(t, b)
	}
}

// compareInflate decodes b with both decoders: same error-ness, and on
// success the same output and the same bytes left after the stream
// (compress/flate reads a bufio.Reader byte by byte, never past the end).
func compareInflate(t *testing.T, b []byte) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(b))
	want, werr := io.ReadAll(flate.NewReader(br))
	wrest, _ := io.ReadAll(br)
	br = bufio.NewReaderSize(&oddReader{r: bytes.NewReader(b)}, 64<<10)
	got, err := io.ReadAll(newInflater(br))
	rest, _ := io.ReadAll(br)
	if (err == nil) != (werr == nil) {
		t.Fatalf("error %v, compress/flate %v", err, werr)
	}
	if err == nil && (!bytes.Equal(got, want) || !bytes.Equal(rest, wrest)) {
		t.Fatalf("decoded %d bytes leaving %d, compress/flate %d leaving %d", len(got), len(rest), len(want), len(wrest))
	}
}

func FuzzInflate(f *testing.F) {
	for _, level := range []int{0, 1, 6, 9, -2} {
		f.Add(deflateLevel(f, corpus(5000), level))
	}
	f.Add([]byte{0x4b, 0x4c, 0x4a, 0x4e, 0x4c, 0x02, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		compareInflate(t, b)
	})
}

func BenchmarkInflate(b *testing.B) {
	data := corpus(8 << 20)
	z := deflateLevel(b, data, 6)
	b.Run("berth", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for range b.N {
			f := newInflater(bufio.NewReaderSize(bytes.NewReader(z), 64<<10))
			io.Copy(io.Discard, f)
		}
	})
	b.Run("compress/flate", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for range b.N {
			io.Copy(io.Discard, flate.NewReader(bytes.NewReader(z)))
		}
	})
}
