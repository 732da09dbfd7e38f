package export

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// testCgroup makes a fresh child cgroup under the hierarchy mounted at mnt
// and removes it at the end of the test.
func testCgroup(t *testing.T, mnt string) (dir, rel string) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	rel = "/berth-test-" + hex.EncodeToString(b[:])
	dir = filepath.Join(mnt, rel)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("cannot create a test cgroup: %v", err)
	}
	t.Cleanup(func() {
		for i := 0; i < 50; i++ {
			if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("could not remove test cgroup %s", dir)
	})
	return dir, rel
}

// counter starts a shell that counts into a file as fast as it can, inside
// the given cgroups (their cgroup.procs files), and returns its pid and file.
func counter(t *testing.T, procs ...string) (int, string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "n")
	script := ""
	for _, p := range procs {
		script += "echo $$ > " + p + "; "
	}
	script += "i=0; while :; do i=$((i+1)); echo $i > " + f + ".t; mv " + f + ".t " + f + "; done"
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		time.Sleep(20 * time.Millisecond) // let a last mv of the group die
	})
	// Wait until it runs in its cgroups and counts.
	deadline := time.Now().Add(5 * time.Second)
	for readCount(f) < 10 {
		if time.Now().After(deadline) {
			t.Fatal("counter did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return pid, f
}

func readCount(f string) int {
	b, _ := os.ReadFile(f)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// advancing reports whether the counter moves within d.
func advancing(f string, d time.Duration) bool {
	a := readCount(f)
	time.Sleep(d)
	return readCount(f) > a
}

func TestFreezer(t *testing.T) {
	testenv.RequireRoot(t)
	v2m, v1m, err := cgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	if v2m == "" && v1m == "" {
		testenv.Skip(t, "no cgroup hierarchy mounted")
	}
	run := func(t *testing.T, wantV2 bool, procs ...string) {
		pid, f := counter(t, procs...)
		fr, err := freezerFor(pid)
		if err != nil {
			t.Fatal(err)
		}
		if fr.v2 != wantV2 {
			t.Fatalf("picked %s, want v2=%v", fr, wantV2)
		}
		thaw, err := fr.freeze(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if advancing(f, 200*time.Millisecond) {
			_ = thaw()
			t.Fatal("counter advances while frozen")
		}
		if err := thaw(); err != nil {
			t.Fatal(err)
		}
		if !advancing(f, 500*time.Millisecond) {
			t.Fatal("counter stopped after thaw")
		}
		if ok, err := fr.frozen(); err != nil || ok {
			t.Fatalf("still frozen after thaw: %v", err)
		}

		// A cgroup somebody else froze stays frozen after our export.
		// The v1 freezer can stay FREEZING until FROZEN is written
		// again (freeze does the same); never wait without a bound.
		deadline := time.Now().Add(freezeTimeout)
		for ok := false; !ok; ok, _ = fr.frozen() {
			if time.Now().After(deadline) {
				_ = fr.set(false)
				t.Fatalf("%s not frozen after %v", fr, freezeTimeout)
			}
			if err := fr.set(true); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		thaw, err = fr.freeze(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_ = thaw()
		if ok, _ := fr.frozen(); !ok {
			t.Fatal("thaw undid a freeze that was not ours")
		}
		_ = fr.set(false)
	}
	if v2m != "" {
		t.Run("v2", func(t *testing.T) {
			dir, _ := testCgroup(t, v2m)
			run(t, true, filepath.Join(dir, "cgroup.procs"))
		})
	}
	if v1m != "" {
		t.Run("v1", func(t *testing.T) {
			dir, _ := testCgroup(t, v1m)
			run(t, false, filepath.Join(dir, "cgroup.procs"))
		})
	} else {
		t.Log("no v1 freezer hierarchy on this host: only cgroup v2 tested")
	}

	// berth's own cgroup (the root here, or whatever holds the test) is
	// never frozen.
	if fr, err := freezerFor(os.Getpid()); err == nil {
		t.Fatalf("would freeze berth's own cgroup %s", fr)
	}
}

func TestNspawnCommandLine(t *testing.T) {
	d := t.TempDir()
	st, err := os.Stat(d)
	if err != nil {
		t.Fatal(err)
	}
	parent, base := filepath.Split(d)
	for _, c := range []struct {
		argv []string
		want bool
	}{
		{[]string{"systemd-nspawn", "-D", d, "/sbin/init"}, true},
		{[]string{"systemd-nspawn", "-q", "-U", "--directory=" + d}, true},
		{[]string{"systemd-nspawn", "-D" + d}, true},
		{[]string{"systemd-nspawn", "--directory", base}, false}, // relative, wrong cwd
		{[]string{"systemd-nspawn", "-D", "/etc"}, false},
		{[]string{"systemd-nspawn", "/bin/sh", "-D", d}, false}, // after the command: the container's argv
		{[]string{"systemd-nspawn", "-M", "x"}, false},
	} {
		if got := nspawnRuns(c.argv, "/", st); got != c.want {
			t.Errorf("%q: %v, want %v", c.argv, got, c.want)
		}
	}
	if !nspawnRuns([]string{"systemd-nspawn", "--directory", base}, parent, st) {
		t.Error("relative -D not resolved against the cwd")
	}
}

func TestMachinedState(t *testing.T) {
	state := t.TempDir()
	tree := t.TempDir()
	st, _ := os.Stat(tree)
	os.WriteFile(filepath.Join(state, "other"), []byte("ROOT=/nonexistent\nLEADER=1\n"), 0o644)
	if _, err := machinedLeaderIn(state, st); err == nil {
		t.Fatal("found a machine that is not registered")
	}
	os.WriteFile(filepath.Join(state, "m"), []byte("# This is private data. Do not parse.\nNAME=m\nROOT="+tree+"\nLEADER="+strconv.Itoa(os.Getpid())+"\nCLASS=container\n"), 0o644)
	os.Symlink("m", filepath.Join(state, "unit:systemd-nspawn@m.service"))
	if pid, err := machinedLeaderIn(state, st); err != nil || pid != os.Getpid() {
		t.Fatalf("leader %d %v", pid, err)
	}
}
