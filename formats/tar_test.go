package formats

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// memSource replays fixed entries.
type memSource struct {
	ents []*Entry
	i    int
}

func (m *memSource) Next() (*Entry, error) {
	if m.i >= len(m.ents) {
		return nil, io.EOF
	}
	e := m.ents[m.i]
	m.i++
	return e, nil
}

func file(name, content string) *Entry {
	return &Entry{Header: &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(content)), Mode: 0o644,
		ModTime: time.Unix(1700000000, 5)}, Body: strings.NewReader(content)}
}

func dir(name string) *Entry {
	return &Entry{Header: &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: time.Unix(1, 0)}}
}

func writeTar(t *testing.T, opts TarOptions, ents ...*Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	s := NewTarSink(&buf, opts)
	if _, err := Copy(context.Background(), s, &memSource{ents: ents}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type got struct {
	hdr  *tar.Header
	body string
}

func readAll(r io.Reader) ([]got, error) {
	src := NewTarSource(r)
	var out []got
	for {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		var b []byte
		if e.Body != nil {
			if b, err = io.ReadAll(e.Body); err != nil {
				return out, err
			}
		}
		out = append(out, got{e.Header, string(b)})
	}
}

func TestTarRoundTrip(t *testing.T) {
	capXattr := "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	f := file("usr/bin/ping", "ELF")
	f.Header.Uid, f.Header.Gid = 455868416, 455868417 // a UID-shifted owner needs PAX records
	f.Header.Uname, f.Header.Gname = "root", "root"
	f.Header.Mode = 0o4755
	SetXattr(f.Header, "security.capability", capXattr)
	SetXattr(f.Header, "user.empty", "")
	link := &Entry{Header: &tar.Header{Typeflag: tar.TypeLink, Name: "usr/bin/ping2", Linkname: "usr/bin/ping"}}
	sym := &Entry{Header: &tar.Header{Typeflag: tar.TypeSymlink, Name: "bin", Linkname: "/nix/store/x-y/bin", Mode: 0o777}}
	dev := &Entry{Header: &tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}}
	data := writeTar(t, TarOptions{}, dir("."), dir("usr"), dir("usr/bin"), f, link, sym, dir("dev"), dev)

	// Names as a user sees them with tar -t: directories end in "/", no user names.
	tr := tar.NewReader(bytes.NewReader(data))
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
		if h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: user/group names written: %q %q", h.Name, h.Uname, h.Gname)
		}
		if !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s: atime/ctime written", h.Name)
		}
	}
	want := "./ usr/ usr/bin/ usr/bin/ping usr/bin/ping2 bin dev/ dev/null"
	if strings.Join(names, " ") != want {
		t.Errorf("names = %q, want %q", strings.Join(names, " "), want)
	}

	ents, err := readAll(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 8 {
		t.Fatalf("got %d entries", len(ents))
	}
	p := ents[3]
	if p.hdr.Name != "usr/bin/ping" || p.body != "ELF" || p.hdr.Uid != 455868416 || p.hdr.Gid != 455868417 || p.hdr.Mode != 0o4755 {
		t.Errorf("ping = %+v %q", p.hdr, p.body)
	}
	if !p.hdr.ModTime.Equal(time.Unix(1700000000, 5)) {
		t.Errorf("mtime %v lost its nanoseconds", p.hdr.ModTime)
	}
	if x := Xattrs(p.hdr); x["security.capability"] != capXattr || len(x) != 2 {
		t.Errorf("xattrs = %q", x)
	}
	if ents[0].hdr.Name != "." || ents[4].hdr.Linkname != "usr/bin/ping" || ents[5].hdr.Linkname != "/nix/store/x-y/bin" {
		t.Errorf("names/links wrong: %q %q %q", ents[0].hdr.Name, ents[4].hdr.Linkname, ents[5].hdr.Linkname)
	}
	if d := ents[7].hdr; d.Devmajor != 1 || d.Devminor != 3 || d.Typeflag != tar.TypeChar {
		t.Errorf("device = %+v", d)
	}
}

func TestTarReproducible(t *testing.T) {
	mk := func(mtime int64) []byte {
		f := file("a", "x")
		f.Header.ModTime = time.Unix(mtime, 0)
		f.Header.Uid = 1000
		return writeTar(t, TarOptions{ModTime: time.Unix(1, 0), RootOwner: true}, dir("."), f)
	}
	a, b := mk(100), mk(200)
	if !bytes.Equal(a, b) {
		t.Fatal("same tree with different mtimes gave different bytes")
	}
	ents, err := readAll(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if h := ents[1].hdr; h.Uid != 0 || h.ModTime.Unix() != 1 {
		t.Errorf("not normalised: uid %d mtime %v", h.Uid, h.ModTime)
	}
}

func TestTarSinkShortBody(t *testing.T) {
	f := file("a", "abc")
	f.Header.Size = 10
	s := NewTarSink(io.Discard, TarOptions{})
	err := s.WriteEntry(f)
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "a:") {
		t.Fatalf("short body: err = %v", err)
	}
}

func TestTarTruncation(t *testing.T) {
	data := writeTar(t, TarOptions{}, dir("."), file("a", strings.Repeat("x", 3000)), file("b", "hello"))
	// Cut at every block boundary and inside blocks: never a silent success.
	for _, cut := range []int{0, 100, 512, 1024, 1536, 2048, 3584, 4096, len(data) - 1024 - 512, len(data) - 1024} {
		if cut >= len(data) {
			continue
		}
		_, err := readAll(bytes.NewReader(data[:cut]))
		if err == nil {
			t.Errorf("truncated at %d of %d: no error", cut, len(data))
		}
	}
	// The full archive and one with only one of the two zero blocks are fine.
	if _, err := readAll(bytes.NewReader(data)); err != nil {
		t.Fatalf("full archive: %v", err)
	}
}

func TestTarConcatenated(t *testing.T) {
	a := writeTar(t, TarOptions{}, dir("."), file("a", "1"))
	b := writeTar(t, TarOptions{}, file("b", "2"))
	all := append(append(append([]byte{}, a...), make([]byte, 10240)...), b...)
	ents, err := readAll(bytes.NewReader(all))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 3 || ents[2].hdr.Name != "b" || ents[2].body != "2" {
		t.Fatalf("concatenated: %d entries", len(ents))
	}
}

func TestTarTrailingGarbage(t *testing.T) {
	a := writeTar(t, TarOptions{}, dir("."), file("a", "1"))
	for _, tail := range []string{"garbage", strings.Repeat("\x00", 700) + "x"} {
		_, err := readAll(bytes.NewReader(append(append([]byte{}, a...), tail...)))
		if err == nil {
			t.Errorf("trailing %q accepted", tail[len(tail)-1:])
		}
	}
	// Zero padding (a tar record) is fine.
	if _, err := readAll(bytes.NewReader(append(append([]byte{}, a...), make([]byte, 9000)...))); err != nil {
		t.Errorf("zero padding: %v", err)
	}
}

func TestTarHostileNames(t *testing.T) {
	cases := map[string]*tar.Header{
		"dotdot":       {Typeflag: tar.TypeReg, Name: "../evil"},
		"inner dotdot": {Typeflag: tar.TypeReg, Name: "a/../../evil"},
		"absolute":     {Typeflag: tar.TypeReg, Name: "/etc/evil"},
		"link escape":  {Typeflag: tar.TypeLink, Name: "x", Linkname: "../../etc/passwd"},
		"link abs":     {Typeflag: tar.TypeLink, Name: "x", Linkname: "/etc/passwd"},
		"link root":    {Typeflag: tar.TypeLink, Name: "x", Linkname: "./"},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			h.Mode = 0o644
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			tw.Close()
			_, err := readAll(&buf)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), strings.TrimPrefix(h.Name, "/")) && !strings.Contains(err.Error(), h.Name) {
				t.Errorf("error does not name the entry: %v", err)
			}
		})
	}
}

func TestTarLibarchiveXattrs(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0o644, Format: tar.FormatPAX,
		PAXRecords: map[string]string{"LIBARCHIVE.xattr.user.k": "dmFsdWU="}}) // "value"
	tw.Close()
	ents, err := readAll(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if x := Xattrs(ents[0].hdr); x["user.k"] != "value" {
		t.Fatalf("xattrs = %q", x)
	}
}

func TestCleanName(t *testing.T) {
	good := map[string]string{"./a//b/": "a/b", "./": ".", ".": ".", "a/./b": "a/b", "a": "a", "...": "..."}
	for in, want := range good {
		if got, err := CleanName(in, false); err != nil || got != want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "..", "../a", "a/../../b", "a/..", "/a", "a\x00b"} {
		if got, err := CleanName(bad, false); err == nil {
			t.Errorf("CleanName(%q) = %q, want error", bad, got)
		}
	}
	if got, err := CleanName("/a/b", true); err != nil || got != "a/b" {
		t.Errorf("CleanName(/a/b, abs) = %q, %v", got, err)
	}
}

func FuzzTarSource(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 1024))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "a", Size: 1, Mode: 0o644, Format: tar.FormatPAX,
		PAXRecords: map[string]string{"SCHILY.xattr.user.x": "y", "LIBARCHIVE.xattr.user.z": "!!"}})
	tw.Write([]byte("1"))
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: "b", Linkname: "a"})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeGNULongName, Name: strings.Repeat("long/", 40) + "x", Format: tar.FormatGNU})
	tw.Close()
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:700])
	f.Fuzz(func(t *testing.T, data []byte) {
		src := NewTarSource(bytes.NewReader(data))
		for range 10000 {
			e, err := src.Next()
			if err != nil {
				return
			}
			if _, err := CleanName(e.Header.Name, false); err != nil {
				t.Fatalf("source yielded unsafe name %q", e.Header.Name)
			}
			if e.Header.Typeflag == tar.TypeLink {
				if _, err := CleanName(e.Header.Linkname, false); err != nil {
					t.Fatalf("source yielded unsafe link %q", e.Header.Linkname)
				}
			}
			if e.Body != nil {
				io.Copy(io.Discard, e.Body)
			}
		}
	})
}
