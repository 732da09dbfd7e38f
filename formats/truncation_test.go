package formats

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/testenv"
)

// truncationTar is a small archive with the entry kinds that matter and a
// mix of compressible and random data, so that every codec makes several
// blocks of it where it can.
func truncationTar(t *testing.T) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 8))
	random := make([]byte, 1500)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	var text strings.Builder
	for i := range 120 {
		fmt.Fprintf(&text, "line %d of a listing that compresses well\n", i)
	}
	return writeTar(t, TarOptions{},
		dir("etc"), file("etc/os-release", "ID=trunc\n"), file("usr/text", text.String()),
		file("usr/random", string(random)), file("empty", ""))
}

// readThrough reads a compressed tarball the way pull and import do: the
// tar entries and their bodies, then the rest of the decompressed stream.
// The tar source reads its input to its true end, so an error of the
// stream below must reach the caller from the source itself: a caller that
// stops at the tar end must not miss it.
func readThrough(data []byte) error {
	dr, _, err := compress.NewReader(bytes.NewReader(data))
	if err != nil {
		return err
	}
	defer dr.Close()
	src := NewTarSource(dr)
	for {
		e, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if e.Body != nil {
			if _, err := io.Copy(io.Discard, e.Body); err != nil {
				return err
			}
		}
	}
	if n, err := io.Copy(io.Discard, dr); err != nil || n != 0 {
		return fmt.Errorf("the tar source ended but the stream goes on (%d bytes, %v)", n, err)
	}
	return nil
}

func encodeWith(t *testing.T, data []byte, argv ...string) []byte {
	t.Helper()
	testenv.RequireTool(t, argv[0])
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	return out
}

func encodeBerth(t *testing.T, data []byte, k compress.Kind) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := compress.NewWriter(&buf, k, compress.WithConcurrency(2))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestTruncationAtEveryOffset cuts compressed tarballs made by the real
// tools and by berth's writers at every offset from the first byte to the
// last: each cut must be an error that names the format and says
// "truncated", never a shorter archive read as complete. (systemd 252
// accepts a .tar.gz without its trailer and a .tar.xz without its index.)
func TestTruncationAtEveryOffset(t *testing.T) {
	plain := truncationTar(t)
	inputs := []struct {
		name, codec string
		data        []byte
	}{
		{"gzip", "gzip", encodeWith(t, plain, "gzip", "-c")},
		{"pigz", "gzip", encodeWith(t, plain, "pigz", "-c", "-b", "32")},
		{"xz", "xz", encodeWith(t, plain, "xz", "-c")},
		{"xz-T2-blocks", "xz", encodeWith(t, plain, "xz", "-c", "-T2", "--block-size=1KiB")},
		{"xz-sha256", "xz", encodeWith(t, plain, "xz", "-c", "--check=sha256")},
		{"zstd", "zstd", encodeWith(t, plain, "zstd", "-c", "-q")},
		{"zstd-no-check", "zstd", encodeWith(t, plain, "zstd", "-c", "-q", "--no-check")},
		{"bzip2", "bzip2", encodeWith(t, plain, "bzip2", "-c")},
		{"berth-xz", "xz", encodeBerth(t, plain, compress.Xz)},
		{"berth-gzip", "gzip", encodeBerth(t, plain, compress.Gzip)},
		{"berth-zstd", "zstd", encodeBerth(t, plain, compress.Zstd)},
	}
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			if err := readThrough(in.data); err != nil {
				t.Fatalf("the whole file: %v", err)
			}
			for k := 1; k < len(in.data); k++ {
				err := readThrough(in.data[:k])
				if err == nil {
					t.Fatalf("cut to %d of %d bytes: read as complete", k, len(in.data))
				}
				msg := err.Error()
				// The format that ends early is named: the codec's, or tar's
				// where a cut falls between whole frames of the codec.
				if strings.Contains(msg, "stream goes on") || !strings.Contains(msg, "truncated") || !(strings.Contains(msg, in.codec) || strings.Contains(msg, "tar")) {
					t.Fatalf("cut to %d of %d bytes: %v", k, len(in.data), err)
				}
			}
		})
	}
}
