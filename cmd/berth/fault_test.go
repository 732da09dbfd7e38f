package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/build/buildtest"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/formats/dirtree"
	"github.com/berth-dev/berth/formats/dirtree/treecmp"
	"github.com/berth-dev/berth/formats/oci"
	"github.com/berth-dev/berth/internal/scratch"
	"github.com/berth-dev/berth/internal/testenv"
)

// The fault-injection tests kill berth with SIGKILL at many points of every
// verb that writes, and check the promise that matters when nothing gets to
// clean up: nothing incomplete is ever visible under a final name (an image,
// its settings file, an output file or directory is either absent or
// whole), and the next job removes what the killed one left behind.

// mediumTree makes an OS tree big enough (about 24 MiB in 700 files) that
// every job takes a few hundred milliseconds, so kills land in every phase.
func mediumTree(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "tree")
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 700 {
		dir := filepath.Join(d, "usr", "lib", fmt.Sprintf("d%02d", i%40))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, rng.IntN(70<<10))
		for j := range b {
			if j%3 == 0 {
				b[j] = byte(rng.Uint32()) // a third random: compresses some
			} else {
				b[j] = byte(i)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, `d=`+d+`
mkdir -p $d/etc $d/usr/bin $d/tmp $d/dev
echo 'ID=fault' > $d/etc/os-release
echo tool > $d/usr/bin/tool; chmod 4755 $d/usr/bin/tool
ln $d/usr/bin/tool $d/usr/bin/tool2
ln -s /usr/bin/tool $d/usr/bin/link
chmod 1777 $d/tmp`)
	return d
}

// faultJob is one verb under fault injection.
type faultJob struct {
	name   string
	args   []string // run as is, and with --force to redo after a kill
	finals []string // what the job makes visible
	dirs   []string // where its scratch items live
	points int      // kill points
}

// state captures the finals: a tree snapshot or file bytes for each that
// exists.
func finalState(t *testing.T, finals []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, f := range finals {
		st, err := os.Lstat(f)
		if err != nil {
			continue
		}
		if st.IsDir() {
			s, err := treecmp.Snapshot(f)
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			for k, n := range s {
				// Content, not time: a directory's mtime changes as its
				// entries come and go, a written file's is when it was.
				n.ModTime = time.Time{}
				lines = append(lines, fmt.Sprintf("%s %+v", k, n))
			}
			sort.Strings(lines)
			m[f] = strings.Join(lines, "\n")
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m[f] = string(b)
	}
	return m
}

// listings names what each of dirs holds.
func listings(t *testing.T, dirs []string) map[string]bool {
	t.Helper()
	m := map[string]bool{}
	for _, d := range dirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			m[filepath.Join(d, e.Name())] = true
		}
	}
	return m
}

// debris lists what dirs hold beyond what they held before the job and
// the job's finals: work files of any name, not only scratch ones.
func debris(t *testing.T, dirs []string, before map[string]bool, finals []string) []string {
	t.Helper()
	var out []string
	for p := range listings(t, dirs) {
		if !before[p] && !slices.Contains(finals, p) {
			out = append(out, p)
		}
	}
	return out
}

func removeFinals(t *testing.T, finals []string) {
	t.Helper()
	for _, f := range finals {
		if err := scratch.RemoveTree(f); err != nil {
			t.Fatal(err)
		}
	}
}

