package scratch

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestMain lets the test binary play a job that creates scratch items and
// then waits to be killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("SCRATCH_TEST_OWNER"); dir != "" {
		d, err := Dir(dir, "work")
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		os.WriteFile(filepath.Join(d.Path, "inside"), []byte("x"), 0o644)
		f, it, err := File(dir, "out", 0o644)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		f.WriteString("partial")
		f.Close() // closing the data file keeps the item owned
		fmt.Println("ready", filepath.Base(d.Path), filepath.Base(it.Path))
		time.Sleep(time.Hour)
	}
	os.Exit(m.Run())
}

// startOwner runs a process that owns two scratch items in dir.
func startOwner(t *testing.T, dir string) (*exec.Cmd, []string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SCRATCH_TEST_OWNER="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("owner: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ready" {
		t.Fatalf("owner said %q", line)
	}
	return cmd, f[1:]
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func TestReapOnlyDeadOwners(t *testing.T) {
	dir := t.TempDir()
	cmd, items := startOwner(t, dir)
	for _, n := range items {
		if !IsName(n) {
			t.Fatalf("%s is not a scratch name", n)
		}
	}
	// The owner lives: however often Reap runs, its items stay.
	for range 3 {
		got, err := Reap(context.Background(), dir, nil)
		if err != nil || len(got) != 0 {
			t.Fatalf("Reap with a living owner removed %v (%v)", got, err)
		}
	}
	if n := names(t, dir); len(n) != 2 {
		t.Fatalf("items of a living job gone: %v", n)
	}
	// kill -9: the kernel drops its locks, the next Reap removes both.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	got, err := Reap(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	sort.Strings(items)
	if strings.Join(got, " ") != strings.Join(items, " ") {
		t.Fatalf("reaped %v, want %v", got, items)
	}
	if n := names(t, dir); len(n) != 0 {
		t.Fatalf("left after reaping: %v", n)
	}
}

func TestReapLeavesWhatIsNotOurs(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	os.MkdirAll(filepath.Join(victim, "keep"), 0o755)
	// A scratch-named symlink must not lead Reap anywhere.
	os.Symlink(victim, filepath.Join(dir, Prefix+"link"))
	// Another user's item, systemd's lock file, a FIFO, plain files.
	other := filepath.Join(dir, Prefix+"other")
	os.Mkdir(other, 0o700)
	os.Chown(other, 1234, 1234)
	os.WriteFile(filepath.Join(dir, ".#m.lck"), nil, 0o600)
	syscall.Mkfifo(filepath.Join(dir, Prefix+"fifo"), 0o600)
	os.WriteFile(filepath.Join(dir, "image"), nil, 0o644)
	// One real piece of debris: a dead job's directory (nobody locks it).
	os.MkdirAll(filepath.Join(dir, Prefix+"work-dead", "sub"), 0o700)

	before := names(t, dir)
	got, err := Reap(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != Prefix+"work-dead" {
		t.Fatalf("reaped %v", got)
	}
	after := names(t, dir)
	if len(after) != len(before)-1 {
		t.Fatalf("before %v after %v", before, after)
	}
	if _, err := os.Stat(filepath.Join(victim, "keep")); err != nil {
		t.Fatal("Reap followed a symlink")
	}
}

func TestItemLifecycle(t *testing.T) {
	dir := t.TempDir()
	d, err := Dir(dir, "work")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(d.Path); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("work dir mode: %v %v", st, err)
	}
	f, it, err := File(dir, "out", 0o640)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Released but still there: now it is debris.
	it.Release()
	got, _ := Reap(context.Background(), dir, nil)
	if len(got) != 1 || got[0] != filepath.Base(it.Path) {
		t.Fatalf("released item not reaped: %v", got)
	}
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	if n := names(t, dir); len(n) != 0 {
		t.Fatalf("left: %v", n)
	}
}

func TestRemoveTreeImmutable(t *testing.T) {
	testenv.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(dir, "a"), 0o755)
	os.WriteFile(filepath.Join(dir, "a", "f"), []byte("x"), 0o644)
	if err := SetImmutable(filepath.Join(dir, "a", "f"), true); err != nil {
		testenv.Skip(t, "no immutable flag here: %v", err)
	}
	SetImmutable(dir, true)
	if err := RemoveTree(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatal("tree left")
	}
}
