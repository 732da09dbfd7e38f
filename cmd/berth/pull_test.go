package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/testenv"
)

// serveDir serves dir on 127.0.0.1 and records request paths and agents.
func serveDir(t *testing.T, dir string) (*httptest.Server, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	fs := http.FileServer(http.Dir(dir))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path+" "+r.UserAgent())
		mu.Unlock()
		fs.ServeHTTP(w, r)
	}))
	s.Listener.Close()
	s.Listener = l
	s.Start()
	t.Cleanup(s.Close)
	return s, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestPullTarCLI(t *testing.T) {
	testenv.RequireRoot(t)
	tree := smallTree(t)
	srv := t.TempDir()
	sh(t, `tar --xattrs --numeric-owner -C `+tree+` -c . | xz -c > `+srv+`/web-1.tar.xz`)
	img, _ := os.ReadFile(srv + "/web-1.tar.xz")
	os.WriteFile(srv+"/SHA256SUMS", []byte(hexSum(img)+" *web-1.tar.xz\n"), 0o644)
	s, seen := serveDir(t, srv)
	root := t.TempDir()

	// Default --verify=signature without any keyring: a clear error, nothing left.
	t.Setenv("SYSTEMD_OPENPGP_KEYRING", filepath.Join(root, "no-such-ring"))
	r := berth(t, nil, "--image-root", root, "pull-tar", s.URL+"/web-1.tar.xz")
	if r.code != 1 || !strings.Contains(r.stderr, "--keyring") {
		t.Fatalf("signature pull without a keyring: exit %d: %s", r.code, r.stderr)
	}
	if l := listing(t, root); l != "" {
		t.Fatalf("failed pull left %q", l)
	}
	// Bad --verify is a usage error.
	if r := berth(t, nil, "--image-root", root, "pull-tar", "--verify=abcd", s.URL+"/web-1.tar.xz"); r.code != 2 {
		t.Fatalf("--verify=abcd: exit %d: %s", r.code, r.stderr)
	}
	if r := berth(t, nil, "--image-root", root, "pull-tar", "ftp://x/y.tar"); r.code != 2 {
		t.Fatalf("ftp URL: exit %d: %s", r.code, r.stderr)
	}

	// checksum mode with JSON logs: one event per stage; name from the URL.
	r = mustBerth(t, "--image-root", root, "--log-format=json", "pull-tar", "--verify=checksum", s.URL+"/web-1.tar.xz")
	var stages []string
	for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if st, ok := ev["stage"].(string); ok {
			stages = append(stages, st)
		}
	}
	if strings.Join(stages, ",") != "download,verify,install" {
		t.Errorf("stages = %v", stages)
	}
	sameTree(t, "pulled tree", snap(t, tree), snap(t, filepath.Join(root, "web-1")))
	for _, q := range seen() {
		if !strings.HasSuffix(q, " berth/"+version) {
			t.Errorf("request without berth's User-Agent: %q", q)
		}
	}

	// Existing name: refused without --force, replaced with it.
	if r := berth(t, nil, "--image-root", root, "pull-tar", "--verify=checksum", s.URL+"/web-1.tar.xz"); r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("second pull: exit %d: %s", r.code, r.stderr)
	}
	mustBerth(t, "--image-root", root, "--force", "--read-only", "pull-tar", "--verify="+strings.ToUpper(hexSum(img)), s.URL+"/web-1.tar.xz")

	// list-images shows it as read-only; remove works on read-only images.
	r = mustBerth(t, "--image-root", root, "list-images")
	if !strings.Contains(r.stdout, "NAME") || !regexpLine(r.stdout, "web-1", "directory", "*", "yes") {
		t.Fatalf("list-images:\n%s", r.stdout)
	}
	mustBerth(t, "--image-root", root, "remove", "web-1")
	if l := listing(t, root); l != "" {
		t.Fatalf("after remove: %q", l)
	}
	if r := berth(t, nil, "--image-root", root, "remove", "web-1"); r.code != 1 {
		t.Fatalf("remove of a missing image: exit %d", r.code)
	}
}

