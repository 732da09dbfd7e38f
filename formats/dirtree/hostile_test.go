package dirtree

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/dirtree/hostile"
)

func TestHostile(t *testing.T) {
	runHostile(t, Options{IgnoreOwnership: os.Geteuid() != 0})
}

// TestHostileUnprivileged runs the corpus without root, where device nodes
// must be refused with a clear error.
func TestHostileUnprivileged(t *testing.T) {
	if !unprivileged(t) {
		return
	}
	runHostile(t, Options{IgnoreOwnership: true})
}

// Absolute paths the corpus aims at; none may exist after any case.
var hostileTargets = []string{"/etc/evil", "/tmp/evil", "/evil"}

func runHostile(t *testing.T, opts Options) {
	for _, p := range hostileTargets {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists before the test", p)
		}
	}
	root := os.Geteuid() == 0
	for _, via := range []string{"entries", "tar"} {
		for _, c := range hostile.Cases("/placeholder") {
			t.Run(via+"/"+c.Name, func(t *testing.T) {
				base := tempDir(t)
				dst := filepath.Join(base, "root")
				victim := filepath.Join(base, "victim")
				for _, d := range []string{dst, victim, victim + "/sub"} {
					if err := os.Mkdir(d, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.WriteFile(filepath.Join(victim, "passwd"), []byte("root:x:0:0\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				before := snapshot(t, victim)

				// Rebuild the case aimed at this test's victim.
				var hc hostile.Case
				for _, x := range hostile.Cases(victim) {
					if x.Name == c.Name {
						hc = x
					}
				}
				var src formats.Source
				switch via {
				case "entries":
					src = hc.Source()
				case "tar":
					p := filepath.Join(t.TempDir(), hc.Name+".tar")
					f, err := os.Create(p)
					if err != nil {
						t.Fatal(err)
					}
					if err := hc.WriteTar(f); err != nil {
						t.Fatal(err)
					}
					if _, err := f.Seek(0, 0); err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					src = tarSource{tar.NewReader(f)}
				}

				err := extract(src, dst, opts)
				bad := hc.Bad
				if hc.Unprivileged && root {
					bad = ""
				}
				switch {
				case bad == "" && err != nil:
					t.Errorf("extraction failed: %v", err)
				case bad != "" && err == nil:
					t.Errorf("extraction succeeded, want entry %q refused", bad)
				case bad != "" && !strings.HasPrefix(err.Error(), bad+": "):
					t.Errorf("error does not name entry %q first: %v", bad, err)
				case err != nil:
					t.Logf("refused: %v", err)
				}

				// Nothing outside the root changed.
				mustDiffEqual(t, before, snapshot(t, victim))
				ents, err := os.ReadDir(base)
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				if !slices.Equal(names, []string{"root", "victim"}) {
					t.Errorf("next to the root: %v, want only root and victim", names)
				}
				for _, p := range hostileTargets {
					if _, err := os.Lstat(p); err == nil {
						os.Remove(p)
						t.Errorf("%s was created", p)
					}
				}
				checkHostileResult(t, hc.Name, dst)
			})
		}
	}
}

// checkHostileResult checks what the cases that must extract left inside
// the root: the symlink was replaced, not written through.
func checkHostileResult(t *testing.T, name, dst string) {
	t.Helper()
	typ := func(p string) uint32 {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dst, p), &st); err != nil {
			t.Errorf("%s: %v", p, err)
			return 0
		}
		return st.Mode & unix.S_IFMT
	}
	content := func(p, want string) {
		b, err := os.ReadFile(filepath.Join(dst, p))
		if err != nil || string(b) != want {
			t.Errorf("%s: content %q, %v; want %q", p, b, err, want)
		}
	}
	switch name {
	case "file-over-symlink":
		if typ("a") == unix.S_IFREG {
			content("a", "pwned")
		} else {
			t.Errorf("a is not a regular file")
		}
	case "dir-over-symlink":
		if typ("d") != unix.S_IFDIR {
			t.Errorf("d is not a directory")
		}
		content("d/x", "pwned")
	case "symlink-over-dir-before-chmod":
		if typ("d") != unix.S_IFLNK {
			t.Errorf("d is not a symlink")
		}
	case "file-over-hardlinked-symlink":
		if typ("s") != unix.S_IFLNK {
			t.Errorf("s is not a symlink")
		}
		content("h", "pwned")
	case "fifo-over-symlink":
		if typ("p") != unix.S_IFIFO {
			t.Errorf("p is not a FIFO")
		}
	}
}

// TestRefusalsMatchErrUnsafePath checks that refusals can be told apart
// from I/O errors.
func TestRefusalsMatchErrUnsafePath(t *testing.T) {
	for _, c := range hostile.Cases("/victim") {
		switch c.Name {
		case "dotdot", "absolute", "symlink-in-root-parent", "symlink-loop", "hardlink-dotdot", "hardlink-symlink-parent":
		default:
			continue
		}
		dst := t.TempDir()
		err := extract(c.Source(), dst, Options{IgnoreOwnership: true})
		if !errors.Is(err, formats.ErrUnsafePath) {
			t.Errorf("%s: %v does not match formats.ErrUnsafePath", c.Name, err)
		}
	}
}
