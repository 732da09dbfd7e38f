package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/formats/dirtree/hostile"
	"github.com/berth-dev/berth/formats/dirtree/treecmp"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/testenv"
	"golang.org/x/sys/unix"
)

// A real Debian tree goes import-tar -> export-tar -> import-tar and comes
// out identical: paths, types, modes, owners, mtimes, link targets, hard-link
// groups, xattrs (ping's cap_net_raw).
func TestRoundTripDebian(t *testing.T) {
	tree := testenv.DebianTree(t)
	testenv.RequireTool(t, "getcap")
	want := snap(t, tree)
	ping := want["usr/bin/ping"]
	if ping.Xattrs["security.capability"] == "" {
		t.Fatal("fixture: usr/bin/ping has no file capability")
	}
	w := t.TempDir()
	root := filepath.Join(w, "machines")

	// The source tarball, from berth itself (zstd), then import.
	mustBerth(t, "export-tar", tree+"/", filepath.Join(w, "deb.tar.zst"))
	mustBerth(t, "--image-root", root, "import-tar", filepath.Join(w, "deb.tar.zst"))
	sameTree(t, "first import", want, snap(t, filepath.Join(root, "deb")))

	// export the machine by name, import again under another name.
	mustBerth(t, "--image-root", root, "export-tar", "deb", filepath.Join(w, "again.tar"))
	mustBerth(t, "--image-root", root, "import-tar", filepath.Join(w, "again.tar"), "deb2")
	sameTree(t, "second import", want, snap(t, filepath.Join(root, "deb2")))

	out, err := exec.Command("getcap", filepath.Join(root, "deb2", "usr/bin/ping")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "cap_net_raw") {
		t.Fatalf("ping lost its capability: %s %v", out, err)
	}
	if got := listing(t, root); got != "deb deb2" {
		t.Errorf("image root holds %q, want only the two images", got)
	}
}

// berth's tarballs are read by GNU tar and by systemd-import; tarballs from
// GNU tar and the CLI compressors are read by berth.
func TestInteropPeers(t *testing.T) {
	testenv.RequireRoot(t)
	tree := testenv.DebianTree(t)
	for _, tool := range []string{"tar", "xz", "pigz", "gzip", "bzip2", "zstd", "/usr/lib/systemd/systemd-import"} {
		testenv.RequireTool(t, tool)
	}
	// A subset keeps the compressors fast: binaries with capabilities, /etc, /dev.
	sub := filepath.Join(t.TempDir(), "sub")
	sh(t, "mkdir -p "+sub+" && cd "+tree+" && tar --xattrs --xattrs-include='*' --numeric-owner -cf - ./etc ./dev ./usr/bin ./usr/lib/os-release ./bin ./lib | tar --xattrs --xattrs-include='*' --numeric-owner -C "+sub+" -xpf -")
	want := snap(t, sub)
	w := t.TempDir()

	t.Run("gnu-tar-reads-berth", func(t *testing.T) {
		mustBerth(t, "export-tar", sub+"/", filepath.Join(w, "b.tar"))
		out := filepath.Join(w, "gnu")
		sh(t, "mkdir "+out+" && tar --xattrs --xattrs-include='*' --numeric-owner -C "+out+" -xpf "+filepath.Join(w, "b.tar"))
		sameTree(t, "GNU tar extraction of berth's tar", want, snap(t, out))
	})
	t.Run("systemd-import-reads-berth-xz", func(t *testing.T) {
		file := filepath.Join(w, "b.tar.xz")
		mustBerth(t, "export-tar", sub+"/", file)
		root := filepath.Join(w, "sdroot")
		sh(t, "/usr/lib/systemd/systemd-import tar --image-root="+root+" "+file+" sd")
		sameTree(t, "systemd-import of berth's .tar.xz", want, snap(t, filepath.Join(root, "sd")))
		sh(t, "chattr -R -i "+root+" 2>/dev/null || true")
	})

	tarball := filepath.Join(w, "gnu.tar")
	sh(t, "cd "+sub+" && tar --xattrs --xattrs-include='*' --numeric-owner -cf "+tarball+" .")
	half := filepath.Join(w, "half")
	// Two tar archives whose concatenation holds the whole tree.
	sh(t, "cd "+sub+" && tar --xattrs --xattrs-include='*' --numeric-owner -cf "+half+"1 ./etc ./dev && tar --xattrs --xattrs-include='*' --numeric-owner -cf "+half+"2 ./usr ./bin ./lib")
	inputs := map[string]string{
		"xz-T2":          "xz -T2 -1 -c " + tarball,
		"xz-single":      "xz -T1 -1 -c " + tarball,
		"xz-multistream": "xz -1 -c " + half + "1; xz -1 -c " + half + "2",
		"pigz":           "pigz -c " + tarball,
		"gzip-members":   "gzip -c " + half + "1; gzip -c " + half + "2",
		"bzip2-streams":  "bzip2 -c " + half + "1; bzip2 -c " + half + "2",
		"zstd":           "zstd -q -T2 -c " + tarball,
		"zstd-frames":    "zstd -q -c " + half + "1; zstd -q -c " + half + "2",
		"plain":          "cat " + tarball,
	}
	for name, script := range inputs {
		t.Run("berth-reads-"+name, func(t *testing.T) {
			file := filepath.Join(w, name+".in")
			sh(t, "( "+script+" ) > "+file)
			root := filepath.Join(w, "root-"+name)
			mustBerth(t, "--image-root", root, "import-tar", file, "img")
			got := snap(t, filepath.Join(root, "img"))
			// The half archives carry no "." entry, so the root directory
			// gets berth's default; compare the rest.
			if strings.Contains(script, half) {
				delete(got, ".")
				w2 := make(map[string]treecmp.Node, len(want))
				for k, v := range want {
					if k != "." {
						w2[k] = v
					}
				}
				sameTree(t, name, w2, got)
				return
			}
			sameTree(t, name, want, got)
		})
	}
}

