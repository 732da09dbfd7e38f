package export

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Freezing: a running machine that cannot be snapshotted is stopped in place
// for the duration of the read through the cgroup freezer, so the exported
// tree is the state of one instant (crash-consistent: what a power cut would
// leave). Cgroup v2 has cgroup.freeze/cgroup.events in every non-root cgroup;
// hybrid and legacy hosts have the v1 freezer hierarchy (freezer.state
// FROZEN/THAWED). Both freeze the whole subtree.

// cgroupFreezer freezes one cgroup directory.
type cgroupFreezer struct {
	dir string // the cgroup directory
	v2  bool
}

func (c *cgroupFreezer) String() string {
	if c.v2 {
		return "cgroup " + c.dir
	}
	return "v1 freezer cgroup " + c.dir
}

// freezeTimeout bounds the wait for a cgroup to report itself frozen.
const freezeTimeout = 10 * time.Second

// frozen reports whether the cgroup is frozen now.
func (c *cgroupFreezer) frozen() (bool, error) {
	if c.v2 {
		b, err := os.ReadFile(filepath.Join(c.dir, "cgroup.events"))
		if err != nil {
			return false, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line == "frozen 1" {
				return true, nil
			}
		}
		return false, nil
	}
	b, err := os.ReadFile(filepath.Join(c.dir, "freezer.state"))
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "FROZEN", nil
}

func (c *cgroupFreezer) set(freeze bool) error {
	if c.v2 {
		v := "0"
		if freeze {
			v = "1"
		}
		return os.WriteFile(filepath.Join(c.dir, "cgroup.freeze"), []byte(v), 0)
	}
	v := "THAWED"
	if freeze {
		v = "FROZEN"
	}
	return os.WriteFile(filepath.Join(c.dir, "freezer.state"), []byte(v), 0)
}

// freeze freezes the cgroup and waits until every task in it is frozen. It
// returns a thaw function that must be called (it ignores ctx, so it works
// after Ctrl-C). A cgroup that was already frozen by someone else is left
// frozen: thaw then does nothing.
func (c *cgroupFreezer) freeze(ctx context.Context) (thaw func() error, err error) {
	if already, err := c.frozen(); err != nil {
		return nil, fmt.Errorf("reading freezer state of %s: %w", c, err)
	} else if already {
		return func() error { return nil }, nil
	}
	thaw = func() error {
		if err := c.set(false); err != nil {
			return fmt.Errorf("THAWING %s FAILED, the machine stays frozen until you write 0 to cgroup.freeze (THAWED to freezer.state): %w", c, err)
		}
		return nil
	}
	if err := c.set(true); err != nil {
		_ = thaw()
		return nil, fmt.Errorf("freezing %s: %w", c, err)
	}
	deadline := time.Now().Add(freezeTimeout)
	for {
		ok, err := c.frozen()
		if err == nil && ok {
			return thaw, nil
		}
		if err == nil && time.Now().After(deadline) {
			err = fmt.Errorf("not frozen after %v", freezeTimeout)
		}
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			if terr := thaw(); terr != nil {
				return nil, terr
			}
			return nil, fmt.Errorf("freezing %s: %w", c, err)
		}
		if !c.v2 {
			// The v1 freezer may stay FREEZING: writing FROZEN again retries.
			_ = c.set(true)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cgroupMounts finds the mount points of the cgroup2 hierarchy and of the v1
// freezer hierarchy in this mount namespace.
func cgroupMounts() (v2, v1freezer string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || pf[3] != "/" {
			continue
		}
		switch qf[0] {
		case "cgroup2":
			if v2 == "" {
				v2 = unescapeMount(pf[4])
			}
		case "cgroup":
			for _, o := range strings.Split(qf[2], ",") {
				if o == "freezer" && v1freezer == "" {
					v1freezer = unescapeMount(pf[4])
				}
			}
		}
	}
	return v2, v1freezer, sc.Err()
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// procCgroups parses /proc/PID/cgroup into the v2 path and the v1 freezer
// path ("" when absent).
func procCgroups(pid string) (v2, v1freezer string, err error) {
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "freezer" {
				v1freezer = parts[2]
			}
		}
	}
	return v2, v1freezer, nil
}

// freezerFor picks the freezer for the machine whose init is pid: the cgroup
// v2 one when the process sits in a non-root v2 cgroup that has
// cgroup.freeze, else the v1 freezer hierarchy. It refuses a cgroup that
// contains berth itself (nspawn --keep-unit run from the same session): that
// freeze would never end.
func freezerFor(pid int) (*cgroupFreezer, error) {
	v2m, v1m, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	p2, p1, err := procCgroups(fmt.Sprint(pid))
	if err != nil {
		return nil, fmt.Errorf("reading the cgroup of pid %d: %w", pid, err)
	}
	s2, s1, err := procCgroups("self")
	if err != nil {
		return nil, err
	}
	var reasons []string
	if v2m != "" && p2 != "" && p2 != "/" {
		dir := filepath.Join(v2m, p2)
		if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err == nil {
			if !within(s2, p2) {
				return &cgroupFreezer{dir: dir, v2: true}, nil
			}
			reasons = append(reasons, fmt.Sprintf("its cgroup %s also holds berth", p2))
		} else {
			reasons = append(reasons, fmt.Sprintf("cgroup %s has no cgroup.freeze", p2))
		}
	}
	if v1m != "" && p1 != "" && p1 != "/" {
		if !within(s1, p1) {
			return &cgroupFreezer{dir: filepath.Join(v1m, p1)}, nil
		}
		reasons = append(reasons, fmt.Sprintf("its freezer cgroup %s also holds berth", p1))
	}
	if len(reasons) == 0 {
		reasons = append(reasons, "it runs in the root cgroup")
	}
	return nil, errors.New(strings.Join(reasons, "; "))
}

// within reports whether cgroup path p is c or below it.
func within(p, c string) bool {
	return p == c || strings.HasPrefix(p, strings.TrimSuffix(c, "/")+"/")
}
