package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/build/buildtest"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/testenv"
)

// buildArgs are the arguments that build the test system offline.
func buildArgs(t *testing.T, name string, extra ...string) []string {
	return append([]string{"build", "--flake", buildtest.Flake(t, name), "--nix-option", "substituters="}, extra...)
}

// The tarball of the test system imports with import-tar and boots with
// systemd-nspawn -b: its init runs from the store and prints the marker.
func TestBuildBootsInNspawn(t *testing.T) {
	buildtest.Require(t)
	nspawn := testenv.RequireTool(t, "systemd-nspawn")
	w := t.TempDir()
	out := filepath.Join(w, "test.tar.xz")
	mustBerth(t, buildArgs(t, "test", "-o", out)...)
	root := filepath.Join(w, "machines")
	mustBerth(t, "--image-root", root, "import-tar", out)
	dir := filepath.Join(root, "test")
	for _, p := range []string{"etc/os-release", "nix-path-registration", "proc", "sys", "dev"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Errorf("imported tree lacks %s: %v", p, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nspawn, "--register=no", "--keep-unit", "-q", "-D", dir, "-b")
	got, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("nspawn did not finish within 60 s: %s", got)
	}
	if !strings.Contains(string(got), buildtest.Marker) {
		t.Fatalf("the machine did not boot the test system (err %v):\n%s", err, got)
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// freshFlake copies the test flake with a nonce in two store paths that
// share a file, so this run's paths are new and not yet optimised: the
// "before nix-store --optimise" half of the test is real on every run.
func freshFlake(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(buildtest.FlakeDir(t), "flake.nix"))
	if err != nil {
		t.Fatal(err)
	}
	nonce := fmt.Sprintf("run %d", time.Now().UnixNano())
	s := strings.ReplaceAll(string(src), "identical content in lib-a and lib-b", "identical content in lib-a and lib-b, "+nonce)
	if s == string(src) {
		t.Fatal("test flake: nonce marker not found")
	}
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "flake.nix"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return "path:" + d + "#test"
}

// Every tar format is byte-identical run after run, and after
// nix-store --optimise has turned duplicate store files into hard links.
func TestBuildReproducible(t *testing.T) {
	buildtest.Require(t)
	flake := freshFlake(t)
	w := t.TempDir()
	formats := []string{"tar", "tar.xz", "tar.zst", "tar.gz"}
	sums := func(round string) map[string]string {
		m := map[string]string{}
		for _, f := range formats {
			out := filepath.Join(w, round+"."+f)
			mustBerth(t, "build", "--flake", flake, "--nix-option", "substituters=", "-o", out)
			m[f] = sha256File(t, out)
		}
		return m
	}
	first := sums("one")
	second := sums("two")

	// The shared file is two inodes before, one after optimising.
	top := topOf(t, filepath.Join(w, "one.tar"))
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
	for _, f := range formats {
		if first[f] != second[f] || first[f] != third[f] {
			t.Errorf("%s: sha256 %s, %s, after optimise %s", f, first[f], second[f], third[f])
		}
	}
	// Packing the built toplevel gives the same bytes as building it.
	out := filepath.Join(w, "toplevel.tar.zst")
	mustBerth(t, "build", "--toplevel", top, "-o", out)
	if got := sha256File(t, out); got != first["tar.zst"] {
		t.Errorf("--toplevel gave %s, --flake %s", got, first["tar.zst"])
	}
	// No hard links, owners 0, mtime 1, sorted.
	checkTar(t, filepath.Join(w, "three.tar.xz"))
}

// topOf reads the toplevel from the sbin/init link of a built tarball.
func topOf(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no sbin/init in %s: %v", file, err)
		}
		if h.Name == "sbin/init" {
			return strings.TrimSuffix(h.Linkname, "/init")
		}
	}
}

// sharedFiles returns the identical files of lib-a and lib-b.
func sharedFiles(t *testing.T, top string) (string, string) {
	t.Helper()
	out, err := exec.Command("nix-store", "-qR", top).Output()
	if err != nil {
		t.Fatal(err)
	}
	var a, b string
	for _, p := range strings.Fields(string(out)) {
		switch {
		case strings.HasSuffix(p, "-lib-a"):
			a = p + "/share/doc/COMMON"
		case strings.HasSuffix(p, "-lib-b"):
			b = p + "/share/doc/COMMON"
		}
	}
	if a == "" || b == "" {
		t.Fatalf("closure of %s lacks lib-a or lib-b", top)
	}
	return a, b
}

func sameInode(t *testing.T, a, b string) bool {
	t.Helper()
	sa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(sa, sb)
}

func checkTar(t *testing.T, file string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, _, err := compress.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tr := tar.NewReader(r)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if h.Typeflag == tar.TypeLink || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || h.ModTime.Unix() != 1 {
			t.Errorf("%s: type %c owner %d:%d %q:%q mtime %v", h.Name, h.Typeflag, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
		}
	}
	if n < 30 {
		t.Errorf("%s has only %d entries", file, n)
	}
}

