package oci

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/formats/dirtree"
	"github.com/berth-dev/berth/internal/testenv"
)

// Benchmarks on the cached debootstrap tree (make bench-style figures):
//
//	go test ./formats/oci -run '^$' -bench . -benchtime 3x
func benchLayer(b *testing.B, tree string, comp LayerCompression) *Layer {
	src, err := dirtree.NewSource(tree, dirtree.SourceOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	l, err := NewLayer(context.Background(), src, comp, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func BenchmarkNewLayer(b *testing.B) {
	tree := testenv.DebianTree(b)
	for _, comp := range []LayerCompression{Zstd, Gzip} {
		b.Run(string(comp), func(b *testing.B) {
			var size int64
			for b.Loop() {
				l := benchLayer(b, tree, comp)
				size = l.UncompressedSize()
				cs, _ := l.Size()
				b.ReportMetric(float64(cs)/float64(size), "ratio")
				l.Close()
			}
			b.SetBytes(size)
		})
	}
}

func BenchmarkWriteLayout(b *testing.B) {
	tree := testenv.DebianTree(b)
	l := benchLayer(b, tree, Zstd)
	defer l.Close()
	img, err := NewImage([]v1.Layer{l}, ImageConfig{Arch: "amd64"})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	i := 0
	for b.Loop() {
		i++
		p := filepath.Join(dir, "img"+string(rune('a'+i%26))+".oci")
		os.RemoveAll(p)
		if err := WriteLayout(context.Background(), p, img); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApply(b *testing.B) {
	testenv.RequireRoot(b)
	tree := testenv.DebianTree(b)
	l := benchLayer(b, tree, Zstd)
	defer l.Close()
	img, err := NewImage([]v1.Layer{l}, ImageConfig{Arch: "amd64"})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(l.UncompressedSize())
	for b.Loop() {
		dst := b.TempDir()
		if err := Apply(context.Background(), dst, img, nil); err != nil {
			b.Fatal(err)
		}
	}
}