// Every hostile archive is refused (or, for the replace-a-symlink cases,
// extracted without following the symlink); nothing outside the image
// appears or changes, and a refused import leaves the image root as it was.
func TestImportHostile(t *testing.T) {
	testenv.RequireRoot(t)
	base := t.TempDir()
	root := filepath.Join(base, "machines")
	victim := filepath.Join(root, "victim")
	if err := os.MkdirAll(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(victim, "passwd"), []byte("root:x:0:0"), 0o644); err != nil {
		t.Fatal(err)
	}
	victimSnap := snap(t, victim)
	for i, c := range hostile.Cases(victim) {
		if c.Unprivileged {
			continue // device nodes are fine as root
		}
		t.Run(c.Name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := c.WriteTar(&buf); err != nil {
				t.Fatal(err)
			}
			name := "h" + string(rune('a'+i%26))
			before := listing(t, root)
			r := berth(t, &buf, "--image-root", root, "import-tar", "-", name)
			sameTree(t, "victim", victimSnap, snap(t, victim))
			if c.Bad == "" {
				if r.code != 0 {
					t.Fatalf("exit %d: %s", r.code, r.stderr)
				}
				imageroot.RemoveTree(filepath.Join(root, name))
				return
			}
			if r.code != 1 {
				t.Fatalf("exit %d, want 1 (stderr %q)", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, c.Bad) {
				t.Errorf("error does not name the entry %q: %s", c.Bad, r.stderr)
			}
			if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("error is not one line: %q", r.stderr)
			}
			if after := listing(t, root); after != before {
				t.Errorf("image root changed: %q -> %q", before, after)
			}
		})
	}
	if _, err := os.Lstat("/etc/evil"); err == nil {
		t.Fatal("/etc/evil was written")
	}
}

func TestImportBadInput(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "gzip")
	w := t.TempDir()
	root := filepath.Join(w, "machines")
	tree := smallTree(t)
	good := filepath.Join(w, "good.tar.gz")
	mustBerth(t, "export-tar", tree+"/", good)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(w, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"truncated gzip (systemd 252 imports this as an empty image)", []string{"import-tar", write("trunc.tar.gz", data[:200]), "x"}, 1, "truncated"},
		{"trailing garbage", []string{"import-tar", write("garbage.tar.gz", append(append([]byte{}, data...), "garbage!"...)), "x"}, 1, "garbage"},
		{"empty input", []string{"import-tar", write("empty.tar", nil), "x"}, 1, "empty"},
		{"not a tarball", []string{"import-tar", write("text.tar", []byte(strings.Repeat("hello world\n", 100))), "x"}, 1, "tar"},
		{"missing file", []string{"import-tar", filepath.Join(w, "nope.tar")}, 1, "no such file"},
		{"bad name", []string{"import-tar", good, ".#work"}, 2, "reserved"},
		{"name with slash", []string{"import-tar", good, "a/b"}, 2, "/"},
		{"stdin without name", []string{"import-tar", "-"}, 2, "NAME"},
		{"too many args", []string{"import-tar", good, "a", "b"}, 2, "arguments"},
		{"unknown flag", []string{"import-tar", "--bogus", good}, 2, "bogus"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := berth(t, nil, append([]string{"--image-root", root}, c.args...)...)
			if r.code != c.code || !strings.Contains(strings.ToLower(r.stderr), strings.ToLower(c.want)) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", r.code, r.stderr, c.code, c.want)
			}
			if got := listing(t, root); got != "" {
				t.Fatalf("image root not empty after failure: %q", got)
			}
		})
	}

	// Existing names: refused without --force, replaced atomically with it.
	mustBerth(t, "--image-root", root, "import-tar", good, "m")
	r := berth(t, nil, "--image-root", root, "import-tar", good, "m")
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("second import: exit %d %q", r.code, r.stderr)
	}
	os.WriteFile(filepath.Join(root, "m", "marker"), []byte("old"), 0o644)
	mustBerth(t, "--image-root", root, "--force", "import-tar", good, "m")
	if _, err := os.Stat(filepath.Join(root, "m", "marker")); err == nil {
		t.Fatal("--force did not replace the image")
	}
	if got := listing(t, root); got != "m" {
		t.Fatalf("image root after --force: %q", got)
	}
}

