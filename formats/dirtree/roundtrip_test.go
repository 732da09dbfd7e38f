package dirtree

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// buildFixture fills root with one of every kind of file berth must carry.
// The privileged part needs root: foreign owners, device nodes, file
// capabilities, trusted.* xattrs.
func buildFixture(t *testing.T, root string, privileged bool) {
	t.Helper()
	p := func(name string) string { return filepath.Join(root, name) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(name string) { t.Helper(); must(os.MkdirAll(p(name), 0o755)) }
	chmod := func(name string, mode uint32) { t.Helper(); must(unix.Chmod(p(name), mode)) }
	write := func(name, data string, mode uint32) {
		t.Helper()
		must(os.WriteFile(p(name), []byte(data), 0o600))
		chmod(name, mode)
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}

	mkdir("etc")
	write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
	write("etc/empty", "", 0o600)
	mkdir("bin")
	write("bin/suid", "#!/bin/sh\n", 0o4755)
	write("bin/sgid", "#!/bin/sh\n", 0o2755)
	write("bin/both", "#!/bin/sh\n", 0o6711)
	mkdir("private")
	write("private/secret", "s3cret", 0o400)
	mkdir("tmp")
	mkdir("ro/sub")
	write("ro/file", "read only", 0o444)
	write("ro/sub/deep", "deeper", 0o644)
	mkdir("empty-dir")

	// A sparse file ending in a hole, and a file with binary content.
	f, err := os.Create(p("sparse"))
	must(err)
	_, err = f.WriteAt([]byte("head"), 0)
	must(err)
	_, err = f.WriteAt([]byte("middle"), 2<<20+17)
	must(err)
	must(f.Truncate(3<<20 + 5))
	must(f.Close())
	bin := make([]byte, 300000)
	for i := range bin {
		bin[i] = byte(i * 7 % 251)
	}
	must(os.WriteFile(p("binary"), bin, 0o644))

	must(os.Symlink("etc/passwd", p("rel")))
	must(os.Symlink("/etc/passwd", p("abs")))
	must(os.Symlink("nowhere/none", p("dangling")))
	must(os.Symlink("../etc", p("bin/up")))

	mkdir("hl")
	write("hl/one", "linked", 0o640)
	must(os.Link(p("hl/one"), p("hl/two")))
	must(os.Link(p("hl/one"), p("three")))
	must(os.Link(p("rel"), p("rel-hardlink"))) // a hard link to a symlink

	must(unix.Mkfifo(p("fifo"), 0o640))

	must(unix.Setxattr(p("etc/passwd"), "user.test", []byte("hello"), 0))
	must(unix.Setxattr(p("etc"), "user.dir", []byte("binary\x00\xff"), 0))

	if privileged {
		requireTool(t, "setcap")
		requireTool(t, "setfacl")
		mkdir("dev")
		must(unix.Mknod(p("dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(unix.Mknod(p("dev/loop0"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 0))))
		must(unix.Mknod(p("dev/big"), unix.S_IFCHR|0o600, int(unix.Mkdev(300, 70000))))
		must(unix.Mkfifo(p("dev/initctl"), 0o600))

		write("owned", "theirs", 0o640)
		must(os.Lchown(p("owned"), 1234, 2345))
		mkdir("owneddir")
		write("owneddir/f", "x", 0o4750)
		must(os.Chown(p("owneddir/f"), 1234, 2345))
		chmod("owneddir/f", 0o4750) // chown cleared setuid
		must(os.Chown(p("owneddir"), 1234, 2345))
		must(os.Lchown(p("rel"), 1234, 2345))

		write("bin/ping", "\x7fELF", 0o755)
		run("setcap", "cap_net_raw+ep", p("bin/ping"))
		write("bin/suidcap", "\x7fELF", 0o4755)
		run("setcap", "cap_net_admin+ep", p("bin/suidcap"))

		write("acl", "acl", 0o644)
		run("setfacl", "-m", "u:1000:rx", p("acl"))
		mkdir("acldir")
		run("setfacl", "-d", "-m", "u:1000:rx", p("acldir"))
		write("acldir/inherited", "inherits the default ACL", 0o640)
		mkdir("acldir/sub")

		must(unix.Setxattr(p("etc/passwd"), "trusted.x", []byte("t"), 0))
		must(unix.Lsetxattr(p("abs"), "trusted.link", []byte("on a symlink"), 0))
		must(unix.Lsetxattr(p("dev/null"), "trusted.dev", []byte("on a device"), 0))
	}

	// Modes that would block writing come last.
	chmod("private", 0o700)
	chmod("tmp", 0o1777)
	chmod("ro/sub", 0o500)
	chmod("ro", 0o555)
	chmod(".", 0o751)
	setTimes(t, root)
}

func TestRoundTrip(t *testing.T) {
	requireRoot(t)
	base := tempDir(t)
	src := filepath.Join(base, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	buildFixture(t, src, true)
	want := snapshot(t, src)

	// Spot-check that the fixture is what the test believes it is.
	for name, check := range map[string]func() bool{
		"bin/ping cap":  func() bool { return want["bin/ping"].Xattrs["security.capability"] != "" },
		"acl":           func() bool { return want["acl"].Xattrs["system.posix_acl_access"] != "" },
		"acldir":        func() bool { return want["acldir"].Xattrs["system.posix_acl_default"] != "" },
		"inherited acl": func() bool { return want["acldir/inherited"].Xattrs["system.posix_acl_access"] != "" },
		"suid":          func() bool { return want["owneddir/f"].Mode == 0o4750 && want["owneddir/f"].UID == 1234 },
		"hard links":    func() bool { return want["three"].HardLink == "hl/one" && want["rel-hardlink"].HardLink == "rel" },
		"char":          func() bool { return want["dev/big"].Type == "char" && want["dev/big"].Major == 300 },
	} {
		if !check() {
			t.Fatalf("fixture: %s not as expected", name)
		}
	}

	t.Run("direct", func(t *testing.T) {
		dst := filepath.Join(tempDir(t), "dst")
		if err := os.Mkdir(dst, 0o700); err != nil {
			t.Fatal(err)
		}
		s, err := NewSource(src, SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := extract(s, dst, Options{}); err != nil {
			t.Fatal(err)
		}
		mustDiffEqual(t, want, snapshot(t, dst))
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dst, "sparse"), &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks*512 > 1<<20 {
			t.Errorf("sparse file takes %d bytes on disk, want holes", st.Blocks*512)
		}
	})

	t.Run("through tar", func(t *testing.T) {
		var buf bytes.Buffer
		s, err := NewSource(src, SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := writeTar(&buf, s); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(tempDir(t), "dst")
		if err := os.Mkdir(dst, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := extract(tarSource{tar.NewReader(&buf)}, dst, Options{}); err != nil {
			t.Fatal(err)
		}
		mustDiffEqual(t, want, snapshot(t, dst))
	})
}

// TestRoundTripUnprivileged checks what works without root, read-only
// directories included, and that ownership is then applied only on demand.
func TestRoundTripUnprivileged(t *testing.T) {
	if !unprivileged(t) {
		return
	}
	base := tempDir(t)
	src := filepath.Join(base, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	buildFixture(t, src, false)
	want := snapshot(t, src)
	dst := filepath.Join(base, "dst")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := NewSource(src, SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := extract(s, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	mustDiffEqual(t, want, snapshot(t, dst))
}

func TestReadOnlyDirectories(t *testing.T) {
	if !unprivileged(t) {
		return
	}
	src := filepath.Join(tempDir(t), "src")
	if err := os.MkdirAll(filepath.Join(src, "a/b/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"a/f", "a/b/f", "a/b/c/f"} {
		if err := os.WriteFile(filepath.Join(src, f), []byte(f), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"a/b/c", "a/b", "a"} {
		if err := os.Chmod(filepath.Join(src, d), 0o555); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(src, "a/b/c"), 0o500); err != nil {
		t.Fatal(err)
	}
	setTimes(t, src)
	want := snapshot(t, src)
	dst := filepath.Join(tempDir(t), "dst")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := NewSource(src, SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := extract(s, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	mustDiffEqual(t, want, snapshot(t, dst))
}