// Bad input fails with one clear line and leaves no output behind.
func TestBuildBadInput(t *testing.T) {
	buildtest.Require(t)
	noinit := buildtest.Toplevel(t, "noinit")
	w := t.TempDir()
	locked := filepath.Join(w, "locked")
	if err := os.Mkdir(locked, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := imageroot.SetImmutable(locked, true); err != nil {
		t.Fatalf("chattr +i: %v", err)
	}
	t.Cleanup(func() { imageroot.SetImmutable(locked, false) })
	for _, c := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"unknown attribute", buildArgs(t, "no-such-host", "-o", filepath.Join(w, "x.tar")), 1,
			[]string{"does not provide attribute", "nixosConfigurations.no-such-host"}},
		{"failing build", buildArgs(t, "broken", "-o", filepath.Join(w, "x.tar.xz")), 1,
			[]string{"builder for", "broken-system", "fails on purpose"}},
		{"not a NixOS system", []string{"build", "--toplevel", noinit, "-o", filepath.Join(w, "x.tar.zst")}, 1,
			[]string{noinit, "not a NixOS system", "no executable init"}},
		{"unwritable output dir", buildArgs(t, "test", "-o", filepath.Join(locked, "x.tar")), 1,
			[]string{"creating output in", "operation not permitted"}},
		{"missing output dir", buildArgs(t, "test", "-o", filepath.Join(w, "nodir", "x.tar")), 1,
			[]string{"creating output in", "no such file"}},
		{"unknown suffix", buildArgs(t, "test", "-o", filepath.Join(w, "x.zip")), 2,
			[]string{"unknown suffix .zip", ".tar.zst"}},
		{"unknown format", buildArgs(t, "test", "-o", filepath.Join(w, "x.tar"), "--format", "cpio"), 2,
			[]string{`--format "cpio"`}},
		{"two inputs", []string{"build", "--flake", ".#a", "--toplevel", noinit, "-o", filepath.Join(w, "x.tar")}, 2,
			[]string{"exactly one of"}},
		{"no output", buildArgs(t, "test"), 2, []string{"-o OUTPUT"}},
		{"bad --add", buildArgs(t, "test", "-o", filepath.Join(w, "x.tar"), "--add", "x:/nix/store/y"), 2,
			[]string{"--add", "Nix store"}},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			r := berth(t, nil, c.args...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d: %s", r.code, c.code, r.stderr)
			}
			line := errorLine(r.stderr)
			for _, s := range c.want {
				if !strings.Contains(line, s) {
					t.Errorf("error %q does not mention %q", line, s)
				}
			}
			if got := listing(t, w); got != "locked" {
				t.Errorf("output directory holds %q after the failure", got)
			}
			if got := listing(t, locked); got != "" {
				t.Errorf("locked directory holds %q", got)
			}
		})
	}
}

// errorLine returns berth's one-line error from stderr (log lines skipped).
func errorLine(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "berth: ") {
			return l
		}
	}
	return ""
}

// --settings copies the .nspawn file next to the output, both appear only
// on success; --add puts host files into the tree.
func TestBuildSettingsAndAdd(t *testing.T) {
	buildtest.Require(t)
	w := t.TempDir()
	settings := filepath.Join(w, "in.nspawn")
	os.WriteFile(settings, []byte("[Network]\nVirtualEthernet=no\n"), 0o644)
	motd := filepath.Join(w, "motd")
	os.WriteFile(motd, []byte("welcome\n"), 0o644)
	outDir := filepath.Join(w, "out")
	os.Mkdir(outDir, 0o755)
	out := filepath.Join(outDir, "web.tar.gz")
	mustBerth(t, buildArgs(t, "test", "-o", out, "--settings", settings, "--add", motd+":/etc/motd")...)
	if got := listing(t, outDir); got != "web.nspawn web.tar.gz" {
		t.Fatalf("output directory holds %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(outDir, "web.nspawn")); string(b) != "[Network]\nVirtualEthernet=no\n" {
		t.Errorf("web.nspawn: %q", b)
	}
	root := filepath.Join(w, "machines")
	mustBerth(t, "--image-root", root, "import-tar", out)
	if b, _ := os.ReadFile(filepath.Join(root, "web", "etc/motd")); string(b) != "welcome\n" {
		t.Errorf("etc/motd in the image: %q", b)
	}
	// Existing output without --force: refused before Nix runs.
	r := berth(t, nil, buildArgs(t, "test", "-o", out)...)
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("existing output: exit %d %s", r.code, r.stderr)
	}
}

// --format overrides the suffix and allows standard output; an interrupted
// build leaves no output.
func TestBuildFormatFlagAndInterrupt(t *testing.T) {
	buildtest.Require(t)
	r := mustBerth(t, buildArgs(t, "test", "-o", "-", "--format", "tar")...)
	tr := tar.NewReader(strings.NewReader(r.stdout))
	h, err := tr.Next()
	if err != nil || h.Name != "./" {
		t.Fatalf("stdout is not the tarball: %v %+v", err, h)
	}
	w := t.TempDir()
	out := filepath.Join(w, "image.bin")
	mustBerth(t, buildArgs(t, "test", "-o", out, "--format", "tar.zst")...)
	f, _ := os.Open(out)
	defer f.Close()
	if _, kind, err := compress.NewReader(f); err != nil || kind != compress.Zstd {
		t.Errorf("--format tar.zst wrote %s (%v)", kind, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r = berthCtx(t, ctx, nil, buildArgs(t, "test", "-o", filepath.Join(w, "x.tar.xz"))...)
	if r.code != 1 || !strings.Contains(r.stderr, "interrupted") {
		t.Errorf("cancelled build: exit %d %s", r.code, r.stderr)
	}
	if got := listing(t, w); got != "image.bin" {
		t.Errorf("directory holds %q after the interrupted build", got)
	}
}
