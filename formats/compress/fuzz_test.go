package compress

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ulikunitz/xz"
)

// samples are the CLI-made files in testdata and what they decode to.
func samples(tb testing.TB) map[string][]byte {
	tb.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	a, b := read("a.txt"), read("b.txt")
	return map[string][]byte{
		"multiblock.xz":    a,
		"single.xz":        a,
		"concat-padded.xz": cat(a, b),
		"sha256.xz":        b,
		"pigz.gz":          a,
		"concat.gz":        cat(a, b),
		"concat.bz2":       cat(a, b),
		"frames.zst":       cat(a, b),
		"skippable.zst":    b,
		"a.txt":            a,
	}
}

// TestSamples needs no tools: the files were made once with them.
func TestSamples(t *testing.T) {
	for name, want := range samples(t) {
		f, _ := os.ReadFile(filepath.Join("testdata", name))
		out, k, err := decode(f)
		if err != nil {
			t.Fatalf("%s (%s): %v", name, k, err)
		}
		if wantK := KindFromSuffix(name); k != wantK {
			t.Errorf("%s detected as %s", name, k)
		}
		mustEqual(t, name, out, want)
	}
}

func FuzzDetect(f *testing.F) {
	for name := range samples(f) {
		b, _ := os.ReadFile(filepath.Join("testdata", name))
		f.Add(b[:min(len(b), 16)])
	}
	f.Add([]byte{})
	f.Add([]byte{0x5A, 0x2A, 0x4D, 0x18})
	f.Fuzz(func(t *testing.T, b []byte) {
		k := Detect(b)
		if Detect(b) != k {
			t.Fatal("Detect is not deterministic")
		}
		if k != None && len(b) < 2 {
			t.Fatalf("%s detected from %d bytes", k, len(b))
		}
		// More bytes never change a decision made on a full magic.
		if len(b) >= magicLen && Detect(append(bytes.Clone(b), 0, 1, 2)) != k {
			t.Fatal("trailing bytes changed the detection")
		}
		if k.Ext() == "" && k != None {
			t.Fatalf("kind %q has no suffix", k)
		}
	})
}

// FuzzNewReader feeds arbitrary bytes to every decoder. It must not panic
// or hang, the xz reader must give the same result with one goroutine and
// with several, and where ulikunitz/xz also decodes a stream the bytes must
// agree.
func FuzzNewReader(f *testing.F) {
	for name := range samples(f) {
		b, _ := os.ReadFile(filepath.Join("testdata", name))
		f.Add(b)
	}
	data := corpus(20 << 10)
	var small bytes.Buffer
	w := newXzWriterLevel(&small, xzLevel{dictCap: 4096, blockSize: 5000}, 2)
	w.Write(data)
	w.Close()
	f.Add(small.Bytes())
	for _, k := range []Kind{Gzip, Zstd} {
		f.Add(compressWith(f, k, data[:3000]))
	}
	const limit = 1 << 20 // output cap per input: bombs are not bugs
	f.Fuzz(func(t *testing.T, b []byte) {
		r, k, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		out, err := io.ReadAll(io.LimitReader(r, limit))
		r.Close()
		if k == Gzip && len(out) < limit {
			// Our inflater against the standard library's decoder.
			var ref []byte
			zr, rerr := gzip.NewReader(bytes.NewReader(b))
			if rerr == nil {
				ref, rerr = io.ReadAll(zr)
			}
			if (err == nil) != (rerr == nil) || (err == nil && !bytes.Equal(out, ref)) {
				t.Fatalf("gzip: %d bytes, %v; compress/gzip: %d bytes, %v", len(out), err, len(ref), rerr)
			}
		}
		if k != Xz || len(out) >= limit {
			return
		}
		// A corrupt block is delivered up to the damage when it is decoded
		// in the reading goroutine and not at all when a helper decoded
		// it: on errors the outputs agree up to the shorter one.
		maxDict := 0
		for _, procs := range []int{1, 2, 4} {
			out2, md, err2 := decodeXzDict(b, procs)
			maxDict = md
			short, long := out, out2
			if len(short) > len(long) {
				short, long = long, short
			}
			if (err == nil) != (err2 == nil) || (err == nil && len(out) != len(out2)) || !bytes.HasPrefix(long, short) {
				t.Fatalf("NewReader: %d bytes, %v; %d goroutines: %d bytes, %v", len(out), err, procs, len(out2), err2)
			}
		}
		// ulikunitz/xz allocates the dictionary a header announces (up to
		// 4 GiB) before reading any data: only ask it about small ones.
		if err != nil || maxDict > 8<<20 {
			return
		}
		if xr, xerr := xz.NewReader(bytes.NewReader(b)); xerr == nil {
			if ref, xerr := io.ReadAll(io.LimitReader(xr, limit)); xerr == nil && !bytes.Equal(ref, out) {
				t.Fatalf("ulikunitz/xz decodes %d bytes, we decode %d different ones", len(ref), len(out))
			}
		}
	})
}
