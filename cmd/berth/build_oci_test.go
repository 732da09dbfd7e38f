package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/berth-dev/berth/build/buildtest"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/formats/dirtree/treecmp"
	"github.com/berth-dev/berth/formats/oci"
	"github.com/berth-dev/berth/internal/testenv"
)

// validateOCI runs go-containerregistry's validate.Image. Its layer check
// reads only gzip, so zstd layers are checked here instead: the blob's
// digest and size, and the diffID of the decompressed tar.
func validateOCI(t *testing.T, img v1.Image) {
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
		mt, err := l.MediaType()
		if err != nil {
			t.Fatal(err)
		}
		if mt != types.OCILayer {
			allGzip = false
		}
		if mt != types.OCILayer && mt != types.OCILayerZStd {
			t.Errorf("layer %d has media type %s, want an OCI layer", i, mt)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		dh := sha256.New()
		dec, _, err := compress.NewReader(io.TeeReader(rc, dh))
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		uh := sha256.New()
		if _, err := io.Copy(uh, dec); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		io.Copy(dh, rc)
		rc.Close()
		d, _ := l.Digest()
		diffID, _ := l.DiffID()
		if got := fmt.Sprintf("sha256:%x", dh.Sum(nil)); got != d.String() {
			t.Errorf("layer %d: digest %s, content %s", i, d, got)
		}
		if got := fmt.Sprintf("sha256:%x", uh.Sum(nil)); got != diffID.String() {
			t.Errorf("layer %d: diffID %s, content %s", i, diffID, got)
		}
	}
	if allGzip {
		if err := validate.Image(img); err != nil {
			t.Fatalf("validate.Image: %v", err)
		}
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}
	if m, _ := img.Manifest(); m == nil || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("config media type is not OCI: %+v", m)
	}
}

// layerNames lists the names in a layer's tar.
func layerNames(t *testing.T, l v1.Layer) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var names []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, strings.TrimSuffix(h.Name, "/"))
	}
}

// storePathsOf returns the store paths (nix/store/<base>) a layer holds.
func storePathsOf(t *testing.T, l v1.Layer) []string {
	var paths []string
	for _, n := range layerNames(t, l) {
		rest, ok := strings.CutPrefix(n, "nix/store/")
		if ok && !strings.Contains(rest, "/") {
			paths = append(paths, "/nix/store/"+rest)
		}
	}
	return paths
}

// flatten applies img into a fresh directory and snapshots it (root left
// out: its attributes belong to the directory applied into).
func flatten(t *testing.T, img v1.Image) map[string]treecmp.Node {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "flat")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := oci.Apply(context.Background(), dir, img, nil); err != nil {
		t.Fatalf("oci.Apply: %v", err)
	}
	s := snap(t, dir)
	delete(s, ".")
	return s
}

