package imageroot

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

func TestValidName(t *testing.T) {
	for _, ok := range []string{"foo", "foo_bar", "Fedora-Base-30-1.2.x86_64", strings.Repeat("a", 65), "a.b", "ü"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".#x", "a/b", "a\nb", "a\x7fb", "\xff", strings.Repeat("a", 256)} {
		if err := ValidName(bad); err == nil {
			t.Errorf("ValidName(%q) accepted", bad)
		}
	}
}

func TestNames(t *testing.T) {
	tar := map[string]string{
		"http://x/y/fedora.tar.xz": "fedora", "a.tar": "a", "a.tgz": "a", "a.tar.zst": "a",
		"a.tar.bz2": "a", "noext": "noext", ".tar": ".tar",
	}
	for in, want := range tar {
		if got := TarName(in); got != want {
			t.Errorf("TarName(%q) = %q, want %q", in, got, want)
		}
	}
	raw := map[string]string{"disk.raw.xz": "disk", "img.qcow2.gz": "img", "a.img": "a", "a.raw.zst": "a", "x": "x"}
	for in, want := range raw {
		if got := RawName(in); got != want {
			t.Errorf("RawName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"foo", ".#x", "a/b", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName(s) == nil {
			// A valid name is one path component inside the root.
			if filepath.Base(s) != s || strings.HasPrefix(s, ".#") || s == "." || s == ".." {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}

func TestInstall(t *testing.T) {
	testenv.RequireRoot(t)
	r, err := Open(filepath.Join(t.TempDir(), "machines"), nil)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(marker string) string {
		w, err := r.WorkDir("m")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(filepath.Base(w), ".#m") {
			t.Fatalf("work dir %s is not hidden", w)
		}
		os.WriteFile(filepath.Join(w, marker), nil, 0o644)
		return w
	}
	if err := r.Install(mk("one"), "m", InstallOptions{ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	second := mk("two")
	if err := r.Install(second, "m", InstallOptions{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("install over existing: %v", err)
	}
	if err := r.Install(second, "m", InstallOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.Path("m"), "two")); err != nil {
		t.Fatal("--force did not swap in the new tree")
	}
	ents, _ := os.ReadDir(r.Dir)
	if len(ents) != 1 {
		t.Fatalf("image root holds %d entries after replace, want 1", len(ents))
	}
	if err := r.Remove("m"); err != nil {
		t.Fatal(err)
	}
	if r.Exists("m") {
		t.Fatal("Remove left the image")
	}
}

func TestLockExcludes(t *testing.T) {
	r, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := r.Lock(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := r.Lock(ctx, "x"); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("second lock: %v", err)
	}
	other, err := r.Lock(context.Background(), "y")
	if err != nil {
		t.Fatalf("lock on another name blocked: %v", err)
	}
	other()
	unlock()
	again, err := r.Lock(context.Background(), "x")
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	again()
	if ents, _ := os.ReadDir(r.Dir); len(ents) != 0 {
		t.Fatalf("lock files left in the image root: %v", ents)
	}
}

func TestMangleOSTree(t *testing.T) {
	d := t.TempDir()
	work := filepath.Join(d, ".#w")
	os.MkdirAll(filepath.Join(work, "rootfs/etc"), 0o755)
	os.WriteFile(filepath.Join(work, "rootfs/etc/os-release"), []byte("ID=x\n"), 0o644)
	got, err := MangleOSTree(work)
	if err != nil {
		t.Fatal(err)
	}
	if !IsOSTree(got) {
		t.Fatalf("%s is not the OS tree", got)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Fatal("wrapper directory left behind")
	}
	// An OS tree, or a wrapper with two children, is left alone.
	again, err := MangleOSTree(got)
	if err != nil || again != got {
		t.Fatalf("OS tree mangled: %s %v", again, err)
	}
	two := filepath.Join(d, "two")
	os.MkdirAll(filepath.Join(two, "a/etc"), 0o755)
	os.WriteFile(filepath.Join(two, "a/etc/os-release"), nil, 0o644)
	os.MkdirAll(filepath.Join(two, "b"), 0o755)
	if p, _ := MangleOSTree(two); p != two {
		t.Fatal("tree with two children was flattened")
	}
}
