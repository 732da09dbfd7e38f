package compress

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz/lzma"
)

// smallBlocks compresses data with our writer using tiny blocks, so that
// small inputs have many blocks.
func smallBlocks(t testing.TB, data []byte, block, workers int) []byte {
	t.Helper()
	var b bytes.Buffer
	w := newXzWriterLevel(&b, xzLevel{dictCap: min(block, 64<<10), blockSize: block}, workers)
	for p := data; len(p) > 0; {
		n := min(len(p), 5000)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Our writer's output, as xz(1) sees it: valid, several blocks, both sizes
// in every block header, CRC64.
func TestXzWriterFormat(t *testing.T) {
	data := corpus(5 << 20)
	z := compressWith(t, Xz, data)
	if _, err := tryTool(t, z, "xz", "-t"); err != nil {
		t.Fatalf("xz -t: %v", err)
	}
	f := filepath.Join(t.TempDir(), "out.xz")
	if err := os.WriteFile(f, z, 0o644); err != nil {
		t.Fatal(err)
	}
	list := string(run(t, nil, "xz", "-lvv", f))
	if !regexp.MustCompile(`Sizes in headers:\s+Yes`).MatchString(list) {
		t.Errorf("xz -lvv does not report sizes in headers:\n%s", list)
	}
	m := regexp.MustCompile(`Blocks:\s+(\d+)`).FindStringSubmatch(list)
	if m == nil {
		t.Fatalf("no block count in:\n%s", list)
	}
	if n, _ := strconv.Atoi(m[1]); n < 2 || n != (len(data)+xzLevels[xzDefaultLevel].blockSize-1)/xzLevels[xzDefaultLevel].blockSize {
		t.Errorf("%d blocks", n)
	}
	if !strings.Contains(list, "CRC64") {
		t.Errorf("check is not CRC64:\n%s", list)
	}
	// Threaded xz decodes it in parallel (it only does so with sizes in
	// the block headers); the result must be the same.
	mustEqual(t, "xz -dc -T2", run(t, z, "xz", "-dc", "-T2"), data)
}

// systemd-import (liblzma, as used by importd) must accept our output.
// Unlike the compression tools it is optional even in CI: it comes with
// systemd-container and wants root.
func TestXzSystemdImport(t *testing.T) {
	tool := "/usr/lib/systemd/systemd-import"
	if _, err := os.Stat(tool); err != nil {
		t.Skipf("%s not installed (package systemd-container)", tool)
	}
	if os.Geteuid() != 0 {
		t.Skip("systemd-import needs root")
	}
	data := corpus(3 << 20)
	dir := t.TempDir()
	in := filepath.Join(dir, "image.raw.xz")
	out := filepath.Join(dir, "image.raw")
	if err := os.WriteFile(in, compressWith(t, Xz, data), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runErr(nil, tool, "raw", "--direct", "--sync=no", in, out); err != nil {
		t.Fatalf("systemd-import: %v", err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "systemd-import raw --direct", got, data)
}

// The parallel reader gives the same bytes with any number of goroutines,
// on files with many blocks and several streams.
func TestXzParallelEquivalence(t *testing.T) {
	data := corpus(1536 << 10)
	a, b := data[:512<<10], data[512<<10:]
	files := map[string][]byte{
		"ours, 64 KiB blocks":  smallBlocks(t, data, 64<<10, 3),
		"ours, 2 streams":      cat(smallBlocks(t, a, 100<<10, 2), make([]byte, 12), smallBlocks(t, b, 333<<10, 2)),
		"ours, default level":  compressWith(t, Xz, data),
		"xz -T2, 256 KiB":      run(t, data, "xz", "-T2", "-1", "--block-size=128KiB", "-c"),
		"xz -T2 then xz -T1":   cat(run(t, a, "xz", "-T2", "-1", "--block-size=128KiB", "-c"), run(t, b, "xz", "-T1", "-1", "-c")),
		"xz -T2, sha256 check": run(t, data, "xz", "-T2", "-1", "--check=sha256", "--block-size=400KiB", "-c"),
	}
	for name, f := range files {
		for _, procs := range []int{1, 2, 3, 8} {
			out, err := decodeXz(f, procs)
			if err != nil {
				t.Fatalf("%s, %d goroutines: %v", name, procs, err)
			}
			mustEqual(t, fmt.Sprintf("%s, %d goroutines", name, procs), out, data)
		}
	}
}

// Flipping any single bit anywhere in an xz file must be an error (the
// checks cover every byte), with any number of goroutines.
func TestXzBitFlips(t *testing.T) {
	data := corpus(16 << 10)
	files := map[string][]byte{
		"ours":   smallBlocks(t, data, 4<<10, 2),
		"xz -T2": run(t, data, "xz", "-T2", "--block-size=4KiB", "-c"),
	}
	for name, f := range files {
		for i := range f {
			g := bytes.Clone(f)
			g[i] ^= 1 << (i % 8)
			procs := 1 + i%3
			out, err := decodeXz(g, procs)
			if err == nil {
				t.Fatalf("%s: flipping bit %d of byte %d went unnoticed (%d bytes out, equal %v)",
					name, i%8, i, len(out), bytes.Equal(out, data))
			}
		}
	}
}

// forge assembles a one-block xz stream from raw LZMA2 data with the given
// header sizes and index record, with all CRCs correct, to check that the
// reader compares sizes, not just checksums.
func forge(t *testing.T, data []byte, hdrC, hdrU, idxUnpadded, idxU int64) []byte {
	t.Helper()
	var raw bytes.Buffer
	lw, err := lzma.Writer2Config{DictCap: 1 << 16}.NewWriter2(&raw)
	if err != nil {
		t.Fatal(err)
	}
	lw.Write(data)
	lw.Close()
	c := int64(raw.Len())
	b := appendXzStreamHeader(nil, xzCheckCRC64)
	start := len(b)
	b = append(b, 0, 0) // size, flags
	flags := byte(0)
	if hdrC >= 0 {
		flags |= 0x40
		b = appendVLI(b, uint64(hdrC))
	}
	if hdrU >= 0 {
		flags |= 0x80
		b = appendVLI(b, uint64(hdrU))
	}
	b = append(b, xzFilterLZMA2, 1, lzma.EncodeDictCap(1<<16))
	for (len(b)-start)%4 != 0 {
		b = append(b, 0)
	}
	b[start], b[start+1] = byte((len(b)-start+4)/4-1), flags
	b = binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start:]))
	hdrLen := int64(len(b) - start)
	b = append(b, raw.Bytes()...)
	for (len(b)-start)%4 != 0 {
		b = append(b, 0)
	}
	b = binary.LittleEndian.AppendUint64(b, crc64.Checksum(data, crc64Table))
	if idxUnpadded < 0 {
		idxUnpadded = hdrLen + c + 8
	}
	idx := []byte{0, 1}
	idx = appendVLI(appendVLI(idx, uint64(idxUnpadded)), uint64(idxU))
	for len(idx)%4 != 0 {
		idx = append(idx, 0)
	}
	idx = binary.LittleEndian.AppendUint32(idx, crc32.ChecksumIEEE(idx))
	b = append(b, idx...)
	return appendXzFooter(b, xzCheckCRC64, len(idx))
}

func TestXzSizeTampering(t *testing.T) {
	data := corpus(100 << 10)
	n := int64(len(data))
	var raw bytes.Buffer
	lw, _ := lzma.Writer2Config{DictCap: 1 << 16}.NewWriter2(&raw)
	lw.Write(data)
	lw.Close()
	c := int64(raw.Len())

	ok := forge(t, data, c, n, -1, n)
	if _, err := tryTool(t, ok, "xz", "-t"); err != nil {
		t.Fatalf("the forging itself is wrong: %v", err)
	}
	for _, procs := range []int{1, 2} {
		if out, err := decodeXz(ok, procs); err != nil || !bytes.Equal(out, data) {
			t.Fatalf("untampered: %v", err)
		}
		for name, f := range map[string][]byte{
			"header uncompressed size too small": forge(t, data, c, n-1, -1, n-1),
			"header uncompressed size too large": forge(t, data, c, n+1, -1, n+1),
			"header compressed size too small":   forge(t, data, c-1, n, -1, n),
			"header compressed size too large":   forge(t, data, c+4, n, -1, n),
			"index uncompressed size":            forge(t, data, c, n, -1, n+1),
			"index unpadded size":                forge(t, data, c, n, 1000, n),
			"no sizes, index uncompressed size":  forge(t, data, -1, -1, -1, n-1),
		} {
			if _, err := decodeXz(f, procs); err == nil {
				t.Errorf("%s (%d goroutines): no error", name, procs)
			} else if _, err2 := tryTool(t, f, "xz", "-t"); err2 == nil {
				t.Errorf("%s: we fail (%v) but xz -t accepts it", name, err)
			}
		}
	}
}

func TestXzUnsupported(t *testing.T) {
	data := corpus(64 << 10)
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"BCJ filter": {[]string{"--x86", "--lzma2=preset=1"}, "unsupported filter"},
		"delta":      {[]string{"--delta=dist=4", "--lzma2=preset=1"}, "unsupported filter"},
	} {
		f := run(t, data, "xz", append(c.args, "-c")...)
		if _, _, err := decode(f); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	// A dictionary beyond the limit (4 GiB) in a block without sizes.
	var raw bytes.Buffer
	lw, _ := lzma.Writer2Config{}.NewWriter2(&raw)
	lw.Write(data)
	lw.Close()
	b := appendXzStreamHeader(nil, xzCheckNone)
	h := []byte{2, 0, xzFilterLZMA2, 1, 40, 0, 0, 0}
	h = binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(h))
	b = append(append(b, h...), raw.Bytes()...)
	if _, _, err := decode(b); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("4 GiB dictionary: %v", err)
	}
}

