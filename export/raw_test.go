package export

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats/compress"
)

// sparseImage writes a 16 MiB file with three small data extents (one at
// the very end) and returns its path and content.
func sparseImage(t *testing.T) (string, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	const size = 16 << 20
	want := make([]byte, size)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{0, 8 << 20, size - 4096} {
		chunk := make([]byte, 4096)
		rand.Read(chunk)
		copy(want[off:], chunk)
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	return p, want
}

func blocks(t *testing.T, p string) int64 {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestRawSparse(t *testing.T) {
	img, want := sparseImage(t)
	ctx := context.Background()

	// To a regular file: same bytes, holes kept.
	out := filepath.Join(t.TempDir(), "out.raw")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	var read int64
	meter := func(r io.Reader) io.Reader { return countReader{r, &read} }
	if err := Raw(ctx, img, f, RawOptions{Meter: meter}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	if b := blocks(t, out); b > 1<<20 {
		t.Errorf("output uses %d bytes on disk: holes were filled", b)
	}
	if read > 1<<20 {
		t.Errorf("read %d bytes of a file with 12 KiB of data", read)
	}

	// To a pipe-like writer: zeros written out.
	var buf bytes.Buffer
	if err := Raw(ctx, img, &buf, RawOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatal("streamed content differs")
	}

	// Compressed, read back through the detector.
	for _, k := range []compress.Kind{compress.Xz, compress.Zstd, compress.Gzip} {
		buf.Reset()
		if err := Raw(ctx, img, &buf, RawOptions{Compression: k}); err != nil {
			t.Fatal(err)
		}
		r, kind, err := compress.NewReader(&buf)
		if err != nil || kind != k {
			t.Fatalf("%s: %v %s", k, err, kind)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: round trip differs (%v)", k, err)
		}
	}

	// A cancelled export stops.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Raw(cctx, img, io.Discard, RawOptions{}); err == nil {
		t.Fatal("cancelled export succeeded")
	}
}

type countReader struct {
	r io.Reader
	n *int64
}

func (c countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}
