package raw

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/formats/dirtree"
	"github.com/berth-dev/berth/internal/testenv"
)

const marker = "BERTH-RAW-BOOTED-7f3a"

// bootTree makes a tiny tree systemd-nspawn can boot: a static busybox,
// /sbin/init printing the marker, os-release; plus what an image must
// keep: a hard link, a device node, a security.capability xattr, a long
// symlink, an empty file, a setuid mode.
func bootTree(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	bb := testenv.RequireTool(t, "/bin/busybox")
	dir := filepath.Join(t.TempDir(), "tree")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "sbin", "etc", "lib", "usr/lib", "proc", "sys", "dev", "tmp", "run", "var/empty"} {
		must(os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	data, err := os.ReadFile(bb)
	must(err)
	must(os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755))
	must(os.Symlink("busybox", filepath.Join(dir, "bin/sh")))
	must(os.Link(filepath.Join(dir, "bin/busybox"), filepath.Join(dir, "bin/ls")))
	must(os.WriteFile(filepath.Join(dir, "sbin/init"), []byte("#!/bin/sh\necho "+marker+"\nexit 0\n"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "etc/os-release"), []byte("ID=berthtest\nNAME=\"berth test\"\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "etc/empty"), nil, 0o600))
	must(os.WriteFile(filepath.Join(dir, "bin/suid"), []byte("x"), 0o4755))
	must(os.Symlink(strings.Repeat("long/", 20)+"target", filepath.Join(dir, "lib/longlink")))
	must(unix.Mknod(filepath.Join(dir, "lib/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(os.Chown(filepath.Join(dir, "etc/empty"), 42, 43))
	// cap_net_raw+ep, VFS_CAP_REVISION_2.
	capv := []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(unix.Setxattr(filepath.Join(dir, "bin/suid"), "security.capability", capv, 0))
	must(unix.Chmod(filepath.Join(dir, "bin/suid"), 0o4755))
	must(os.Chmod(filepath.Join(dir, "lib/null"), 0o666))
	must(unix.Chmod(filepath.Join(dir, "tmp"), 0o1777))
	// Fixed times, so the tree is the same whatever the day.
	must(filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		ts := []unix.Timespec{{Sec: 1}, {Sec: 1}}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
	return dir
}

func treeSource(t *testing.T, dir string) formats.Source {
	t.Helper()
	s, err := dirtree.NewSource(dir, dirtree.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func writeImage(t *testing.T, dir string, opts Options) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "image.raw")
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if opts.WorkDir == "" {
		opts.WorkDir = t.TempDir()
	}
	if opts.Log == nil {
		opts.Log = testLogger(t)
	}
	t0 := time.Now()
	if err := Write(context.Background(), f, treeSource(t, dir), opts); err != nil {
		t.Fatalf("Write: %v", err)
	}
	t.Logf("%s image written in %v", opts.FS, time.Since(t0).Round(time.Millisecond))
	assertEmptyDir(t, opts.WorkDir)
	return img
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind in the work directory: %s", e.Name())
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkTable verifies the GPT with Inspect, sfdisk and sgdisk.
func checkTable(t *testing.T, img string, wantRO bool) Partition {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := Inspect(f)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if len(tab.Partitions) != 1 {
		t.Fatalf("Inspect: %d partitions, want 1", len(tab.Partitions))
	}
	p := tab.Partitions[0]
	if d, _ := Designator(p.Type); d != "root-x86-64" || p.FirstLBA != 2048 || p.Name != "root-x86-64" {
		t.Errorf("partition = %+v (%s)", p, d)
	}
	if got := p.Attributes&AttrReadOnly != 0; got != wantRO {
		t.Errorf("read-only attribute = %v, want %v", got, wantRO)
	}

	sf := testenv.RequireTool(t, "sfdisk")
	run(t, sf, "--verify", img)
	var dump struct {
		PartitionTable struct {
			Label      string `json:"label"`
			ID         string `json:"id"`
			Sectorsize int    `json:"sectorsize"`
			Partitions []struct {
				Start, Size int64
				Type, UUID  string
				Name        string
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(run(t, sf, "--json", img)), &dump); err != nil {
		t.Fatal(err)
	}
	pt := dump.PartitionTable
	if pt.Label != "gpt" || len(pt.Partitions) != 1 || !strings.EqualFold(pt.ID, tab.DiskGUID.String()) {
		t.Fatalf("sfdisk --json: %+v", pt)
	}
	sp := pt.Partitions[0]
	if sp.Start != 2048 || sp.Size != int64(p.LastLBA-p.FirstLBA+1) ||
		!strings.EqualFold(sp.Type, "4f68bce3-e8cd-4db1-96e7-fbcaf984b709") ||
		!strings.EqualFold(sp.UUID, p.GUID.String()) || sp.Name != "root-x86-64" {
		t.Errorf("sfdisk sees %+v, Inspect %+v", sp, p)
	}
	if out := run(t, testenv.RequireTool(t, "sgdisk"), "-v", img); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	return p
}

// checkSparse asserts the image occupies much less than its size.
func checkSparse(t *testing.T, img string, limit float64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(img, &st); err != nil {
		t.Fatal(err)
	}
	alloc := st.Blocks * 512
	t.Logf("%s: apparent %d bytes, allocated %d", filepath.Base(img), st.Size, alloc)
	if float64(alloc) > limit*float64(st.Size) {
		t.Errorf("image is not sparse: %d of %d bytes allocated", alloc, st.Size)
	}
}

func checkDissect(t *testing.T, img string, bootable bool) {
	t.Helper()
	out := run(t, testenv.RequireTool(t, "systemd-dissect"), "--no-pager", img)
	t.Logf("systemd-dissect:\n%s", out)
	if !strings.Contains(out, "root-x86-64") {
		t.Errorf("systemd-dissect does not show a root-x86-64 partition")
	}
	if bootable && (!strings.Contains(out, "bootable system for container") || strings.Contains(out, "✗ bootable system for container")) {
		t.Errorf("systemd-dissect does not call the image bootable for a container")
	}
}

// udevMissing is what systemd-nspawn -i says when it cannot reach udevd,
// as in a container without udev (this sandbox: no /run/udev/control).
const udevMissing = "requires access to the host's /run/ hierarchy"

// boot runs systemd-nspawn -i IMAGE -b and wants the marker. Where nspawn
// refuses --image for want of udev, it dissects and mounts the image with
// systemd-dissect (same partition discovery, no udev needed) and boots the
// mounted tree with -D instead, and says so in the log.
func boot(t *testing.T, img string, readOnly bool) {
	t.Helper()
	nspawn := testenv.RequireTool(t, "systemd-nspawn")
	if out, err := exec.Command("losetup", "-f").CombinedOutput(); err != nil {
		testenv.Skip(t, "no free loop device (systemd-nspawn -i needs one): %v %s", err, out)
	}
	nsp := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, nspawn, append([]string{"--register=no", "--keep-unit", "-q"}, args...)...)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	out := nsp("-i", img, "-b")
	if strings.Contains(out, marker) {
		return
	}
	if !strings.Contains(out, udevMissing) {
		t.Fatalf("systemd-nspawn -i %s -b did not print the marker:\n%s", img, out)
	}
	t.Logf("systemd-nspawn -i is unavailable here (%s); booting through systemd-dissect --mount", strings.TrimSpace(out))
	mnt := filepath.Join(t.TempDir(), "mnt")
	dissect := testenv.RequireTool(t, "systemd-dissect")
	args := []string{"--mount", "--mkdir"}
	if readOnly {
		args = append(args, "--read-only")
	}
	run(t, dissect, append(args, img, mnt)...)
	defer func() {
		if out, err := exec.Command(dissect, "--umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("systemd-dissect --umount: %v %s", err, out)
		}
	}()
	nargs := []string{"-D", mnt, "-b"}
	if readOnly {
		nargs = append([]string{"--read-only"}, nargs...)
	}
	if out := nsp(nargs...); !strings.Contains(out, marker) {
		t.Fatalf("systemd-nspawn -D (dissected %s) -b did not print the marker:\n%s", img, out)
	}
}

func TestExt4Image(t *testing.T) {
	dir := bootTree(t)
	testenv.RequireTool(t, "mkfs.ext4")
	img := writeImage(t, dir, Options{})
	p := checkTable(t, img, false)
	checkSparse(t, img, 0.5)
	fsimg := img + "?offset=" + itoa(p.Offset())
	if out, err := exec.Command("e2fsck", "-fn", fsimg).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	debugfs := testenv.RequireTool(t, "debugfs")
	stat := func(path string) string { return run(t, debugfs, "-R", "stat "+path, fsimg) }
	if s := stat("/bin/ls"); !strings.Contains(s, "Links: 2") {
		t.Errorf("hard link lost:\n%s", s)
	}
	if s := stat("/lib/null"); !strings.Contains(s, "character special") || !strings.Contains(s, "Device major/minor number: 01:03") {
		t.Errorf("device node lost:\n%s", s)
	}
	if s := stat("/bin/suid"); !strings.Contains(s, "security.capability") || !strings.Contains(s, "Mode:  04755") {
		t.Errorf("capability or setuid mode lost:\n%s", s)
	}
	if s := stat("/etc/empty"); !strings.Contains(s, "User:    42   Group:    43") {
		t.Errorf("ownership lost:\n%s", s)
	}
	if s := stat("/lib/longlink"); !strings.Contains(s, "Type: symlink") {
		t.Errorf("long symlink lost:\n%s", s)
	}
	if s := stat("/sbin/init"); !strings.Contains(s, "ctime: 0x00000001:00000000") {
		t.Errorf("change time not normalised:\n%s", s)
	}
	checkDissect(t, img, true)
	boot(t, img, false)
}

func TestSquashfsImage(t *testing.T) {
	dir := bootTree(t)
	testenv.RequireTool(t, "sqfstar")
	img := writeImage(t, dir, Options{FS: FSSquashfs})
	p := checkTable(t, img, true)
	list := run(t, testenv.RequireTool(t, "unsquashfs"), "-o", itoa(p.Offset()), "-lln", img)
	for _, want := range []string{
		"drwxr-xr-x 0/0", "crw-rw-rw- 0/0                   1,  3 1970-01-01 00:00 squashfs-root/lib/null",
		"-rw------- 42/43", "-rwsr-xr-x 0/0", "squashfs-root/bin/sh -> busybox",
	} {
		if !strings.Contains(list, want) {
			t.Errorf("unsquashfs -lln lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(list, "squashfs-root\n") && !strings.Contains(list, "drwxr-xr-x 0/0                      ") {
		t.Errorf("root directory mode not carried:\n%s", list)
	}
	checkDissect(t, img, true)
	boot(t, img, true)
}

func itoa(n int64) string { return strings.TrimSpace(strings.Repeat(" ", 0) + formatInt(n)) }

func formatInt(n int64) string { return string(appendInt(nil, n)) }

func appendInt(b []byte, n int64) []byte {
	if n >= 10 {
		b = appendInt(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

// TestReproducible writes each file system twice, a second apart (so the
// staging tree's change times differ), and wants identical bytes.
func TestReproducible(t *testing.T) {
	dir := bootTree(t)
	for _, fs := range []string{FSExt4, FSSquashfs} {
		t.Run(fs, func(t *testing.T) {
			a := writeImage(t, dir, Options{FS: fs})
			time.Sleep(1100 * time.Millisecond)
			b := writeImage(t, dir, Options{FS: fs})
			if ha, hb := fileSHA(t, a), fileSHA(t, b); ha != hb {
				t.Errorf("two writes of the same tree differ: %s %s", ha, hb)
			}
			// Another seed gives other identifiers.
			c := writeImage(t, dir, Options{FS: fs, Seed: []byte("other")})
			fa, _ := os.Open(a)
			fc, _ := os.Open(c)
			defer fa.Close()
			defer fc.Close()
			ta, err1 := Inspect(fa)
			tc, err2 := Inspect(fc)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if ta.DiskGUID == tc.DiskGUID || ta.Partitions[0].GUID == tc.Partitions[0].GUID {
				t.Errorf("the seed does not change the identifiers")
			}
		})
	}
}

// TestReproducibleAcrossStagingFS stages a directory of 300 files once on
// tmpfs and once on the test's temporary file system: readdir order differs
// between them (creation order against hash order), the image must not.
func TestReproducibleAcrossStagingFS(t *testing.T) {
	testenv.RequireRoot(t)
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Skip("/dev/shm is not a tmpfs")
	}
	shm, err := os.MkdirTemp("/dev/shm", "berth-raw-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(shm)
	dir := t.TempDir()
	for i := range 300 {
		if err := os.WriteFile(filepath.Join(dir, "f"+formatInt(int64(i))), []byte(formatInt(int64(i))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a := writeImage(t, dir, Options{WorkDir: shm})
	b := writeImage(t, dir, Options{})
	if fileSHA(t, a) != fileSHA(t, b) {
		t.Errorf("the image depends on the staging file system")
	}
}

// sliceSource yields fixed entries.
type sliceSource struct {
	entries []*formats.Entry
	onNext  func(i int)
	i       int
}

func (s *sliceSource) Next() (*formats.Entry, error) {
	if s.onNext != nil {
		s.onNext(s.i)
	}
	if s.i >= len(s.entries) {
		return nil, io.EOF
	}
	e := s.entries[s.i]
	s.i++
	return e, nil
}

func dirEntry(name string) *formats.Entry {
	return &formats.Entry{Header: &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: time.Unix(1, 0)}}
}

func fileEntry(name string, data []byte) *formats.Entry {
	return &formats.Entry{
		Header: &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(1, 0)},
		Body:   bytes.NewReader(data),
	}
}

func TestRefusesUnsafeNames(t *testing.T) {
	testenv.RequireRoot(t)
	for _, fs := range []string{FSExt4, FSSquashfs} {
		for _, bad := range []*formats.Entry{
			fileEntry("../escape", []byte("x")),
			fileEntry("/etc/passwd", []byte("x")),
			fileEntry("a/../../b", []byte("x")),
			{Header: &tar.Header{Typeflag: tar.TypeLink, Name: "link", Linkname: "../../etc/shadow"}},
		} {
			t.Run(fs+"/"+bad.Header.Name, func(t *testing.T) {
				work := t.TempDir()
				img := filepath.Join(t.TempDir(), "x.raw")
				f, err := os.Create(img)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				src := &sliceSource{entries: []*formats.Entry{dirEntry("."), fileEntry("ok", []byte("fine")), bad}}
				err = Write(context.Background(), f, src, Options{FS: fs, WorkDir: work, Log: testLogger(t)})
				if !errors.Is(err, formats.ErrUnsafePath) {
					t.Fatalf("Write = %v, want ErrUnsafePath", err)
				}
				t.Logf("error: %v", err)
				if fi, _ := f.Stat(); fi.Size() != 0 {
					t.Errorf("output left with %d bytes", fi.Size())
				}
				assertEmptyDir(t, work)
			})
		}
	}
}

func TestCancel(t *testing.T) {
	testenv.RequireRoot(t)
	for _, fs := range []string{FSExt4, FSSquashfs} {
		t.Run(fs, func(t *testing.T) {
			work := t.TempDir()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			entries := []*formats.Entry{dirEntry("."), dirEntry("d")}
			for i := range 50 {
				entries = append(entries, fileEntry("d/f"+formatInt(int64(i)), bytes.Repeat([]byte{byte(i)}, 10000)))
			}
			src := &sliceSource{entries: entries, onNext: func(i int) {
				if i == 20 {
					cancel()
				}
			}}
			f, err := os.Create(filepath.Join(t.TempDir(), "x.raw"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			err = Write(ctx, f, src, Options{FS: fs, WorkDir: work, Log: testLogger(t)})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Write = %v, want context.Canceled", err)
			}
			if fi, _ := f.Stat(); fi.Size() != 0 {
				t.Errorf("output left with %d bytes", fi.Size())
			}
			assertEmptyDir(t, work)
		})
	}
}

func TestWriteCompressed(t *testing.T) {
	dir := bootTree(t)
	plain := writeImage(t, dir, Options{FS: FSSquashfs})
	var buf bytes.Buffer
	work := t.TempDir()
	var metered countWriter
	opts := Options{FS: FSSquashfs, WorkDir: work, Log: testLogger(t),
		Meter: func(w io.Writer) io.Writer { return io.MultiWriter(w, &metered) }}
	if err := WriteCompressed(context.Background(), &buf, treeSource(t, dir), opts, compress.Zstd); err != nil {
		t.Fatal(err)
	}
	var want int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, _ error) error {
		if fi.Mode().IsRegular() && fi.Name() != "ls" { // ls is a hard link to busybox
			want += fi.Size()
		}
		return nil
	})
	if int64(metered) != want {
		t.Errorf("meter counted %d bytes, the files hold %d", metered, want)
	}
	assertEmptyDir(t, work)
	r, kind, err := compress.NewReader(&buf)
	if err != nil || kind != compress.Zstd {
		t.Fatalf("NewReader: %v %v", kind, err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != fileSHA(t, plain) {
		t.Errorf("decompressed image differs from the plain one")
	}
}

// TestDebianTree writes a real Debian root (≈200 MB, thousands of files,
// hard links, the cap_net_raw capability of ping) as ext4 and checks the
// estimate held, the capability survived and fsck is happy.
func TestDebianTree(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	tree := testenv.DebianTree(t)
	testenv.RequireTool(t, "mkfs.ext4")
	t0 := time.Now()
	img := writeImage(t, tree, Options{Seed: []byte("debian")})
	t.Logf("ext4 image of the Debian tree in %v", time.Since(t0).Round(time.Millisecond))
	p := checkTable(t, img, false)
	checkSparse(t, img, 0.9)
	fsimg := img + "?offset=" + itoa(p.Offset())
	if out, err := exec.Command("e2fsck", "-fn", fsimg).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	if s := run(t, "debugfs", "-R", "stat /usr/bin/ping", fsimg); !strings.Contains(s, "security.capability") {
		t.Errorf("ping lost its capability:\n%s", s)
	}
	checkDissect(t, img, false)
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// TestMkfsTooSmall checks that mke2fs running out of room is recognised,
// which is what makes Write retry with a larger file system.
func TestMkfsTooSmall(t *testing.T) {
	testenv.RequireRoot(t)
	mkfs := testenv.RequireTool(t, "mkfs.ext4")
	stage := t.TempDir()
	if err := os.WriteFile(filepath.Join(stage, "big"), bytes.Repeat([]byte("berth"), 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "fs.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g := deriveGUID(nil, "x")
	err = runMkfsExt4(context.Background(), mkfs, f, alignment, stage, 12<<20, 128, 4, "t", g, g)
	if !errors.Is(err, errNoSpace) {
		t.Fatalf("runMkfsExt4 into 12 MiB = %v, want errNoSpace", err)
	}
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if err := runMkfsExt4(context.Background(), mkfs, f, alignment, stage, 64<<20, 128, 4, "t", g, g); err != nil {
		t.Fatalf("runMkfsExt4 into 64 MiB: %v", err)
	}
	if err := fixExt4Ctimes(f, alignment); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", f.Name()+"?offset="+itoa(alignment)).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck after fixExt4Ctimes: %v\n%s", err, out)
	}
}
