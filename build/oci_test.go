package build_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/build"
	"github.com/berth-dev/berth/formats/oci"
)

func TestGOArch(t *testing.T) {
	for sys, want := range map[string]string{
		"x86_64-linux":  "amd64/",
		"aarch64-linux": "arm64/v8",
		"armv7l-linux":  "arm/v7",
		"i686-linux":    "386/",
		"riscv64-linux": "riscv64/",
	} {
		a, v, err := build.GOArch(sys)
		if err != nil || a+"/"+v != want {
			t.Errorf("GOArch(%q) = %q %q %v, want %s", sys, a, v, err, want)
		}
	}
	if _, _, err := build.GOArch("vax-netbsd"); err == nil || !strings.Contains(err.Error(), `"vax-netbsd"`) {
		t.Errorf("GOArch(vax-netbsd): %v", err)
	}
}

// tarNames lists the names of a layer and checks its headers are the
// build's: owner 0, mtime 1, no hard links.
func tarNames(t *testing.T, l v1.Layer) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != 1 || h.Typeflag == tar.TypeLink {
			t.Errorf("%s: owner %d:%d mtime %v type %c", h.Name, h.Uid, h.Gid, h.ModTime, h.Typeflag)
		}
		names = append(names, strings.TrimSuffix(h.Name, "/"))
	}
}

// Each store layer carries nix, nix/store and its store paths, the top
// layer the generated files; the groups follow oci.GroupByPopularity; the
// image does not depend on how many layers are written at once.
func TestOCIImage(t *testing.T) {
	sys := load(t, "test")
	ctx := context.Background()
	img, err := sys.OCIImage(ctx, build.OCIOptions{MaxLayers: 4, Jobs: 1, TmpDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	refs := map[string][]string{}
	for _, r := range sys.Records {
		refs[r.Path] = r.References
	}
	want := oci.GroupByPopularity(sys.Closure, refs, 4)
	for _, g := range want {
		slices.Sort(g)
	}
	if len(img.Groups) != 3 || !slices.EqualFunc(img.Groups, want, slices.Equal) {
		t.Fatalf("groups %q, want %q", img.Groups, want)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 4 {
		t.Fatalf("%d layers (%v), want 4", len(layers), err)
	}
	for i, g := range img.Groups {
		names := tarNames(t, layers[i])
		if len(names) < 3 || names[0] != "nix" || names[1] != "nix/store" {
			t.Fatalf("layer %d starts %q, want nix, nix/store", i, names[:min(3, len(names))])
		}
		var paths []string
		for _, n := range names[2:] {
			if !strings.HasPrefix(n, "nix/store/") {
				t.Fatalf("layer %d holds %s outside the store", i, n)
			}
			if base := strings.TrimPrefix(n, "nix/store/"); !strings.Contains(base, "/") {
				paths = append(paths, "/"+n)
			}
		}
		if !slices.Equal(paths, g) {
			t.Errorf("layer %d holds %q, want %q", i, paths, g)
		}
	}
	gen := tarNames(t, layers[3])
	for _, n := range []string{".", "sbin/init", "etc/os-release", "nix-path-registration", "nix/var/nix/profiles/system"} {
		if !slices.Contains(gen, n) {
			t.Errorf("generated layer lacks %s", n)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "amd64" || cf.OS != "linux" || !slices.Equal(cf.Config.Entrypoint, []string{"/sbin/init"}) || len(cf.History) != 4 {
		t.Errorf("config %+v", cf)
	}

	again, err := sys.OCIImage(ctx, build.OCIOptions{MaxLayers: 4, Jobs: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("Jobs 1 gave %s, Jobs 3 %s", d1, d2)
	}
	if _, err := sys.OCIImage(ctx, build.OCIOptions{MaxLayers: 1}); err == nil || !strings.Contains(err.Error(), "at least 2") {
		t.Errorf("MaxLayers 1: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := sys.OCIImage(cctx, build.OCIOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
