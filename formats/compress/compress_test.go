package compress

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	osexec "os/exec"
	"strings"
	"testing"
)

func TestDetect(t *testing.T) {
	for _, c := range []struct {
		head []byte
		want Kind
	}{
		{[]byte{0xFD, '7', 'z', 'X', 'Z', 0, 0, 4}, Xz},
		{[]byte{0xFD, '7', 'z', 'X', 'Z', 0}, Xz},
		{[]byte{0xFD, '7', 'z', 'X', 'Z'}, None}, // too short to be sure
		{[]byte{0x1F, 0x8B, 8, 0}, Gzip},
		{[]byte{0x1F, 0x8B}, Gzip},
		{[]byte{0x1F}, None},
		{[]byte("BZh91AY&SY"), Bzip2},
		{[]byte("BZ"), None},
		{[]byte{0x28, 0xB5, 0x2F, 0xFD, 0x24}, Zstd},
		{[]byte{0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0}, Zstd}, // skippable frame
		{[]byte{0x5F, 0x2A, 0x4D, 0x18}, Zstd},
		{[]byte{0x60, 0x2A, 0x4D, 0x18}, None},
		{[]byte("ustar\x00"), None},
		{[]byte("./etc/"), None},
		{nil, None},
		{[]byte{}, None},
	} {
		if got := Detect(c.head); got != c.want {
			t.Errorf("Detect(% x) = %s, want %s", c.head, got, c.want)
		}
	}
}

// Detection never depends on names: NewReader has none, and a gzip stream
// is gzip whatever the caller thinks it is.
func TestDetectIgnoresNames(t *testing.T) {
	data := corpus(64 << 10)
	for _, k := range []Kind{Gzip, Zstd, Xz, None} {
		c := compressWith(t, k, data)
		out, got, err := decode(c)
		if err != nil || got != k {
			t.Fatalf("%s: kind %s, err %v", k, got, err)
		}
		mustEqual(t, string(k), out, data)
	}
	// A name says nothing about the content.
	if KindFromSuffix("image.tar.xz") != Xz || Detect(compressWith(t, Gzip, data)[:6]) != Gzip {
		t.Fatal("suffix and magic disagree as expected, but detection used the name")
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{
		"uncompressed": None, "none": None, "xz": Xz, "XZ": Xz, "gzip": Gzip, "gz": Gzip,
		"zstd": Zstd, "zst": Zstd, "bzip2": Bzip2, "bz2": Bzip2, " xz ": Xz,
	} {
		got, err := ParseKind(in)
		if err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lz4", "tar", "xzz", "gzip2"} {
		if _, err := ParseKind(in); err == nil {
			t.Errorf("ParseKind(%q) succeeded", in)
		}
	}
}

func TestKindFromSuffix(t *testing.T) {
	for in, want := range map[string]Kind{
		"a.tar.xz": Xz, "a.raw.xz": Xz, "A.TAR.XZ": Xz, "a.tar.gz": Gzip, "a.tgz": Gzip,
		"a.tar.zst": Zstd, "a.tar.bz2": Bzip2, "a.tar": None, "a.raw": None, "xz": None,
		"a.xz.tar": None, "": None, "a.tar.lz4": None,
	} {
		if got := KindFromSuffix(in); got != want {
			t.Errorf("KindFromSuffix(%q) = %q, want %q", in, got, want)
		}
	}
	for k, want := range map[Kind]string{Xz: ".xz", Gzip: ".gz", Zstd: ".zst", Bzip2: ".bz2", None: "", "lz4": ""} {
		if got := k.Ext(); got != want {
			t.Errorf("%q.Ext() = %q, want %q", k, got, want)
		}
		if want != "" && KindFromSuffix("x"+want) != k {
			t.Errorf("KindFromSuffix(Ext(%s)) != %s", k, k)
		}
	}
}

func TestWriterOptions(t *testing.T) {
	var b bytes.Buffer
	if _, err := NewWriter(&b, Bzip2); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("bzip2 writer: %v", err)
	}
	if _, err := NewWriter(&b, "lz4"); err == nil {
		t.Error("lz4 writer accepted")
	}
	for _, c := range []struct {
		k     Kind
		level int
	}{{Xz, 10}, {Xz, -1}, {Gzip, 10}, {Gzip, 0}, {Gzip, -5}, {Zstd, 0}, {Zstd, 23}, {None, 3}, {None, 0}} {
		if _, err := NewWriter(&b, c.k, WithLevel(c.level)); err == nil {
			t.Errorf("%s level %d accepted", c.k, c.level)
		}
	}
	// Uncompressed output is the input, and Close does not close w.
	w, err := NewWriter(&b, None)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("plain"))
	w.Close()
	if b.String() != "plain" {
		t.Fatalf("uncompressed writer wrote %q", b.String())
	}
}

// closeRecorder notices Close calls that must not happen.
type closeRecorder struct {
	bytes.Buffer
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestWriterCloseDoesNotCloseUnderlying(t *testing.T) {
	for _, k := range []Kind{Xz, Gzip, Zstd, None} {
		var c closeRecorder
		w, err := NewWriter(&c, k)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("hello"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if c.closed {
			t.Errorf("%s: Close closed the underlying writer", k)
		}
		if out, _, err := decode(c.Bytes()); err != nil || string(out) != "hello" {
			t.Errorf("%s: %q, %v", k, out, err)
		}
	}
}

// cliInputs builds compressed files with the real tools: single and
// multi-block xz, concatenated streams, pigz, pbzip2, multi-frame zstd.
func cliInputs(t *testing.T, data []byte) map[string][]byte {
	half := len(data) / 2
	a, b := data[:half], data[half:]
	in := map[string][]byte{
		"xz -T1 (one block)":                  run(t, data, "xz", "-T1", "-3", "-c"),
		"xz -T2 (blocks with sizes)":          run(t, data, "xz", "-T2", "-3", "--block-size=512KiB", "-c"),
		"xz -0 --check=crc32":                 run(t, data, "xz", "-0", "--check=crc32", "-c"),
		"xz --check=sha256":                   run(t, data, "xz", "-1", "--check=sha256", "-c"),
		"xz --check=none":                     run(t, data, "xz", "-1", "--check=none", "-c"),
		"xz -9e (64 MiB dictionary)":          run(t, a, "xz", "-9e", "-c"),
		"cat a.xz b.xz":                       cat(run(t, a, "xz", "-1", "-c"), run(t, b, "xz", "-T2", "--block-size=300KiB", "-c")),
		"xz, padding, xz, padding":            cat(run(t, a, "xz", "-1", "-c"), make([]byte, 8), run(t, b, "xz", "-1", "-c"), make([]byte, 4)),
		"xz --format=xz empty + data":         cat(run(t, nil, "xz", "-c"), run(t, data, "xz", "-1", "-c")),
		"gzip":                                run(t, data, "gzip", "-c"),
		"cat a.gz b.gz":                       cat(run(t, a, "gzip", "-1", "-c"), run(t, b, "gzip", "-9", "-c")),
		"pigz (independent blocks)":           run(t, data, "pigz", "-p", "2", "-i", "-b", "128", "-c"),
		"bzip2":                               run(t, data, "bzip2", "-c"),
		"cat a.bz2 b.bz2":                     cat(run(t, a, "bzip2", "-1", "-c"), run(t, b, "bzip2", "-c")),
		"zstd":                                run(t, data, "zstd", "-q", "-c"),
		"cat a.zst b.zst":                     cat(run(t, a, "zstd", "-q", "-1", "-c"), run(t, b, "zstd", "-q", "-19", "-c")),
		"zstd -T2 --long (multi-block frame)": run(t, data, "zstd", "-q", "-T2", "--long=24", "-c"),
		// A skippable frame (as zstd --patch-from or pzstd metadata).
		"skippable + zst": cat([]byte{0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4}, run(t, data, "zstd", "-q", "-c")),
	}
	// pbzip2 is optional even in CI.
	if _, err := osexec.LookPath("pbzip2"); err == nil {
		in["pbzip2 (several streams)"] = run(t, data, "pbzip2", "-p2", "-b1", "-c")
	}
	return in
}

func TestReadCLIOutputs(t *testing.T) {
	data := corpus(2 << 20)
	for name, c := range cliInputs(t, data) {
		want := data
		if strings.HasPrefix(name, "xz -9e") {
			want = data[:len(data)/2]
		}
		t.Run(name, func(t *testing.T) {
			out, k, err := decode(c)
			if err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			mustEqual(t, name, out, want)
			if k == Xz {
				for _, procs := range []int{1, 2, 5} {
					out, err := decodeXz(c, procs)
					if err != nil {
						t.Fatalf("procs %d: %v", procs, err)
					}
					mustEqual(t, fmt.Sprintf("%s, %d goroutines", name, procs), out, want)
				}
			}
		})
	}
	if out, k, err := decode(data); err != nil || k != None {
		t.Fatalf("uncompressed: %s %v", k, err)
	} else {
		mustEqual(t, "uncompressed", out, data)
	}
}

// Every writer's output must be accepted by the reference tools, and by
// our reader.
func TestWriteRoundTrip(t *testing.T) {
	data := corpus(5 << 20)
	for _, c := range []struct {
		k     Kind
		opts  []WriterOption
		tool  []string
		small bool
	}{
		{Xz, nil, []string{"xz", "-dc"}, false},
		{Xz, []WriterOption{WithLevel(0), WithConcurrency(3)}, []string{"xz", "-dc", "-T2"}, false},
		{Xz, []WriterOption{WithLevel(9), WithConcurrency(1)}, []string{"xz", "-dc"}, true},
		{Gzip, nil, []string{"gzip", "-dc"}, false},
		{Gzip, []WriterOption{WithLevel(1)}, []string{"gzip", "-dc"}, false},
		{Gzip, []WriterOption{WithLevel(9)}, []string{"pigz", "-dc"}, true},
		{Zstd, nil, []string{"zstd", "-dc"}, false},
		{Zstd, []WriterOption{WithLevel(1), WithConcurrency(1)}, []string{"zstd", "-dc"}, false},
		{Zstd, []WriterOption{WithLevel(19)}, []string{"zstd", "-dc"}, true},
	} {
		in := data
		if c.small {
			in = data[:1<<20]
		}
		name := fmt.Sprintf("%s/%d-options", c.k, len(c.opts))
		t.Run(name, func(t *testing.T) {
			z := compressWith(t, c.k, in, c.opts...)
			if Detect(z) != c.k {
				t.Fatalf("output detected as %s", Detect(z))
			}
			mustEqual(t, "CLI decode", run(t, z, c.tool[0], c.tool[1:]...), in)
			out, k, err := decode(z)
			if err != nil || k != c.k {
				t.Fatalf("decode: %s %v", k, err)
			}
			mustEqual(t, "our decode", out, in)
		})
	}
}

// Edge sizes: empty, one byte, exactly one block, one block plus one byte.
func TestWriteSizes(t *testing.T) {
	bs := xzLevels[xzDefaultLevel].blockSize
	data := corpus(2*bs + 1)
	for _, n := range []int{0, 1, 100, bs - 1, bs, bs + 1, 2 * bs} {
		for _, k := range []Kind{Xz, Gzip, Zstd} {
			in := data[:n]
			// Many small writes, to exercise the block filling.
			var b bytes.Buffer
			w, err := NewWriter(&b, k)
			if err != nil {
				t.Fatal(err)
			}
			for p := in; len(p) > 0; {
				m := min(len(p), 100003)
				w.Write(p[:m])
				p = p[m:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			out, _, err := decode(b.Bytes())
			if err != nil {
				t.Fatalf("%s %d bytes: %v", k, n, err)
			}
			mustEqual(t, fmt.Sprintf("%s %d bytes", k, n), out, in)
			if k == Xz && n <= 2*bs {
				if _, err := tryTool(t, b.Bytes(), "xz", "-t"); err != nil {
					t.Fatalf("xz -t on %d bytes: %v", n, err)
				}
			}
		}
	}
}

// tryTool runs a tool that may fail.
func tryTool(t *testing.T, stdin []byte, name string, args ...string) ([]byte, error) {
	t.Helper()
	return runErr(stdin, needTool(t, name), args...)
}

// Truncation anywhere after the magic must be an error from Read, never a
// short success, for every codec.
func TestTruncated(t *testing.T) {
	data := corpus(24 << 10)
	files := map[string][]byte{
		"xz (ours)":   compressWith(t, Xz, data),
		"xz -T1":      run(t, data, "xz", "-c"),
		"xz -T2":      run(t, data, "xz", "-T2", "--block-size=8KiB", "-c"),
		"gzip (ours)": compressWith(t, Gzip, data),
		"gzip":        run(t, data, "gzip", "-c"),
		"zstd (ours)": compressWith(t, Zstd, data),
		"zstd":        run(t, data, "zstd", "-q", "-c"),
		"bzip2":       run(t, data, "bzip2", "-c"),
	}
	for name, f := range files {
		t.Run(name, func(t *testing.T) {
			k := Detect(f)
			// Every length near both ends (headers, trailers, indexes),
			// a few hundred in between.
			step := max(1, len(f)/300)
			for n := magicLen; n < len(f); n++ {
				if n > 96 && n < len(f)-96 && n%step != 0 {
					continue
				}
				out, _, err := decode(f[:n])
				if err == nil {
					t.Fatalf("%d of %d bytes: no error (%d bytes out)", n, len(f), len(out))
				}
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("%d of %d bytes: %v does not wrap io.ErrUnexpectedEOF", n, len(f), err)
				}
				if !strings.HasPrefix(err.Error(), string(k)+":") {
					t.Fatalf("%d of %d bytes: %q lacks the codec prefix", n, len(f), err)
				}
			}
		})
	}
	// The cases from the field: a 200-byte prefix of a .tar.gz, and an xz
	// file missing its last 24 bytes (systemd 252 accepts both).
	big := corpus(1 << 20)
	gz := compressWith(t, Gzip, big)
	if _, _, err := decode(gz[:200]); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("200-byte gzip prefix: %v", err)
	}
	xz := compressWith(t, Xz, big)
	if _, _, err := decode(xz[:len(xz)-24]); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("xz minus 24 bytes: %v", err)
	}
}

// Data after the last stream is an error, except the 4-byte-aligned zero
// padding the xz format defines.
func TestTrailingGarbage(t *testing.T) {
	data := corpus(300 << 10)
	files := map[Kind][]byte{
		Xz:    compressWith(t, Xz, data),
		Gzip:  run(t, data, "pigz", "-c"),
		Bzip2: run(t, data, "bzip2", "-c"),
		Zstd:  compressWith(t, Zstd, data),
	}
	garbage := map[string][]byte{
		"text":          []byte("garbage!"),
		"one byte":      {'x'},
		"one zero":      {0},
		"three zeros":   {0, 0, 0},
		"five zeros":    {0, 0, 0, 0, 0},
		"zeros then x":  {0, 0, 0, 0, 'x'},
		"NUL block":     make([]byte, 512),
		"partial magic": nil, // filled per kind
	}
	for k, f := range files {
		for name, g := range garbage {
			if name == "partial magic" {
				g = f[:2]
			}
			in := cat(f, g)
			out, _, err := decode(in)
			zeroPad := len(g)%4 == 0 && !bytes.ContainsFunc(g, func(r rune) bool { return r != 0 })
			if k == Xz && zeroPad {
				if err != nil {
					t.Errorf("%s + %s: %v (stream padding is valid)", k, name, err)
				}
				mustEqual(t, "padded xz", out, data)
				continue
			}
			if err == nil {
				t.Errorf("%s + %s: no error", k, name)
				continue
			}
			if !strings.HasPrefix(err.Error(), string(k)+":") {
				t.Errorf("%s + %s: %q lacks the codec prefix", k, name, err)
			}
			// All the data before the garbage was delivered first.
			if !bytes.Equal(out, data) {
				t.Errorf("%s + %s: %d bytes delivered before the error, want %d", k, name, len(out), len(data))
			}
		}
	}
	// The gzip error says where the garbage starts.
	_, _, err := decode(cat(files[Gzip], []byte("junk")))
	if want := fmt.Sprintf("at offset %d", len(files[Gzip])); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("gzip garbage error %q does not say %q", err, want)
	}
	_, _, err = decode(cat(files[Xz], []byte("junk")))
	if want := fmt.Sprintf("at offset %d", len(files[Xz])); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("xz garbage error %q does not say %q", err, want)
	}
}

func TestReaderAfterClose(t *testing.T) {
	data := corpus(100 << 10)
	for _, k := range []Kind{Xz, Gzip, Zstd} {
		r, _, err := NewReader(bytes.NewReader(compressWith(t, k, data)))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 10)
		if _, err := r.Read(buf); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if n, err := r.Read(buf); err == nil || err == io.EOF {
			t.Errorf("%s: Read after Close = %d, %v", k, n, err)
		}
	}
}
