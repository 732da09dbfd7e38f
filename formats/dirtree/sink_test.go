package dirtree

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats"
)

func reg(name, body string) *formats.Entry {
	return &formats.Entry{
		Header: &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)),
			Uid: os.Geteuid(), Gid: os.Getegid()},
		Body: strings.NewReader(body),
	}
}

func dirEntry(name string, mode int64) *formats.Entry {
	return &formats.Entry{Header: &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode,
		Uid: os.Geteuid(), Gid: os.Getegid()}}
}

func newSink(t *testing.T) (*Sink, string) {
	t.Helper()
	dir := tempDir(t)
	s, err := NewSink(dir, Options{IgnoreOwnership: os.Geteuid() != 0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Abort)
	return s, dir
}

func write(t *testing.T, s *Sink, entries ...*formats.Entry) {
	t.Helper()
	for _, e := range entries {
		if err := s.WriteEntry(e); err != nil {
			t.Fatal(err)
		}
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSinkSparse(t *testing.T) {
	s, dir := newSink(t)
	const size = 5<<20 + 3
	data := make([]byte, size)
	copy(data[100:], "start")
	copy(data[3<<20+holeSize/2:], "middle") // inside a block: that block is written
	write(t, s, &formats.Entry{
		Header: &tar.Header{Typeflag: tar.TypeReg, Name: "img", Mode: 0o600, Size: size},
		Body:   bytes.NewReader(data),
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "img"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "img"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 4*holeSize {
		t.Errorf("%d bytes allocated, want two blocks at most", st.Blocks*512)
	}
}

func TestSinkShortBody(t *testing.T) {
	s, _ := newSink(t)
	e := reg("etc/f", "abc")
	e.Header.Size = 10
	err := s.WriteEntry(e)
	if err == nil || !strings.HasPrefix(err.Error(), "etc/f: body truncated: got 3 of 10 bytes") {
		t.Fatalf("error %v", err)
	}
	// The sink is now failed: later writes are refused, Close repeats
	// the first error and only releases.
	if err := s.WriteEntry(reg("g", "")); err == nil || !strings.Contains(err.Error(), "failed earlier") {
		t.Errorf("write after failure: %v", err)
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "etc/f: body truncated") {
		t.Errorf("Close: %v", err)
	}
	if err := s.WriteEntry(reg("g", "")); err == nil {
		t.Error("write after Close succeeded")
	}
}

func TestSinkReplace(t *testing.T) {
	s, dir := newSink(t)
	p := func(n string) string { return filepath.Join(dir, n) }
	write(t, s,
		reg("f", "old"), reg("f", "new"), // file over file
		dirEntry("d", 0o700), reg("d/x", "x"), dirEntry("d", 0o750), // dir over dir: metadata only
		dirEntry("e", 0o755), reg("e", "was an empty dir"), // file over empty dir
		&formats.Entry{Header: &tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "f"}},
		dirEntry("l", 0o755), // dir over symlink
		reg("h1", "shared"),
		&formats.Entry{Header: &tar.Header{Typeflag: tar.TypeLink, Name: "h2", Linkname: "h1"}},
		&formats.Entry{Header: &tar.Header{Typeflag: tar.TypeLink, Name: "h2", Linkname: "./h1"}}, // again: no-op
		reg("h2", "own content"), // breaks the link, h1 unchanged
	)
	err := s.WriteEntry(reg("d", "over a full dir"))
	if err == nil || err.Error() != "d: refusing to replace a non-empty directory" {
		t.Errorf("file over non-empty dir: %v", err)
	}
	s.Abort()
	if got := readFile(t, p("f")); got != "new" {
		t.Errorf("f = %q", got)
	}
	if got := readFile(t, p("e")); got != "was an empty dir" {
		t.Errorf("e = %q", got)
	}
	if fi, err := os.Lstat(p("l")); err != nil || !fi.IsDir() {
		t.Errorf("l: %v, %v", fi, err)
	}
	if got := readFile(t, p("h1")); got != "shared" {
		t.Errorf("h1 = %q", got)
	}
	if got := readFile(t, p("h2")); got != "own content" {
		t.Errorf("h2 = %q", got)
	}
}

func TestSinkMissingParentsAndRoot(t *testing.T) {
	s, dir := newSink(t)
	mtime := time.Unix(1234567890, 987654321)
	root := dirEntry("./", 0o711)
	root.Header.ModTime = mtime
	formats.SetXattr(root.Header, "user.root", "yes")
	write(t, s,
		&formats.Entry{Header: &tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header"}},
		reg("a/b/c", "deep"),
		root,
	)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "a/b/c")); got != "deep" {
		t.Errorf("a/b/c = %q", got)
	}
	for _, d := range []string{"a", "a/b"} {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, d), &st); err != nil || st.Mode&0o7777 != 0o755 {
			t.Errorf("%s: mode %o, %v; want 0755", d, st.Mode&0o7777, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o711 || st.Mtim.Sec != mtime.Unix() || st.Mtim.Nsec != 987654321 {
		t.Errorf("root: mode %o mtime %v", st.Mode&0o7777, st.Mtim)
	}
	v := make([]byte, 16)
	if n, err := unix.Getxattr(dir, "user.root", v); err != nil || string(v[:n]) != "yes" {
		t.Errorf("root xattr: %q, %v", v[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "pax_global_header")); err == nil {
		t.Error("global header extracted as a file")
	}
}

// TestSinkOwnershipUnprivileged checks that without root a foreign owner
// fails clearly unless ownership is ignored.
func TestSinkOwnershipUnprivileged(t *testing.T) {
	if !unprivileged(t) {
		return
	}
	e := func() *formats.Entry {
		e := reg("f", "x")
		e.Header.Uid, e.Header.Gid = 0, 0
		return e
	}
	dir := tempDir(t)
	s, err := NewSink(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.WriteEntry(e())
	if err == nil || !strings.HasPrefix(err.Error(), "f: chown to 0:0: operation not permitted") {
		t.Errorf("foreign owner: %v", err)
	}
	s.Abort()
	dir = tempDir(t)
	s, err = NewSink(dir, Options{IgnoreOwnership: true})
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, e())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "f"), &st); err != nil || int(st.Uid) != os.Geteuid() {
		t.Errorf("owner %d, %v", st.Uid, err)
	}
}
