package dirtree

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/dirtree/treecmp"
)

// requireRoot skips a test that needs root, except in CI, where a skipped
// test would hide a regression and therefore fails.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root; in CI a skip is a failure")
	}
	t.Skip("needs root")
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (apt-get install -y libcap2-bin attr acl); in CI a skip is a failure", name)
	}
	t.Skipf("%s not found (apt-get install -y libcap2-bin attr acl)", name)
}

const childEnv = "BERTH_DIRTREE_TEST_UNPRIVILEGED"

// unprivileged arranges for the calling test to run without root. When the
// process is not root it returns true and the test body runs here. As root
// it reruns just this test in a copy of the test binary as nobody
// (65534:65534), fails the test if that run fails, and returns false.
func unprivileged(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		return true
	}
	if os.Getenv(childEnv) != "" {
		t.Fatal("unprivileged child still runs as root")
	}
	dir, err := os.MkdirTemp("", "dirtree-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(tmp, 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "dirtree.test")
	exe, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), childEnv+"=1", "TMPDIR="+tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("run as nobody: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("run as nobody did not pass:\n%s", out)
	}
	t.Logf("ran as nobody:\n%s", out)
	return false
}

// tempDir is t.TempDir that can also be removed when it holds read-only
// directories and the test does not run as root.
func tempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	return dir
}

// extract copies src into the existing directory dst through a Sink.
func extract(src formats.Source, dst string, opts Options) error {
	sink, err := NewSink(dst, opts)
	if err != nil {
		return err
	}
	if _, err := formats.Copy(context.Background(), sink, src); err != nil {
		sink.Abort()
		return err
	}
	return sink.Close()
}

// tarSource reads a tar stream with archive/tar, passing names on as they
// are so that the sink's own checks are what is tested.
type tarSource struct{ tr *tar.Reader }

func (s tarSource) Next() (*formats.Entry, error) {
	h, err := s.tr.Next()
	if errors.Is(err, tar.ErrInsecurePath) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return &formats.Entry{Header: h, Body: s.tr}, nil
}

// writeTar drains src into a PAX tar stream.
func writeTar(w io.Writer, src formats.Source) error {
	tw := tar.NewWriter(w)
	for {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(e.Header); err != nil {
			return err
		}
		if e.Body != nil {
			if _, err := io.Copy(tw, e.Body); err != nil {
				return err
			}
		}
	}
}

func snapshot(t *testing.T, dir string) map[string]treecmp.Node {
	t.Helper()
	m, err := treecmp.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustDiffEqual(t *testing.T, a, b map[string]treecmp.Node) {
	t.Helper()
	if d := treecmp.Diff(a, b); len(d) > 0 {
		t.Errorf("trees differ:\n%s", strings.Join(d, "\n"))
	}
}

// logBuffer is a slog.Logger writing text records into a buffer.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// setTimes gives every file under root a distinct mtime with nanoseconds,
// deepest first so that directory times stick.
func setTimes(t *testing.T, root string) {
	t.Helper()
	var paths []string
	if err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortStableFunc(paths, func(a, b string) int {
		return strings.Count(b, "/") - strings.Count(a, "/")
	})
	for i, p := range paths {
		ts := unix.Timespec{Sec: 1600000000 + int64(i)*3600, Nsec: 123456789 - int64(i)}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("set times of %s: %v", p, err)
		}
	}
}
