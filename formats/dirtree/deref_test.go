package dirtree

import (
	"archive/tar"
	"os"
	"path/filepath"
	"testing"
)

// With HardDereference every name of a linked file is a regular file with
// the content; without it the later names are hard links.
func TestSourceHardDereference(t *testing.T) {
	dir := tempDir(t)
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("same\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "d", "b")); err != nil {
		t.Fatal(err)
	}
	for _, deref := range []bool{false, true} {
		s, err := NewSource(dir, SourceOptions{HardDereference: deref})
		if err != nil {
			t.Fatal(err)
		}
		_, hdrs, bodies := drain(t, s)
		s.Close()
		b := hdrs["d/b"]
		switch {
		case deref && (b.Typeflag != tar.TypeReg || b.Size != 5 || string(bodies["d/b"]) != "same\n"):
			t.Errorf("dereferenced: d/b is %c size %d %q", b.Typeflag, b.Size, bodies["d/b"])
		case !deref && (b.Typeflag != tar.TypeLink || b.Linkname != "a"):
			t.Errorf("default: d/b is %c -> %q, want a hard link to a", b.Typeflag, b.Linkname)
		}
	}
}
