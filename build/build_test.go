package build_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/build"
	"github.com/berth-dev/berth/build/buildtest"
	"github.com/berth-dev/berth/formats"
)

type entry struct {
	h    tar.Header
	body []byte
}

// drain reads a whole source, checking the stream invariants on the way:
// strictly increasing tree order and normalised headers.
func drain(t *testing.T, src formats.Source) []entry {
	t.Helper()
	var out []entry
	prev := ""
	for {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		h := *e.Header
		if prev != "" && build.CompareNames(prev, h.Name) >= 0 {
			t.Fatalf("entry %q after %q: not in tree order", h.Name, prev)
		}
		prev = h.Name
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(build.Epoch) || len(h.PAXRecords) != 0 {
			t.Fatalf("%s: header not normalised: %+v", h.Name, h)
		}
		if h.Typeflag == tar.TypeLink {
			t.Fatalf("%s: hard link in the tree", h.Name)
		}
		var body []byte
		if h.Typeflag == tar.TypeReg {
			if body, err = io.ReadAll(e.Body); err != nil {
				t.Fatal(err)
			}
			if int64(len(body)) != h.Size {
				t.Fatalf("%s: body %d bytes, header %d", h.Name, len(body), h.Size)
			}
		}
		out = append(out, entry{h, body})
	}
}