// The OCI image of the test system, pushed to a real docker-registry and
// read back with go-containerregistry, is valid, has one layer per store
// path by popularity and the generated files on top, os/arch and
// /sbin/init in its config, and flattens to the tree of the tarball build.
// The .oci layout, .oci.tar and .docker.tar outputs hold the same image.
func TestBuildOCI(t *testing.T) {
	buildtest.Require(t)
	addr := testenv.DockerRegistry(t)
	w := t.TempDir()

	// The reference tree: the tarball build, imported.
	tarOut := filepath.Join(w, "test.tar")
	mustBerth(t, buildArgs(t, "test", "-o", tarOut)...)
	root := filepath.Join(w, "machines")
	mustBerth(t, "--image-root", root, "import-tar", tarOut)
	want := snap(t, filepath.Join(root, "test"))
	delete(want, ".")
	if len(want) < 30 {
		t.Fatalf("the imported tarball has only %d entries", len(want))
	}
	top := topOf(t, tarOut)

	ref := addr + "/berth/test:v1"
	layoutDir := filepath.Join(w, "test.oci")
	mustBerth(t, buildArgs(t, "test", "-o", layoutDir, "--push", ref)...)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := remote.Image(r)
	if err != nil {
		t.Fatalf("reading back %s: %v", ref, err)
	}
	validateOCI(t, pushed)

	cf, err := pushed.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !slices.Equal(cf.Config.Entrypoint, []string{"/sbin/init"}) || cf.Created.Unix() != 1 {
		t.Errorf("config: os %q arch %q entrypoint %q created %v", cf.OS, cf.Architecture, cf.Config.Entrypoint, cf.Created)
	}
	layers, err := pushed.Layers()
	if err != nil {
		t.Fatal(err)
	}
	closure := strings.Fields(sh1(t, "nix-store -qR "+top))
	if len(layers) != len(closure)+1 {
		t.Fatalf("%d layers for %d store paths, want one each plus the generated layer", len(layers), len(closure))
	}
	var inLayers []string
	for i, l := range layers[:len(layers)-1] {
		if mt, _ := l.MediaType(); mt != types.OCILayerZStd {
			t.Errorf("layer %d: media type %s, want zstd by default", i, mt)
		}
		p := storePathsOf(t, l)
		if len(p) != 1 {
			t.Fatalf("layer %d holds store paths %q, want one", i, p)
		}
		inLayers = append(inLayers, p[0])
	}
	// Popularity: the most depended-on path (the shared library both
	// lib-a and lib-b and the system use) comes before what uses it, the
	// toplevel, which nothing uses, last.
	if inLayers[len(inLayers)-1] != top {
		t.Errorf("the toplevel is not the last store layer: %q", inLayers)
	}
	if got := oci.PopularityOrder(closure, refsOf(t, closure)); !slices.Equal(got, inLayers) {
		t.Errorf("store layers in order %q, want popularity order %q", inLayers, got)
	}
	gen := layerNames(t, layers[len(layers)-1])
	for _, n := range []string{"sbin/init", "etc/os-release", "nix-path-registration", "nix/var/nix/profiles/system", "proc", "sys", "dev"} {
		if !slices.Contains(gen, n) {
			t.Errorf("generated layer lacks %s: %q", n, gen)
		}
	}
	sameTree(t, "pushed image flattened vs the imported tarball", want, flatten(t, pushed))

	// The layout holds the image that was pushed.
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("layout index: %v %+v", err, im)
	}
	pd, _ := pushed.Digest()
	if im.Manifests[0].Digest != pd {
		t.Errorf("layout manifest %s, pushed %s", im.Manifests[0].Digest, pd)
	}

	// .docker.tar: gzip layers by default, docker load's format; valid with
	// the full validate.Image, and the same tree.
	dockerOut := filepath.Join(w, "test.docker.tar")
	mustBerth(t, buildArgs(t, "test", "-o", dockerOut, "--tag", "berth/test:v1")...)
	dimg, err := tarball.ImageFromPath(dockerOut, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(dockerOut) }); err != nil || len(m) != 1 || !slices.Equal(m[0].RepoTags, []string{"berth/test:v1"}) {
		t.Errorf(".docker.tar manifest: %+v %v", m, err)
	}
	if err := validate.Image(dimg); err != nil {
		t.Errorf("validate.Image(.docker.tar): %v", err)
	}
	sameTree(t, ".docker.tar flattened vs the imported tarball", want, flatten(t, dimg))

	// gzip layers pushed pass the full validate.Image; --max-layers 3
	// keeps one layer for the most popular path and merges the rest.
	ref2 := addr + "/berth/test:gzip"
	mustBerth(t, buildArgs(t, "test", "--push", ref2, "--layer-compression", "gzip", "--max-layers", "3")...)
	r2, _ := name.ParseReference(ref2, name.Insecure)
	gz, err := remote.Image(r2)
	if err != nil {
		t.Fatal(err)
	}
	validateOCI(t, gz)
	gl, _ := gz.Layers()
	if len(gl) != 3 {
		t.Fatalf("--max-layers 3 gave %d layers", len(gl))
	}
	if a, b := storePathsOf(t, gl[0]), storePathsOf(t, gl[1]); len(a) != 1 || len(a)+len(b) != len(closure) || a[0] != inLayers[0] {
		t.Errorf("--max-layers 3: layers hold %q and %q", a, b)
	}
	sameTree(t, "gzip image flattened vs the imported tarball", want, flatten(t, gz))

	// .oci.tar: an OCI archive of the same image as the layout.
	archive := filepath.Join(w, "test.oci.tar")
	mustBerth(t, buildArgs(t, "test", "-o", archive)...)
	if d := ociArchiveDigest(t, archive); d != pd.String() {
		t.Errorf(".oci.tar manifest %s, layout %s", d, pd)
	}
	if got := listing(t, w); got != "machines test.docker.tar test.oci test.oci.tar test.tar" {
		t.Errorf("output directory holds %q", got)
	}
}

// refsOf reads the references of each path from the store.
func refsOf(t *testing.T, paths []string) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	for _, p := range paths {
		m[p] = strings.Fields(sh1(t, "nix-store -q --references "+p))
	}
	return m
}

