// Package testenv gives tests the real components they run against (root,
// system tools, a real Debian root tree) and enforces the CI rule: outside CI
// a missing component skips a test, in CI (CI=true) it fails it, because a
// skipped test there would hide a missing install step.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// InCI reports whether the tests run in CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// Skip skips the test outside CI and fails it in CI.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("CI=true and a requirement is missing: %s", msg)
	}
	t.Skip(msg)
}

// RequireRoot needs uid 0 (device nodes, ownership, xattrs in trusted.*).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "test needs root")
	}
}

// RequireTool returns the path of a program, which must be installed.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	if filepath.IsAbs(name) {
		if _, err := os.Stat(name); err != nil {
			Skip(t, "%s is not installed", name)
		}
		return name
	}
	p, err := exec.LookPath(name)
	if err != nil {
		Skip(t, "%s is not installed", name)
	}
	return p
}

// CacheDir is where expensive fixtures (a debootstrap tree) are kept between
// runs: $BERTH_TEST_CACHE, else /var/cache/berth-test.
func CacheDir() string {
	if d := os.Getenv("BERTH_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/berth-test"
}

// DebianTree returns a real Debian 12 minbase root tree made by debootstrap
// (with iputils-ping, whose binary carries the cap_net_raw file capability).
// It is made once and cached; concurrent test binaries wait on a lock. Tests
// must not modify it.
func DebianTree(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	dir := CacheDir()
	tree := filepath.Join(dir, "bookworm-minbase")
	stamp := tree + ".ok"
	if _, err := os.Stat(stamp); err == nil {
		return tree
	}
	deb := RequireTool(t, "debootstrap")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stamp); err == nil {
		return tree
	}
	tmp := tree + ".new"
	os.RemoveAll(tmp)
	mirror := os.Getenv("BERTH_DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	cmd := exec.Command(deb, "--variant=minbase", "--include=iputils-ping", "bookworm", tmp, mirror)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debootstrap failed: %v\n%s", err, lastLines(out, 20))
	}
	os.RemoveAll(tree)
	if err := os.Rename(tmp, tree); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stamp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return tree
}

func lastLines(b []byte, n int) []byte {
	cnt := 0
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			cnt++
			if cnt > n {
				return b[i+1:]
			}
		}
	}
	return b
}
