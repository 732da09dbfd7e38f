package imageroot

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/machinelock"
	"github.com/berth-dev/berth/internal/testenv"
)

func TestValidName(t *testing.T) {
	for _, ok := range []string{"foo", "foo_bar", "Fedora-Base-30-1.2.x86_64", strings.Repeat("a", 65), "a.b", "ü"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q) = %v", ok, err)
		}
	}
	if err := ValidName(strings.Repeat("a", MaxNameLen)); err != nil {
		t.Errorf("longest name refused: %v", err)
	}
	for _, bad := range []string{"", ".", "..", ".#x", "a/b", "a\nb", "a\x7fb", "\xff", strings.Repeat("a", 256),
		strings.Repeat("a", MaxNameLen+1), // NAME.nspawn would not fit
		".berth-cache", CacheDirName, ".hidden", ".#berth-work-0123456789abcdef",
		"web.raw", "web.nspawn"} {
		if err := ValidName(bad); err == nil {
			t.Errorf("ValidName(%q) accepted", bad)
		}
	}
}

func TestNames(t *testing.T) {
	tar := map[string]string{
		"http://x/y/fedora.tar.xz": "fedora", "a.tar": "a", "a.tgz": "a", "a.tar.zst": "a",
		"a.tar.bz2": "a", "noext": "noext", ".tar": ".tar",
	}
	for in, want := range tar {
		if got := TarName(in); got != want {
			t.Errorf("TarName(%q) = %q, want %q", in, got, want)
		}
	}
	raw := map[string]string{"disk.raw.xz": "disk", "img.qcow2.gz": "img", "a.img": "a", "a.raw.zst": "a", "x": "x"}
	for in, want := range raw {
		if got := RawName(in); got != want {
			t.Errorf("RawName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"foo", ".#x", "a/b", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName(s) == nil {
			// A valid name is one path component inside the root.
			if filepath.Base(s) != s || strings.HasPrefix(s, ".") || len(s+".nspawn") > 255 ||
				strings.HasSuffix(s, ".raw") || strings.HasSuffix(s, ".nspawn") {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}

func TestInstall(t *testing.T) {
	testenv.RequireRoot(t)
	r, err := Open(filepath.Join(t.TempDir(), "machines"), nil)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(marker string) string {
		w, err := r.WorkDir("m")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(filepath.Base(w), ".#berth-") {
			t.Fatalf("work dir %s is not hidden", w)
		}
		os.WriteFile(filepath.Join(w, marker), nil, 0o644)
		return w
	}
	if err := r.Install(mk("one"), "m", InstallOptions{ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	second := mk("two")
	if err := r.Install(second, "m", InstallOptions{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("install over existing: %v", err)
	}
	if err := r.Install(second, "m", InstallOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.Path("m"), "two")); err != nil {
		t.Fatal("--force did not swap in the new tree")
	}
	ents, _ := os.ReadDir(r.Dir)
	if len(ents) != 1 {
		t.Fatalf("image root holds %d entries after replace, want 1", len(ents))
	}
	if err := r.Remove("m"); err != nil {
		t.Fatal(err)
	}
	if r.Exists("m") {
		t.Fatal("Remove left the image")
	}
}

func TestLockExcludes(t *testing.T) {
	r, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := r.Lock(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := r.Lock(ctx, "x"); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("second lock: %v", err)
	}
	other, err := r.Lock(context.Background(), "y")
	if err != nil {
		t.Fatalf("lock on another name blocked: %v", err)
	}
	other()
	unlock()
	again, err := r.Lock(context.Background(), "x")
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	again()
	if ents, _ := os.ReadDir(r.Dir); len(ents) != 0 {
		t.Fatalf("lock files left in the image root: %v", ents)
	}
}

func TestMangleOSTree(t *testing.T) {
	r, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	work, err := r.WorkDir("m")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(work, "rootfs/etc"), 0o755)
	os.WriteFile(filepath.Join(work, "rootfs/etc/os-release"), []byte("ID=x\n"), 0o644)
	got, err := MangleOSTree(work)
	if err != nil {
		t.Fatal(err)
	}
	if !IsOSTree(got) || filepath.Dir(got) != work {
		t.Fatalf("%s is not the OS tree inside the work directory", got)
	}
	// Installing the child takes the wrapper away too.
	if err := r.Install(got, "m", InstallOptions{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Fatal("wrapper directory left behind")
	}
	if !IsOSTree(r.Path("m")) {
		t.Fatal("installed image is not the OS tree")
	}
	// An OS tree, or a wrapper with two children, is left alone.
	again, err := MangleOSTree(r.Path("m"))
	if err != nil || again != r.Path("m") {
		t.Fatalf("OS tree mangled: %s %v", again, err)
	}
	d := t.TempDir()
	two := filepath.Join(d, "two")
	os.MkdirAll(filepath.Join(two, "a/etc"), 0o755)
	os.WriteFile(filepath.Join(two, "a/etc/os-release"), nil, 0o644)
	os.MkdirAll(filepath.Join(two, "b"), 0o755)
	if p, _ := MangleOSTree(two); p != two {
		t.Fatal("tree with two children was flattened")
	}
}

// listRoot names what is in the image root.
func listRoot(t *testing.T, r *Root) []string {
	t.Helper()
	ents, err := os.ReadDir(r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

func TestInstallWithSettingsBothOrNeither(t *testing.T) {
	r, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(marker string) string {
		w, err := r.WorkDir("m")
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(w, marker), nil, 0o644)
		return w
	}
	w := mk("one")
	if err := r.Install(w, "m", InstallOptions{Settings: []byte("[Exec]\n")}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(r.Path("m.nspawn")); err != nil || string(b) != "[Exec]\n" {
		t.Fatalf("settings: %q %v", b, err)
	}
	// Without --force an existing settings file is kept (systemd-pull).
	os.WriteFile(r.Path("m.nspawn"), []byte("mine"), 0o644)
	r.Remove("m")
	os.WriteFile(r.Path("m.nspawn"), []byte("mine"), 0o644)
	if err := r.Install(mk("two"), "m", InstallOptions{Settings: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(r.Path("m.nspawn")); string(b) != "mine" {
		t.Fatalf("existing settings replaced without force: %q", b)
	}
	// The settings file cannot be installed (a directory is in the way):
	// the new image must not stay installed, the old one must stay.
	os.Remove(r.Path("m.nspawn"))
	os.MkdirAll(r.Path("m.nspawn/blocker"), 0o755)
	three := mk("three")
	err = r.Install(three, "m", InstallOptions{Force: true, Settings: []byte("x")})
	if err == nil {
		t.Fatal("install with an uninstallable settings file succeeded")
	}
	if _, err := os.Stat(filepath.Join(r.Path("m"), "two")); err != nil {
		t.Fatalf("old image not in place after a failed replace: %v", err)
	}
	if _, err := os.Stat(filepath.Join(three, "three")); err != nil {
		t.Fatalf("new tree not given back to its work path: %v", err)
	}
	r.Discard(three)
	os.RemoveAll(r.Path("m.nspawn"))
	r.Remove("m")
	os.MkdirAll(r.Path("n.nspawn/blocker"), 0o755)
	four := mk("four")
	if err := r.Install(four, "n", InstallOptions{Force: true, Settings: []byte("x")}); err == nil {
		t.Fatal("install with an uninstallable settings file succeeded")
	}
	if r.Exists("n") {
		t.Fatal("image visible although its settings file failed")
	}
	r.Discard(four)
	for _, n := range listRoot(t, r) {
		if n != "n.nspawn" {
			t.Errorf("left in the image root: %s", n)
		}
	}
}

// holdOFD takes a write OFD lock on path, as systemd-nspawn 250+ does on
// the image lock files of a machine it runs.
func holdOFD(t *testing.T, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	return func() { f.Close(); os.Remove(path) }
}

func TestRunningImageIsNotRemovedOrReplaced(t *testing.T) {
	testenv.RequireRoot(t)
	r, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := r.WorkDir("m")
	os.WriteFile(filepath.Join(w, "one"), nil, 0o644)
	if err := r.Install(w, "m", InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	paths, err := machinelock.Paths(r.Path("m"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		release := holdOFD(t, p)
		if err := r.Remove("m"); err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), "machinectl stop m") {
			t.Fatalf("remove of a running image (%s): %v", p, err)
		}
		w2, _ := r.WorkDir("m")
		err := r.Install(w2, "m", InstallOptions{Force: true})
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("replace of a running image (%s): %v", p, err)
		}
		r.Discard(w2)
		if _, err := os.Stat(filepath.Join(r.Path("m"), "one")); err != nil {
			t.Fatal("running image changed")
		}
		release()
	}
	// A process whose root is the tree (a container nspawn did not lock).
	testenv.RequireTool(t, "busybox")
	bb, _ := exec.LookPath("busybox")
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(r.Path("m"), "busybox"), data, 0o755)
	cmd := exec.Command("chroot", r.Path("m"), "/busybox", "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := os.Stat(fmt.Sprintf("/proc/%d/root", cmd.Process.Pid))
		if want, _ := os.Stat(r.Path("m")); err == nil && os.SameFile(st, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("chroot did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := r.Remove("m"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("remove of an image a process runs in: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := r.Remove("m"); err != nil {
		t.Fatalf("remove after the machine stopped: %v", err)
	}
	for _, n := range listRoot(t, r) {
		t.Errorf("left in the image root: %s", n)
	}
}
