package build

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// System is a built NixOS system: everything the root tree is made of
// besides the store paths' content, which is read when the tree is written.
type System struct {
	// Toplevel is the system's store path (config.system.build.toplevel).
	Toplevel string
	// Closure holds the store paths the toplevel needs, itself included,
	// sorted by name.
	Closure []string
	// Registration is "nix-store --dump-db" over the closure, in Closure
	// order: what the first boot feeds to "nix-store --load-db".
	Registration []byte
	// Records is Registration parsed: per closure path (Closure order) its
	// NAR hash and size and its references, e.g. to order OCI layers by
	// popularity.
	Records []Registration
	// NarSize is the sum of the closure's NAR sizes, about the size of the
	// store part of an uncompressed tarball.
	NarSize int64
	// System is the Nix system double from the toplevel's "system" file,
	// e.g. "x86_64-linux".
	System string
	// Arch is the architecture in systemd's spelling ("x86-64", "arm64"),
	// as the Discoverable Partitions Specification and OCI need it.
	Arch string
	// OSRelease is the content of the toplevel's etc/os-release.
	OSRelease []byte

	log *slog.Logger
}

// ErrNotNixOS is returned by Load for store paths that are not NixOS
// systems.
var ErrNotNixOS = errors.New("not a NixOS system")

// Load reads the closure, registration, architecture and os-release of the
// system at toplevel (a store path, or a symlink to one). It fails with
// ErrNotNixOS when toplevel has no executable init.
func Load(ctx context.Context, toplevel string, log *slog.Logger) (*System, error) {
	if log == nil {
		log = slog.Default()
	}
	top, err := resolveToplevel(toplevel)
	if err != nil {
		return nil, err
	}
	s := &System{Toplevel: top, log: log}
	if err := s.checkInit(); err != nil {
		return nil, err
	}
	out, err := runNix(ctx, log, "nix-store", "--query", "--requisites", top)
	if err != nil {
		return nil, fmt.Errorf("reading the closure of %s: %w", top, err)
	}
	for _, l := range strings.Fields(string(out)) {
		if !isStorePath(l) {
			return nil, fmt.Errorf("nix-store -qR %s printed %q, which is not a store path", top, l)
		}
		s.Closure = append(s.Closure, l)
	}
	slices.Sort(s.Closure)
	s.Closure = slices.Compact(s.Closure)
	if _, ok := slices.BinarySearch(s.Closure, top); !ok {
		return nil, fmt.Errorf("nix-store -qR %s: the closure does not contain the toplevel", top)
	}
	args := append([]string{"--dump-db"}, s.Closure...)
	if s.Registration, err = runNix(ctx, log, "nix-store", args...); err != nil {
		return nil, fmt.Errorf("reading the registration of %s: %w", top, err)
	}
	recs, err := ParseRegistration(bytes.NewReader(s.Registration))
	if err != nil {
		return nil, fmt.Errorf("nix-store --dump-db: %w", err)
	}
	if len(recs) != len(s.Closure) {
		return nil, fmt.Errorf("nix-store --dump-db gave %d records for %d store paths", len(recs), len(s.Closure))
	}
	for i, r := range recs {
		if r.Path != s.Closure[i] {
			return nil, fmt.Errorf("nix-store --dump-db: record %d is %s, want %s", i, r.Path, s.Closure[i])
		}
		s.NarSize += r.NarSize
	}
	s.Records = recs
	if err := s.readSystem(); err != nil {
		return nil, err
	}
	if s.OSRelease, err = s.readInClosure("etc/os-release", 64<<10); err != nil {
		return nil, fmt.Errorf("%s: %w: %w (nspawn -b needs /etc/os-release)", top, ErrNotNixOS, err)
	}
	log.Debug("loaded system", "toplevel", top, "paths", len(s.Closure), "narSize", s.NarSize, "arch", s.Arch)
	return s, nil
}

// checkInit refuses toplevels without an init program: those are packages,
// not systems, and nspawn -b would find nothing to start.
func (s *System) checkInit() error {
	st, err := os.Stat(filepath.Join(s.Toplevel, "init"))
	if err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s: %w: it has no executable init (build config.system.build.toplevel of a nixosConfiguration)", s.Toplevel, ErrNotNixOS)
	}
	return nil
}

