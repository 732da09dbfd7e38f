package pull

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// xzBlockOffsets returns where the blocks of an xz file start and end, as
// xz --robot -lvv reports them.
func xzBlockOffsets(t *testing.T, file string) []int {
	t.Helper()
	out, err := exec.Command("xz", "--robot", "-lvv", file).Output()
	if err != nil {
		t.Fatal(err)
	}
	var offs []int
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) > 6 && f[0] == "block" {
			start, _ := strconv.Atoi(f[4])
			size, _ := strconv.Atoi(f[6])
			offs = append(offs, start, start+size)
		}
	}
	if len(offs) == 0 {
		t.Fatalf("no blocks listed for %s", file)
	}
	return offs
}

// TestTruncatedRealImagesRefused cuts the real Debian fixtures in every
// compression at the places a truncation hides best (inside the gzip
// trailer, the xz index and footer, the zstd frame checksum, the bzip2
// stream CRC, the block boundaries of an xz -T2 file) and imports and pulls
// them: always an error naming the format and "truncated", and the image
// root as it was. The cut the issue found (6 bytes off a .tar.gz, 24 off a
// .tar.xz) goes through HTTP too.
func TestTruncatedRealImagesRefused(t *testing.T) {
	testenv.RequireRoot(t)
	dir, files := debianVariants(t)
	r := openRoot(t)
	before := rootState(t, r)
	work := t.TempDir()
	codecs := map[string]string{".gz": "gzip", ".xz": "xz", ".zst": "zstd", ".bz2": "bzip2"}
	for _, f := range files {
		codec := codecs[filepath.Ext(f)]
		if codec == "" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		// Bytes cut off the end: into the gzip trailer (size, CRC-32) and
		// the last DEFLATE byte; the xz footer and index; the zstd frame
		// checksum; the bzip2 stream CRC.
		tails := map[string][]int{"gzip": {1, 4, 8, 9}, "xz": {1, 12, 24}, "zstd": {1, 4, 5}, "bzip2": {1, 10}}[codec]
		var cuts []int
		for _, n := range tails {
			cuts = append(cuts, len(data)-n)
		}
		if codec == "xz" && strings.Contains(f, "-t2") {
			for _, o := range xzBlockOffsets(t, filepath.Join(dir, f)) {
				cuts = append(cuts, o, o+1)
			}
		}
		for _, k := range cuts {
			if k <= 0 || k >= len(data) {
				continue
			}
			name := fmt.Sprintf("cut-%d", k)
			p := filepath.Join(work, f)
			if err := os.WriteFile(p, data[:k], 0o644); err != nil {
				t.Fatal(err)
			}
			in, _ := os.Open(p)
			err := ImportTar(context.Background(), r, in, name, ImportOptions{Log: testLog(t)})
			in.Close()
			if err == nil || !strings.Contains(err.Error(), "truncated") || !(strings.Contains(err.Error(), codec) || strings.Contains(err.Error(), "tar")) {
				t.Fatalf("%s cut to %d of %d bytes: import: %v", f, k, len(data), err)
			}
			sameState(t, f+": a failed import changed the image root", before, rootState(t, r))
		}
	}
	// Through HTTP, with --verify=no as in the report.
	srv := t.TempDir()
	for f, cut := range map[string]int{"deb.tar.gz": 6, "deb.tar.xz": 24} {
		data, _ := os.ReadFile(filepath.Join(dir, f))
		writeFile(t, srv, f, data[:len(data)-cut])
	}
	s := newFileServer(t, srv)
	for _, f := range []string{"deb.tar.gz", "deb.tar.xz"} {
		err := Pull(context.Background(), r, Tar, s.url(f), "cut", baseOpts(t, "no"))
		if err == nil || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("pull of a cut %s: %v", f, err)
		}
		sameState(t, f+": a failed pull changed the image root", before, rootState(t, r))
	}
	if n := names(t, r.Dir); len(n) != 0 {
		t.Fatalf("image root holds %v", n)
	}
}
