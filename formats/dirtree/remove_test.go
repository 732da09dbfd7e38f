package dirtree

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/berth-dev/berth/formats"
)

func TestSinkRemoveAndChildren(t *testing.T) {
	s, dir := newSink(t)
	outside := tempDir(t)
	if err := os.WriteFile(filepath.Join(outside, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	write(t, s,
		dirEntry("a", 0o555), dirEntry("a/b", 0o500), reg("a/b/f", "f"), reg("a/g", "g"),
		&formats.Entry{Header: &tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: outside,
			Uid: os.Geteuid(), Gid: os.Getegid()}},
		reg("top", "t"),
	)
	if names, err := s.Children("a"); err != nil || !slices.Equal(names, []string{"b", "g"}) {
		t.Fatalf("Children(a) = %v, %v", names, err)
	}
	if names, err := s.Children("."); err != nil || !slices.Equal(names, []string{"a", "l", "top"}) {
		t.Fatalf("Children(.) = %v, %v", names, err)
	}
	if names, err := s.Children("missing/dir"); err != nil || names != nil {
		t.Fatalf("Children(missing) = %v, %v", names, err)
	}
	// Through a symlink: refused, nothing outside touched.
	if _, err := s.Children("l"); !errors.Is(err, formats.ErrUnsafePath) {
		t.Errorf("Children through a symlink: %v", err)
	}
	if err := s.Remove("l/keep"); !errors.Is(err, formats.ErrUnsafePath) {
		t.Errorf("Remove through a symlink: %v", err)
	}
	for _, bad := range []string{".", "../x", "/abs"} {
		if err := s.Remove(bad); err == nil {
			t.Errorf("Remove(%q) accepted", bad)
		}
	}
	// Removing the symlink removes the link only.
	if err := s.Remove("l"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
		t.Errorf("symlink target damaged: %v", err)
	}
	// A tree with read-only directories goes as a whole; missing names
	// and names below a file are no error.
	for _, name := range []string{"a", "a", "top/x", "nope"} {
		if err := s.Remove(name); err != nil {
			t.Fatalf("Remove(%q): %v", name, err)
		}
	}
	// A directory of the same name written later does not get the
	// removed one's deferred mode.
	write(t, s, reg("a/new", "n"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("recreated directory has mode %o, want 755", st.Mode().Perm())
	}
	if _, err := os.Lstat(filepath.Join(dir, "top")); err != nil {
		t.Errorf("top removed by Remove(top/x): %v", err)
	}
	if err := s.Remove("top"); err == nil {
		t.Error("Remove on a closed sink accepted")
	}
}