func TestImportReadOnlyAndFlatten(t *testing.T) {
	testenv.RequireRoot(t)
	w := t.TempDir()
	root := filepath.Join(w, "machines")
	tree := smallTree(t)
	// Wrap the OS tree in one top-level directory, as many vendors do.
	wrapped := filepath.Join(w, "wrap")
	sh(t, "mkdir -p "+wrapped+" && cp -a "+tree+" "+wrapped+"/rootfs")
	file := filepath.Join(w, "fedora.tar")
	mustBerth(t, "export-tar", wrapped+"/", file)
	mustBerth(t, "--image-root", root, "--read-only", "import-tar", file)
	img := filepath.Join(root, "fedora")
	if _, err := os.Lstat(filepath.Join(img, "etc/os-release")); err != nil {
		t.Fatalf("wrapper directory not flattened: %v (image has %q)", err, listing(t, img))
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	f.Close()
	if err != nil || flags&0x10 == 0 {
		t.Fatalf("--read-only: flags %#x, %v; want immutable", flags, err)
	}
	if err := os.WriteFile(filepath.Join(img, "new"), nil, 0o644); err == nil {
		t.Fatal("wrote into a read-only image")
	}
	// --force replaces even a read-only image.
	mustBerth(t, "--image-root", root, "--force", "import-tar", file)
	if got := listing(t, root); got != "fedora" {
		t.Fatalf("image root: %q", got)
	}
	imageroot.RemoveTree(img)
}

// Cancelling (Ctrl-C, SIGTERM) in the middle of an import leaves nothing.
func TestImportInterrupted(t *testing.T) {
	testenv.RequireRoot(t)
	w := t.TempDir()
	root := filepath.Join(w, "machines")
	tree := smallTree(t)
	var tarball bytes.Buffer
	r := berth(t, nil, "export-tar", tree+"/", "-")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	tarball.WriteString(r.stdout)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		pw.Write(tarball.Bytes()[:tarball.Len()/2])
		// Wait until the work directory exists, then interrupt.
		for range 200 {
			if strings.Contains(listing(t, root), ".#") {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		pw.Write(tarball.Bytes()[tarball.Len()/2:])
		pw.Close()
	}()
	res := berthCtx(t, ctx, pr, "--image-root", root, "import-tar", "-", "x")
	if res.code != 1 || !strings.Contains(res.stderr, "interrupted") {
		t.Fatalf("exit %d %q", res.code, res.stderr)
	}
	if got := listing(t, root); got != "" {
		t.Fatalf("image root after interrupt: %q", got)
	}
}

func TestExportBadInput(t *testing.T) {
	testenv.RequireRoot(t)
	w := t.TempDir()
	root := filepath.Join(w, "machines")
	tree := smallTree(t)
	ro := filepath.Join(w, "ro")
	os.Mkdir(ro, 0o555)
	imageroot.SetImmutable(ro, true)
	defer imageroot.SetImmutable(ro, false)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown machine", []string{"export-tar", "nosuch", filepath.Join(w, "o.tar")}, 1, "no image"},
		{"bzip2 suffix", []string{"export-tar", tree + "/", filepath.Join(w, "o.tar.bz2")}, 2, "bzip2"},
		{"bzip2 output", []string{"export-tar", "--format", "bzip2", tree + "/", filepath.Join(w, "o.tar")}, 2, "bzip2"},
		{"bad format", []string{"export-tar", "--format", "rar", tree + "/", filepath.Join(w, "o.tar")}, 2, "rar"},
		{"unwritable destination", []string{"export-tar", tree + "/", filepath.Join(ro, "o.tar")}, 1, ro},
		{"not a directory", []string{"export-tar", "/etc/hostname/", filepath.Join(w, "o.tar")}, 1, "hostname"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := berth(t, nil, append([]string{"--image-root", root}, c.args...)...)
			if r.code != c.code || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", r.code, r.stderr, c.code, c.want)
			}
			if got := listing(t, w); got != "ro" && got != "machines ro" {
				t.Fatalf("output left behind: %q", got)
			}
		})
	}
	// An existing output is not overwritten without --force.
	out := filepath.Join(w, "o.tar")
	os.WriteFile(out, []byte("keep"), 0o644)
	if r := berth(t, nil, "export-tar", tree+"/", out); r.code != 1 || !strings.Contains(r.stderr, "exists") {
		t.Fatalf("overwrite without --force: exit %d %q", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(out); string(b) != "keep" {
		t.Fatal("existing output overwritten")
	}
	mustBerth(t, "--force", "export-tar", tree+"/", out)
	if st, _ := os.Stat(out); st.Size() < 1024 {
		t.Fatal("--force did not write the output")
	}
}

func TestExportSuffixes(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tool := range []string{"xz", "gzip", "zstd"} {
		testenv.RequireTool(t, tool)
	}
	tree := smallTree(t)
	w := t.TempDir()
	magic := map[string]string{".tar": "", ".tar.xz": "\xfd7zXZ\x00", ".tar.gz": "\x1f\x8b", ".tar.zst": "\x28\xb5\x2f\xfd"}
	for suffix, m := range magic {
		out := filepath.Join(w, "x"+suffix)
		mustBerth(t, "export-tar", tree+"/", out)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte(m)) {
			t.Errorf("%s: wrong magic % x", suffix, b[:6])
		}
		if m == "" && string(b[257:262]) != "ustar" {
			t.Errorf("%s: not a tar", suffix)
		}
		// The CLI tools agree that the stream is complete and valid.
		switch suffix {
		case ".tar.xz":
			sh(t, "xz -t "+out)
			out2, _ := exec.Command("xz", "-lvv", out).CombinedOutput()
			if !strings.Contains(strings.Join(strings.Fields(string(out2)), " "), "Sizes in headers: Yes") {
				t.Errorf("xz -lvv: block sizes not in headers:\n%s", out2)
			}
		case ".tar.gz":
			sh(t, "gzip -t "+out)
		case ".tar.zst":
			sh(t, "zstd -q -t "+out)
		}
	}
	// --format wins over the suffix; stdout is uncompressed by default.
	if r := mustBerth(t, "export-tar", "--format", "zstd", tree+"/", "-"); !strings.HasPrefix(r.stdout, "\x28\xb5\x2f\xfd") {
		t.Error("--format zstd to stdout is not zstd")
	}
	if r := mustBerth(t, "export-tar", tree+"/", "-"); r.stdout[257:262] != "ustar" {
		t.Error("stdout default is not a plain tar")
	}
}