// Close stops the helper goroutines, whether the stream was read to the
// end, read partly or not at all; and an abandoned reader or writer leaves
// no goroutine behind either.
func TestXzNoGoroutineLeaks(t *testing.T) {
	data := corpus(4 << 20)
	z := smallBlocks(t, data, 256<<10, 4)
	settle := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > want {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want %d:\n%s", n, want, buf[:runtime.Stack(buf, true)])
		}
	}
	base := runtime.NumGoroutine()

	for _, readBytes := range []int{0, 1, 300 << 10, len(data)} {
		r, err := newXzReader(newInput(bytes.NewReader(z)), 4, "")
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, readBytes)
		if _, err := r.Read(buf); err != nil && readBytes > 0 {
			t.Fatal(err)
		}
		r.Close()
		// Close has waited for the helpers; they may still be returning.
		settle(base)
	}

	// Abandoned reader: its helpers finish their blocks and exit.
	r, _ := newXzReader(newInput(bytes.NewReader(z)), 4, "")
	r.Read(make([]byte, 1000))
	r = nil
	settle(base)

	// Writer whose output fails: the error comes back, Close stops
	// everything.
	for _, n := range []int{0, 100, 300 << 10} {
		w := newXzWriterLevel(&errWriter{n: n}, xzLevel{dictCap: 64 << 10, blockSize: 128 << 10}, 4)
		var werr error
		for p := data; len(p) > 0 && werr == nil; p = p[min(len(p), 50000):] {
			_, werr = w.Write(p[:min(len(p), 50000)])
		}
		cerr := w.Close()
		if !errors.Is(werr, errTestWrite) && !errors.Is(cerr, errTestWrite) {
			t.Errorf("failing writer after %d bytes: Write %v, Close %v", n, werr, cerr)
		}
		if cerr == nil {
			t.Errorf("failing writer after %d bytes: Close succeeded", n)
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Error("Write after Close succeeded")
		}
		settle(base)
	}

	// Abandoned writer.
	w := newXzWriterLevel(&bytes.Buffer{}, xzLevel{dictCap: 64 << 10, blockSize: 128 << 10}, 4)
	w.Write(data[:1<<20])
	w = nil
	settle(base)
}

