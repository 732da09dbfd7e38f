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

	"golang.org/x/sys/unix"
)

// A machine is running when systemd-nspawn holds its image lock. nspawn
// (src/shared/machine-image.c image_path_lock) takes two BSD locks on a tree
// it runs, exclusive unless --read-only: a "local" one next to the image
// (/path/.#name.lck) and a "global" one keyed by device and inode
// (/run/systemd/nspawn/locks/inode-DEV:INO). Both files outlive a killed
// nspawn, so only the lock state, not the file, says "running".
//
// imageLock probes both. When nobody holds them exclusively it keeps a
// shared lock on each until release is called: an nspawn started during the
// export then fails to lock the tree ("Directory tree ... is currently busy")
// instead of changing it under the reader. running reports an exclusive
// holder (a machine that can write its tree).
type imageLock struct {
	files []*os.File
}

func (l *imageLock) release() {
	for _, f := range l.files {
		_ = f.Close()
	}
	l.files = nil
}

// nspawnLockDir is where nspawn keeps its global image locks.
const nspawnLockDir = "/run/systemd/nspawn/locks"

func lockPaths(path string) ([]string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return nil, err
	}
	dir, base := filepath.Split(abs)
	return []string{
		filepath.Join(dir, ".#"+base+".lck"),
		fmt.Sprintf("%s/inode-%d:%d", nspawnLockDir, st.Dev, st.Ino),
	}, nil
}

// probeImageLock reports whether a machine holds the image lock of path
// exclusively. When not, the returned lock holds shared locks on the existing
// lock files and on the global one (created if need be, as nspawn does).
func probeImageLock(path string) (l *imageLock, running bool, err error) {
	paths, err := lockPaths(path)
	if err != nil {
		return nil, false, err
	}
	l = &imageLock{}
	for i, p := range paths {
		flags := os.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i == 1 {
			// The global lock lives in /run, not next to the user's image:
			// creating it leaves nothing in the image root.
			if err := os.MkdirAll(nspawnLockDir, 0o700); err == nil {
				flags = os.O_RDWR | os.O_CREATE | unix.O_NOFOLLOW | unix.O_CLOEXEC
			}
		}
		f, err := os.OpenFile(p, flags, 0o600)
		if err != nil {
			continue // no lock file, or none can be made: nobody locked it this way
		}
		held, err := sharedLock(f)
		if errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EAGAIN) {
			f.Close()
			l.release()
			return nil, true, nil
		}
		if err != nil || !held {
			f.Close()
			continue
		}
		l.files = append(l.files, f)
	}
	return l, false, nil
}

// sharedLock takes a shared lock on f of both kinds systemd has used for
// image locks: an open-file-description lock (fcntl F_OFD_SETLK, systemd ≥
// 250 "LOCK_UNPOSIX") and a BSD flock (older). The two do not conflict with
// each other, so a holder of either is detected and blocked.
func sharedLock(f *os.File) (bool, error) {
	fd := int(f.Fd())
	ofd := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: 0, Len: 0}
	err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &ofd)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return false, unix.EWOULDBLOCK
	}
	ofdOK := err == nil
	err = unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return false, err
	}
	return ofdOK || err == nil, nil
}

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
