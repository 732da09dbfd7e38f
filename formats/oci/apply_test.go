package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/formats/dirtree/hostile"
)

// writeExpected builds the tree a test expects, item by item, with the
// layers' fixed mtime.
func writeExpected(t *testing.T, items ...item) string {
	t.Helper()
	root := t.TempDir()
	for _, it := range items {
		p := filepath.Join(root, it.hdr.Name)
		var err error
		switch it.hdr.Typeflag {
		case tar.TypeDir:
			err = os.Mkdir(p, os.FileMode(it.hdr.Mode))
		case tar.TypeReg:
			err = os.WriteFile(p, []byte(it.body), 0o600)
		case tar.TypeSymlink:
			err = os.Symlink(it.hdr.Linkname, p)
		case tar.TypeLink:
			err = os.Link(filepath.Join(root, it.hdr.Linkname), p)
		}
		if err == nil && it.hdr.Typeflag != tar.TypeSymlink {
			err = os.Chmod(p, os.FileMode(it.hdr.Mode))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func applyTo(t *testing.T, img v1.Image) (string, error) {
	t.Helper()
	dst := t.TempDir()
	return dst, Apply(context.Background(), dst, img, testLogger(t))
}

func TestApplyWhiteoutsOpaqueHardLinks(t *testing.T) {
	requireRoot(t)
	l1 := newTestLayer(t, Zstd,
		dirE("etc"), reg("etc/a", "a1"), linkE("etc/b", "etc/a"), reg("etc/keep", "keep"),
		dirE("opt"), reg("opt/x", "x1"), dirE("opt/sub"), reg("opt/sub/y", "y1"),
		dirE("gone"), dirE("gone/deep"), reg("gone/deep/f", "f"),
		dirE("data"), reg("data/t", "t1"), linkE("data/h", "data/t"),
		dirE("o2"), dirE("o2/keepdir"), reg("o2/keepdir/old", "old"), reg("o2/old", "old"),
	)
	l2 := newTestLayer(t, Gzip,
		reg("etc/a", "a2"),      // replaces the target of etc/b
		reg(".wh.gone", ""),     // removes a whole tree
		reg("data/.wh.t", ""),   // removes the target of data/h
		reg("etc/.wh.nope", ""), // whiteout of nothing
		dirE("opt"), reg("opt/new", "n"),
		reg("opt/.wh..wh..opq", ""),             // after an entry of the same layer: keeps it
		dirE("new"), linkE("new/l", "etc/keep"), // hard link to a lower layer's file
		reg("o2/keepdir/new", "new"), // implicit parent: o2/keepdir written by this layer
		reg("o2/.wh..wh..opq", ""),
		reg(".wh..wh.plnk", ""), // aufs metadata: ignored
	)
	l3 := newTestLayer(t, None,
		reg("etc/.wh.keep", ""), // new/l keeps the content
		reg("opt/.wh..wh..opq", ""), dirE("opt"), reg("opt/z", "z"),
		dirE("w"), reg("w/f", "same"), reg("w/.wh.f", ""), // same-layer whiteout ignored
		symE("s", "etc/a"),
	)
	dst, err := applyTo(t, newTestImage(t, l1, l2, l3))
	if err != nil {
		t.Fatal(err)
	}
	want := writeExpected(t,
		dirE("etc"), reg("etc/a", "a2"), reg("etc/b", "a1"),
		dirE("data"), reg("data/h", "t1"),
		dirE("opt"), reg("opt/z", "z"),
		dirE("new"), reg("new/l", "keep"),
		dirE("o2"), dirE("o2/keepdir"), reg("o2/keepdir/new", "new"),
		dirE("w"), reg("w/f", "same"),
		symE("s", "etc/a"),
	)
	mustEqualTrees(t, snapshotNormalised(t, want, true), snapshotNormalised(t, dst, false))
}

func TestApplyRoundTripTree(t *testing.T) {
	requireRoot(t)
	tree := testTree(t)
	for _, comp := range []LayerCompression{Zstd, Gzip, None} {
		img := newTestImage(t, layerFromDir(t, tree, comp))
		dst, err := applyTo(t, img)
		if err != nil {
			t.Fatalf("%s: %v", comp, err)
		}
		mustEqualTrees(t, snapshotNormalised(t, tree, true), snapshotNormalised(t, dst, false))
	}
}

// tamperedLayer returns other bytes than its digest promises.
type tamperedLayer struct {
	v1.Layer
	data []byte
}

func (l tamperedLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.data)), nil
}

func TestApplyRefusesBadLayers(t *testing.T) {
	requireRoot(t)
	good := newTestLayer(t, Gzip, reg("a", strings.Repeat("x", 1000)))
	rc, _ := good.Compressed()
	data, _ := io.ReadAll(rc)

	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 1
	short := data[:len(data)-10]
	// A layer whose bytes are a different (valid) tar than its digest.
	other := newTestLayer(t, Gzip, reg("a", strings.Repeat("y", 1000)))
	rc2, _ := other.Compressed()
	otherData, _ := io.ReadAll(rc2)

	badDiffID, err := mutate.ConfigFile(newTestImage(t, good), func() *v1.ConfigFile {
		cf, _ := newTestImage(t, good).ConfigFile()
		cf = cf.DeepCopy()
		cf.RootFS.DiffIDs[0] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
		return cf
	}())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		img  v1.Image
		want string
	}{
		{"flipped", newTestImage(t, tamperedLayer{good, flipped}), ""},
		{"truncated", newTestImage(t, tamperedLayer{good, short}), ""},
		{"other content", newTestImage(t, tamperedLayer{good, otherData}), "digest"},
		{"diffID", badDiffID, "config says"},
		{"unknown media type", mustImage(t, static.NewLayer([]byte("x"), "application/x-berth-test")), "unsupported layer media type"},
		{"foreign layer", mustImage(t, static.NewLayer([]byte("x"), types.DockerForeignLayer)), "non-distributable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := applyTo(t, c.img)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), "layer 1/1") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not name the layer and %q", err, c.want)
			}
			t.Log(err)
		})
	}
}