func regexpLine(out string, fields ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= len(fields) {
			ok := true
			for i, want := range fields {
				if want != "*" && f[i] != want {
					ok = false
				}
			}
			if ok {
				return true
			}
		}
	}
	return false
}

func TestImportRawFSCLI(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "xz")
	root := t.TempDir()
	src := t.TempDir()
	sh(t, `cd `+src+` && truncate -s 32M disk.raw && printf 'boot' | dd of=disk.raw bs=1 seek=1048576 conv=notrunc 2>/dev/null && xz -k -c disk.raw > disk.raw.xz`)
	mustBerth(t, "--image-root", root, "import-raw", filepath.Join(src, "disk.raw.xz"))
	want, _ := os.ReadFile(filepath.Join(src, "disk.raw"))
	got, err := os.ReadFile(filepath.Join(root, "disk.raw"))
	if err != nil || string(got) != string(want) {
		t.Fatalf("import-raw: content differs (%v)", err)
	}
	f, _ := os.Open(filepath.Join(src, "disk.raw.xz"))
	defer f.Close()
	if r := berth(t, f, "--image-root", root, "import-raw", "-"); r.code != 2 {
		t.Fatalf("import-raw - without NAME: exit %d", r.code)
	}
	tree := smallTree(t)
	mustBerth(t, "--image-root", root, "import-fs", tree, "copy")
	sameTree(t, "import-fs", snap(t, tree), snap(t, filepath.Join(root, "copy")))
	r := mustBerth(t, "--image-root", root, "list-images")
	if !regexpLine(r.stdout, "copy", "directory", "*", "no") || !regexpLine(r.stdout, "disk", "raw", "4.0K", "no") {
		t.Fatalf("list-images:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, ".#") {
		t.Fatalf("list-images shows hidden entries:\n%s", r.stdout)
	}
	os.WriteFile(filepath.Join(root, "copy.nspawn"), []byte("[Exec]\n"), 0o644)
	mustBerth(t, "--image-root", root, "remove", "copy", "disk")
	if l := listing(t, root); l != "" {
		t.Fatalf("after remove: %q", l)
	}
}

// TestLockSerialises checks that a second job on a busy name waits for
// the first instead of racing it.
func TestLockSerialises(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	tree := smallTree(t)
	mustBerth(t, "--image-root", root, "import-fs", tree, "busy")
	// Hold the lock through the package API as a running job would.
	rt, err := imageroot.Open(root, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := rt.Lock(context.Background(), "busy")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	r := berthCtx(t, ctx, nil, "--image-root", root, "remove", "busy")
	unlock()
	if r.code == 0 || !strings.Contains(r.stderr, "busy") {
		t.Fatalf("remove of a locked image: exit %d: %s", r.code, r.stderr)
	}
	mustBerth(t, "--image-root", root, "remove", "busy")
}

// TestSigtermLeavesNothing runs the real main (re-executing the test
// binary), sends SIGTERM in the middle of a download and checks that berth
// exits promptly and leaves nothing in the image root.
func TestSigtermLeavesNothing(t *testing.T) {
	testenv.RequireRoot(t)
	tree := smallTree(t)
	srv := t.TempDir()
	sh(t, `tar --numeric-owner -C `+tree+` -c . > `+srv+`/slow.tar`)
	img, _ := os.ReadFile(srv + "/slow.tar")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(img)))
		w.Write(img[:len(img)/2])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	s.Listener.Close()
	s.Listener = l
	s.Start()
	defer s.Close()
	root := t.TempDir()
	cmd := berthProcess("--image-root", root, "--no-progress", "pull-tar", "--verify=no", s.URL+"/slow.tar")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for listing(t, root) == "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if listing(t, root) == "" {
		cmd.Process.Kill()
		t.Fatalf("no work directory appeared: %s", stderr.String())
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("berth took %s to stop after SIGTERM", el)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1 after SIGTERM, got %v: %s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr does not say interrupted: %s", stderr.String())
	}
	if l := listing(t, root); l != "" {
		t.Fatalf("SIGTERM left %q in the image root", l)
	}
}