// sh1 runs a shell command and returns its standard output.
func sh1(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-ec", script).Output()
	if err != nil {
		t.Fatalf("%s: %v", script, err)
	}
	return string(out)
}

// ociArchiveDigest returns the manifest digest in an .oci.tar's index.json.
func ociArchiveDigest(t *testing.T, file string) string {
	t.Helper()
	dir := t.TempDir()
	sh(t, "tar -C "+dir+" -xf "+file)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("%s: index: %v", file, err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	validateOCI(t, img)
	return im.Manifests[0].Digest.String()
}

// OCI and raw options are checked before Nix runs; a failed push leaves
// no output behind.
func TestBuildImageBadInput(t *testing.T) {
	buildtest.Require(t)
	testenv.RequireTool(t, "mkfs.ext4")
	w := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"unknown fs", buildArgs(t, "test", "-o", filepath.Join(w, "x.raw"), "--fs", "btrfs"), 2,
			[]string{`--fs "btrfs"`, "ext4 or squashfs"}},
		{"fs for a tarball", buildArgs(t, "test", "-o", filepath.Join(w, "x.tar"), "--fs", "squashfs"), 2,
			[]string{"--fs applies to raw disk images"}},
		{"unknown squashfs compression", buildArgs(t, "test", "-o", filepath.Join(w, "x.raw"), "--fs", "squashfs", "--squashfs-compression", "brotli"), 2,
			[]string{`--squashfs-compression "brotli"`}},
		{"one layer", buildArgs(t, "test", "-o", filepath.Join(w, "x.oci"), "--max-layers", "1"), 2,
			[]string{"--max-layers 1", "at least 2"}},
		{"unknown layer compression", buildArgs(t, "test", "-o", filepath.Join(w, "x.oci.tar"), "--layer-compression", "lz4"), 2,
			[]string{`unknown layer compression "lz4"`}},
		{"push a tarball", buildArgs(t, "test", "-o", filepath.Join(w, "x.tar.zst"), "--push", "127.0.0.1:1/x:y"), 2,
			[]string{"--push applies to OCI images"}},
		{"bad push reference", buildArgs(t, "test", "--push", "UPPER/Case::x"), 2,
			[]string{"--push"}},
		{"layout to stdout", buildArgs(t, "test", "-o", "-", "--format", "oci"), 2,
			[]string{"OCI layout is a directory"}},
		{"unreachable registry", buildArgs(t, "test", "-o", filepath.Join(w, "x.oci.tar"), "--push", "127.0.0.1:1/berth/x:v1"), 1,
			[]string{"pushing 127.0.0.1:1/berth/x:v1", "connection refused"}},
		{"unreachable registry, layout", buildArgs(t, "test", "-o", filepath.Join(w, "x.oci"), "--push", "127.0.0.1:1/berth/x:v1"), 1,
			[]string{"pushing 127.0.0.1:1/berth/x:v1", "connection refused"}},
		{"missing layout parent", buildArgs(t, "test", "-o", filepath.Join(w, "nodir", "x.oci")), 1,
			[]string{"creating output in", "no such file"}},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			r := berth(t, nil, c.args...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d: %s", r.code, c.code, r.stderr)
			}
			line := errorLine(r.stderr)
			for _, s := range c.want {
				if !strings.Contains(line, s) {
					t.Errorf("error %q does not mention %q", line, s)
				}
			}
			if got := listing(t, w); got != "" {
				t.Errorf("output directory holds %q after the failure", got)
			}
		})
	}
	// An existing layout is refused before Nix runs, and --force replaces it.
	out := filepath.Join(w, "x.oci")
	os.Mkdir(out, 0o755)
	if r := berth(t, nil, buildArgs(t, "test", "-o", out)...); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("existing layout: exit %d %s", r.code, r.stderr)
	}
	mustBerth(t, append([]string{"--force"}, buildArgs(t, "test", "-o", out)...)...)
	if _, err := layout.ImageIndexFromPath(out); err != nil {
		t.Errorf("--force did not replace the layout: %v", err)
	}
	if got := listing(t, w); got != "x.oci" {
		t.Errorf("output directory holds %q", got)
	}
}

// "berth formats" lists the raw and OCI outputs of build.
func TestFormatsListsBuildImages(t *testing.T) {
	r := mustBerth(t, "formats")
	for _, o := range buildOutputs {
		if o.class == classTar {
			continue
		}
		for _, s := range o.suffixes {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("formats does not list %s (%s)", s, o.format)
			}
		}
	}
	for _, w := range []string{"build", "--push", "squashfs"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("formats does not mention %s", w)
		}
	}
}
