package oci

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/formats/dirtree"
	"github.com/berth-dev/berth/formats/dirtree/treecmp"
	"github.com/berth-dev/berth/internal/testenv"
)

// item is one entry of a hand-written layer.
type item struct {
	hdr  tar.Header
	body string
}

func reg(name, body string) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: body}
}

func dirE(name string) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

func symE(name, target string) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func linkE(name, target string) item {
	return item{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

// sliceSource yields items and counts what is read from it.
type sliceSource struct {
	items     []item
	nexts     int
	bodyBytes int64
}

func (s *sliceSource) Next() (*formats.Entry, error) {
	s.nexts++
	if len(s.items) == 0 {
		return nil, io.EOF
	}
	it := s.items[0]
	s.items = s.items[1:]
	h := it.hdr
	h.ModTime = time.Unix(1700000000, 0)
	return &formats.Entry{Header: &h, Body: &countingReader{r: strings.NewReader(it.body), n: &s.bodyBytes}}, nil
}

type countingReader struct {
	r io.Reader
	n *int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

func newTestLayer(t *testing.T, comp LayerCompression, items ...item) *Layer {
	t.Helper()
	l, err := NewLayer(context.Background(), &sliceSource{items: items}, comp, t.TempDir())
	if err != nil {
		t.Fatalf("NewLayer: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func newTestImage(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := NewImage(layers, ImageConfig{Arch: "amd64", Entrypoint: []string{"/sbin/init"}})
	if err != nil {
		t.Fatalf("NewImage: %v", err)
	}
	return img
}

// testTree writes a small tree with every kind of file an image carries
// that an unprivileged-independent test can make (devices need root).
func testTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "etc/ssl"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "nix/store/abc-hello/bin"), 0o555))
	must(os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("ID=nixos\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "etc/ssl/big"), []byte(strings.Repeat("berth layer content ", 50000)), 0o600))
	must(os.WriteFile(filepath.Join(root, "nix/store/abc-hello/bin/hello"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.Link(filepath.Join(root, "nix/store/abc-hello/bin/hello"), filepath.Join(root, "nix/store/abc-hello/bin/hello2")))
	must(os.Symlink("/nix/store/abc-hello/bin/hello", filepath.Join(root, "etc/hello")))
	must(unix.Mkfifo(filepath.Join(root, "etc/fifo"), 0o640))
	must(unix.Setxattr(filepath.Join(root, "etc/os-release"), "user.berth", []byte("x\x00y"), 0))
	must(os.Chmod(filepath.Join(root, "nix/store/abc-hello/bin"), 0o555))
	must(os.Chmod(filepath.Join(root, "nix/store/abc-hello"), 0o555))
	return root
}

// layerFromDir makes one layer of the tree at dir.
func layerFromDir(t *testing.T, dir string, comp LayerCompression) *Layer {
	t.Helper()
	src, err := dirtree.NewSource(dir, dirtree.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	l, err := NewLayer(context.Background(), src, comp, t.TempDir())
	if err != nil {
		t.Fatalf("NewLayer: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// snapshotNormalised snapshots dir with every mtime set to the layers'
// fixed time (what NewLayer records) and the root left out.
func snapshotNormalised(t *testing.T, dir string, fixTimes bool) map[string]treecmp.Node {
	t.Helper()
	s, err := treecmp.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	delete(s, ".")
	if fixTimes {
		for k, n := range s {
			n.ModTime = layerModTime
			s[k] = n
		}
	}
	return s
}

func mustEqualTrees(t *testing.T, want, got map[string]treecmp.Node) {
	t.Helper()
	if d := treecmp.Diff(want, got); len(d) > 0 {
		t.Fatalf("trees differ (want vs got):\n%s", strings.Join(d, "\n"))
	}
}

func requireRoot(t *testing.T) { testenv.RequireRoot(t) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// validateImage runs go-containerregistry's validate.Image. Its layer check
// only understands gzip, so zstd and uncompressed layers are checked here
// instead (digest and size of the blob, diffID of the decompressed tar)
// after the fast validation of manifest, config and descriptors.
func validateImage(t *testing.T, img v1.Image) {
	t.Helper()
	if err := validate.Image(img, validate.Fast); err != nil {
		t.Fatalf("validate.Image (fast): %v", err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	allGzip := true
	for i, l := range layers {
		mt, _ := l.MediaType()
		if mt != types.OCILayer && mt != types.DockerLayer {
			allGzip = false
		}
		checkLayerBytes(t, i, l)
	}
	if allGzip {
		if err := validate.Image(img); err != nil {
			t.Fatalf("validate.Image: %v", err)
		}
	}
}

func checkLayerBytes(t *testing.T, i int, l v1.Layer) {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	ch := &countingHash{h: sha256.New()}
	dec, _, err := compress.NewReader(io.TeeReader(rc, ch))
	if err != nil {
		t.Fatalf("layer %d: %v", i, err)
	}
	uh := &countingHash{h: sha256.New()}
	if _, err := io.Copy(uh, dec); err != nil {
		t.Fatalf("layer %d: %v", i, err)
	}
	io.Copy(io.Discard, rc)
	d, _ := l.Digest()
	size, _ := l.Size()
	diffID, _ := l.DiffID()
	if ch.sum() != d || ch.n != size || uh.sum() != diffID {
		t.Fatalf("layer %d: digest %s size %d diffID %s; content gives %s %d %s", i, d, size, diffID, ch.sum(), ch.n, uh.sum())
	}
}
