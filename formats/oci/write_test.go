package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// twoLayerImage is a tree split into a zstd and a gzip layer.
func twoLayerImage(t *testing.T, tree string) v1.Image {
	t.Helper()
	top := newTestLayer(t, Gzip, dirE("srv"), reg("srv/index.html", "<h1>berth</h1>"))
	return newTestImage(t, layerFromDir(t, tree, Zstd), top)
}

func readLayout(t *testing.T, dir string) v1.Image {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("reading layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	// Other writers (skopeo) may leave the index's mediaType out.
	if len(im.Manifests) != 1 || (im.MediaType != types.OCIImageIndex && im.MediaType != "") {
		t.Fatalf("index: %+v", im)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func sameDigest(t *testing.T, a, b v1.Image) {
	t.Helper()
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Fatalf("manifest digest %s, want %s", db, da)
	}
}

func TestWriteLayout(t *testing.T) {
	requireRoot(t)
	tree := testTree(t)
	img := twoLayerImage(t, tree)
	parent := t.TempDir()
	dir := filepath.Join(parent, "img.oci")
	if err := WriteLayout(context.Background(), dir, img, WithRefName("latest")); err != nil {
		t.Fatal(err)
	}
	back := readLayout(t, dir)
	sameDigest(t, img, back)
	validateImage(t, back)
	idx, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	if !strings.Contains(string(idx), `"org.opencontainers.image.ref.name":"latest"`) ||
		!strings.Contains(string(idx), `"mediaType":"application/vnd.oci.image.index.v1+json"`) {
		t.Errorf("index.json without ref name: %s", idx)
	}
	// The flattened layout is the tree plus the top layer.
	dst, err := applyTo(t, back)
	if err != nil {
		t.Fatal(err)
	}
	got := snapshotNormalised(t, dst, false)
	if got["srv/index.html"].Size != int64(len("<h1>berth</h1>")) {
		t.Errorf("top layer missing: %+v", got["srv/index.html"])
	}
	delete(got, "srv")
	delete(got, "srv/index.html")
	mustEqualTrees(t, snapshotNormalised(t, tree, true), got)

	// An existing destination is refused unless replacing, and nothing
	// is left behind either way.
	if err := WriteLayout(context.Background(), dir, img); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("overwrite without replace: %v", err)
	}
	other := newTestImage(t, newTestLayer(t, Zstd, reg("x", "y")))
	if err := WriteLayout(context.Background(), dir, other, WithReplace()); err != nil {
		t.Fatal(err)
	}
	sameDigest(t, other, readLayout(t, dir))
	ents, _ := os.ReadDir(parent)
	if len(ents) != 1 {
		t.Errorf("left behind in %s: %v", parent, ents)
	}
	// A failing blob leaves no layout and no temporary directory.
	bad := newTestImage(t, tamperedLayer{newTestLayer(t, Zstd, reg("a", "b")), []byte("garbage")})
	if err := WriteLayout(context.Background(), filepath.Join(parent, "bad.oci"), bad); err == nil {
		t.Error("tampered layer written")
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Errorf("left behind after failure: %v", ents)
	}
	if err := WriteLayout(context.Background(), "/nonexistent/x.oci", img); err == nil {
		t.Error("unwritable destination accepted")
	}
}

// untar extracts a (flat, trusted) archive written by the tests.
func untar(t *testing.T, data []byte, dir string) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(archiveModTime) || h.Uid != 0 || h.Uname != "" {
			t.Errorf("%s: not reproducible metadata: %v %d %q", h.Name, h.ModTime, h.Uid, h.Uname)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWriteArchive(t *testing.T) {
	requireRoot(t)
	tree := testTree(t)
	img := twoLayerImage(t, tree)
	var a, b bytes.Buffer
	if err := WriteArchive(context.Background(), &a, img); err != nil {
		t.Fatal(err)
	}
	// The same image from the same tree, built again: identical bytes.
	if err := WriteArchive(context.Background(), &b, twoLayerImage(t, tree)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two archives of the same tree differ")
	}
	dir := t.TempDir()
	names := untar(t, a.Bytes(), dir)
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("archive not in name order: %q before %q", names[i-1], names[i])
		}
	}
	back := readLayout(t, dir)
	sameDigest(t, img, back)
	validateImage(t, back)
}

func TestWriteDockerArchive(t *testing.T) {
	requireRoot(t)
	tree := testTree(t)
	img := twoLayerImage(t, tree)
	p := filepath.Join(t.TempDir(), "img.docker.tar")
	var buf bytes.Buffer
	if err := WriteDockerArchive(context.Background(), &buf, img, "berth/test:v1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	untar(t, buf.Bytes(), dir)
	var m []dockerManifest
	raw, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err := json.Unmarshal(raw, &m); err != nil || len(m) != 1 || len(m[0].Layers) != 2 ||
		len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != "berth/test:v1" {
		t.Fatalf("manifest.json: %s (%v)", raw, err)
	}
	// With a zstd layer in the image, every layer goes in uncompressed.
	if !strings.HasSuffix(m[0].Layers[0], ".tar") || !strings.HasSuffix(m[0].Layers[1], ".tar") {
		t.Errorf("layer files: %v", m[0].Layers)
	}
	tag, _ := name.NewTag("berth/test:v1")
	back, err := tarball.ImageFromPath(p, &tag)
	if err != nil {
		t.Fatal(err)
	}
	// Same config (diffIDs, history, entrypoint) as the OCI image.
	cfgA, _ := img.ConfigName()
	cfgB, err := back.ConfigName()
	if err != nil || cfgA != cfgB {
		t.Fatalf("config %s, want %s (%v)", cfgB, cfgA, err)
	}
	validateImage(t, back)
	dst, err := applyTo(t, back)
	if err != nil {
		t.Fatal(err)
	}
	got := snapshotNormalised(t, dst, false)
	delete(got, "srv")
	delete(got, "srv/index.html")
	mustEqualTrees(t, snapshotNormalised(t, tree, true), got)

	var again bytes.Buffer
	if err := WriteDockerArchive(context.Background(), &again, twoLayerImage(t, tree), "berth/test:v1"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two docker archives of the same tree differ")
	}
	// An all-gzip image keeps its layers as they are (and passes ggcr's
	// full validation, which reads gzip layers only).
	gz := newTestImage(t, layerFromDir(t, tree, Gzip))
	gzPath := filepath.Join(t.TempDir(), "gz.docker.tar")
	f, err := os.Create(gzPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteDockerArchive(context.Background(), f, gz, ""); err != nil {
		t.Fatal(err)
	}
	f.Close()
	gzBack, err := tarball.ImageFromPath(gzPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	gl, _ := gz.Layers()
	bl, _ := gzBack.Layers()
	d1, _ := gl[0].Digest()
	d2, _ := bl[0].Digest()
	if d1 != d2 {
		t.Errorf("gzip layer rewritten: %s != %s", d2, d1)
	}
	validateImage(t, gzBack)

	if err := WriteDockerArchive(context.Background(), io.Discard, img, "Not A Tag!"); err == nil {
		t.Error("bad tag accepted")
	}
}
