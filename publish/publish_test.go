package publish

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/verify"
)

func TestDefaultName(t *testing.T) {
	for _, c := range []struct{ flake, config, top, want string }{
		{".#web", "", "", "web"},
		{"path:/x/y#test", "", "", "test"},
		{"github:o/r#nixosConfigurations.\"box\"", "", "", "box"},
		{".", "", "", ""},
		{".#", "", "", ""},
		{".#a/b", "", "", ""},
		{"", "vm/configuration.nix", "", "configuration"},
		{"", "", "/nix/store/v8dnjk0r973bd35afzdd0d7vkznwmqay-nixos-system-web-24.05", "nixos-system-web-24.05"},
		{"", "", "./result/", "result"},
		{"", "", "", ""},
	} {
		if got := DefaultName(c.flake, c.config, c.top); got != c.want {
			t.Errorf("DefaultName(%q, %q, %q) = %q, want %q", c.flake, c.config, c.top, got, c.want)
		}
	}
}

func FuzzDefaultName(f *testing.F) {
	f.Add(".#web", "", "")
	f.Add("", "a/b.nix", "")
	f.Add("", "", "/nix/store/v8dnjk0r973bd35afzdd0d7vkznwmqay-x")
	f.Fuzz(func(t *testing.T, flake, config, top string) {
		n := DefaultName(flake, config, top)
		if n != "" && (!validName(n) || strings.ContainsAny(n, "/\x00") || n == "." || n == "..") {
			t.Fatalf("DefaultName gave unsafe name %q", n)
		}
	})
}

func writeImages(t *testing.T, d *Dir) *Release {
	t.Helper()
	rel := &Release{Name: "x", System: "/nix/store/aaaa-x"}
	for _, f := range []struct{ name, data string }{{"x.tar", "tar bytes"}, {"x.nspawn", "[Exec]\n"}} {
		if err := os.WriteFile(d.Path(f.name), []byte(f.data), 0o644); err != nil {
			t.Fatal(err)
		}
		rel.Files = append(rel.Files, File{Format: strings.TrimPrefix(filepath.Ext(f.name), "."), File: f.name})
	}
	return rel
}

func TestSealCommitReplace(t *testing.T) {
	w := t.TempDir()
	out := filepath.Join(w, "rel")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Create(out, false, false)
	if err != nil {
		t.Fatal(err)
	}
	rel := writeImages(t, d)
	sums, err := d.Seal(context.Background(), rel, Signers{Cosign: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("the set is visible before Commit: %v", err)
	}
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(w)
	if len(ents) != 1 {
		t.Fatalf("left next to the set: %v", ents)
	}
	parsed, err := verify.ParseSums(bytes.NewReader(sums))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(parsed.Names(), " "); got != "release.json x.nspawn x.tar" {
		t.Errorf("SHA256SUMS lists %q", got)
	}
	for _, n := range parsed.Names() {
		dg, err := verify.HashFile(filepath.Join(out, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := parsed.Check(n, dg); err != nil {
			t.Error(err)
		}
	}
	sig, err := os.ReadFile(filepath.Join(out, "SHA256SUMS.sig"))
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.VerifyBlob(key.Public(), bytes.NewReader(sums), sig); err != nil {
		t.Errorf("SHA256SUMS.sig: %v", err)
	}
	var got Release
	js, _ := os.ReadFile(filepath.Join(out, "release.json"))
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Files) != 2 || got.Files[1].File != "x.tar" || got.Files[1].Size != 9 || got.Files[1].SHA256 != mustHash(t, filepath.Join(out, "x.tar")) {
		t.Errorf("release.json: %+v", got)
	}

	// Not empty: refused without replace; replaced atomically with it.
	if _, err := Create(out, false, false); err == nil {
		t.Fatal("Create over a non-empty set without replace succeeded")
	}
	d2, err := Create(out, true, false)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(d2.Path("y"), []byte("y"), 0o644)
	if err := d2.Commit(); err != nil {
		t.Fatal(err)
	}
	if l := names(t, out); l != "y" {
		t.Errorf("replaced set holds %q", l)
	}
	if l := names(t, w); l != "rel" {
		t.Errorf("next to the set: %q", l)
	}

	// Abort leaves nothing.
	d3, err := Create(filepath.Join(w, "other"), false, false)
	if err != nil {
		t.Fatal(err)
	}
	d3.Abort()
	if l := names(t, w); l != "rel" {
		t.Errorf("after Abort: %q", l)
	}
	// A listed file that is missing fails Seal.
	d4, _ := Create(filepath.Join(w, "bad"), false, true)
	defer d4.Abort()
	if _, err := d4.Seal(context.Background(), &Release{Files: []File{{File: "missing"}}}, Signers{}, nil); err == nil {
		t.Error("Seal with a missing file succeeded")
	}
	if _, err := d4.Seal(context.Background(), &Release{Files: []File{{File: "../x"}}}, Signers{}, nil); err == nil {
		t.Error("Seal with a path outside the set succeeded")
	}
}

func mustHash(t *testing.T, p string) string {
	d, err := verify.HashFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func names(t *testing.T, dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return strings.Join(n, " ")
}

// The signature image has cosign's shape and its signature verifies with
// the key (and not with another) over the simple-signing payload; building
// it twice gives the same manifest digest.
func TestSignatureImage(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := "sha256:" + strings.Repeat("ab", 32)
	img, err := SignatureImage(key, "127.0.0.1:5000/berth/test", digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != SimpleSigningMediaType {
		t.Fatalf("manifest: %+v", m)
	}
	sig := m.Layers[0].Annotations[SignatureAnnotation]
	layers, _ := img.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := io.ReadAll(rc)
	if err := verify.VerifySimpleSigning(key.Public(), payload, sig, digest, "127.0.0.1:5000/berth/test"); err != nil {
		t.Errorf("signature does not verify: %v", err)
	}
	if err := verify.VerifySimpleSigning(other.Public(), payload, sig, digest, ""); err == nil {
		t.Error("signature verifies with another key")
	}
	if err := verify.VerifySimpleSigning(key.Public(), payload, sig, "sha256:"+strings.Repeat("cd", 32), ""); err == nil {
		t.Error("signature verifies for another digest")
	}
	img2, _ := SignatureImage(key, "127.0.0.1:5000/berth/test", digest)
	d1, _ := img.Digest()
	d2, _ := img2.Digest()
	if d1 != d2 {
		t.Errorf("signature image not reproducible: %s vs %s", d1, d2)
	}
	tag, err := SignatureTag("127.0.0.1:5000/berth/test:v1", digest)
	if err != nil || tag != "127.0.0.1:5000/berth/test:sha256-"+strings.Repeat("ab", 32)+".sig" {
		t.Errorf("SignatureTag = %q, %v", tag, err)
	}
	if _, err := SignatureImage(key, "r", "sha256:zz"); err == nil {
		t.Error("bad digest accepted")
	}
}
