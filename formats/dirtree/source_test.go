package dirtree

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats"
)

// drain reads all entries of s, with bodies, keyed by name in order.
func drain(t *testing.T, s *Source) ([]string, map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	var names []string
	hdrs := make(map[string]*tar.Header)
	bodies := make(map[string][]byte)
	for {
		e, err := s.Next()
		if errors.Is(err, io.EOF) {
			return names, hdrs, bodies
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, e.Header.Name)
		hdrs[e.Header.Name] = e.Header
		if e.Body != nil {
			b, err := io.ReadAll(e.Body)
			if err != nil {
				t.Fatal(err)
			}
			bodies[e.Header.Name] = b
		}
	}
}

func TestSourceOrderAndHeaders(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"b", "a/z", "a/y", "B"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"c", "a/z/f", "a/x", "a.txt"} {
		if err := os.WriteFile(filepath.Join(root, f), []byte("content of "+f), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/abs/target", filepath.Join(root, "a/l")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(filepath.Join(root, "b"), 0o3750); err != nil {
		t.Fatal(err)
	}
	s, err := NewSource(root, SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	names, hdrs, bodies := drain(t, s)
	want := []string{".", "B", "a", "a/l", "a/x", "a/y", "a/z", "a/z/f", "a.txt", "b", "c"}
	if !slices.Equal(names, want) {
		t.Fatalf("order %q, want %q", names, want)
	}
	for name, h := range hdrs {
		if h.Format != tar.FormatPAX || h.Uname != "" || h.Gname != "" || h.Uid != os.Geteuid() {
			t.Errorf("%s: header %+v", name, h)
		}
		if _, err := formats.CleanName(name, false); err != nil || strings.HasSuffix(name, "/") {
			t.Errorf("%s: name not canonical", name)
		}
	}
	if h := hdrs["a/l"]; h.Typeflag != tar.TypeSymlink || h.Linkname != "/abs/target" {
		t.Errorf("a/l: %+v", h)
	}
	if h := hdrs["b"]; h.Typeflag != tar.TypeDir || h.Mode != 0o3750 {
		t.Errorf("b: type %q mode %o", h.Typeflag, h.Mode)
	}
	if h := hdrs["a/x"]; h.Typeflag != tar.TypeReg || h.Mode != 0o640 || h.Size != int64(len("content of a/x")) {
		t.Errorf("a/x: %+v", h)
	}
	if string(bodies["a/z/f"]) != "content of a/z/f" {
		t.Errorf("a/z/f body %q", bodies["a/z/f"])
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("Next after EOF: %v", err)
	}
}

func TestSourceFileChangedWhileRead(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "grows"), []byte("12345"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "shrinks"), []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	var log logBuffer
	s, err := NewSource(root, SourceOptions{Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make(map[string][]byte)
	for {
		e, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch e.Header.Name {
		case "grows":
			f, err := os.OpenFile(filepath.Join(root, "grows"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("more bytes")
			f.Close()
		case "shrinks":
			if err := os.Truncate(filepath.Join(root, "shrinks"), 3); err != nil {
				t.Fatal(err)
			}
		}
		if e.Body != nil {
			b, err := io.ReadAll(e.Body)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != e.Header.Size {
				t.Errorf("%s: body %d bytes, header says %d", e.Header.Name, len(b), e.Header.Size)
			}
			got[e.Header.Name] = b
		}
	}
	if string(got["grows"]) != "12345" {
		t.Errorf("grows: %q", got["grows"])
	}
	if !bytes.Equal(got["shrinks"], []byte("012\x00\x00\x00\x00\x00\x00\x00")) {
		t.Errorf("shrinks: %q", got["shrinks"])
	}
	for _, want := range []string{"file grew while read", "file shrank while read"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
}

func TestSourceTreeChangedWhileWalked(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root + "/d", outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{root + "/a", root + "/b", root + "/d/inside", outside + "/secret"} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var log logBuffer
	s, err := NewSource(root, SourceOptions{Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The root is listed when its entry is returned; change it afterwards.
	if e, err := s.Next(); err != nil || e.Header.Name != "." {
		t.Fatalf("first entry %v, %v", e, err)
	}
	if err := os.Remove(filepath.Join(root, "b")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "d")); err != nil {
		t.Fatal(err)
	}
	names, hdrs, _ := drain(t, s)
	if !slices.Equal(names, []string{"a", "d"}) {
		t.Fatalf("entries %q, want a and d", names)
	}
	if hdrs["d"].Typeflag != tar.TypeSymlink {
		t.Errorf("d: type %q, want the symlink it became", hdrs["d"].Typeflag)
	}
	if !strings.Contains(log.String(), "vanished") {
		t.Errorf("no warning about b:\n%s", log.String())
	}
}

func TestSourceSkipsSockets(t *testing.T) {
	root, err := os.MkdirTemp("", "s") // socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	l, err := net.Listen("unix", filepath.Join(root, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.WriteFile(filepath.Join(root, "z"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var log logBuffer
	s, err := NewSource(root, SourceOptions{Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	names, _, _ := drain(t, s)
	if !slices.Equal(names, []string{".", "z"}) {
		t.Errorf("entries %q", names)
	}
	if !strings.Contains(log.String(), "socket skipped") {
		t.Errorf("no debug line:\n%s", log.String())
	}
}

// TestMountPoints checks OneFileSystem in the source and that the sink
// refuses to extract across a mount point (RESOLVE_NO_XDEV).
func TestMountPoints(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	mnt := filepath.Join(root, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(mnt, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, oneFS := range []bool{false, true} {
		s, err := NewSource(root, SourceOptions{OneFileSystem: oneFS})
		if err != nil {
			t.Fatal(err)
		}
		names, _, _ := drain(t, s)
		s.Close()
		want := []string{".", "mnt", "mnt/f"}
		if oneFS {
			want = want[:2]
		}
		if !slices.Equal(names, want) {
			t.Errorf("OneFileSystem=%v: %q, want %q", oneFS, names, want)
		}
	}
	sink, err := NewSink(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Abort()
	err = sink.WriteEntry(&formats.Entry{Header: &tar.Header{Typeflag: tar.TypeReg, Name: "mnt/g"}, Body: strings.NewReader("")})
	if err == nil || !strings.Contains(err.Error(), "mnt/g: parent \"mnt\" crosses a mount point") {
		t.Errorf("extracting across a mount point: %v", err)
	}
}

// TestSourceSwapRace walks a tree while another goroutine keeps swapping a
// directory and a symlink to outside the tree (RENAME_EXCHANGE): the walk
// may see either, but must never list what is outside.
func TestSourceSwapRace(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root + "/d/sub", outside + "/osub"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{root + "/d/inside", root + "/d/sub/inside", outside + "/SECRET", outside + "/osub/SECRET"} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(root, "l")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, root+"/d", unix.AT_FDCWD, root+"/l", unix.RENAME_EXCHANGE); err != nil {
		t.Skipf("RENAME_EXCHANGE: %v", err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				unix.Renameat2(unix.AT_FDCWD, root+"/d", unix.AT_FDCWD, root+"/l", unix.RENAME_EXCHANGE)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for range 300 {
		s, err := NewSource(root, SourceOptions{Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		for {
			e, err := s.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(e.Header.Name, "SECRET") || strings.Contains(e.Header.Name, "osub") {
				t.Fatalf("walk left the tree: %s", e.Header.Name)
			}
			if e.Body != nil {
				io.Copy(io.Discard, e.Body)
			}
		}
		s.Close()
	}
}
