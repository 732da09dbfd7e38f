package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
)

func TestNewLayerOnePass(t *testing.T) {
	items := []item{dirE("etc"), reg("etc/a", "hello"), reg("etc/b", "world!"), symE("etc/l", "a"), linkE("etc/h", "etc/a")}
	for _, comp := range []LayerCompression{Zstd, Gzip, None} {
		t.Run(string(comp), func(t *testing.T) {
			src := &sliceSource{items: append([]item(nil), items...)}
			tmp := t.TempDir()
			l, err := NewLayer(context.Background(), src, comp, tmp)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			// Each entry read once, each body once, then one EOF.
			if src.nexts != len(items)+1 {
				t.Errorf("Next called %d times for %d entries", src.nexts, len(items))
			}
			if src.bodyBytes != int64(len("hello")+len("world!")) {
				t.Errorf("read %d body bytes", src.bodyBytes)
			}
			// The spool file has no name: nothing is left in tmpDir.
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("temporary directory not empty: %v", ents)
			}
			// Digest, size and diffID are those of the bytes.
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(rc)
			rc.Close()
			sum := sha256.Sum256(data)
			d, _ := l.Digest()
			size, _ := l.Size()
			if d.Hex != hex.EncodeToString(sum[:]) || size != int64(len(data)) {
				t.Errorf("digest/size %s/%d do not match content %x/%d", d, size, sum, len(data))
			}
			dec, kind, err := compress.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(dec)
			wantKind := map[LayerCompression]compress.Kind{Zstd: compress.Zstd, Gzip: compress.Gzip, None: compress.None}[comp]
			if kind != wantKind {
				t.Errorf("compressed as %s, want %s", kind, wantKind)
			}
			rawSum := sha256.Sum256(raw)
			diffID, _ := l.DiffID()
			if diffID.Hex != hex.EncodeToString(rawSum[:]) || l.UncompressedSize() != int64(len(raw)) {
				t.Errorf("diffID %s does not match the tar", diffID)
			}
			mt, _ := l.MediaType()
			wantMT := map[LayerCompression]types.MediaType{Zstd: types.OCILayerZStd, Gzip: types.OCILayer, None: types.OCIUncompressedLayer}[comp]
			if mt != wantMT {
				t.Errorf("media type %s, want %s", mt, wantMT)
			}
			// The tar has the reproducible metadata.
			ts := formats.NewTarSource(bytes.NewReader(raw))
			n := 0
			for {
				e, err := ts.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				n++
				if !e.Header.ModTime.Equal(layerModTime) || e.Header.Uname != "" {
					t.Errorf("%s: mtime %v uname %q", e.Header.Name, e.Header.ModTime, e.Header.Uname)
				}
			}
			if n != len(items) {
				t.Errorf("%d entries in the tar, want %d", n, len(items))
			}
			if comp == Gzip {
				if err := validate.Layer(l); err != nil {
					t.Errorf("validate.Layer: %v", err)
				}
			}
		})
	}
}

func TestNewLayerReproducible(t *testing.T) {
	tree := testTree(t)
	for _, comp := range []LayerCompression{Zstd, Gzip} {
		a := layerFromDir(t, tree, comp)
		b := layerFromDir(t, tree, comp)
		da, _ := a.Digest()
		db, _ := b.Digest()
		ia, _ := a.DiffID()
		ib, _ := b.DiffID()
		if da != db || ia != ib {
			t.Errorf("%s: two layers of the same tree differ: %s/%s vs %s/%s", comp, da, ia, db, ib)
		}
		imgA, imgB := newTestImage(t, a), newTestImage(t, b)
		ma, _ := imgA.Digest()
		mb, _ := imgB.Digest()
		ca, _ := imgA.ConfigName()
		cb, _ := imgB.ConfigName()
		if ma != mb || ca != cb {
			t.Errorf("%s: image digests differ: %s/%s vs %s/%s", comp, ma, ca, mb, cb)
		}
	}
}

func TestNewLayerErrors(t *testing.T) {
	if _, err := NewLayer(context.Background(), &sliceSource{}, "lz4", t.TempDir()); err == nil {
		t.Error("unknown compression accepted")
	}
	if _, err := NewLayer(context.Background(), &sliceSource{}, Zstd, "/nonexistent/dir"); err == nil {
		t.Error("missing temporary directory accepted")
	}
	// A body shorter than its header says fails, naming the entry.
	bad := item{hdr: reg("short", "abc").hdr, body: "a"}
	_, err := NewLayer(context.Background(), &sliceSource{items: []item{bad}}, Zstd, t.TempDir())
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("short")) {
		t.Errorf("short body: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewLayer(ctx, &sliceSource{items: []item{reg("a", "b")}}, Zstd, t.TempDir()); err == nil {
		t.Error("cancelled context ignored")
	}
	for _, s := range []string{"", "zstd", "gzip", "none", "uncompressed"} {
		if _, err := ParseLayerCompression(s); err != nil {
			t.Errorf("ParseLayerCompression(%q): %v", s, err)
		}
	}
	if _, err := ParseLayerCompression("xz"); err == nil {
		t.Error("xz layers accepted")
	}
}

func TestNewImageMediaTypes(t *testing.T) {
	l := newTestLayer(t, Zstd, reg("a", "b"))
	img, err := NewImage([]v1.Layer{l}, ImageConfig{Arch: "arm64", Variant: "v8", Env: []string{"A=b"}, Labels: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || m.Layers[0].MediaType != types.OCILayerZStd {
		t.Errorf("media types: manifest %s config %s layer %s", m.MediaType, m.Config.MediaType, m.Layers[0].MediaType)
	}
	cf, _ := img.ConfigFile()
	if cf.OS != "linux" || cf.Architecture != "arm64" || cf.Variant != "v8" || !cf.Created.Time.Equal(DefaultCreated) ||
		cf.Config.Labels["k"] != "v" || len(cf.History) != 1 || len(cf.RootFS.DiffIDs) != 1 {
		t.Errorf("config: %+v", cf)
	}
	validateImage(t, img)
	if _, err := NewImage([]v1.Layer{l}, ImageConfig{}); err == nil {
		t.Error("image without architecture accepted")
	}
	if _, err := NewImage([]v1.Layer{l}, ImageConfig{Arch: "amd64"}, v1.History{}, v1.History{}); err == nil {
		t.Error("history of the wrong length accepted")
	}
}

func TestLayerDigestIndependentOfConcurrency(t *testing.T) {
	// 6 MiB of half-compressible data: several zstd blocks per goroutine.
	data := make([]byte, 6<<20)
	x := uint32(1)
	for i := range data {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		if x%3 == 0 {
			data[i] = byte(x)
		} else {
			data[i] = byte(i >> 12)
		}
	}
	var digests []string
	for _, c := range []int{1, 2, 4} {
		src := &sliceSource{items: []item{reg("big", string(data))}}
		l, err := NewLayer(context.Background(), src, Zstd, t.TempDir(), WithConcurrency(c))
		if err != nil {
			t.Fatal(err)
		}
		d, _ := l.Digest()
		l.Close()
		digests = append(digests, d.String())
	}
	if digests[0] != digests[1] || digests[1] != digests[2] {
		t.Fatalf("zstd layer digest depends on concurrency: %v", digests)
	}
}