func (s *System) readSystem() error {
	b, err := os.ReadFile(filepath.Join(s.Toplevel, "system"))
	if err != nil {
		return fmt.Errorf("%s: %w: no \"system\" file naming its platform", s.Toplevel, ErrNotNixOS)
	}
	s.System = strings.TrimSpace(string(b))
	cpu, _, _ := strings.Cut(s.System, "-")
	s.Arch = systemdArch(cpu)
	if s.Arch == "" {
		return fmt.Errorf("%s: unknown platform %q in its \"system\" file", s.Toplevel, s.System)
	}
	return nil
}

// systemdArch maps Nix CPU names to systemd's architecture names.
func systemdArch(cpu string) string {
	switch cpu {
	case "x86_64":
		return "x86-64"
	case "i686", "i586", "i486", "i386":
		return "x86"
	case "aarch64":
		return "arm64"
	case "armv7l", "armv6l", "armv5tel":
		return "arm"
	case "riscv64":
		return "riscv64"
	case "riscv32":
		return "riscv32"
	case "powerpc64le":
		return "ppc64-le"
	case "powerpc64":
		return "ppc64"
	case "s390x":
		return "s390x"
	case "loongarch64":
		return "loongarch64"
	case "mips64el":
		return "mips64-le"
	}
	return ""
}

// readInClosure reads a file below the toplevel, following symlinks only
// while they stay inside the closure (a NixOS etc/os-release is a chain of
// links into other store paths).
func (s *System) readInClosure(rel string, limit int64) ([]byte, error) {
	p := filepath.Join(s.Toplevel, rel)
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	if !s.inClosure(r) {
		return nil, fmt.Errorf("%s resolves to %s, outside the system's closure", rel, r)
	}
	f, err := os.Open(r)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", rel)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", rel, limit)
	}
	return b, nil
}

// inClosure reports whether the absolute path p lies in a closure path.
func (s *System) inClosure(p string) bool {
	rest, ok := strings.CutPrefix(p, StoreDir+"/")
	if !ok {
		return false
	}
	base, _, _ := strings.Cut(rest, "/")
	_, found := slices.BinarySearch(s.Closure, StoreDir+"/"+base)
	return found
}

// Registration is one record of "nix-store --dump-db" (or of closureInfo's
// registration file): the input format of "nix-store --load-db".
type Registration struct {
	Path       string
	NarHash    string
	NarSize    int64
	Deriver    string
	References []string
}

// maxRefs bounds the reference count of one record, so that a corrupt
// count cannot make the parser allocate without limit.
const maxRefs = 1 << 20

// ParseRegistration reads registration records: per path, lines with the
// path, its NAR hash, NAR size, deriver (possibly empty), the number of
// references, then the references. Records follow each other directly;
// blank lines between records are tolerated.
func ParseRegistration(r io.Reader) ([]Registration, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	line := 0
	next := func(what string) (string, error) {
		if !sc.Scan() {
			if err := sc.Err(); err != nil {
				return "", err
			}
			return "", fmt.Errorf("line %d: missing %s: %w", line+1, what, io.ErrUnexpectedEOF)
		}
		line++
		return sc.Text(), nil
	}
	var recs []Registration
	for sc.Scan() {
		line++
		path := sc.Text()
		if path == "" {
			continue
		}
		if !isStorePath(path) {
			return nil, fmt.Errorf("line %d: %q is not a store path", line, path)
		}
		rec := Registration{Path: path}
		var err error
		if rec.NarHash, err = next("NAR hash"); err != nil {
			return nil, err
		}
		if rec.NarHash == "" {
			return nil, fmt.Errorf("line %d: empty NAR hash for %s", line, path)
		}
		size, err := next("NAR size")
		if err != nil {
			return nil, err
		}
		if rec.NarSize, err = strconv.ParseInt(size, 10, 64); err != nil || rec.NarSize < 0 {
			return nil, fmt.Errorf("line %d: bad NAR size %q for %s", line, size, path)
		}
		if rec.Deriver, err = next("deriver"); err != nil {
			return nil, err
		}
		if rec.Deriver != "" && !isStorePath(rec.Deriver) {
			return nil, fmt.Errorf("line %d: deriver %q of %s is not a store path", line, rec.Deriver, path)
		}
		cnt, err := next("reference count")
		if err != nil {
			return nil, err
		}
		n, err := strconv.Atoi(cnt)
		if err != nil || n < 0 || n > maxRefs {
			return nil, fmt.Errorf("line %d: bad reference count %q for %s", line, cnt, path)
		}
		for range n {
			ref, err := next("reference")
			if err != nil {
				return nil, err
			}
			if !isStorePath(ref) {
				return nil, fmt.Errorf("line %d: reference %q of %s is not a store path", line, ref, path)
			}
			rec.References = append(rec.References, ref)
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return recs, nil
}
