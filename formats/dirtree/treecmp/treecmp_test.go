package treecmp

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func build(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "d/e"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "d/f"), []byte("hello"), 0o644))
	must(os.Link(filepath.Join(dir, "d/f"), filepath.Join(dir, "g")))
	must(os.Link(filepath.Join(dir, "d/f"), filepath.Join(dir, "a")))
	must(os.Symlink("/nowhere", filepath.Join(dir, "l")))
	must(unix.Mkfifo(filepath.Join(dir, "p"), 0o600))
	must(unix.Setxattr(filepath.Join(dir, "d/e"), "user.k", []byte("v\x00\xff"), 0))
	mt := time.Unix(1700000000, 123456789)
	for _, p := range []string{"d/f", "d/e", "d", "p", "."} {
		must(os.Chtimes(filepath.Join(dir, p), mt, mt))
	}
	must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, "l"),
		[]unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}, unix.AT_SYMLINK_NOFOLLOW))
	return dir
}

func TestSnapshot(t *testing.T) {
	dir := build(t)
	m, err := Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".", "a", "d", "d/e", "d/f", "g", "l", "p"}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("names %v, want %v", got, want)
	}
	f := m["d/f"]
	if f.Type != "file" || f.Size != 5 || f.HardLink != "a" || f.Mode != 0o644 ||
		f.SHA256 != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Errorf("d/f = %+v", f)
	}
	if m["g"].HardLink != "a" || m["a"].HardLink != "a" {
		t.Errorf("hard link group: a=%q g=%q", m["a"].HardLink, m["g"].HardLink)
	}
	if l := m["l"]; l.Type != "symlink" || l.Target != "/nowhere" || l.ModTime.UnixNano() != 1700000000123456789 {
		t.Errorf("l = %+v", l)
	}
	if m["d/e"].Xattrs["user.k"] != "v\x00\xff" {
		t.Errorf("d/e xattrs = %q", m["d/e"].Xattrs)
	}
	if m["p"].Type != "fifo" {
		t.Errorf("p = %+v", m["p"])
	}
}

func TestDiff(t *testing.T) {
	a, err := Snapshot(build(t))
	if err != nil {
		t.Fatal(err)
	}
	b2 := build(t)
	if d := Diff(a, mustSnap(t, b2)); d != nil {
		t.Fatalf("identical trees differ: %q", d)
	}
	if err := os.Chmod(filepath.Join(b2, "d/f"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(b2, "g")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Removexattr(filepath.Join(b2, "d/e"), "user.k"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b2, "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d := Diff(a, mustSnap(t, b2))
	got := strings.Join(d, "\n")
	for _, want := range []string{
		"d/e: xattr user.k only in a",
		"d/f: mode 0644 != 0600",
		"g: only in a",
		"new: only in b",
		".: mtime", // the root's mtime changed with the new file
	} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
}

func mustSnap(t *testing.T, dir string) map[string]Node {
	t.Helper()
	m, err := Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
