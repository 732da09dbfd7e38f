package pull

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/formats/dirtree"
	"github.com/berth-dev/berth/formats/dirtree/treecmp"
	"github.com/berth-dev/berth/formats/oci"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/verify"
	"github.com/berth-dev/berth/verify/verifytest"
)

// anonymous keeps the tests away from the host's docker credentials.
var anonymous = authn.NewMultiKeychain()

// blobLog is a reverse proxy on 127.0.0.1 in front of a registry that
// records the blobs fetched through it.
type blobLog struct {
	mu   sync.Mutex
	gets []string
}

func (b *blobLog) fetched() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.gets...)
}

func (b *blobLog) reset() {
	b.mu.Lock()
	b.gets = nil
	b.mu.Unlock()
}

func recordingProxy(t *testing.T, registry string) (string, *blobLog) {
	t.Helper()
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: registry})
	bl := &blobLog{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			bl.mu.Lock()
			bl.gets = append(bl.gets, r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
			bl.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return l.Addr().String(), bl
}

// treeLayer makes one layer (oci.NewLayer) of a small tree written by a
// shell script run in an empty directory.
func treeLayer(t *testing.T, comp oci.LayerCompression, script string) *oci.Layer {
	t.Helper()
	dir := t.TempDir()
	sh(t, "cd "+dir+"\n"+script)
	src, err := dirtree.NewSource(dir, dirtree.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	l, err := oci.NewLayer(context.Background(), src, comp, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func testImage(t *testing.T, cfg oci.ImageConfig, layers ...v1.Layer) v1.Image {
	t.Helper()
	if cfg.Arch == "" {
		cfg.Arch = runtime.GOARCH
	}
	img, err := oci.NewImage(layers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func push(t *testing.T, ref string, img v1.Image) v1.Hash {
	t.Helper()
	r, err := oci.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithAuthFromKeychain(anonymous)); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pushSignature stores a signature as cosign's legacy format does: tag
// "sha256-<hex of digest>.sig" in repo, a manifest whose one layer has the
// simple-signing media type, the payload as blob and the signature over
// the payload bytes in the layer annotation.
func pushSignature(t *testing.T, repo string, digest v1.Hash, payload []byte, key crypto.Signer) {
	t.Helper()
	sig, err := verify.SignBlob(key, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(payload, CosignSimpleSigningType),
		Annotations: map[string]string{CosignSignatureAnnotation: string(sig)},
	})
	if err != nil {
		t.Fatal(err)
	}
	push(t, repo+":sha256-"+digest.Hex+".sig", img)
}

type signer struct {
	pubPEM []byte
	key    crypto.Signer
}

func newSigner(t *testing.T, alg string) *signer {
	t.Helper()
	k := verifytest.GenPEMKey(t, t.TempDir(), alg)
	priv, err := verify.LoadPrivateKey(k.PrivPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{pubPEM: k.PubPEM, key: priv}
}

func ociOpts(t *testing.T, key []byte) OCIOptions {
	o := OCIOptions{ImportOptions: ImportOptions{Log: testLog(t)}, Keychain: anonymous, Verify: OCIVerifyNo}
	if key != nil {
		o.Verify, o.CosignKey = OCIVerifySignature, key
	}
	return o
}

// expectedTree writes the tree a test expects, with every mtime at the
// layers' fixed time, and snapshots it without its root.
func expectedTree(t *testing.T, script string) map[string]treecmp.Node {
	t.Helper()
	dir := t.TempDir()
	sh(t, "cd "+dir+"\n"+script+"\nfind . -mindepth 1 -exec touch -h -d @1 {} +")
	s, err := treecmp.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	delete(s, ".")
	return s
}

func pulledTree(t *testing.T, r *imageroot.Root, name string) map[string]treecmp.Node {
	t.Helper()
	s, err := treecmp.Snapshot(r.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	delete(s, ".")
	return s
}

// layeredImage is a three-layer image (zstd, gzip, uncompressed) with
// whiteouts of a file, a directory and one name of a hard-link pair, an
// opaque directory, and a hard link whose target a later layer replaces.
func layeredImage(t *testing.T) (v1.Image, map[string]treecmp.Node) {
	t.Helper()
	l1 := treeLayer(t, oci.Zstd, `mkdir -p etc d o/sub keep del/x
echo ID=berthtest > etc/os-release
echo a1 > d/a; ln d/a d/b; echo c > d/c
echo old > o/old; echo deep > o/sub/deep
echo k > keep/k; chown 1234:2345 keep/k; chmod 640 keep/k
echo y > del/x/y`)
	l2 := treeLayer(t, oci.Gzip, `mkdir -p d o new
echo a2 > d/a; : > d/.wh.c
: > o/.wh..wh..opq; echo n > o/new
: > .wh.del
echo two > new/n2; ln new/n2 new/n3`)
	l3 := treeLayer(t, oci.None, `mkdir -p new o/sub2
: > new/.wh.n2; echo z > o/sub2/z`)
	img := testImage(t, oci.ImageConfig{Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"}, Env: []string{"GREETING=hello world"}, WorkingDir: "/srv"}, l1, l2, l3)
	want := expectedTree(t, `mkdir -p etc d o/sub2 keep new
echo ID=berthtest > etc/os-release
echo a2 > d/a; echo a1 > d/b
echo n > o/new; echo z > o/sub2/z
echo k > keep/k; chown 1234:2345 keep/k; chmod 640 keep/k
echo two > new/n3`)
	return img, want
}

func TestPullOCIFlattensAndVerifies(t *testing.T) {
	testenv.RequireRoot(t)
	// Every request goes through a proxy that records the blobs read, to
	// check that no layer is downloaded before the signature verifies.
	addr, blobs := recordingProxy(t, testenv.DockerRegistry(t))
	repo := addr + "/berth/layered"
	img, want := layeredImage(t)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	layerDigests := map[string]bool{}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		layerDigests[d.String()] = true
	}
	digest := push(t, repo+":v1", img)
	good, other := newSigner(t, "p256"), newSigner(t, "ed25519")
	ctx := context.Background()

	r := openRoot(t)
	before := rootState(t, r)
	refuse := func(what string, opts OCIOptions, ref, wantErr string) {
		t.Helper()
		err := PullOCI(ctx, r, ref, "layered", opts)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("%s: got error %v, want one containing %q", what, err, wantErr)
		}
		t.Logf("%s: %v", what, err)
		sameState(t, what+": image root changed", before, rootState(t, r))
		for _, b := range blobs.fetched() {
			if layerDigests[b] {
				t.Fatalf("%s: layer %s was downloaded before the signature was checked", what, b)
			}
		}
	}

	// Unsigned: refused, naming the digest.
	refuse("unsigned", ociOpts(t, good.pubPEM), repo+":v1", "no cosign signature found for "+repo+"@"+digest.String())
	if err := PullOCI(ctx, r, repo+":v1", "layered", ociOpts(t, good.pubPEM)); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned image: %v is not ErrUnsigned", err)
	}
	refuse("no key", OCIOptions{ImportOptions: ImportOptions{Log: testLog(t)}, Keychain: anonymous}, repo+":v1", "pass --key")

	// Signed with another key: refused.
	pushSignature(t, repo, digest, verify.SimpleSigningPayload(repo, digest.String()), other.key)
	refuse("signed with another key", ociOpts(t, good.pubPEM), repo+":v1", "verifies with the key")

	// A good signature of another image stored under this image's tag.
	otherImg := testImage(t, oci.ImageConfig{}, treeLayer(t, oci.Gzip, `echo other > f`))
	otherDigest := push(t, repo+":other", otherImg)
	pushSignature(t, repo, digest, verify.SimpleSigningPayload(repo, otherDigest.String()), good.key)
	refuse("signature for another digest", ociOpts(t, good.pubPEM), repo+":v1", "not "+digest.String())

	// A good signature of this digest, but for another repository.
	pushSignature(t, repo, digest, verify.SimpleSigningPayload(addr+"/berth/elsewhere", digest.String()), good.key)
	refuse("signature for another repository", ociOpts(t, good.pubPEM), repo+":v1", "not \""+repo+"\"")

	// Signed properly: pulled by tag and by digest, flattened as expected.
	pushSignature(t, repo, digest, verify.SimpleSigningPayload(repo, digest.String()), good.key)
	if err := PullOCI(ctx, r, repo+":v1", "layered", ociOpts(t, good.pubPEM)); err != nil {
		t.Fatal(err)
	}
	if d := treecmp.Diff(want, pulledTree(t, r, "layered")); len(d) > 0 {
		t.Fatalf("pulled tree differs from the expected one (want vs got):\n%s", strings.Join(d, "\n"))
	}
	settings, err := os.ReadFile(filepath.Join(r.Dir, "layered.nspawn"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"Boot=no\n", "Parameters=/bin/app --serve\n", "Environment=\"GREETING=hello world\"\n", "WorkingDirectory=/srv\n"} {
		if !strings.Contains(string(settings), line) {
			t.Errorf("settings file lacks %q:\n%s", line, settings)
		}
	}
	if got := strings.Join(names(t, r.Dir), " "); got != "layered layered.nspawn" {
		t.Fatalf("image root holds %q", got)
	}

	fetchedLayers := 0
	for _, b := range blobs.fetched() {
		if layerDigests[b] {
			fetchedLayers++
		}
	}
	if fetchedLayers != len(layers) {
		t.Fatalf("%d layer downloads seen through the proxy, want %d", fetchedLayers, len(layers))
	}

	// Existing image: refused without --force, nothing changed.
	blobs.reset()
	before = rootState(t, r)
	refuse("existing image", ociOpts(t, good.pubPEM), repo+":v1", "already exists")

	// By digest, with --force, over the existing image: the image and
	// the (meanwhile edited) settings file are replaced.
	writeFile(t, r.Dir, "layered.nspawn", []byte("[Exec]\nBoot=yes\n"))
	o := ociOpts(t, good.pubPEM)
	o.Force = true
	if err := PullOCI(ctx, r, repo+"@"+digest.String(), "layered", o); err != nil {
		t.Fatal(err)
	}
	if d := treecmp.Diff(want, pulledTree(t, r, "layered")); len(d) > 0 {
		t.Fatalf("by digest: trees differ:\n%s", strings.Join(d, "\n"))
	}
	if b, _ := os.ReadFile(filepath.Join(r.Dir, "layered.nspawn")); !bytes.Equal(b, settings) {
		t.Fatalf("--force did not rewrite the settings file: %q", b)
	}
	if got := strings.Join(names(t, r.Dir), " "); got != "layered layered.nspawn" {
		t.Fatalf("image root holds %q", got)
	}
}

// dockerLayer presents a gzip OCI layer with the Docker media type.
type dockerLayer struct{ v1.Layer }

func (dockerLayer) MediaType() (types.MediaType, error) { return types.DockerLayer, nil }

// TestPullOCIDockerSchema2 pulls an image with Docker schema2 manifest,
// config and layer media types, verified by a signature on the manifest.
func TestPullOCIDockerSchema2(t *testing.T) {
	testenv.RequireRoot(t)
	addr := testenv.DockerRegistry(t)
	repo := addr + "/library/dock"
	l := treeLayer(t, oci.Gzip, `mkdir etc; echo ID=docker > etc/os-release; ln -s /etc/os-release rel`)
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: dockerLayer{l}})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Cmd = []string{"/sbin/init"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	if mt, _ := img.MediaType(); mt != types.DockerManifestSchema2 {
		t.Fatalf("test image has media type %s", mt)
	}
	digest := push(t, repo+":latest", img)
	s := newSigner(t, "rsa")
	pushSignature(t, repo, digest, verify.SimpleSigningPayload(repo, digest.String()), s.key)
	r := openRoot(t)
	// No NAME given by the CLI: the last repository component.
	n, err := DefaultOCIName(repo)
	if err != nil || n != "dock" {
		t.Fatalf("DefaultOCIName(%s) = %q, %v", repo, n, err)
	}
	if err := PullOCI(context.Background(), r, repo, n, ociOpts(t, s.pubPEM)); err != nil {
		t.Fatal(err)
	}
	want := expectedTree(t, `mkdir etc; echo ID=docker > etc/os-release; ln -s /etc/os-release rel`)
	if d := treecmp.Diff(want, pulledTree(t, r, "dock")); len(d) > 0 {
		t.Fatalf("trees differ:\n%s", strings.Join(d, "\n"))
	}
	if b, _ := os.ReadFile(filepath.Join(r.Dir, "dock.nspawn")); !strings.Contains(string(b), "Boot=yes\n") {
		t.Fatalf("settings file: %q", b)
	}
}

// TestPullOCIIndexPlatform: an index with two platforms; --platform picks,
// the default is linux on the host's architecture, a platform the index
// lacks is refused, and a signature on the index covers its images.
func TestPullOCIIndexPlatform(t *testing.T) {
	testenv.RequireRoot(t)
	addr := testenv.DockerRegistry(t)
	repo := addr + "/berth/multi"
	otherArch := "riscv64"
	if runtime.GOARCH == otherArch {
		otherArch = "s390x"
	}
	mk := func(arch string) v1.Image {
		return testImage(t, oci.ImageConfig{Arch: arch}, treeLayer(t, oci.Zstd, `echo `+arch+` > arch`))
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: mk(runtime.GOARCH), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
		mutate.IndexAddendum{Add: mk(otherArch), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch}}},
	)
	ref, err := oci.ParseReference(repo + ":v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithAuthFromKeychain(anonymous)); err != nil {
		t.Fatal(err)
	}
	idxDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	s := newSigner(t, "p256")
	r := openRoot(t)
	before := rootState(t, r)
	if err := PullOCI(context.Background(), r, repo+":v1", "multi", ociOpts(t, s.pubPEM)); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned index: %v", err)
	}
	sameState(t, "unsigned index", before, rootState(t, r))
	pushSignature(t, repo, idxDigest, verify.SimpleSigningPayload(repo, idxDigest.String()), s.key)

	for _, tc := range []struct{ platform, want string }{{"", runtime.GOARCH}, {"linux/" + otherArch, otherArch}} {
		o := ociOpts(t, s.pubPEM)
		if tc.platform != "" {
			if o.Platform, err = ParsePlatform(tc.platform); err != nil {
				t.Fatal(err)
			}
		}
		name := "multi-" + tc.want
		if err := PullOCI(context.Background(), r, repo+":v1", name, o); err != nil {
			t.Fatalf("platform %q: %v", tc.platform, err)
		}
		if b, err := os.ReadFile(filepath.Join(r.Path(name), "arch")); err != nil || string(b) != tc.want+"\n" {
			t.Fatalf("platform %q: pulled the image for %q (%v)", tc.platform, b, err)
		}
	}
	before = rootState(t, r)
	o := ociOpts(t, s.pubPEM)
	o.Platform = &v1.Platform{OS: "linux", Architecture: "mips64le"}
	if err := PullOCI(context.Background(), r, repo+":v1", "multi-mips", o); err == nil || !strings.Contains(err.Error(), "no image for platform linux/mips64le") {
		t.Fatalf("missing platform: %v", err)
	}
	sameState(t, "missing platform", before, rootState(t, r))
}

// TestPullOCICancelLeavesNothing cancels a pull while its layer downloads.
func TestPullOCICancelLeavesNothing(t *testing.T) {
	testenv.RequireRoot(t)
	addr := testenv.DockerRegistry(t)
	repo := addr + "/berth/big"
	// Random data: a layer of 32 MiB that takes a while to unpack.
	img := testImage(t, oci.ImageConfig{}, treeLayer(t, oci.None, `head -c 33554432 /dev/urandom > big`))
	push(t, repo+":v1", img)
	r := openRoot(t)
	before := rootState(t, r)
	ctx, cancel := context.WithCancel(context.Background())
	o := ociOpts(t, nil)
	// Cancel as soon as the work directory appears.
	go func() {
		for ctx.Err() == nil {
			if ents, _ := os.ReadDir(r.Dir); len(ents) > 0 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	err := PullOCI(ctx, r, repo+":v1", "big", o)
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull returned %v", err)
	}
	sameState(t, "cancelled pull", before, rootState(t, r))
}

// TestPullOCIBoots pulls a busybox image whose entrypoint is /sbin/init
// (printing a marker) and boots it with systemd-nspawn.
func TestPullOCIBoots(t *testing.T) {
	testenv.RequireRoot(t)
	nspawn := testenv.RequireTool(t, "systemd-nspawn")
	bb := testenv.RequireTool(t, "/bin/busybox")
	addr := testenv.DockerRegistry(t)
	l := treeLayer(t, oci.Zstd, `mkdir -p bin sbin etc proc sys dev run tmp usr/lib
cp `+bb+` bin/busybox
echo 'ID=berthtest' > usr/lib/os-release; ln -s ../usr/lib/os-release etc/os-release
printf '#!/bin/busybox sh\necho BERTH-OCI-BOOT-$((6*7))\nexec /bin/busybox poweroff -f\n' > sbin/init; chmod 755 sbin/init`)
	img := testImage(t, oci.ImageConfig{Entrypoint: []string{"/sbin/init"}}, l)
	digest := push(t, addr+"/berth/bb:1", img)
	s := newSigner(t, "p256")
	pushSignature(t, addr+"/berth/bb", digest, verify.SimpleSigningPayload(addr+"/berth/bb", digest.String()), s.key)
	r := openRoot(t)
	if err := PullOCI(context.Background(), r, addr+"/berth/bb:1", "bb", ociOpts(t, s.pubPEM)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(r.Dir, "bb.nspawn")); !strings.Contains(string(b), "Boot=yes\n") {
		t.Fatalf("settings file: %q", b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, nspawn, "--register=no", "--keep-unit", "-q", "-D", r.Path("bb"), "-b").CombinedOutput()
	if !strings.Contains(string(out), "BERTH-OCI-BOOT-42") {
		t.Fatalf("container did not boot to the marker (err %v):\n%s", err, out)
	}
}

func TestParsePlatformAndName(t *testing.T) {
	for in, want := range map[string]string{
		"linux/amd64":    "linux/amd64",
		"linux/arm64/v8": "linux/arm64/v8",
		"linux":          "",
		"linux/":         "",
		"/amd64":         "",
		"linux/ARM64":    "",
		"a/b/c/d":        "",
		"linux/arm 64":   "",
	} {
		p, err := ParsePlatform(in)
		if got := platformString(p); want == "" && err == nil || want != "" && (err != nil || got != want) {
			t.Errorf("ParsePlatform(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"debian":                      "debian",
		"docker.io/library/debian:12": "debian",
		"registry:5000/team/app@sha256:" + strings.Repeat("a", 64): "app",
		"localhost:5000/x":                "x",
		"ghcr.io/o/r/deep/name:tag":       "name",
		"Bad Ref":                         "",
		"registry:5000/repo@sha256:short": "",
	} {
		got, err := DefaultOCIName(in)
		if want == "" && err == nil || want != "" && (err != nil || got != want) {
			t.Errorf("DefaultOCIName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]OCIVerify{"": OCIVerifySignature, "signature": OCIVerifySignature, "no": OCIVerifyNo, "checksum": "", "yes": ""} {
		got, err := ParseOCIVerify(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("ParseOCIVerify(%q) = %q, %v", in, got, err)
		}
	}
}

func TestPickPlatform(t *testing.T) {
	d := func(os, arch, variant string) v1.Descriptor {
		return v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: &v1.Platform{OS: os, Architecture: arch, Variant: variant}}
	}
	im := &v1.IndexManifest{Manifests: []v1.Descriptor{
		{MediaType: types.OCIManifestSchema1}, // no platform (an attestation)
		d("unknown", "unknown", ""),           // buildkit attestation
		d("linux", "arm", "v6"),               //
		d("linux", "arm", "v7"),               //
		d("linux", "arm64", "v8"),             //
		d("linux", "amd64", ""),               //
		d("windows", "amd64", ""),             //
	}}
	for _, tc := range []struct {
		want    v1.Platform
		variant string // of the pick; "-" means an error
		arch    string
	}{
		{v1.Platform{OS: "linux", Architecture: "amd64"}, "", "amd64"},
		{v1.Platform{OS: "linux", Architecture: "arm64"}, "v8", "arm64"},
		{v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "v8", "arm64"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "v7", "arm"},
		{v1.Platform{OS: "linux", Architecture: "arm"}, "v6", "arm"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v5"}, "-", ""},
		{v1.Platform{OS: "linux", Architecture: "s390x"}, "-", ""},
		{v1.Platform{OS: "windows", Architecture: "amd64"}, "", "amd64"},
	} {
		got, err := pickPlatform(im, &tc.want)
		if tc.variant == "-" {
			if err == nil {
				t.Errorf("%s: picked %s", platformString(&tc.want), platformString(got.Platform))
			}
			continue
		}
		if err != nil || got.Platform.Architecture != tc.arch || got.Platform.Variant != tc.variant || got.Platform.OS != tc.want.OS {
			t.Errorf("%s: got %v, %v", platformString(&tc.want), got, err)
		}
	}
}

func TestSignatureTag(t *testing.T) {
	repo, err := name.NewRepository("127.0.0.1:5000/berth/x")
	if err != nil {
		t.Fatal(err)
	}
	h := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	if got := signatureTag(repo, h).String(); got != "127.0.0.1:5000/berth/x:sha256-"+h.Hex+".sig" {
		t.Fatalf("signatureTag = %s", got)
	}
}

// FuzzParsePlatform: any string either parses into a platform that prints
// back as itself, or is an error; never a panic.
func FuzzParsePlatform(f *testing.F) {
	for _, s := range []string{"linux/amd64", "linux/arm64/v8", "", "/", "a/b/c/d", "linux/ARM"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePlatform(s)
		if err != nil {
			return
		}
		if platformString(p) != s {
			t.Fatalf("ParsePlatform(%q) prints as %q", s, platformString(p))
		}
	})
}

// FuzzDefaultOCIName: a name derived from any reference is a valid image
// name.
func FuzzDefaultOCIName(f *testing.F) {
	for _, s := range []string{"debian", "registry:5000/a/b:c", "x@sha256:" + strings.Repeat("1", 64), "..", "a/.#b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := DefaultOCIName(s)
		if err != nil {
			return
		}
		if err := imageroot.ValidName(n); err != nil {
			t.Fatalf("DefaultOCIName(%q) = %q: %v", s, n, err)
		}
	})
}

// FuzzSignatureLayers: whatever a registry returns as a signature manifest,
// the selection is bounded and never panics.
func FuzzSignatureLayers(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"` + CosignSimpleSigningType + `","size":10,"digest":"sha256:` + strings.Repeat("a", 64) + `","annotations":{"` + CosignSignatureAnnotation + `":"c2ln"}}]}`))
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"` + CosignSimpleSigningType + `","size":-1,"digest":"sha256:` + strings.Repeat("a", 64) + `","annotations":{"` + CosignSignatureAnnotation + `":"c2ln"}}]}`))
	f.Add([]byte(`{"layers":[{"mediaType":"x"}]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := v1.ParseManifest(bytes.NewReader(b))
		if err != nil {
			return
		}
		sigs, err := signatureLayers(m)
		if err != nil {
			return
		}
		if len(sigs) > maxSignatureLayers {
			t.Fatalf("%d signatures selected", len(sigs))
		}
		for _, s := range sigs {
			if s.size < 0 || s.size > maxSignaturePayload || s.sig == "" || len(s.digest.Hex) != 64 {
				t.Fatalf("bad selection %+v", s)
			}
		}
	})
}
