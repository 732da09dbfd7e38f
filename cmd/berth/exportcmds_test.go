package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/formats/dirtree/treecmp"
	"github.com/berth-dev/berth/formats/oci"
	"github.com/berth-dev/berth/internal/testenv"
)

// busyboxTree makes a small bootable OS tree from the static busybox whose
// init counts in two files far apart in the walk order: /aaa/first and
// /zzz/second get the same number, each replaced atomically (write + rename),
// first then second. Between them sorts /mmm with 16 MiB of random data in
// 1024 files, so a reader
// that walks the live tree sees second run well ahead of first, while any
// frozen instant has second == first or second == first-1.
func busyboxTree(t *testing.T, dir string) {
	t.Helper()
	bb := testenv.RequireTool(t, "busybox")
	sh(t, `d=`+dir+`
mkdir -p $d/bin $d/sbin $d/usr/lib $d/etc $d/aaa $d/zzz $d/mmm $d/var/tmp $d/proc $d/sys $d/dev $d/run $d/tmp
cp `+bb+` $d/bin/busybox
for a in sh cat echo mv sleep ls true stat test; do ln -s busybox $d/bin/$a; done
echo 'ID=busybox' > $d/usr/lib/os-release
cat > $d/sbin/init <<'EOF'
#!/bin/sh
i=0
while :; do
	i=$((i+1))
	echo $i > /aaa/.t; mv /aaa/.t /aaa/first
	echo $i > /zzz/.t; mv /zzz/.t /zzz/second
done
EOF
chmod 755 $d/sbin/init
head -c 16777216 /dev/urandom | split -b 16384 -a 3 - $d/mmm/f
echo data > $d/owned; chown 1000:1001 $d/owned
setfacl -m u:1002:rw,g:1003:r $d/owned`)
}

// cgroupMount returns where the cgroup2 hierarchy is mounted.
func cgroupMount(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "cgroup2" {
			return f[1]
		}
	}
	testenv.Skip(t, "no cgroup2 hierarchy mounted")
	return ""
}