// runToEnd runs the job in a child process and returns how long it took.
func runToEnd(t *testing.T, j faultJob, force bool) time.Duration {
	t.Helper()
	args := j.args
	if force {
		args = append([]string{"--force"}, args...)
	}
	cmd := berthProcess(append([]string{"--no-progress", "--log-level=error"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", j.name, err, stderr.String())
	}
	return time.Since(start)
}

func runFaults(t *testing.T, j faultJob) {
	t.Helper()
	d := runToEnd(t, j, false)
	want := finalState(t, j.finals)
	if len(want) == 0 {
		t.Fatalf("%s made none of %v", j.name, j.finals)
	}
	removeFinals(t, j.finals)
	before := listings(t, j.dirs)
	killed := 0
	for i := range j.points {
		// From right after the start to past the reference run's end.
		at := time.Duration(float64(d) * (0.03 + 1.1*float64(i)/float64(j.points)))
		cmd := berthProcess(append([]string{"--no-progress", "--log-level=error"}, j.args...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-time.After(at):
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
			killed++
		case <-done: // finished before the kill
		}
		// Nothing incomplete under a final name.
		for f, got := range finalState(t, j.finals) {
			if got != want[f] {
				t.Fatalf("%s killed after %s: %s is visible but not the complete result:\n%s", j.name, at, f, lineDiff(want[f], got))
			}
		}
		// The next job finishes and leaves no debris, its own or the
		// killed job's.
		runToEnd(t, j, true)
		if left := debris(t, j.dirs, before, j.finals); len(left) > 0 {
			t.Fatalf("%s killed after %s: the next job left %v", j.name, at, left)
		}
		for f, got := range finalState(t, j.finals) {
			if got != want[f] {
				t.Fatalf("%s: the job after a kill made a different %s:\n%s", j.name, f, lineDiff(want[f], got))
			}
		}
		removeFinals(t, j.finals)
	}
	t.Logf("%s: reference run %s, %d of %d runs killed", j.name, d.Round(time.Millisecond), killed, j.points)
	if killed < j.points/2 {
		t.Errorf("%s: only %d of %d runs were killed while running", j.name, killed, j.points)
	}
}

func TestFaultInjection(t *testing.T) {
	testenv.RequireRoot(t)
	w := t.TempDir()
	root := filepath.Join(w, "machines")
	out := filepath.Join(w, "out")
	in := filepath.Join(w, "in")
	for _, d := range []string{root, out, in} {
		os.MkdirAll(d, 0o755)
	}
	tree := mediumTree(t)
	// Inputs: a tarball, a raw image, both compressed; served over HTTP
	// with a checksum file; an OCI image in a registry.
	mustBerth(t, "export-tar", tree+"/", filepath.Join(in, "m.tar.zst"))
	raw := make([]byte, 48<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for off := 0; off < len(raw); off += 3 << 20 {
		for k := off; k < off+(1<<20); k++ {
			raw[k] = byte(rng.Uint32() >> 28)
		}
	}
	os.WriteFile(filepath.Join(in, "disk.raw"), raw, 0o644)
	var zr bytes.Buffer
	zw, err := compress.NewWriter(&zr, compress.Xz)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(raw)
	zw.Close()
	os.WriteFile(filepath.Join(in, "disk.raw.xz"), zr.Bytes(), 0o644)
	tarZst, _ := os.ReadFile(filepath.Join(in, "m.tar.zst"))
	settings := []byte("[Exec]\nBoot=yes\n")
	os.WriteFile(filepath.Join(in, "m.nspawn"), settings, 0o644)
	os.WriteFile(filepath.Join(in, "SHA256SUMS"), []byte(fmt.Sprintf("%s *m.tar.zst\n%s *disk.raw.xz\n%s *m.nspawn\n",
		hexSum(tarZst), hexSum(zr.Bytes()), hexSum(settings))), 0o644)
	srv, _ := serveDir(t, in)

	reg := testenv.DockerRegistry(t)
	src, err := dirtree.NewSource(tree, dirtree.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := oci.NewLayer(context.Background(), src, oci.Zstd, t.TempDir())
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	img, err := oci.NewImage([]v1.Layer{l}, oci.ImageConfig{Arch: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	if err := oci.Push(context.Background(), reg+"/fault/m:1", img, oci.WithKeychain(authn.NewMultiKeychain())); err != nil {
		t.Fatal(err)
	}

	// Machines to export: one tree, one raw image.
	mustBerth(t, "--image-root", root, "import-fs", tree, "m")
	mustBerth(t, "--image-root", root, "import-raw", filepath.Join(in, "disk.raw"), "disk")

	r := func(args ...string) []string { return append([]string{"--image-root", root}, args...) }
	image := func(name string) []string { return []string{filepath.Join(root, name), filepath.Join(root, name+".nspawn")} }
	jobs := []faultJob{
		{name: "import-tar", args: r("import-tar", filepath.Join(in, "m.tar.zst"), "t"), finals: image("t"), dirs: []string{root}},
		{name: "import-raw", args: r("import-raw", filepath.Join(in, "disk.raw.xz"), "r"), finals: image("r.raw"), dirs: []string{root}},
		{name: "import-fs", args: r("import-fs", tree, "f"), finals: image("f"), dirs: []string{root}},
		{name: "pull-tar", args: r("pull-tar", "--verify=checksum", srv.URL+"/m.tar.zst", "p"), finals: image("p"), dirs: []string{root}},
		{name: "pull-raw", args: r("pull-raw", "--verify=checksum", srv.URL+"/disk.raw.xz", "q"), finals: image("q.raw"), dirs: []string{root}},
		{name: "pull-oci", args: r("pull-oci", "--verify=no", reg+"/fault/m:1", "o"), finals: image("o"), dirs: []string{root}},
		{name: "export-tar", args: r("export-tar", "m", filepath.Join(out, "m.tar.zst")), finals: []string{filepath.Join(out, "m.tar.zst")}, dirs: []string{out, root}},
		{name: "export-raw", args: r("export-raw", "disk", filepath.Join(out, "disk.raw.zst")), finals: []string{filepath.Join(out, "disk.raw.zst")}, dirs: []string{out, root}},
		{name: "export-oci", args: r("export-oci", "m", filepath.Join(out, "m.oci.tar")), finals: []string{filepath.Join(out, "m.oci.tar")}, dirs: []string{out, root}},
		{name: "export-oci-layout", args: r("export-oci", "m", filepath.Join(out, "m.oci")), finals: []string{filepath.Join(out, "m.oci")}, dirs: []string{out, root}},
	}
	for i := range jobs {
		jobs[i].points = 8
	}
	buildtest.Require(t)
	jobs = append(jobs,
		faultJob{name: "build", args: buildArgs(t, "test", "-o", filepath.Join(out, "sys.tar.xz")), finals: []string{filepath.Join(out, "sys.tar.xz")}, dirs: []string{out}, points: 5},
		faultJob{name: "build-raw", args: buildArgs(t, "test", "-o", filepath.Join(out, "sys.raw")), finals: []string{filepath.Join(out, "sys.raw")}, dirs: []string{out}, points: 5},
		faultJob{name: "publish", args: []string{"publish", "--flake", buildtest.Flake(t, "test"), "--nix-option", "substituters=",
			"--format", "tar.zst", "--format", "raw", "--format", "oci.tar", "--out", filepath.Join(out, "release")},
			finals: []string{filepath.Join(out, "release")}, dirs: []string{out}, points: 5},
	)
	for _, j := range jobs {
		t.Run(j.name, func(t *testing.T) { runFaults(t, j) })
	}
}

// lineDiff shows the first lines in which two states differ.
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := 0; i < max(len(al), len(bl)) && len(out) < 6; i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("- %.200s\n+ %.200s", x, y))
		}
	}
	return strings.Join(out, "\n")
}

// TestStalledStdinStopsOnSignal: a read blocked on a stalled pipe
// (import-tar -) does not delay SIGTERM or SIGINT: berth stops within a
// second and leaves nothing behind.
func TestStalledStdinStopsOnSignal(t *testing.T) {
	testenv.RequireRoot(t)
	tree := smallTree(t)
	var tarball bytes.Buffer
	if r := berth(t, nil, "export-tar", tree+"/", "-"); r.code != 0 {
		t.Fatal(r.stderr)
	} else {
		tarball.WriteString(r.stdout)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		root := t.TempDir()
		cmd := berthProcess("--image-root", root, "--no-progress", "import-tar", "-", "x")
		pw, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Write(tarball.Bytes()[:tarball.Len()/2]) // then nothing: the pipe stalls
		deadline := time.Now().Add(10 * time.Second)
		for listing(t, root) == "" && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // the reader is blocked by now
		start := time.Now()
		cmd.Process.Signal(sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%v: berth still blocked on standard input after 5 s", sig)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("%v: berth took %s to stop", sig, el)
		}
		pw.Close()
		if !strings.Contains(stderr.String(), "interrupted") {
			t.Errorf("%v: stderr %q", sig, stderr.String())
		}
		if l := listing(t, root); l != "" {
			t.Errorf("%v: left %q in the image root", sig, l)
		}
	}
}
