package dirtree

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/formats"
)

// benchTree is the tree read by the benchmarks: BERTH_BENCH_TREE or
// /usr/share.
func benchTree(b *testing.B) string {
	dir := os.Getenv("BERTH_BENCH_TREE")
	if dir == "" {
		dir = "/usr/share"
	}
	if _, err := os.Stat(dir); err != nil {
		b.Skip(err)
	}
	return dir
}

// BenchmarkSource walks a real tree and reads every file.
func BenchmarkSource(b *testing.B) {
	dir := benchTree(b)
	var files, bytes int64
	for b.Loop() {
		s, err := NewSource(dir, SourceOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for {
			e, err := s.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			files++
			if e.Body != nil {
				n, err := io.Copy(io.Discard, e.Body)
				if err != nil {
					b.Fatal(err)
				}
				bytes += n
			}
		}
		s.Close()
	}
	b.ReportMetric(float64(files)/b.Elapsed().Seconds(), "entries/s")
	b.SetBytes(bytes / int64(b.N))
}

// synthetic yields dirs directories of files files of size bytes each.
type synthetic struct {
	dirs, files int
	body        []byte
	i           int
}

func (s *synthetic) Next() (*formats.Entry, error) {
	per := s.files + 1
	if s.i >= s.dirs*per {
		return nil, io.EOF
	}
	d, f := s.i/per, s.i%per
	s.i++
	if f == 0 {
		return &formats.Entry{Header: &tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("d%03d", d), Mode: 0o755}}, nil
	}
	return &formats.Entry{
		Header: &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("d%03d/f%05d", d, f), Mode: 0o644, Size: int64(len(s.body))},
		Body:   bytes.NewReader(s.body),
	}, nil
}

// BenchmarkSink extracts 10,000 files of 4 KiB in 100 directories.
func BenchmarkSink(b *testing.B) {
	const dirs, files = 100, 100
	body := bytes.Repeat([]byte("berth!\n"), 4096/7)
	base := b.TempDir()
	n := 0
	for b.Loop() {
		b.StopTimer()
		dst := filepath.Join(base, fmt.Sprint(n))
		n++
		if err := os.Mkdir(dst, 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := extract(&synthetic{dirs: dirs, files: files, body: body}, dst, Options{IgnoreOwnership: os.Geteuid() != 0}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(dst)
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*dirs*files)/b.Elapsed().Seconds(), "files/s")
	b.SetBytes(int64(dirs * files * len(body)))
}

// BenchmarkCopy copies a real tree (BERTH_BENCH_TREE or /usr/share)
// directory to directory.
func BenchmarkCopy(b *testing.B) {
	dir := benchTree(b)
	base := b.TempDir()
	var entries int64
	n := 0
	for b.Loop() {
		b.StopTimer()
		dst := filepath.Join(base, fmt.Sprint(n))
		n++
		if err := os.Mkdir(dst, 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		s, err := NewSource(dir, SourceOptions{})
		if err != nil {
			b.Fatal(err)
		}
		sink, err := NewSink(dst, Options{IgnoreOwnership: os.Geteuid() != 0})
		if err != nil {
			b.Fatal(err)
		}
		c, err := formats.Copy(context.Background(), sink, s)
		if err != nil {
			b.Fatal(err)
		}
		if err := sink.Close(); err != nil {
			b.Fatal(err)
		}
		s.Close()
		entries += c
		b.StopTimer()
		os.RemoveAll(dst)
		b.StartTimer()
	}
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
}
