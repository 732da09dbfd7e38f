package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/berth-dev/berth/build"
	"github.com/berth-dev/berth/build/buildtest"
	"github.com/berth-dev/berth/internal/testenv"
)

// The raw and OCI outputs are byte-identical run after run and after
// nix-store --optimise has turned duplicate store files into hard links:
// .raw (ext4 and squashfs), .raw.zst, .oci.tar, .docker.tar, and the
// manifest digest of the .oci layout (which covers every layer digest).
func TestBuildImagesReproducible(t *testing.T) {
	buildtest.Require(t)
	testenv.RequireTool(t, "mkfs.ext4")
	testenv.RequireTool(t, "sqfstar")
	flake := freshFlake(t)
	top, err := build.Realise(context.Background(), build.Input{Flake: flake, NixOptions: buildtest.NixOptions}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := t.TempDir()
	outputs := []struct{ suffix, flag, value string }{
		{"ext4.raw", "", ""},
		{"ext4.raw.zst", "", ""},
		{"sq.raw", "--fs", "squashfs"},
		{"x.oci.tar", "", ""},
		{"x.docker.tar", "", ""},
		{"x.oci", "", ""},
	}
	sums := func(round string) map[string]string {
		m := map[string]string{}
		for _, o := range outputs {
			out := filepath.Join(w, round+"-"+o.suffix)
			args := []string{"build", "--flake", flake, "--nix-option", "substituters=", "-o", out}
			if o.flag != "" {
				args = append(args, o.flag, o.value)
			}
			mustBerth(t, args...)
			if o.suffix == "x.oci" {
				idx, err := layout.ImageIndexFromPath(out)
				if err != nil {
					t.Fatal(err)
				}
				im, err := idx.IndexManifest()
				if err != nil || len(im.Manifests) != 1 {
					t.Fatalf("%s: %v", out, err)
				}
				m[o.suffix] = im.Manifests[0].Digest.String()
				continue
			}
			m[o.suffix] = sha256File(t, out)
		}
		return m
	}
	first := sums("one")
	second := sums("two")
	a, b := sharedFiles(t, top)
	if sameInode(t, a, b) {
		t.Fatalf("%s and %s are already one inode: the run is not fresh", a, b)
	}
	if out, err := exec.Command("nix-store", "--optimise").CombinedOutput(); err != nil {
		t.Fatalf("nix-store --optimise: %v\n%s", err, out)
	}
	if !sameInode(t, a, b) {
		t.Fatalf("nix-store --optimise did not link %s and %s", a, b)
	}
	third := sums("three")
	for _, o := range outputs {
		s := o.suffix
		if first[s] != second[s] || first[s] != third[s] {
			t.Errorf("%s: %s, %s, after optimise %s", s, first[s], second[s], third[s])
		}
	}
	// The layout's manifest is the one in the archive.
	if d := ociArchiveDigest(t, filepath.Join(w, "three-x.oci.tar")); d != first["x.oci"] {
		t.Errorf(".oci.tar manifest %s, .oci layout %s", d, first["x.oci"])
	}
}
