package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/build/buildtest"
	"github.com/berth-dev/berth/formats/raw"
	"github.com/berth-dev/berth/internal/testenv"
)

// checkRawImage asserts the image has one root partition typed
// root-x86-64 for the DPS, read-only for squashfs, and that
// systemd-dissect agrees and finds a bootable container image in it.
func checkRawImage(t *testing.T, img string, readOnly bool) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := raw.Inspect(f)
	f.Close()
	if err != nil {
		t.Fatalf("%s: %v", img, err)
	}
	if len(tab.Partitions) != 1 {
		t.Fatalf("%s: %d partitions, want 1", img, len(tab.Partitions))
	}
	p := tab.Partitions[0]
	if d, _ := raw.Designator(p.Type); d != "root-x86-64" || !strings.EqualFold(p.Type.String(), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709") {
		t.Errorf("%s: partition type %s (%s), want root-x86-64", img, p.Type, d)
	}
	if got := p.Attributes&raw.AttrReadOnly != 0; got != readOnly {
		t.Errorf("%s: read-only attribute %v, want %v", img, got, readOnly)
	}
	dissect := testenv.RequireTool(t, "systemd-dissect")
	out, err := exec.Command(dissect, "--no-pager", img).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-dissect %s: %v\n%s", img, err, out)
	}
	if !strings.Contains(string(out), "root-x86-64") || !strings.Contains(string(out), "✓ bootable system for container") {
		t.Errorf("systemd-dissect does not see a bootable root-x86-64 image:\n%s", out)
	}
}

// nspawnUdevMissing is what systemd-nspawn -i says where udevd is not
// reachable (containers such as this test sandbox).
const nspawnUdevMissing = "requires access to the host's /run/ hierarchy"

// bootRaw boots the image with systemd-nspawn -i IMAGE -b and wants the
// test system's marker. Where nspawn cannot use --image for want of udev,
// it mounts the image with systemd-dissect (same partition discovery by
// type, no udev needed) and boots the mounted tree with -D, and says so.
func bootRaw(t *testing.T, img string, readOnly bool) {
	t.Helper()
	nspawn := testenv.RequireTool(t, "systemd-nspawn")
	if out, err := exec.Command("losetup", "-f").CombinedOutput(); err != nil {
		testenv.Skip(t, "no free loop device (systemd-nspawn -i needs one): %v %s", err, out)
	}
	nsp := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, nspawn, append([]string{"--register=no", "--keep-unit", "-q"}, args...)...).CombinedOutput()
		return string(out)
	}
	// A read-only root lacks the mount points nspawn adds (/tmp, /run):
	// read-only images boot with an overlay.
	volatile := []string{}
	if readOnly {
		volatile = []string{"--volatile=overlay"}
	}
	out := nsp(append(volatile, "-i", img, "-b")...)
	if strings.Contains(out, buildtest.Marker) {
		return
	}
	if !strings.Contains(out, nspawnUdevMissing) {
		t.Fatalf("systemd-nspawn -i %s -b did not boot the test system:\n%s", img, out)
	}
	t.Logf("systemd-nspawn -i is unavailable here (%s); booting through systemd-dissect --mount", strings.TrimSpace(out))
	dissect := testenv.RequireTool(t, "systemd-dissect")
	mnt := filepath.Join(t.TempDir(), "mnt")
	args := []string{"--mount", "--mkdir"}
	if readOnly {
		args = append(args, "--read-only")
	}
	if out, err := exec.Command(dissect, append(args, img, mnt)...).CombinedOutput(); err != nil {
		t.Fatalf("systemd-dissect --mount %s: %v\n%s", img, err, out)
	}
	defer func() {
		if out, err := exec.Command(dissect, "--umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("systemd-dissect --umount: %v %s", err, out)
		}
	}()
	if out := nsp(append(volatile, "-D", mnt, "-b")...); !strings.Contains(out, buildtest.Marker) {
		t.Fatalf("systemd-nspawn -D (dissected %s) -b did not boot the test system:\n%s", img, out)
	}
}

// The raw images of the test system, ext4 and squashfs, are GPT disks
// with a DPS-typed root partition that systemd-dissect recognises and
// systemd-nspawn boots; ext4 images are sparse; a compressed image is the
// plain image compressed.
func TestBuildRawBoots(t *testing.T) {
	buildtest.Require(t)
	testenv.RequireTool(t, "mkfs.ext4")
	testenv.RequireTool(t, "sqfstar")
	w := t.TempDir()
	sums := map[string]string{} // before booting, which writes to ext4
	for _, c := range []struct {
		name     string
		args     []string
		readOnly bool
	}{
		{"ext4.raw", nil, false},
		{"squashfs.raw", []string{"--fs", "squashfs"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(w, c.name)
			mustBerth(t, buildArgs(t, "test", append([]string{"-o", img}, c.args...)...)...)
			checkRawImage(t, img, c.readOnly)
			sums[c.name] = sha256File(t, img)
			if !c.readOnly {
				var st unix.Stat_t
				if err := unix.Stat(img, &st); err != nil {
					t.Fatal(err)
				}
				if alloc := st.Blocks * 512; alloc*2 > st.Size {
					t.Errorf("%s is not sparse: %d of %d bytes allocated", c.name, alloc, st.Size)
				}
			}
			bootRaw(t, img, c.readOnly)
		})
	}
	// .raw.zst is the .raw image, compressed.
	zst := filepath.Join(w, "ext4.raw.zst")
	mustBerth(t, buildArgs(t, "test", "-o", zst)...)
	plain := filepath.Join(w, "from-zst.raw")
	sh(t, "zstd -q -d -o "+plain+" "+zst)
	if a, b := sha256File(t, plain), sums["ext4.raw"]; a != b {
		t.Errorf("ext4.raw.zst decompresses to %s, ext4.raw is %s", a, b)
	}
	// Nothing left besides the outputs: no staging tree, no temporary.
	if got := listing(t, w); got != "ext4.raw ext4.raw.zst from-zst.raw squashfs.raw" {
		t.Errorf("output directory holds %q", got)
	}
}