// nspawnMachine runs systemd-nspawn with args in a cgroup of its own (as
// systemd-nspawn@.service would have), so that freezing it does not freeze
// the test. It returns the cgroup directory; the machine is killed and the
// cgroup removed at the end of the test.
func nspawnMachine(t *testing.T, args ...string) string {
	t.Helper()
	nspawn := testenv.RequireTool(t, "systemd-nspawn")
	mnt := cgroupMount(t)
	var b [6]byte
	rand.Read(b[:])
	rel := "berth-test-" + hex.EncodeToString(b[:])
	cg := filepath.Join(mnt, rel)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatalf("cannot create a cgroup for the machine: %v", err)
	}
	var out bytes.Buffer
	cmd := exec.Command("/bin/sh", append([]string{"-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, cg, nspawn, "-q", "--keep-unit", "--register=no"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("0"), 0)
		if err := os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0); err != nil {
			cmd.Process.Kill()
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("nspawn did not exit")
		}
		if t.Failed() {
			t.Logf("nspawn output:\n%s", out.String())
		}
		// nspawn made payload/ and supervisor/ below our cgroup, and mirrors
		// them in the named systemd hierarchy of hybrid hosts.
		for _, base := range []string{cg, filepath.Join("/sys/fs/cgroup/systemd", rel)} {
			for _, d := range []string{"payload", "supervisor", ""} {
				for i := 0; i < 50; i++ {
					if err := os.Remove(filepath.Join(base, d)); err == nil || os.IsNotExist(err) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
	})
	return cg
}

func readInt(t *testing.T, p string) int {
	b, err := os.ReadFile(p)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// tarEntry is what a test needs of one entry.
type tarEntry struct {
	h    formats.Entry
	body string
}

func readTarFile(t *testing.T, p string) map[string]tarEntry {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, _, err := compress.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	src := formats.NewTarSource(r)
	m := map[string]tarEntry{}
	for {
		e, err := src.Next()
		if err == io.EOF {
			return m
		}
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		var body []byte
		if e.Body != nil {
			body, _ = io.ReadAll(e.Body)
		}
		m[e.Header.Name] = tarEntry{h: formats.Entry{Header: e.Header}, body: string(body)}
	}
}

// pairOK says whether /aaa/first and /zzz/second come from one instant.
func pair(t *testing.T, m map[string]tarEntry) (first, second int) {
	first, err1 := strconv.Atoi(strings.TrimSpace(m["aaa/first"].body))
	second, err2 := strconv.Atoi(strings.TrimSpace(m["zzz/second"].body))
	if err1 != nil || err2 != nil {
		t.Fatalf("export lacks the counter files: %q %q", m["aaa/first"].body, m["zzz/second"].body)
	}
	return first, second
}

// A running machine started with systemd-nspawn -U (chown mode) is exported
// while it writes: ids come back 0-based (ACLs included), the tree is one
// instant, the machine is thawed and still running afterwards, and the
// tarball imports and runs again.
func TestExportRunningShiftedMachine(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "setfacl")
	w := t.TempDir()
	root := filepath.Join(w, "machines")
	dir := filepath.Join(root, "m")
	os.MkdirAll(dir, 0o755)
	busyboxTree(t, dir)

	cg := nspawnMachine(t, "-U", "--private-users-ownership=chown", "-D", dir, "/sbin/init")
	var st os.FileInfo
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		st, err = os.Stat(dir)
		if err == nil && statUID(st) >= 0x10000 && readInt(t, filepath.Join(dir, "zzz/second")) > 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("machine did not start (uid shift and counter)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	base := statUID(st) &^ 0xffff
	t.Logf("machine runs with UID base %#x", base)

	out := filepath.Join(w, "m.tar.zst")
	r := mustBerth(t, "--image-root", root, "export-tar", "m", out)
	if !strings.Contains(r.stderr, "frozen for the export") || !strings.Contains(r.stderr, "thawed") {
		t.Errorf("export did not freeze and thaw the machine:\n%s", r.stderr)
	}
	m := readTarFile(t, out)

	// Ids shifted back, ACL ids too.
	for name, e := range m {
		if h := e.h.Header; h.Uid >= 0x10000 || h.Gid >= 0x10000 {
			t.Fatalf("%s has uid %d gid %d: shift not undone", name, h.Uid, h.Gid)
		}
	}
	for _, n := range []string{".", "bin/busybox", "sbin/init", "aaa/first"} {
		if h := m[n].h.Header; h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want 0:0", n, h.Uid, h.Gid)
		}
	}
	if h := m["owned"].h.Header; h.Uid != 1000 || h.Gid != 1001 {
		t.Errorf("owned: %d:%d, want 1000:1001", h.Uid, h.Gid)
	}
	ids := aclIDs(formats.Xattrs(m["owned"].h.Header)["system.posix_acl_access"])
	if fmt.Sprint(ids) != "[1002 1003]" {
		t.Errorf("ACL ids %v, want [1002 1003]", ids)
	}

	// One instant: second is first, or one behind it.
	if f, s := pair(t, m); s != f && s != f-1 {
		t.Errorf("inconsistent export: /aaa/first=%d /zzz/second=%d", f, s)
	}

	// Thawed and still running, tree untouched (still shifted).
	if ev, _ := os.ReadFile(filepath.Join(cg, "payload", "cgroup.events")); !strings.Contains(string(ev), "frozen 0") {
		t.Errorf("machine cgroup after export: %s", ev)
	}
	if fz, _ := os.ReadFile(filepath.Join(cg, "payload", "cgroup.freeze")); strings.TrimSpace(string(fz)) != "0" {
		t.Errorf("cgroup.freeze after export: %q", fz)
	}
	a := readInt(t, filepath.Join(dir, "zzz/second"))
	time.Sleep(300 * time.Millisecond)
	if b := readInt(t, filepath.Join(dir, "zzz/second")); b <= a {
		t.Errorf("machine stopped writing after the export (%d -> %d)", a, b)
	}
	if st, _ := os.Stat(dir); statUID(st) != statUID(st)&^0xffff || statUID(st) != base {
		t.Errorf("machine tree changed owner: %d", statUID(st))
	}

	// Interrupted mid-export (Ctrl-C): error, no output, machine thawed.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // Ctrl-C once the machine is frozen
		for ctx.Err() == nil {
			if ev, _ := os.ReadFile(filepath.Join(cg, "payload", "cgroup.events")); strings.Contains(string(ev), "frozen 1") {
				time.Sleep(100 * time.Millisecond)
				cancel()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	slow := filepath.Join(w, "slow.tar.xz")
	if r := berthCtx(t, ctx, nil, "--image-root", root, "export-tar", "--level", "9", "m", slow); r.code != 1 || !strings.Contains(r.stderr, "interrupted") || !strings.Contains(r.stderr, "thawed") {
		t.Errorf("interrupted export: exit %d\n%s", r.code, r.stderr)
	}
	if ev, _ := os.ReadFile(filepath.Join(cg, "payload", "cgroup.events")); !strings.Contains(string(ev), "frozen 0") {
		t.Errorf("machine left frozen after an interrupted export: %s", ev)
	}
	if _, err := os.Stat(slow); !os.IsNotExist(err) {
		t.Errorf("interrupted export left %s", slow)
	}

	// The check above catches an unfrozen read: systemd-export reads the
	// running tree as it changes and its output shows the counters apart.
	sdExport := testenv.RequireTool(t, "/usr/lib/systemd/systemd-export")
	stale := false
	for i := 0; i < 5 && !stale; i++ {
		live := filepath.Join(w, fmt.Sprintf("live%d.tar", i))
		if o, err := exec.Command(sdExport, "tar", dir, live).CombinedOutput(); err != nil {
			// GNU tar under systemd-export notices some changes itself
			// ("file changed as we read it"): that too is an inconsistent
			// live read.
			if bytes.Contains(o, []byte("as we read it")) {
				stale = true
				os.Remove(live)
				continue
			}
			t.Fatalf("systemd-export: %v %s", err, o)
		}
		lm := readTarFile(t, live)
		f, s := pair(t, lm)
		stale = s != f && s != f-1
		if h := lm["."].h.Header; uint32(h.Uid) != base {
			t.Errorf("systemd-export: root uid %d, want the shifted %d", h.Uid, base)
		}
		os.Remove(live)
	}
	if !stale {
		t.Error("five live reads of the running machine by systemd-export all looked consistent: the check proves nothing")
	}
	// --keep-uid-shift keeps the on-disk ids.
	kept := filepath.Join(w, "kept.tar")
	mustBerth(t, "--image-root", root, "export-tar", "--keep-uid-shift", "m", kept)
	if h := readTarFile(t, kept)["owned"].h.Header; uint32(h.Uid) != base+1000 {
		t.Errorf("--keep-uid-shift: owned uid %d, want %d", h.Uid, base+1000)
	}

	// Without --live a machine that cannot be frozen is refused: berth
	// never freezes its own cgroup. (Covered in package export.)

	// Import and run the export.
	root2 := filepath.Join(w, "machines2")
	mustBerth(t, "--image-root", root2, "import-tar", out, "m2")
	check := filepath.Join(w, "check.out")
	nspawnRun(t, check, "-D", filepath.Join(root2, "m2"), "/bin/sh", "-c", "stat -c '%u:%g' /owned /sbin/init; cat /zzz/second")
	got, _ := os.ReadFile(check)
	if lines := strings.Fields(string(got)); len(lines) != 3 || lines[0] != "1000:1001" || lines[1] != "0:0" {
		t.Errorf("re-imported machine says %q", got)
	}
}

// nspawnRun runs a command in a machine to completion, output into file.
func nspawnRun(t *testing.T, file string, args ...string) {
	t.Helper()
	nspawn := testenv.RequireTool(t, "systemd-nspawn")
	mnt := cgroupMount(t)
	var b [6]byte
	rand.Read(b[:])
	rel := "berth-test-" + hex.EncodeToString(b[:])
	cg := filepath.Join(mnt, rel)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, base := range []string{cg, filepath.Join("/sys/fs/cgroup/systemd", rel)} {
			for _, d := range []string{"payload", "supervisor", ""} {
				for i := 0; i < 50; i++ {
					if err := os.Remove(filepath.Join(base, d)); err == nil || os.IsNotExist(err) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", `cg=$0; out=$1; shift; echo $$ > "$cg/cgroup.procs" && exec "$@" > "$out"`, cg, file, nspawn, "-q", "--keep-unit", "--register=no"}, args...)...)
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-nspawn %s: %v\n%s", strings.Join(args, " "), err, o)
	}
}

func statUID(st os.FileInfo) uint32 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return sys.Uid
	}
	return 0
}

// aclIDs returns the ids of the named-user and named-group entries of a
// POSIX ACL xattr.
func aclIDs(v string) []uint32 {
	var ids []uint32
	b := []byte(v)
	for off := 4; off+8 <= len(b); off += 8 {
		if tag := binary.LittleEndian.Uint16(b[off:]); tag == 2 || tag == 8 {
			ids = append(ids, binary.LittleEndian.Uint32(b[off+4:]))
		}
	}
	return ids
}

// richTree makes a stopped tree with every kind of entry and metadata an
// export must carry.
func richTree(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"setfacl", "setcap", "setfattr"} {
		testenv.RequireTool(t, tool)
	}
	d := filepath.Join(t.TempDir(), "rich")
	sh(t, `d=`+d+`
mkdir -p $d/etc $d/usr/bin $d/dev $d/tmp $d/var/lib/deep/er/still $d/acldir
echo 'ID=rich' > $d/etc/os-release
echo tool > $d/usr/bin/tool; chmod 4755 $d/usr/bin/tool
ln $d/usr/bin/tool $d/usr/bin/tool-hardlink
ln $d/usr/bin/tool $d/etc/tool-hardlink2
echo ping > $d/usr/bin/ping; setcap cap_net_raw+ep $d/usr/bin/ping
ln -s /usr/bin/tool $d/usr/bin/abs-link
ln -s ../../usr/bin/tool $d/var/lib/rel-link
ln -s $(printf 'x%.0s' $(seq 150)) $d/var/lib/long-target-link
mknod $d/dev/null c 1 3; mknod $d/dev/loop9 b 7 9; mkfifo $d/dev/fifo
chmod 1777 $d/tmp; chmod 2750 $d/var/lib/deep
echo owned > $d/var/lib/deep/er/still/$(printf 'n%.0s' $(seq 120)); chown -R 1234:2345 $d/var/lib/deep
setfattr -n user.note -v "hello world" $d/etc/os-release
setfacl -m u:1000:rw $d/etc/os-release; setfacl -d -m g:100:rx $d/acldir
head -c 100000 /dev/urandom > $d/usr/bin/big
truncate -s 5M $d/var/lib/sparse; echo end >> $d/var/lib/sparse`)
	return d
}

// berth export-tar and systemd-export tar agree entry by entry on a stopped
// tree, except for the differences berth makes on purpose.
func TestExportTarMatchesSystemdExport(t *testing.T) {
	testenv.RequireRoot(t)
	sdExport := testenv.RequireTool(t, "/usr/lib/systemd/systemd-export")
	tree := richTree(t)
	w := t.TempDir()
	ours := filepath.Join(w, "berth.tar.gz")
	theirs := filepath.Join(w, "systemd.tar.gz")
	mustBerth(t, "export-tar", tree+"/", ours)
	if o, err := exec.Command(sdExport, "tar", tree, theirs).CombinedOutput(); err != nil {
		t.Fatalf("systemd-export: %v %s", err, o)
	}
	a, b := readTarFile(t, ours), readTarFile(t, theirs)

	// The intended differences, and nothing else:
	allowed := map[string]string{
		"uname/gname":         "berth writes numeric owners only, systemd-export (GNU tar) adds user and group names",
		"ACL xattrs":          "berth keeps system.posix_acl_*; GNU tar keeps them only through --xattrs-include=* (same bytes when it does)",
		"atime/ctime records": "systemd-export (GNU tar pax) records atime and ctime, berth only mtime",
		"hard-link leader":    "which name of a hard-link group carries the data depends on walk order (berth: sorted; GNU tar: readdir order)",
	}
	seen := map[string]bool{}
	var diffs []string
	for name := range b {
		if _, ok := a[name]; !ok {
			diffs = append(diffs, "only in systemd-export: "+name)
		}
	}
	groups := func(m map[string]tarEntry) map[string]string {
		// name -> canonical group key (the smallest name linked to it)
		g := map[string]string{}
		for n, e := range m {
			if e.h.Header.Typeflag == '1' {
				g[n] = e.h.Header.Linkname
				g[e.h.Header.Linkname] = e.h.Header.Linkname
			}
		}
		return g
	}
	ga, gb := groups(a), groups(b)
	for name, ea := range a {
		eb, ok := b[name]
		if !ok {
			diffs = append(diffs, "only in berth: "+name)
			continue
		}
		ha, hb := ea.h.Header, eb.h.Header
		ta, tb := ha.Typeflag, hb.Typeflag
		if ta != tb {
			if (ta == '1' || tb == '1') && (ga[name] != "") == (gb[name] != "") {
				seen["hard-link leader"] = true
			} else {
				diffs = append(diffs, fmt.Sprintf("%s: type %c vs %c", name, ta, tb))
			}
		}
		if ha.Mode != hb.Mode || ha.Uid != hb.Uid || ha.Gid != hb.Gid {
			diffs = append(diffs, fmt.Sprintf("%s: mode/owner %o %d:%d vs %o %d:%d", name, ha.Mode, ha.Uid, ha.Gid, hb.Mode, hb.Uid, hb.Gid))
		}
		if ha.ModTime.Unix() != hb.ModTime.Unix() {
			diffs = append(diffs, fmt.Sprintf("%s: mtime %v vs %v", name, ha.ModTime, hb.ModTime))
		}
		if ta == tb && (ta == '1' || ta == '2') && ha.Linkname != hb.Linkname {
			diffs = append(diffs, fmt.Sprintf("%s: link target %q vs %q", name, ha.Linkname, hb.Linkname))
		}
		if ta == tb && ta == '0' && ea.body != eb.body {
			diffs = append(diffs, name+": content differs")
		}
		if ha.Devmajor != hb.Devmajor || ha.Devminor != hb.Devminor {
			diffs = append(diffs, fmt.Sprintf("%s: device %d,%d vs %d,%d", name, ha.Devmajor, ha.Devminor, hb.Devmajor, hb.Devminor))
		}
		if ha.Uname != "" || ha.Gname != "" {
			diffs = append(diffs, name+": berth wrote a user/group name")
		}
		if hb.Uname != "" || hb.Gname != "" {
			seen["uname/gname"] = true
		}
		if _, ok := hb.PAXRecords["atime"]; ok {
			seen["atime/ctime records"] = true
		}
		if _, ok := ha.PAXRecords["atime"]; ok {
			diffs = append(diffs, name+": berth wrote atime")
		}
		xa, xb := formats.Xattrs(ha), formats.Xattrs(hb)
		for k, v := range xa {
			if strings.HasPrefix(k, "system.posix_acl_") {
				if _, ok := xb[k]; !ok {
					seen["ACL xattrs"] = true
					continue
				}
			}
			if xb[k] != v {
				diffs = append(diffs, fmt.Sprintf("%s: xattr %s differs (%q vs %q)", name, k, v, xb[k]))
			}
		}
		for k := range xb {
			if _, ok := xa[k]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s: xattr %s only in systemd-export", name, k))
			}
		}
	}
	// Hard-link groups are the same sets of names.
	for n := range ga {
		if gb[n] == "" {
			diffs = append(diffs, n+": hard link in berth only")
		}
	}
	for n := range gb {
		if ga[n] == "" {
			diffs = append(diffs, n+": hard link in systemd-export only")
		}
	}
	if len(diffs) > 0 {
		t.Fatalf("unintended differences:\n%s", strings.Join(diffs, "\n"))
	}
	for k := range seen {
		if _, ok := allowed[k]; !ok {
			t.Errorf("difference %q not in the allow-list", k)
		}
	}
	t.Logf("intended differences seen: %v", seen)
	// The fixture exercises what it claims to.
	for _, n := range []string{"usr/bin/ping", "etc/os-release", "dev/null", "dev/loop9", "dev/fifo", "var/lib/sparse"} {
		if _, ok := a[n]; !ok {
			t.Errorf("fixture entry %s missing", n)
		}
	}
	if formats.Xattrs(a["usr/bin/ping"].h.Header)["security.capability"] == "" {
		t.Error("capability not exported")
	}
	if formats.Xattrs(a["etc/os-release"].h.Header)["system.posix_acl_access"] == "" || formats.Xattrs(a["acldir"].h.Header)["system.posix_acl_default"] == "" {
		t.Error("ACLs not exported")
	}
}

// Bad input to the export verbs: a clear one-line error, exit 1 or 2, and no
// output file (final or temporary) left behind.
func TestExportBadInputShiftAndRaw(t *testing.T) {
	testenv.RequireRoot(t)
	w := t.TempDir()
	root := filepath.Join(w, "machines")
	out := filepath.Join(w, "out")
	os.MkdirAll(root, 0o755)
	os.MkdirAll(out, 0o755)
	ro := filepath.Join(w, "ro")
	os.Mkdir(ro, 0o555)
	sh(t, "chattr +i "+ro)
	t.Cleanup(func() { exec.Command("chattr", "-i", ro).Run() })

	// A shifted tree with one file owned by an id outside its range.
	const base = 0x50000
	bad := filepath.Join(root, "shifted")
	sh(t, fmt.Sprintf(`d=%s; mkdir -p $d/etc $d/home; echo x > $d/etc/os-release; echo y > $d/home/stray
chown -R %d:%d $d; chown 1000:%d $d/home/stray`, bad, base, base, base))
	// A raw image.
	os.WriteFile(filepath.Join(root, "disk.raw"), []byte("raw"), 0o644)

	cases := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"unknown machine", []string{"export-tar", "nosuch", filepath.Join(out, "o.tar")}, 1, []string{"no image", "nosuch"}},
		{"unknown raw", []string{"export-raw", "nosuch", filepath.Join(out, "o.raw")}, 1, []string{"no raw image", "nosuch.raw"}},
		{"id outside the shift range", []string{"export-tar", "shifted", filepath.Join(out, "o.tar.xz")}, 1, []string{"home/stray", "uid 1000", "--keep-uid-shift"}},
		{"unwritable destination tar", []string{"export-tar", "shifted", "--keep-uid-shift", filepath.Join(ro, "o.tar")}, 1, []string{ro}},
		{"unwritable destination raw", []string{"export-raw", "disk", filepath.Join(ro, "o.raw")}, 1, []string{ro}},
		{"raw bzip2 suffix", []string{"export-raw", "disk", filepath.Join(out, "o.raw.bz2")}, 2, []string{"bzip2"}},
		{"raw of a directory", []string{"export-raw", bad, filepath.Join(out, "o.raw")}, 1, []string{"not a raw image"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := berth(t, nil, append([]string{"--image-root", root}, c.args...)...)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			last := lines[len(lines)-1]
			if c.code == 2 {
				last = lines[0]
			}
			ok := r.code == c.code
			for _, want := range c.want {
				ok = ok && strings.Contains(last, want)
			}
			if !ok {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", r.code, r.stderr, c.code, c.want)
			}
			if got := listing(t, out); got != "" {
				t.Fatalf("output left behind: %q", got)
			}
			if got := listing(t, root); got != "disk.raw shifted" {
				t.Fatalf("image root changed: %q", got)
			}
		})
	}
	// With --keep-uid-shift the same tree exports as it is.
	mustBerth(t, "--image-root", root, "export-tar", "--keep-uid-shift", "shifted", filepath.Join(out, "kept.tar"))
	if h := readTarFile(t, filepath.Join(out, "kept.tar"))["home/stray"].h.Header; h.Uid != 1000 {
		t.Errorf("kept uid %d", h.Uid)
	}
}

