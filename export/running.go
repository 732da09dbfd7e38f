package export

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A machine is running when systemd-nspawn holds its image lock
// (machinelock.Shared); the reader then keeps a shared lock, so that an
// nspawn started during the export fails instead of changing the tree.

// findLeader returns the PID of the init process of the systemd-nspawn
// machine running path (a directory, or an image file given with --image),
// from machined's registry when it has one, else by scanning /proc for the nspawn
// process whose -D/--directory/--image/-M names path. The leader is the
// nspawn process's child (the container's PID 1).
func findLeader(ctx context.Context, path string) (int, error) {
	target, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	if pid, err := machinedLeader(target); err == nil && pid > 0 {
		return pid, nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != "systemd-nspawn" {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if !nspawnRuns(strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"), cwd, target) {
			continue
		}
		if child := firstChild(pid); child > 0 {
			return child, nil
		}
		return 0, fmt.Errorf("systemd-nspawn (pid %d) runs %s but has no container process yet", pid, path)
	}
	return 0, fmt.Errorf("no systemd-nspawn process found for %s", path)
}

// nspawnRuns reports whether an nspawn command line runs the tree or image
// target. Relative paths are taken from the process's working directory.
func nspawnRuns(argv []string, cwd string, target os.FileInfo) bool {
	var machine string
	same := func(p string) bool {
		if p == "" {
			return false
		}
		if !filepath.IsAbs(p) && cwd != "" {
			p = filepath.Join(cwd, p)
		}
		st, err := os.Stat(p)
		return err == nil && os.SameFile(st, target)
	}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if a == "--" {
			break
		}
		var val string
		var opt string
		switch {
		case a == "-D" || a == "--directory" || a == "-i" || a == "--image" || a == "-M" || a == "--machine":
			if i+1 >= len(argv) {
				return false
			}
			opt, val = a, argv[i+1]
			i++
		case strings.HasPrefix(a, "--directory="), strings.HasPrefix(a, "--image="), strings.HasPrefix(a, "--machine="):
			opt, val, _ = strings.Cut(a, "=")
		case strings.HasPrefix(a, "-D"), strings.HasPrefix(a, "-i"), strings.HasPrefix(a, "-M"):
			opt, val = a[:2], a[2:]
		case !strings.HasPrefix(a, "-"):
			// The first non-option starts the container's command line.
			i = len(argv)
			continue
		default:
			continue
		}
		switch opt {
		case "-M", "--machine":
			machine = val
		default:
			if same(val) {
				return true
			}
			return false
		}
	}
	// With only -M, nspawn looks the image up in /var/lib/machines.
	if machine != "" {
		return same("/var/lib/machines/"+machine) || same("/var/lib/machines/"+machine+".raw")
	}
	return false
}

func firstChild(pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				return c
			}
		}
	}
	return 0
}

// machinedDir is where systemd-machined keeps one state file per machine
// (KEY=VALUE lines, among them ROOT= and LEADER=).
const machinedDir = "/run/systemd/machines"

// machinedLeader returns the leader of the machine systemd-machined has
// registered with target as its root directory (or image). It reads
// machined's state files rather than asking over D-Bus: no bus, no
// machinectl, and nothing to wait for where machined does not run.
func machinedLeader(target os.FileInfo) (int, error) {
	return machinedLeaderIn(machinedDir, target)
}

func machinedLeaderIn(dir string, target os.FileInfo) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue // "unit:…" entries are symlinks
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var root string
		var leader int
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), "=")
			switch k {
			case "ROOT":
				root = v
			case "LEADER":
				leader, _ = strconv.Atoi(v)
			}
		}
		if root == "" || leader <= 0 {
			continue
		}
		if st, err := os.Stat(root); err == nil && os.SameFile(st, target) {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", leader)); err == nil {
				return leader, nil
			}
		}
	}
	return 0, errors.New("machined knows no machine running this tree")
}
