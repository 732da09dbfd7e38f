package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/formats/dirtree"
	"github.com/berth-dev/berth/formats/oci"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pull"
	"github.com/berth-dev/berth/verify"
	"github.com/berth-dev/berth/verify/verifytest"
)

func TestPullOCIUsageErrors(t *testing.T) {
	root := filepath.Join(t.TempDir(), "machines")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pull-oci", "127.0.0.1:1/a/b"}, "pass --key FILE"},
		{[]string{"pull-oci", "--verify=checksum", "127.0.0.1:1/a/b"}, "--verify=checksum"},
		{[]string{"pull-oci", "--verify=no", "--platform", "linux", "127.0.0.1:1/a/b"}, "--platform"},
		{[]string{"pull-oci", "--verify=no", "Bad Ref"}, "image reference"},
		{[]string{"pull-oci", "--verify=no", "127.0.0.1:1/a/b", ".#x"}, "reserved"},
		{[]string{"pull-oci"}, "argument"},
	} {
		r := berth(t, nil, append([]string{"--image-root", root}, tc.args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("berth %s: exit %d, stderr %q; want exit 2 mentioning %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
	if l := listing(t, root); l != "" {
		t.Fatalf("usage errors left %q in the image root", l)
	}
}

// TestPullOCICommand runs pull-oci against a real docker-registry: an
// unsigned image is refused with exit 1 and nothing left behind, a signed
// one is installed with its settings file, --verify=no logs one JSON event
// per stage.
func TestPullOCICommand(t *testing.T) {
	testenv.RequireRoot(t)
	addr := testenv.DockerRegistry(t)
	tree := smallTree(t)
	src, err := dirtree.NewSource(tree, dirtree.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := oci.NewLayer(context.Background(), src, oci.Zstd, t.TempDir())
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	img, err := oci.NewImage([]v1.Layer{l}, oci.ImageConfig{Arch: runtime.GOARCH, Cmd: []string{"/usr/bin/tool"}, Env: []string{"A=b"}})
	if err != nil {
		t.Fatal(err)
	}
	repo := addr + "/team/app"
	kc := oci.WithKeychain(authn.NewMultiKeychain())
	if err := oci.Push(context.Background(), repo+":1", img, kc); err != nil {
		t.Fatal(err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	keyDir := t.TempDir()
	key := verifytest.GenPEMKey(t, keyDir, "p256")
	root := filepath.Join(t.TempDir(), "machines")

	r := berth(t, nil, "--image-root", root, "pull-oci", "--key", key.Pub, repo+":1")
	if r.code != exitFailure || !strings.Contains(r.stderr, "no cosign signature found for "+repo+"@"+digest.String()) {
		t.Fatalf("unsigned image: exit %d: %s", r.code, r.stderr)
	}
	if l := listing(t, root); l != "" {
		t.Fatalf("refused pull left %q in the image root", l)
	}

	// Sign as cosign does (legacy tag format) and pull again.
	priv, err := verify.LoadPrivateKey(key.PrivPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload := verify.SimpleSigningPayload(repo, digest.String())
	sig, err := verify.SignBlob(priv, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	sigImg, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON),
		mutate.Addendum{Layer: static.NewLayer(payload, pull.CosignSimpleSigningType), Annotations: map[string]string{pull.CosignSignatureAnnotation: string(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	sigRef, err := oci.ParseReference(repo + ":sha256-" + digest.Hex + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(sigRef, sigImg, remote.WithAuthFromKeychain(authn.NewMultiKeychain())); err != nil {
		t.Fatal(err)
	}
	mustBerth(t, "--image-root", root, "pull-oci", "--key", key.Pub, repo+":1")
	if l := listing(t, root); l != "app app.nspawn" {
		t.Fatalf("image root holds %q", l)
	}
	got := snap(t, filepath.Join(root, "app"))
	want := snap(t, tree)
	for k, n := range want { // layers record mtime 1
		n.ModTime = got["."].ModTime
		want[k] = n
	}
	sameTree(t, "pulled image", want, got)
	if b, _ := os.ReadFile(filepath.Join(root, "app.nspawn")); !strings.Contains(string(b), "Parameters=/usr/bin/tool\n") || !strings.Contains(string(b), "Environment=A=b\n") {
		t.Fatalf("settings file: %q", b)
	}

	// --verify=no, JSON logs: one event per stage.
	r = berth(t, nil, "--image-root", root, "--log-format=json", "pull-oci", "--verify=no", "--settings=false", repo+":1", "app2")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, st := range []string{"resolve", "download", "install"} {
		if !strings.Contains(r.stderr, `"stage":"`+st+`"`) {
			t.Errorf("no JSON event for stage %s in:\n%s", st, r.stderr)
		}
	}
	if l := listing(t, root); l != "app app.nspawn app2" {
		t.Fatalf("image root holds %q", l)
	}
}
