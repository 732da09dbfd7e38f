package pull

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// A download that stalls must not hold back what already arrived: the
// first bytes reach the reader while the source is still blocked, and the
// rest arrives intact. A readahead over a decoder fills whole buffers.
func TestNetReadaheadStalledSource(t *testing.T) {
	pr, pw := io.Pipe()
	ra := newNetReadahead(pr, 4, 128<<10)
	defer ra.Close()
	go pw.Write([]byte("magic"))

	got := make(chan []byte)
	go func() {
		b := make([]byte, 64)
		n, _ := ra.Read(b)
		got <- b[:n]
	}()
	select {
	case b := <-got:
		if string(b) != "magic" {
			t.Fatalf("read %q, want %q", b, "magic")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first bytes of a stalled download did not reach the reader")
	}

	// Then a large body in odd pieces: everything arrives, in order.
	want := bytes.Repeat([]byte("0123456789abcdef"), 100_000)
	go func() {
		for p := want; len(p) > 0; {
			k := min(len(p), 7777)
			pw.Write(p[:k])
			p = p[k:]
		}
		pw.Close()
	}()
	all, err := io.ReadAll(ra)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all, want) {
		t.Fatalf("got %d bytes, want %d (or content differs)", len(all), len(want))
	}
}

func TestReadaheadFillsBuffers(t *testing.T) {
	want := bytes.Repeat([]byte("x"), 1<<20)
	ra := newReadahead(io.NopCloser(&oneByteReader{r: bytes.NewReader(want)}), 2, 64<<10)
	defer ra.Close()
	b := make([]byte, 64<<10)
	n, err := ra.Read(b)
	if err != nil || n != len(b) {
		t.Fatalf("first read: %d bytes, %v; want a full buffer of %d", n, err, len(b))
	}
}

type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }
