package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/berth-dev/berth/formats/dirtree/treecmp"
)

// TestMain lets tests run the real main in a child process (re-executing
// the test binary with BERTH_MAIN_ARGS set): signals, exit codes and
// kill -9 need a process of berth's own.
func TestMain(m *testing.M) {
	if args := os.Getenv("BERTH_MAIN_ARGS"); args != "" {
		os.Args = append([]string{"berth"}, strings.Split(args, "\x1f")...)
		main()
		return
	}
	os.Exit(m.Run())
}

// berthProcess returns a command running berth with args in a child
// process (see TestMain).
func berthProcess(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "BERTH_MAIN_ARGS="+strings.Join(args, "\x1f"))
	return cmd
}

// result of one in-process berth invocation.
type result struct {
	code           int
	stdout, stderr string
}

// berth runs the command line in-process, as a user would, with its own
// image root.
func berth(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	return berthCtx(t, context.Background(), stdin, args...)
}

func berthCtx(t *testing.T, ctx context.Context, stdin io.Reader, args ...string) result {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"--no-progress"}, args...), stdin, &out, &errb)
	return result{code, out.String(), errb.String()}
}

func mustBerth(t *testing.T, args ...string) result {
	t.Helper()
	r := berth(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("berth %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// snap takes a comparable snapshot of a tree.
func snap(t *testing.T, dir string) map[string]treecmp.Node {
	t.Helper()
	s, err := treecmp.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sameTree(t *testing.T, what string, a, b map[string]treecmp.Node) {
	t.Helper()
	if d := treecmp.Diff(a, b); len(d) > 0 {
		if len(d) > 20 {
			d = append(d[:20], "...")
		}
		t.Fatalf("%s: trees differ:\n%s", what, strings.Join(d, "\n"))
	}
}

// listing names what is in a directory, hidden entries included.
func listing(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

func sh(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-ec", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

// smallTree makes a tiny OS tree with the entry kinds that matter.
func smallTree(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "tree")
	sh(t, `d=`+d+`
mkdir -p $d/etc $d/usr/bin $d/tmp $d/dev
echo 'ID=test' > $d/etc/os-release
echo hello > $d/usr/bin/tool; chmod 4755 $d/usr/bin/tool
ln $d/usr/bin/tool $d/usr/bin/tool2
ln -s /usr/bin/tool $d/usr/bin/abs-link
chmod 1777 $d/tmp
chown 1234:2345 $d/etc/os-release`)
	return d
}
