package compress

import (
	"bytes"
	"io"
	"testing"

	"github.com/ulikunitz/xz"
)

// Benchmarks use 16 MiB of system files. MB/s is uncompressed bytes. The
// ulikunitz benchmarks are the single-threaded baseline this package is
// measured against.

const benchSize = 16 << 20

func benchWrite(b *testing.B, k Kind, opts ...WriterOption) {
	data := corpus(benchSize)
	var out bytes.Buffer
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		out.Reset()
		w, err := NewWriter(&out, k, opts...)
		if err != nil {
			b.Fatal(err)
		}
		for p := data; len(p) > 0; p = p[min(len(p), 1<<20):] {
			w.Write(p[:min(len(p), 1<<20)])
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(100*float64(out.Len())/float64(len(data)), "%size")
}

func BenchmarkXzWrite(b *testing.B)        { benchWrite(b, Xz) }
func BenchmarkXzWriteLevel0(b *testing.B)  { benchWrite(b, Xz, WithLevel(0)) }
func BenchmarkXzWrite1Thread(b *testing.B) { benchWrite(b, Xz, WithConcurrency(1)) }
func BenchmarkGzipWrite(b *testing.B)      { benchWrite(b, Gzip) }
func BenchmarkZstdWrite(b *testing.B)      { benchWrite(b, Zstd) }

// BenchmarkXzWriteUlikunitz is ulikunitz/xz's own writer with its defaults
// (8 MiB dictionary, one block, one goroutine).
func BenchmarkXzWriteUlikunitz(b *testing.B) {
	data := corpus(benchSize)
	var out bytes.Buffer
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		out.Reset()
		w, err := xz.NewWriter(&out)
		if err != nil {
			b.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(100*float64(out.Len())/float64(len(data)), "%size")
}

func benchRead(b *testing.B, z []byte, n int, procs int) {
	b.SetBytes(int64(n))
	buf := make([]byte, 256<<10)
	for b.Loop() {
		r, err := newXzReader(newInput(bytes.NewReader(z)), procs, "")
		if err != nil {
			b.Fatal(err)
		}
		m, err := io.CopyBuffer(io.Discard, r, buf)
		if err != nil || m != int64(n) {
			b.Fatal(m, err)
		}
		r.Close()
	}
}

func benchReadUlikunitz(b *testing.B, z []byte, n int) {
	b.SetBytes(int64(n))
	for b.Loop() {
		r, err := xz.NewReader(bytes.NewReader(z))
		if err != nil {
			b.Fatal(err)
		}
		if m, err := io.Copy(io.Discard, r); err != nil || m != int64(n) {
			b.Fatal(m, err)
		}
	}
}

// BenchmarkXzRead decodes our own output (2 MiB blocks with sizes), a
// "xz -T2 -6" file (24 MiB blocks would be one block here, so 4 MiB blocks
// are asked for) and a single-block "xz -6" file, with 1 and 2 goroutines,
// and with ulikunitz/xz's reader.
func BenchmarkXzRead(b *testing.B) {
	data := corpus(benchSize)
	files := []struct {
		name string
		z    []byte
	}{
		{"ours", compressWith(b, Xz, data)},
		{"xz-T2", run(b, data, "xz", "-6", "-T2", "--block-size=4MiB", "-c")},
		{"xz-T1", run(b, data, "xz", "-6", "-T1", "-c")},
	}
	for _, f := range files {
		b.Run(f.name+"/1-goroutine", func(b *testing.B) { benchRead(b, f.z, len(data), 1) })
		b.Run(f.name+"/2-goroutines", func(b *testing.B) { benchRead(b, f.z, len(data), 2) })
		b.Run(f.name+"/ulikunitz", func(b *testing.B) { benchReadUlikunitz(b, f.z, len(data)) })
	}
}

func benchReadKind(b *testing.B, k Kind) {
	data := corpus(benchSize)
	z := compressWith(b, k, data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		r, _, err := NewReader(bytes.NewReader(z))
		if err != nil {
			b.Fatal(err)
		}
		if m, err := io.Copy(io.Discard, r); err != nil || m != int64(len(data)) {
			b.Fatal(m, err)
		}
		r.Close()
	}
}

func BenchmarkGzipRead(b *testing.B) { benchReadKind(b, Gzip) }
func BenchmarkZstdRead(b *testing.B) { benchReadKind(b, Zstd) }
