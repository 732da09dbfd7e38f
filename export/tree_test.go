package export

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/internal/machinelock"
	"github.com/berth-dev/berth/internal/scratch"
	"github.com/berth-dev/berth/internal/testenv"
)

// holdNspawnLock takes the lock systemd-nspawn holds on a tree it runs, as
// nspawn does (exclusive BSD lock on .#NAME.lck next to it).
func holdNspawnLock(t *testing.T, dir string) {
	t.Helper()
	paths, err := machinelock.Paths(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(paths[0], os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); os.Remove(paths[0]) })
}

func tarNames(t *testing.T, b []byte) map[string]string {
	t.Helper()
	src := formats.NewTarSource(bytes.NewReader(b))
	m := map[string]string{}
	for {
		e, err := src.Next()
		if err == io.EOF {
			return m
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Body != nil {
			body, _ := io.ReadAll(e.Body)
			m[e.Header.Name] = string(body)
		} else {
			m[e.Header.Name] = ""
		}
	}
}

func TestRunningWithoutFreezer(t *testing.T) {
	testenv.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "m")
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "etc/hostname"), []byte("m\n"), 0o644)
	ctx := context.Background()

	// Stopped: it is read as is, and while it is, nspawn could not lock it.
	tr, err := OpenTree(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Method != MethodStopped {
		t.Fatalf("method %s", tr.Method)
	}
	paths, _ := machinelock.Paths(dir)
	f, err := os.Open(paths[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("nspawn could lock the tree during the export: %v", err)
	}
	tr.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("lock not released: %v", err)
	}
	f.Close()

	// "Running" (lock held) with no nspawn process to freeze: refused,
	// unless --live.
	holdNspawnLock(t, dir)
	var buf bytes.Buffer
	err = Tar(ctx, dir, &buf, TarOptions{})
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "--live") {
		t.Fatalf("running machine not refused: %v", err)
	}
	var logb bytes.Buffer
	if err := Tar(ctx, dir, &buf, TarOptions{Live: true, Log: slog.New(slog.NewTextHandler(&logb, nil))}); err != nil {
		t.Fatal(err)
	}
	if tarNames(t, buf.Bytes())["etc/hostname"] != "m\n" {
		t.Fatal("live export lacks etc/hostname")
	}
	if !strings.Contains(logb.String(), "inconsistent") {
		t.Errorf("no warning for a live read: %s", logb.String())
	}
}

// A running machine on a btrfs subvolume is exported from a read-only
// snapshot that is gone afterwards, also after an error.
func TestBtrfsSnapshot(t *testing.T) {
	testenv.RequireRoot(t)
	mkfs := testenv.RequireTool(t, "mkfs.btrfs")
	w := t.TempDir()
	img := filepath.Join(w, "fs.img")
	mnt := filepath.Join(w, "mnt")
	os.Mkdir(mnt, 0o755)
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 128<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		testenv.Skip(t, "cannot loop-mount a btrfs image here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	dir := filepath.Join(mnt, "m")
	if out, err := exec.Command("btrfs", "subvolume", "create", dir).CombinedOutput(); err != nil {
		t.Fatalf("btrfs subvolume create: %v %s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "a"), []byte("A"), 0o644)
	if !isSubvolume(dir) || isSubvolume(mnt+"/..") {
		t.Fatal("isSubvolume is wrong")
	}
	holdNspawnLock(t, dir)

	tr, err := OpenTree(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Method != MethodSnapshot || tr.Dir == dir {
		t.Fatalf("method %s dir %s", tr.Method, tr.Dir)
	}
	if err := os.WriteFile(filepath.Join(tr.Dir, "b"), nil, 0o644); err == nil {
		t.Error("snapshot is writable")
	}
	// The machine goes on writing; the snapshot does not change.
	os.WriteFile(filepath.Join(dir, "a"), []byte("changed"), 0o644)
	var buf bytes.Buffer
	if err := WriteTar(context.Background(), tr, &buf, TarOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := tarNames(t, buf.Bytes())["a"]; got != "A" {
		t.Errorf("snapshot content %q", got)
	}
	snap := tr.Dir
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(snap); !os.IsNotExist(err) {
		t.Fatalf("snapshot left behind: %v", err)
	}

	// Interrupted: the snapshot goes too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Tar(ctx, dir, io.Discard, TarOptions{}); err == nil {
		t.Fatal("cancelled export succeeded")
	}
	if ents, _ := os.ReadDir(mnt); len(ents) != 2 { // m and its .#m.lck
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("left in the image root: %v", names)
	}

	// A snapshot left by a killed export (nobody holds its lock) is
	// removed by the next job, read-only as it is.
	dead := filepath.Join(mnt, scratch.Prefix+"snapshot-dead")
	if out, err := exec.Command("btrfs", "subvolume", "snapshot", "-r", dir, dead).CombinedOutput(); err != nil {
		t.Fatalf("btrfs subvolume snapshot: %v %s", err, out)
	}
	if got, err := scratch.Reap(context.Background(), mnt, nil); err != nil || len(got) != 1 {
		t.Fatalf("reaping a dead export's snapshot: %v %v", got, err)
	}
	if _, err := os.Lstat(dead); !os.IsNotExist(err) {
		t.Fatalf("dead snapshot left: %v", err)
	}
}