// With a spill directory, workers decode blocks into an unlinked file there
// and the reading goroutine delivers from it: no look-ahead is held in
// memory, the output decoded ahead stays within its limit, the file's space
// is given back as blocks are delivered, and nothing is left in the
// directory. An unusable directory means reading ahead in memory.
func TestXzSpillReadAhead(t *testing.T) {
	data := corpus(6 << 20)
	const block = 512 << 10
	z := smallBlocks(t, data, block, 4)
	dir := t.TempDir()
	r, err := newXzReader(newInput(bytes.NewReader(z)), 3, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !r.spillMode {
		t.Fatal("spill mode is off with a usable directory")
	}
	var out bytes.Buffer
	buf := make([]byte, 64<<10)
	spilled, fromWorker := false, 0
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if r.held != 0 {
			t.Fatalf("%d bytes of look-ahead held in memory", r.held)
		}
		if r.ahead > xzAheadLimit || r.spill.held > xzAheadLimit+xzSpillLimit {
			t.Fatalf("%d bytes decoded ahead, %d in the spill file", r.ahead, r.spill.held)
		}
		if r.spill.held > 0 {
			spilled = true
		}
		if r.cur != nil && r.cur.outSpilled {
			fromWorker++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if win := int64(r.maxDict) + lzma2MaxChunkU; int64(r.slots)*win > max(xzWindowBudget, win) || r.slots > 3 {
		t.Fatalf("%d workers with %d-byte windows", r.slots, win)
	}
	mustEqual(t, "spilled read-ahead", out.Bytes(), data)
	if !spilled || fromWorker == 0 {
		t.Fatalf("spill file used: %v; reads of worker output: %d", spilled, fromWorker)
	}
	if r.spill.held != 0 || r.held != 0 {
		t.Fatalf("after EOF: %d bytes still in the spill file, %d in memory", r.spill.held, r.held)
	}
	r.Close()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("spill directory not empty: %v", ents)
	}

	got, err := io.ReadAll(mustXzReader(t, z, filepath.Join(dir, "missing")))
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "unusable spill directory", got, data)
}

func mustXzReader(t *testing.T, z []byte, spillDir string) *xzReader {
	t.Helper()
	r, err := newXzReader(newInput(bytes.NewReader(z)), 3, spillDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}
