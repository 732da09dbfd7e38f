package compress

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// needTool returns the path of a command line tool. A missing tool skips
// the test, except in CI (CI=true), where every tool must be installed.
func needTool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("%s is required in CI: %v", name, err)
		}
		tb.Skipf("%s not installed: %v", name, err)
	}
	return p
}

// run runs a tool with stdin and returns its stdout.
func run(tb testing.TB, stdin []byte, name string, args ...string) []byte {
	tb.Helper()
	out, err := runErr(stdin, needTool(tb, name), args...)
	if err != nil {
		tb.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func runErr(stdin []byte, path string, args ...string) ([]byte, error) {
	cmd := exec.Command(path, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// corpus returns n bytes of realistic, compressible data: system files
// (shared objects, text, locale data) concatenated in a fixed order, padded
// with generated text where the system has too few. Random bytes would not
// compress and would test nothing.
func corpus(n int) []byte {
	corpusOnce.Do(func() { corpusData = loadCorpus(24 << 20) })
	if n <= len(corpusData) {
		return corpusData[:n]
	}
	return append(append([]byte(nil), corpusData...), wordSalad(n-len(corpusData), 1)...)
}

var (
	corpusOnce sync.Once
	corpusData []byte
)

func loadCorpus(limit int) []byte {
	var buf bytes.Buffer
	for _, root := range []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/share"} {
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if buf.Len() >= limit {
				return fs.SkipAll
			}
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			f, err := os.Open(path)
			if err != nil {
				return nil
			}
			defer f.Close()
			io.Copy(&buf, io.LimitReader(f, int64(min(256<<10, limit-buf.Len()))))
			return nil
		})
		if buf.Len() >= limit {
			break
		}
	}
	if buf.Len() < limit {
		buf.Write(wordSalad(limit-buf.Len(), 2))
	}
	return buf.Bytes()
}

// wordSalad returns n bytes of deterministic pseudo-text.
func wordSalad(n int, seed uint64) []byte {
	words := strings.Fields("the machine image systemd nspawn tar xz block stream index footer " +
		"header padding check crc64 lzma2 dictionary chunk usr lib share bin etc var " +
		"root 0644 0755 elf shared object python perl vim gcc")
	rng := rand.New(rand.NewPCG(seed, 7))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// decode reads everything through NewReader.
func decode(data []byte) ([]byte, Kind, error) {
	r, k, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, k, err
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	return out, k, err
}

// decodeXz reads data through the xz reader with a given number of
// decoding goroutines, feeding it in small, odd-sized reads to exercise
// every boundary.
func decodeXz(data []byte, procs int) ([]byte, error) {
	out, _, err := decodeXzDict(data, procs)
	return out, err
}

// decodeXzDict is decodeXz that also returns the largest dictionary size
// found in the block headers. It decodes twice, reading ahead in memory and
// into a spill file, and fails if the two disagree.
func decodeXzDict(data []byte, procs int) ([]byte, int, error) {
	out, maxDict, err := decodeXzMode(data, procs, "")
	out2, _, err2 := decodeXzMode(data, procs, os.TempDir())
	// Read-ahead in memory counts compressed bytes against the budget, so
	// the two can give different blocks to helpers; a corrupt block is
	// delivered up to the damage only when the reading goroutine decodes
	// it. On errors the outputs agree up to the shorter one.
	short, long := out, out2
	if len(short) > len(long) {
		short, long = long, short
	}
	if (err == nil) != (err2 == nil) || (err == nil && !bytes.Equal(out, out2)) || !bytes.HasPrefix(long, short) {
		return nil, 0, fmt.Errorf("memory and spill read-ahead differ: %v / %v, %d / %d bytes", err, err2, len(out), len(out2))
	}
	return out, maxDict, err
}

func decodeXzMode(data []byte, procs int, spillDir string) (_ []byte, maxDict int, _ error) {
	r, err := newXzReader(newInput(&oddReader{r: bytes.NewReader(data)}), procs, spillDir)
	if err != nil {
		return nil, 0, err
	}
	defer func() { maxDict = r.maxDict; r.Close() }()
	var out bytes.Buffer
	buf := make([]byte, 7919)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), 0, nil
		}
		if err != nil {
			return out.Bytes(), 0, err
		}
	}
}

// oddReader returns short reads of varying sizes.
type oddReader struct {
	r io.Reader
	i int
}

func (o *oddReader) Read(p []byte) (int, error) {
	o.i++
	n := []int{1, 3, 4096, 65537, 12, 100000}[o.i%6]
	if len(p) > n {
		p = p[:n]
	}
	return o.r.Read(p)
}

func mustEqual(tb testing.TB, what string, got, want []byte) {
	tb.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		tb.Fatalf("%s: got %d bytes, want %d; first difference at %d", what, len(got), len(want), i)
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// compressWith compresses data with our writer.
func compressWith(tb testing.TB, k Kind, data []byte, opts ...WriterOption) []byte {
	tb.Helper()
	var b bytes.Buffer
	w, err := NewWriter(&b, k, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// errWriter fails after n bytes.
type errWriter struct{ n int }

var errTestWrite = errors.New("test: disk full")

func (e *errWriter) Write(p []byte) (int, error) {
	if len(p) > e.n {
		k := e.n
		e.n = 0
		return k, errTestWrite
	}
	e.n -= len(p)
	return len(p), nil
}