// mustImage wraps any layer (ignoring NewImage's OCI media type rule) in a
// minimal image.
func mustImage(t *testing.T, l v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(mutate.MediaType(emptyOCI(), types.OCIManifestSchema1), l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func emptyOCI() v1.Image {
	img, _ := NewImage(nil, ImageConfig{Arch: "amd64"})
	return img
}

// rawLayer makes an uncompressed layer from a tar exactly as given.
func rawLayer(t *testing.T, write func(io.Writer) error) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		t.Fatal(err)
	}
	return static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer)
}

func TestApplyHostile(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	victim := filepath.Join(base, "victim")
	if err := os.Mkdir(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(victim, "passwd"), []byte("root"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshotNormalised(t, victim, false)
	for _, c := range hostile.Cases(victim) {
		if c.Unprivileged {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			dst := filepath.Join(base, "root-"+c.Name)
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			err := Apply(context.Background(), dst, mustImage(t, rawLayer(t, c.WriteTar)), testLogger(t))
			if c.Bad == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if c.Bad != "" && (err == nil || !strings.Contains(err.Error(), c.Bad)) {
				t.Fatalf("error %v does not name %q", err, c.Bad)
			}
			mustEqualTrees(t, before, snapshotNormalised(t, victim, false))
		})
	}
	// Whiteouts through a symlink left by a lower layer.
	symLayer := newTestLayer(t, Zstd, symE("a", victim), symE("b", "../victim"))
	for _, c := range []struct{ name, wh string }{
		{"whiteout-through-symlink", "a/.wh.passwd"},
		{"whiteout-through-relative-symlink", "b/.wh.passwd"},
		{"opaque-through-symlink", "a/.wh..wh..opq"},
		{"whiteout-dotdot", ".wh.."},
	} {
		t.Run(c.name, func(t *testing.T) {
			top := newTestLayer(t, Zstd, reg(c.wh, ""))
			_, err := applyTo(t, newTestImage(t, symLayer, top))
			if err == nil || !strings.Contains(err.Error(), "layer 2/2") {
				t.Fatalf("whiteout %s: %v", c.wh, err)
			}
			if c.name != "whiteout-dotdot" && !errors.Is(err, formats.ErrUnsafePath) {
				t.Errorf("error is not ErrUnsafePath: %v", err)
			}
			t.Log(err)
			mustEqualTrees(t, before, snapshotNormalised(t, victim, false))
		})
	}
	// A whiteout of a symlink removes the link, never what it points to.
	top := newTestLayer(t, Zstd, reg(".wh.a", ""))
	dst, err := applyTo(t, newTestImage(t, symLayer, top))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "a")); !os.IsNotExist(err) {
		t.Errorf("symlink a not removed: %v", err)
	}
	mustEqualTrees(t, before, snapshotNormalised(t, victim, false))
}