func TestFormatsAndUsage(t *testing.T) {
	r := mustBerth(t, "formats")
	for _, w := range []string{"tar", "xz", "zstd", "gzip", "bzip2"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("formats does not list %s", w)
		}
	}
	if r := berth(t, nil, "no-such-verb"); r.code != 2 {
		t.Errorf("unknown verb: exit %d", r.code)
	}
	if r := berth(t, nil, "--log-format", "xml", "formats"); r.code != 2 {
		t.Errorf("bad --log-format: exit %d", r.code)
	}
	if r := berth(t, nil, "--log-level", "loud", "formats"); r.code != 2 {
		t.Errorf("bad --log-level: exit %d", r.code)
	}
}

// TestExportUnknownSuffixUncompressed: a file name without a known
// compression suffix is written uncompressed, as systemd-export does (its
// own test suite exports to such names); the suffix picks the compression
// otherwise.
func TestExportUnknownSuffixUncompressed(t *testing.T) {
	testenv.RequireRoot(t)
	w := t.TempDir()
	root := filepath.Join(w, "machines")
	tree := smallTree(t)
	os.MkdirAll(root, 0o700)
	os.WriteFile(filepath.Join(root, "disk.raw"), bytes.Repeat([]byte("raw!"), 4096), 0o644)
	for name, magic := range map[string][]byte{"o.zip": nil, "o.image": nil, "o.gz": {0x1f, 0x8b}, "o.tar.zst": {0x28, 0xb5, 0x2f, 0xfd}} {
		out := filepath.Join(w, name)
		mustBerth(t, "--image-root", root, "export-tar", tree+"/", out)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if magic == nil {
			// A plain tar: "ustar" at offset 257 of the first header.
			if len(b) < 263 || string(b[257:262]) != "ustar" {
				t.Errorf("%s is not an uncompressed tar", name)
			}
		} else if !bytes.HasPrefix(b, magic) {
			t.Errorf("%s does not start with %x", name, magic)
		}
	}
	out := filepath.Join(w, "disk.img2")
	mustBerth(t, "--image-root", root, "export-raw", "disk", out)
	if b, _ := os.ReadFile(out); !bytes.Equal(b, bytes.Repeat([]byte("raw!"), 4096)) {
		t.Error("export-raw to a name without a known suffix did not write the image as it is")
	}
}
