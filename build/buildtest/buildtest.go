// Package buildtest gives tests the small offline NixOS-like systems of
// testdata/nixos, built once per test binary with the real Nix, so every
// package that consumes a system's tree (tar, raw, OCI) tests against the
// same real store paths without paying for the Nix build twice.
package buildtest

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/berth-dev/berth/build"
	"github.com/berth-dev/berth/internal/testenv"
)

// Marker is what the test system's init prints when it boots.
const Marker = "berth-test-system booted"

// NixOptions keep Nix offline: no substituter is asked.
var NixOptions = []string{"substituters="}

// FlakeDir returns the absolute path of testdata/nixos, found from the
// working directory upwards (go test runs in the package directory).
func FlakeDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "testdata", "nixos", "flake.nix")
		if _, err := os.Stat(p); err == nil {
			return filepath.Dir(p)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testdata/nixos/flake.nix not found above the working directory")
		}
		dir = parent
	}
}

// Flake returns "path:<testdata/nixos>#name" for --flake. The path: scheme
// makes Nix read the directory as it is, not the git tree around it (whose
// index may not list the test flake yet).
func Flake(t testing.TB, name string) string {
	return "path:" + FlakeDir(t) + "#" + name
}

// Require skips (or, in CI, fails) the test unless root and Nix are there.
func Require(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "nix")
	testenv.RequireTool(t, "nix-store")
}

var (
	mu    sync.Mutex
	built = map[string]string{}
)

// Toplevel builds nixosConfigurations.name of the test flake (once per test
// binary) and returns its store path.
func Toplevel(t testing.TB, name string) string {
	t.Helper()
	Require(t)
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	p, err := build.Realise(context.Background(), build.Input{Flake: Flake(t, name), NixOptions: NixOptions}, nil)
	if err != nil {
		t.Fatalf("building the test system %s: %v", name, err)
	}
	built[name] = p
	return p
}