// export-raw copies sparse images sparse, and compresses by suffix.
func TestExportRaw(t *testing.T) {
	testenv.RequireRoot(t)
	w := t.TempDir()
	root := filepath.Join(w, "machines")
	os.MkdirAll(root, 0o755)
	img := filepath.Join(root, "disk.raw")
	sh(t, "truncate -s 8M "+img+"; printf start | dd of="+img+" conv=notrunc status=none; printf end | dd of="+img+" bs=1 seek=8388000 conv=notrunc status=none")
	want, _ := os.ReadFile(img)

	mustBerth(t, "--image-root", root, "export-raw", "disk", filepath.Join(w, "copy.raw"))
	got, _ := os.ReadFile(filepath.Join(w, "copy.raw"))
	if !bytes.Equal(got, want) {
		t.Fatal("raw copy differs")
	}
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(w, "copy.raw"), &st)
	if st.Blocks*512 > 1<<20 {
		t.Errorf("raw copy occupies %d bytes: holes filled", st.Blocks*512)
	}
	for _, suffix := range []string{".raw.xz", ".raw.zst", ".raw.gz"} {
		p := filepath.Join(w, "copy"+suffix)
		mustBerth(t, "--image-root", root, "export-raw", "disk.raw", p)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		r, kind, err := compress.NewReader(f)
		if err != nil || string(kind) != strings.TrimPrefix(suffix, ".raw.") && !(kind == compress.Zstd && suffix == ".raw.zst") && !(kind == compress.Gzip && suffix == ".raw.gz") {
			t.Fatalf("%s: kind %s %v", suffix, kind, err)
		}
		b, err := io.ReadAll(r)
		f.Close()
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: content differs (%v)", suffix, err)
		}
	}
	if r := mustBerth(t, "--image-root", root, "export-raw", img, "-"); r.stdout != string(want) {
		t.Fatal("stdout copy differs")
	}
}

