package compress

import (
	"bytes"
	"io"
	"os/exec"
	"testing"
)

// The parallel zstd writer gives the same bytes whatever the concurrency,
// writes one frame per chunk, and its output is read whole by zstd(1) and
// by our reader, at and around chunk boundaries.
func TestZstdParallelFrames(t *testing.T) {
	zstdCLI := needTool(t, "zstd")
	data := corpus(2*zstdChunk + 12345)
	for _, size := range []int{0, 1, zstdChunk - 1, zstdChunk, zstdChunk + 1, len(data)} {
		in := data[:size]
		var outs [][]byte
		for _, c := range []int{1, 2, 5} {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, Zstd, WithConcurrency(c))
			if err != nil {
				t.Fatal(err)
			}
			// Odd write sizes cross chunk boundaries inside one Write.
			for p := in; len(p) > 0; {
				k := min(len(p), 1<<20+7)
				if _, err := w.Write(p[:k]); err != nil {
					t.Fatal(err)
				}
				p = p[k:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			outs = append(outs, buf.Bytes())
		}
		for i := 1; i < len(outs); i++ {
			if !bytes.Equal(outs[0], outs[i]) {
				t.Fatalf("size %d: output depends on concurrency", size)
			}
		}
		cmd := exec.Command(zstdCLI, "-dc")
		cmd.Stdin = bytes.NewReader(outs[0])
		got, err := cmd.Output()
		if err != nil || !bytes.Equal(got, in) {
			t.Fatalf("size %d: zstd -dc: %v (got %d bytes)", size, err, len(got))
		}
		r, kind, err := NewReader(bytes.NewReader(outs[0]))
		if err != nil || kind != Zstd {
			t.Fatalf("size %d: %v %v", size, kind, err)
		}
		got, err = io.ReadAll(r)
		if err != nil || !bytes.Equal(got, in) {
			t.Fatalf("size %d: our reader: %v", size, err)
		}
		frames := bytes.Count(outs[0], []byte{0x28, 0xb5, 0x2f, 0xfd})
		if want := max(1, (size+zstdChunk-1)/zstdChunk); frames < want {
			t.Errorf("size %d: %d frames, want at least %d", size, frames, want)
		}
	}
}

func TestZstdWriterErrors(t *testing.T) {
	w, err := NewWriter(failWriter{}, Zstd)
	if err != nil {
		t.Fatal(err)
	}
	_, werr := w.Write(make([]byte, 3*zstdChunk))
	cerr := w.Close()
	if werr == nil && cerr == nil {
		t.Fatal("write error not reported")
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("write after Close accepted")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }
