package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCommitAndAbort(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "out.tar")
	f, err := Create(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("partial")
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("output visible before Commit")
	}
	f.Abort()
	if ents, _ := os.ReadDir(d); len(ents) != 0 {
		t.Fatalf("Abort left %v", ents)
	}

	f, _ = Create(p, Options{})
	f.WriteString("done")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Abort() // after Commit: no effect
	if b, _ := os.ReadFile(p); string(b) != "done" {
		t.Fatalf("content %q", b)
	}
	if _, err := Create(p, Options{}); err == nil {
		t.Fatal("Create over an existing file without replace")
	}
	// Another writer creates the file meanwhile: Commit must not clobber it.
	f, err = Create(filepath.Join(d, "race"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "race"), []byte("theirs"), 0o644)
	if err := f.Commit(); err == nil {
		t.Fatal("Commit replaced a file created meanwhile")
	}
	if b, _ := os.ReadFile(filepath.Join(d, "race")); string(b) != "theirs" {
		t.Fatal("other writer's file clobbered")
	}
	f, _ = Create(p, Options{Replace: true})
	f.WriteString("new")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Fatal("replace did not replace")
	}
	if ents, _ := os.ReadDir(d); len(ents) != 2 {
		t.Fatalf("temporary files left: %v", ents)
	}
}