func load(t *testing.T, name string) *build.System {
	t.Helper()
	top := buildtest.Toplevel(t, name)
	sys, err := build.Load(context.Background(), top, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sys
}

func TestLoad(t *testing.T) {
	sys := load(t, "test")
	if len(sys.Closure) != 6 {
		t.Errorf("closure has %d paths, want 6 (toplevel, lib-a, lib-b, hardlinks, etc, busybox): %v", len(sys.Closure), sys.Closure)
	}
	if sys.Arch != "x86-64" || sys.System != "x86_64-linux" {
		t.Errorf("arch %q system %q", sys.Arch, sys.System)
	}
	if !bytes.Contains(sys.OSRelease, []byte("ID=nixos")) {
		t.Errorf("os-release: %q", sys.OSRelease)
	}
	recs, err := build.ParseRegistration(bytes.NewReader(sys.Registration))
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for i, r := range recs {
		if r.Path != sys.Closure[i] {
			t.Errorf("registration record %d is %s, want %s", i, r.Path, sys.Closure[i])
		}
		total += r.NarSize
	}
	if total != sys.NarSize || total < 1<<20 {
		t.Errorf("NarSize %d, records sum to %d", sys.NarSize, total)
	}
}

// The tree holds every closure file with the store's content and NAR modes,
// hard links as regular files, and the generated entries.
func TestSourceMatchesStore(t *testing.T) {
	sys := load(t, "test")
	tree := sys.Source(build.PlanOptions{})
	defer tree.Close()
	got := map[string]entry{}
	var names []string
	for _, e := range drain(t, tree) {
		got[e.h.Name] = e
		names = append(names, e.h.Name)
	}
	if names[0] != "." {
		t.Fatalf("first entry %q", names[0])
	}
	want := 0
	for _, p := range sys.Closure {
		err := filepath.WalkDir(p, func(hp string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			want++
			name := strings.TrimPrefix(hp, "/")
			e, ok := got[name]
			if !ok {
				t.Errorf("%s missing from the tree", name)
				return nil
			}
			st, err := os.Lstat(hp)
			if err != nil {
				return err
			}
			switch {
			case st.IsDir():
				if e.h.Typeflag != tar.TypeDir || e.h.Mode != 0o555 {
					t.Errorf("%s: type %c mode %o, want dir 0555", name, e.h.Typeflag, e.h.Mode)
				}
			case st.Mode()&fs.ModeSymlink != 0:
				target, _ := os.Readlink(hp)
				if e.h.Typeflag != tar.TypeSymlink || e.h.Linkname != target {
					t.Errorf("%s: type %c -> %q, want symlink to %q", name, e.h.Typeflag, e.h.Linkname, target)
				}
			default:
				data, err := os.ReadFile(hp)
				if err != nil {
					return err
				}
				mode := int64(0o444)
				if st.Mode()&0o111 != 0 {
					mode = 0o555
				}
				if e.h.Typeflag != tar.TypeReg || e.h.Mode != mode || sha256.Sum256(data) != sha256.Sum256(e.body) {
					t.Errorf("%s: type %c mode %o or content differs from the store", name, e.h.Typeflag, e.h.Mode)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	gen := map[string]string{
		".": "dir", "dev": "dir", "etc": "dir", "nix": "dir", "nix/store": "dir", "nix/var": "dir",
		"nix/var/nix": "dir", "nix/var/nix/profiles": "dir", "proc": "dir", "sbin": "dir", "sys": "dir",
		"etc/os-release": "file", "nix-path-registration": "file",
		"nix/var/nix/profiles/system":        "-> system-1-link",
		"nix/var/nix/profiles/system-1-link": "-> " + sys.Toplevel,
		"sbin/init":                          "-> " + sys.Toplevel + "/init",
	}
	for name, what := range gen {
		e, ok := got[name]
		switch {
		case !ok:
			t.Errorf("%s missing", name)
		case what == "dir" && e.h.Typeflag != tar.TypeDir,
			what == "file" && e.h.Typeflag != tar.TypeReg,
			strings.HasPrefix(what, "-> ") && (e.h.Typeflag != tar.TypeSymlink || "-> "+e.h.Linkname != what):
			t.Errorf("%s: type %c link %q, want %s", name, e.h.Typeflag, e.h.Linkname, what)
		}
	}
	if string(got["etc/os-release"].body) != string(sys.OSRelease) || string(got["nix-path-registration"].body) != string(sys.Registration) {
		t.Error("generated file content differs from the system's")
	}
	if len(got) != want+len(gen) {
		t.Errorf("tree has %d entries, want %d store entries + %d generated", len(got), want, len(gen))
	}
	// The builder's hard links come out as three regular files.
	var hl string
	for _, p := range sys.Closure {
		if strings.HasSuffix(p, "-hardlinks") {
			hl = strings.TrimPrefix(p, "/")
		}
	}
	for _, n := range []string{"data/one", "data/two", "three"} {
		if e := got[hl+"/"+n]; e.h.Typeflag != tar.TypeReg || string(e.body) != "linked file, three names\n" {
			t.Errorf("%s/%s: %c %q", hl, n, e.h.Typeflag, e.body)
		}
	}
}

// GeneratedSource plus one StorePathSource per path is the whole tree.
func TestPartsMakeTheWhole(t *testing.T) {
	sys := load(t, "test")
	whole := sys.Source(build.PlanOptions{})
	defer whole.Close()
	all := drain(t, whole)
	gen := sys.GeneratedSource(build.PlanOptions{})
	parts := drain(t, gen)
	gen.Close()
	for _, p := range sys.Closure {
		s := sys.StorePathSource(p)
		es := drain(t, s)
		s.Close()
		if len(es) == 0 || es[0].h.Name != strings.TrimPrefix(p, "/") {
			t.Fatalf("StorePathSource(%s) starts with %v", p, es)
		}
		parts = append(parts, es...)
	}
	if len(parts) != len(all) {
		t.Fatalf("parts have %d entries, the whole %d", len(parts), len(all))
	}
	byName := map[string]entry{}
	for _, e := range parts {
		byName[e.h.Name] = e
	}
	for _, e := range all {
		p, ok := byName[e.h.Name]
		if !ok || p.h.Mode != e.h.Mode || p.h.Typeflag != e.h.Typeflag || !bytes.Equal(p.body, e.body) {
			t.Errorf("%s differs between the parts and the whole", e.h.Name)
		}
	}
}

func TestAdd(t *testing.T) {
	sys := load(t, "test")
	d := t.TempDir()
	if err := os.MkdirAll(filepath.Join(d, "conf/sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "conf/sub/a"), []byte("a\n"), 0o600)
	os.Link(filepath.Join(d, "conf/sub/a"), filepath.Join(d, "conf/b"))
	os.WriteFile(filepath.Join(d, "motd"), []byte("hello\n"), 0o640)
	var adds []build.Add
	for _, s := range []string{d + "/conf:/etc/nixos", d + "/motd:/etc/motd", d + "/motd:srv/deep/dir/motd"} {
		a, err := build.ParseAdd(s)
		if err != nil {
			t.Fatal(err)
		}
		adds = append(adds, a)
	}
	tree := sys.Source(build.PlanOptions{Adds: adds})
	defer tree.Close()
	got := map[string]entry{}
	for _, e := range drain(t, tree) {
		got[e.h.Name] = e
	}
	for name, want := range map[string]string{"etc/nixos/sub/a": "a\n", "etc/nixos/b": "a\n", "etc/motd": "hello\n", "srv/deep/dir/motd": "hello\n"} {
		if e := got[name]; e.h.Typeflag != tar.TypeReg || string(e.body) != want {
			t.Errorf("%s: %c %q, want %q", name, e.h.Typeflag, e.body, want)
		}
	}
	if got["etc/nixos"].h.Mode != 0o750 || got["etc/motd"].h.Mode != 0o640 || got["srv/deep"].h.Typeflag != tar.TypeDir {
		t.Errorf("modes or parents wrong: %o %o %c", got["etc/nixos"].h.Mode, got["etc/motd"].h.Mode, got["srv/deep"].h.Typeflag)
	}

	// A file over a generated file is refused, with a clear error.
	a, _ := build.ParseAdd(d + "/motd:/etc/os-release")
	tree2 := sys.Source(build.PlanOptions{Adds: []build.Add{a}})
	defer tree2.Close()
	_, err := formats.Copy(context.Background(), discard{}, tree2)
	if err == nil || !strings.Contains(err.Error(), "/etc/os-release would be written twice") {
		t.Fatalf("collision: %v", err)
	}
}

type discard struct{}

func (discard) WriteEntry(e *formats.Entry) error { _, err := io.Copy(io.Discard, e.Body); return err }
func (discard) Close() error                      { return nil }

func oneLine(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one mentioning %q", want)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans lines: %q", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not mention %q", msg, w)
		}
	}
}

func TestNotNixOS(t *testing.T) {
	top := buildtest.Toplevel(t, "noinit")
	_, err := build.Load(context.Background(), top, nil)
	oneLine(t, err, top, "not a NixOS system", "no executable init")
	if !errors.Is(err, build.ErrNotNixOS) {
		t.Errorf("error %v is not ErrNotNixOS", err)
	}
}

func TestRealiseErrors(t *testing.T) {
	buildtest.Require(t)
	ctx := context.Background()
	_, err := build.Realise(ctx, build.Input{Flake: buildtest.Flake(t, "broken"), NixOptions: buildtest.NixOptions}, nil)
	oneLine(t, err, "nix build", "broken-system", "this build fails on purpose")

	_, err = build.Realise(ctx, build.Input{Flake: buildtest.Flake(t, "no-such-host"), NixOptions: buildtest.NixOptions}, nil)
	oneLine(t, err, "does not provide attribute", "nixosConfigurations.no-such-host.config.system.build.toplevel")

	// Without <nixpkgs> in the search path (no channel, offline), the
	// classic route says what is missing.
	t.Setenv("NIX_PATH", "")
	cfg := filepath.Join(t.TempDir(), "configuration.nix")
	os.WriteFile(cfg, []byte("{ ... }: { boot.isContainer = true; }\n"), 0o644)
	_, err = build.Realise(ctx, build.Input{Config: cfg, NixOptions: buildtest.NixOptions}, nil)
	oneLine(t, err, "nixpkgs/nixos", "search path")

	_, err = build.Realise(ctx, build.Input{Toplevel: "/tmp"}, nil)
	oneLine(t, err, "not a store path")
}