func TestApplyDockerGzipLayerAndMagic(t *testing.T) {
	requireRoot(t)
	// A Docker-typed gzip layer and a layer whose media type says tar but
	// whose bytes are zstd: compression is detected from the bytes.
	var gz, zs bytes.Buffer
	for _, x := range []struct {
		buf  *bytes.Buffer
		kind compress.Kind
		body string
	}{{&gz, compress.Gzip, "g"}, {&zs, compress.Zstd, "z"}} {
		w, _ := compress.NewWriter(x.buf, x.kind)
		s := formats.NewTarSink(w, formats.TarOptions{ModTime: layerModTime})
		if _, err := formats.Copy(context.Background(), s, &sliceSource{items: []item{reg("f-"+x.body, x.body)}}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		w.Close()
	}
	img, err := mutate.AppendLayers(emptyOCI(),
		bytesLayer(t, gz.Bytes(), types.DockerLayer),
		bytesLayer(t, zs.Bytes(), types.OCIUncompressedLayer))
	if err != nil {
		t.Fatal(err)
	}
	dst, err := applyTo(t, img)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"f-g", "f-z"} {
		if _, err := os.Stat(filepath.Join(dst, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestParseWhiteout(t *testing.T) {
	cases := []struct {
		name   string
		kind   whiteoutKind
		target string
		bad    bool
	}{
		{"etc/passwd", notWhiteout, "", false},
		{".wh.foo", whiteoutFile, "foo", false},
		{"a/b/.wh.c", whiteoutFile, "a/b/c", false},
		{"a/.wh..wh..opq", whiteoutOpaque, "a", false},
		{".wh..wh..opq", whiteoutOpaque, ".", false},
		{"a/.wh..wh.plnk", whiteoutOther, "", false},
		{"a/x.wh.y", notWhiteout, "", false},
		{".wh.", 0, "", true},
		{"a/.wh..", 0, "", true},
		{"a/.wh...", 0, "", true},
		{"a/.wh....", whiteoutFile, "a/...", false},
	}
	for _, c := range cases {
		kind, target, err := parseWhiteout(c.name)
		if (err != nil) != c.bad || kind != c.kind || target != c.target {
			t.Errorf("parseWhiteout(%q) = %v, %q, %v", c.name, kind, target, err)
		}
	}
}

// FuzzParseWhiteout checks that a whiteout never names something outside
// the tree or the tree itself, whatever the entry name.
func FuzzParseWhiteout(f *testing.F) {
	for _, s := range []string{".wh.a", "a/.wh..wh..opq", ".wh..", ".wh.", "a/.wh.../b", ".wh..wh.x", "x/.wh.y/z", "../.wh.x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		clean, err := formats.CleanName(name, false)
		if err != nil {
			return // the tar source refuses it before
		}
		kind, target, err := parseWhiteout(clean)
		if err != nil {
			return
		}
		switch kind {
		case whiteoutFile:
			c, err := formats.CleanName(target, false)
			if err != nil || c != target || c == "." {
				t.Fatalf("%q: whiteout target %q is not a name in the tree (%v)", clean, target, err)
			}
		case whiteoutOpaque:
			if c, err := formats.CleanName(target, false); err != nil || c != target {
				t.Fatalf("%q: opaque directory %q is not a name in the tree", clean, target)
			}
		}
	})
}

// blobLayer is a layer from bytes as they are (static.NewLayer takes its
// bytes for the uncompressed tar, so its diffID is wrong for compressed
// data); ggcr computes the diffID by decompressing.
type blobLayer struct {
	data []byte
	mt   types.MediaType
}

func (b blobLayer) Digest() (v1.Hash, error)            { return sha256Hash(b.data), nil }
func (b blobLayer) Size() (int64, error)                { return int64(len(b.data)), nil }
func (b blobLayer) MediaType() (types.MediaType, error) { return b.mt, nil }
func (b blobLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b.data)), nil
}

func bytesLayer(t *testing.T, data []byte, mt types.MediaType) v1.Layer {
	t.Helper()
	l, err := partial.CompressedToLayer(blobLayer{data, mt})
	if err != nil {
		t.Fatal(err)
	}
	return l
}
