package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/machinelock"
	"github.com/berth-dev/berth/internal/scratch"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestKeyFlagsAModeIgnores: a key or keyring given with a verification
// mode that checks no signature is an error, not silently ignored.
func TestKeyFlagsAModeIgnores(t *testing.T) {
	root := filepath.Join(t.TempDir(), "machines")
	key := filepath.Join(t.TempDir(), "k.pub")
	os.WriteFile(key, []byte("x"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pull-tar", "--verify=checksum", "--key", key, "http://127.0.0.1:1/a.tar"}, "--key has no effect with --verify=checksum"},
		{[]string{"pull-tar", "--verify=no", "--keyring", key, "http://127.0.0.1:1/a.tar"}, "--keyring has no effect with --verify=no"},
		{[]string{"pull-raw", "--verify=" + strings.Repeat("a", 64), "--keyring", key, "http://127.0.0.1:1/a.raw"}, "--keyring has no effect"},
		{[]string{"pull-oci", "--verify=no", "--key", key, "127.0.0.1:1/a/b"}, "--key has no effect with --verify=no"},
	} {
		r := berth(t, nil, append([]string{"--image-root", root}, tc.args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("berth %s: exit %d, stderr %q; want exit 2 mentioning %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
}

// TestReservedNamesCLI: names an image may not take are usage errors,
// whether given or derived from the URL.
func TestReservedNamesCLI(t *testing.T) {
	root := filepath.Join(t.TempDir(), "machines")
	for _, args := range [][]string{
		{"pull-tar", "--verify=no", "http://127.0.0.1:1/.berth-cache.tar.xz"},
		{"pull-tar", "--verify=no", "http://127.0.0.1:1/a.tar", ".berth-cache"},
		{"pull-tar", "--verify=no", "http://127.0.0.1:1/a.tar", "a.nspawn"},
		{"pull-raw", "--verify=no", "http://127.0.0.1:1/a.raw", "b.raw"},
		{"import-tar", "-", imageroot.CacheDirName},
		{"pull-tar", "--verify=no", "http://127.0.0.1:1/a.tar", strings.Repeat("x", 250)},
	} {
		r := berth(t, nil, append([]string{"--image-root", root}, args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "image name") {
			t.Errorf("berth %.80s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

// TestCleanReapsOnlyDeadJobs: berth clean removes the work of a job that
// was killed outright and the download cache, never the work of a job that
// is still running.
func TestCleanReapsOnlyDeadJobs(t *testing.T) {
	testenv.RequireRoot(t)
	tree := smallTree(t)
	tarball := berth(t, nil, "export-tar", tree+"/", "-").stdout
	root := t.TempDir()
	// Two imports stall on their standard input; one is killed.
	start := func(name string) func() {
		cmd := berthProcess("--image-root", root, "--no-progress", "import-tar", "-", name)
		pw, _ := cmd.StdinPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Write([]byte(tarball[:len(tarball)/2]))
		return func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait(); pw.Close() }
	}
	work := func() []string {
		var out []string
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			if scratch.IsName(e.Name()) {
				out = append(out, e.Name())
			}
		}
		return out
	}
	wait := func(n int) []string {
		deadline := time.Now().Add(10 * time.Second)
		for len(work()) < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		return work()
	}
	killAlive := start("alive")
	defer killAlive()
	alive := wait(1)
	killDead := start("dead")
	if got := wait(2); len(got) != 2 {
		t.Fatalf("work directories: %v", got)
	}
	killDead()
	cache := filepath.Join(root, imageroot.CacheDirName)
	os.MkdirAll(cache, 0o700)
	os.WriteFile(filepath.Join(cache, "sha256-"+strings.Repeat("0", 64)), []byte("x"), 0o444)

	mustBerth(t, "--image-root", root, "clean")
	left := work()
	if len(left) != 1 || left[0] != alive[0] {
		t.Fatalf("after clean: %v (the running job's is %v)", left, alive)
	}
	if _, err := os.Lstat(cache); !os.IsNotExist(err) {
		t.Fatal("clean kept the download cache")
	}
	killAlive()
	// Any job that writes into the image root reaps as well.
	mustBerth(t, "--image-root", root, "import-fs", tree, "y")
	if left := work(); len(left) != 0 {
		t.Fatalf("the next import left %v", left)
	}
}

// TestRemoveRunningMachine: remove and --force refuse an image that a
// machine (real systemd-nspawn) runs from, naming it and how to stop it.
func TestRemoveRunningMachine(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	dir := filepath.Join(root, "m")
	busyboxTree(t, dir)
	tree := smallTree(t)
	nspawnMachine(t, "-D", dir, "/bin/sleep", "60")
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, running, err := machinelock.Shared(dir)
		l.Release()
		if err == nil && running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nspawn did not lock the image: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		r := berth(t, nil, "--image-root", root, "remove", "m")
		if r.code == 1 && strings.Contains(r.stderr, "in use") {
			if !strings.Contains(r.stderr, "machinectl stop m") {
				t.Errorf("remove does not say how to stop the machine: %s", r.stderr)
			}
			break
		}
		if r.code == 0 {
			t.Fatal("removed the image of a running machine")
		}
		if time.Now().After(deadline) {
			t.Fatalf("remove of a running machine: exit %d %s", r.code, r.stderr)
		}
		time.Sleep(100 * time.Millisecond) // nspawn is still starting
	}
	r := berth(t, nil, "--image-root", root, "--force", "import-fs", tree, "m")
	if r.code != 1 || !strings.Contains(r.stderr, "in use") {
		t.Fatalf("--force over a running machine: exit %d %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "bin", "busybox")); err != nil {
		t.Fatal("the running machine's tree was changed")
	}
	for _, n := range strings.Fields(listing(t, root)) {
		if scratch.IsName(n) {
			t.Errorf("refused replace left %s", n)
		}
	}
}