// exportRegistry is testenv.DockerRegistry, kept only for
// publish_test.go's caller; use testenv.DockerRegistry in new tests.
func exportRegistry(t *testing.T) string { return testenv.DockerRegistry(t) }

func withoutMtimes(m map[string]treecmp.Node) map[string]treecmp.Node {
	for k, n := range m {
		n.ModTime = time.Time{}
		m[k] = n
	}
	return m
}

// export-oci pushed to a real registry and flattened back is the machine
// tree (OCI layers carry mtime 1 by design); its config comes from the
// machine's .nspawn file. The file outputs are readable images too.
func TestExportOCI(t *testing.T) {
	testenv.RequireRoot(t)
	addr := testenv.DockerRegistry(t)
	w := t.TempDir()
	root := filepath.Join(w, "machines")
	os.MkdirAll(root, 0o755)
	tree := richTree(t)
	dir := filepath.Join(root, "m")
	sh(t, "cp -a "+tree+" "+dir)
	os.WriteFile(filepath.Join(root, "m.nspawn"), []byte(`[Exec]
Boot=no
Parameters=/bin/sh -c "echo hi; exit 0"
Environment=A=1 "B=two words"
Environment=C=3
WorkingDirectory=/srv
[Network]
VirtualEthernet=no
`), 0o644)
	want := withoutMtimes(snap(t, dir))

	ref := addr + "/berth/m:latest"
	mustBerth(t, "--image-root", root, "export-oci", "--push", "m", ref)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	if ls, _ := img.Layers(); len(ls) != 1 {
		t.Errorf("%d layers, want 1", len(ls))
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%q %q %q", cf.Config.Cmd, cf.Config.Env, cf.Config.WorkingDir); got != `["/bin/sh" "-c" "echo hi; exit 0"] ["A=1" "B=two words" "C=3"] "/srv"` {
		t.Errorf("config from m.nspawn: %s", got)
	}
	flat := filepath.Join(w, "flat")
	os.Mkdir(flat, 0o755)
	if err := oci.Apply(context.Background(), flat, img, nil); err != nil {
		t.Fatal(err)
	}
	sameTree(t, "pushed image flattened back", want, withoutMtimes(snap(t, flat)))

	// Files: layout directory, OCI archive, docker archive.
	mustBerth(t, "--image-root", root, "export-oci", "m", filepath.Join(w, "m.oci"))
	idx, err := layout.ImageIndexFromPath(filepath.Join(w, "m.oci"))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := idx.IndexManifest(); err != nil || len(m.Manifests) != 1 {
		t.Fatalf("layout index: %v", err)
	}
	mustBerth(t, "--image-root", root, "export-oci", "--layer-compression", "gzip", dir, filepath.Join(w, "m.docker.tar"))
	dimg, err := tarball.ImageFromPath(filepath.Join(w, "m.docker.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	flat2 := filepath.Join(w, "flat2")
	os.Mkdir(flat2, 0o755)
	if err := oci.Apply(context.Background(), flat2, dimg, nil); err != nil {
		t.Fatal(err)
	}
	sameTree(t, "docker archive flattened back", want, withoutMtimes(snap(t, flat2)))
	mustBerth(t, "--image-root", root, "export-oci", "m", filepath.Join(w, "m.oci.tar"))
	if b, _ := os.ReadFile(filepath.Join(w, "m.oci.tar")); !bytes.Contains(b, []byte("oci-layout")) {
		t.Error("m.oci.tar is no OCI archive")
	}
	// Errors leave nothing.
	if r := berth(t, nil, "--image-root", root, "export-oci", "nosuch", filepath.Join(w, "x.oci.tar")); r.code != 1 || !strings.Contains(r.stderr, "no image") {
		t.Errorf("unknown machine: %d %q", r.code, r.stderr)
	}
	if r := berth(t, nil, "--image-root", root, "export-oci", "m", filepath.Join(w, "x.zip")); r.code != 2 {
		t.Errorf("unknown destination: %d %q", r.code, r.stderr)
	}
	if got := listing(t, w); got != "flat flat2 m.docker.tar m.oci m.oci.tar machines" {
		t.Errorf("left in the work dir: %q", got)
	}
}
