package build

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"
)

// StoreDir is the Nix store berth builds from. Store paths in a NixOS system
// are absolute and baked into its files, so the tree always puts them here.
const StoreDir = "/nix/store"

// Input names the system to build: exactly one of Flake, Config and
// Toplevel.
type Input struct {
	// Flake is "REF#NAME": the toplevel of nixosConfigurations.NAME in the
	// flake REF (a path, "path:...", "git+file:...", "github:...").
	Flake string
	// Config is a classic configuration.nix, built through <nixpkgs/nixos>.
	Config string
	// Toplevel is a system already built: a store path or a symlink to one
	// (such as ./result).
	Toplevel string
	// NixOptions are "NAME=VALUE" settings passed to Nix as --option NAME
	// VALUE (substituters, max-jobs, ...).
	NixOptions []string
}

// Validate checks that exactly one input is given and that the options are
// well formed, without running Nix.
func (in Input) Validate() error {
	n := 0
	for _, s := range []string{in.Flake, in.Config, in.Toplevel} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("give exactly one of --flake REF#NAME, --config FILE or --toplevel STOREPATH")
	}
	if in.Flake != "" {
		if _, _, err := splitFlake(in.Flake); err != nil {
			return err
		}
	}
	for _, o := range in.NixOptions {
		if k, _, ok := strings.Cut(o, "="); !ok || k == "" {
			return fmt.Errorf("--nix-option %q: want NAME=VALUE", o)
		}
	}
	return nil
}

// splitFlake splits "REF#NAME" at its last '#'.
func splitFlake(s string) (ref, name string, err error) {
	i := strings.LastIndexByte(s, '#')
	if i <= 0 || i == len(s)-1 {
		return "", "", fmt.Errorf("--flake %q: want REF#NAME, e.g. .#myhost (NAME as in nixosConfigurations.NAME)", s)
	}
	return s[:i], s[i+1:], nil
}

// FlakeAttr returns the installable that builds the toplevel of
// nixosConfigurations.NAME, quoting NAME when it is not a plain identifier.
func FlakeAttr(flake string) (string, error) {
	ref, name, err := splitFlake(flake)
	if err != nil {
		return "", err
	}
	if !plainAttr.MatchString(name) {
		name = `"` + strings.ReplaceAll(name, `"`, `\"`) + `"`
	}
	return ref + "#nixosConfigurations." + name + ".config.system.build.toplevel", nil
}

var plainAttr = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_'-]*$`)

func (in Input) optionArgs() []string {
	var args []string
	for _, o := range in.NixOptions {
		k, v, _ := strings.Cut(o, "=")
		args = append(args, "--option", k, v)
	}
	return args
}

// Realise builds the system named by in and returns its toplevel store
// path. Nix's progress and errors go to the debug log; a failure returns an
// error that carries the last meaningful lines of Nix's standard error.
func Realise(ctx context.Context, in Input, log *slog.Logger) (string, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := in.Validate(); err != nil {
		return "", err
	}
	switch {
	case in.Toplevel != "":
		return resolveToplevel(in.Toplevel)
	case in.Flake != "":
		ref, _, _ := splitFlake(in.Flake)
		if err := checkFlakeRef(ref); err != nil {
			return "", err
		}
		attr, _ := FlakeAttr(in.Flake)
		args := []string{"--extra-experimental-features", "nix-command flakes", "build", "--json", "--no-link"}
		args = append(args, in.optionArgs()...)
		args = append(args, attr)
		out, err := runNix(ctx, log, "nix", args...)
		if err != nil {
			return "", fmt.Errorf("nix build %s: %w", attr, err)
		}
		p, err := parseBuildJSON(out)
		if err != nil {
			return "", fmt.Errorf("nix build %s: %w", attr, err)
		}
		return p, nil
	default:
		if _, err := os.Stat(in.Config); err != nil {
			return "", fmt.Errorf("--config: %w", err)
		}
		cfg, err := filepath.Abs(in.Config)
		if err != nil {
			return "", err
		}
		args := []string{"<nixpkgs/nixos>", "-A", "system", "-I", "nixos-config=" + cfg, "--no-out-link"}
		args = append(args, in.optionArgs()...)
		out, err := runNix(ctx, log, "nix-build", args...)
		if err != nil {
			return "", fmt.Errorf("nix-build <nixpkgs/nixos> with %s: %w", in.Config, err)
		}
		lines := strings.Fields(string(out))
		if len(lines) == 0 {
			return "", fmt.Errorf("nix-build <nixpkgs/nixos> with %s printed no store path", in.Config)
		}
		return resolveToplevel(lines[len(lines)-1])
	}
}

// parseBuildJSON reads the output path from "nix build --json":
// [{"drvPath": ..., "outputs": {"out": PATH}}].
func parseBuildJSON(b []byte) (string, error) {
	var res []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return "", fmt.Errorf("reading nix build --json output: %w", err)
	}
	if len(res) != 1 {
		return "", fmt.Errorf("nix build returned %d results, want one system", len(res))
	}
	p := res[0].Outputs["out"]
	if p == "" {
		return "", errors.New("nix build --json output names no \"out\" path")
	}
	return resolveToplevel(p)
}

// resolveToplevel turns a store path or a symlink to one into the store
// path itself and checks that it is a top-level store path.
func resolveToplevel(p string) (string, error) {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("toplevel %s: %w", p, err)
	}
	if !isStorePath(r) {
		return "", fmt.Errorf("toplevel %s is not a store path (want %s/<hash>-<name>)", p, StoreDir)
	}
	return r, nil
}

// isStorePath reports whether p is exactly /nix/store/<hash>-<name>.
func isStorePath(p string) bool {
	base, ok := strings.CutPrefix(p, StoreDir+"/")
	return ok && validStoreBase(base)
}

// validStoreBase checks "<32 nix32 chars>-<name>" with Nix's name alphabet.
func validStoreBase(b string) bool {
	if len(b) < 34 || b[32] != '-' {
		return false
	}
	for i := 0; i < 32; i++ {
		if !strings.ContainsRune("0123456789abcdfghijklmnpqrsvwxyz", rune(b[i])) {
			return false
		}
	}
	for _, c := range []byte(b[33:]) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("+-._?=", c) >= 0:
		default:
			return false
		}
	}
	return b[33] != '.'
}

// runNix runs a Nix command and returns its standard output. Standard error
// is logged at debug level as it arrives and summarised in the error.
func runNix(ctx context.Context, log *slog.Logger, name string, args ...string) ([]byte, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, fmt.Errorf("%s is not installed (install Nix, e.g. apt-get install nix-bin): %w", name, err)
	}
	log.Debug("running nix", "cmd", name, "args", args)
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &logWriter{log: log, cmd: name, buf: &stderr}
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := NixErrorSummary(stderr.Bytes())
		if hint := NixSetupHint(stderr.Bytes()); hint != "" {
			return nil, fmt.Errorf("%s (Nix said: %s; %w)", hint, msg, err)
		}
		if msg != "" {
			return nil, fmt.Errorf("%s (%w; run with --log-level=debug for Nix's full output)", msg, err)
		}
		return nil, fmt.Errorf("%w (Nix printed nothing)", err)
	}
	return stdout.Bytes(), nil
}

// logWriter keeps a bounded copy of a command's standard error and logs it
// line by line at debug level.
type logWriter struct {
	log     *slog.Logger
	cmd     string
	buf     *bytes.Buffer
	partial []byte
}

const maxStderr = 1 << 20

func (w *logWriter) Write(p []byte) (int, error) {
	if w.buf.Len() > maxStderr {
		// Keep the tail, where Nix prints its error.
		tail := append([]byte(nil), w.buf.Bytes()[w.buf.Len()-maxStderr/2:]...)
		w.buf.Reset()
		w.buf.Write(tail)
	}
	w.buf.Write(p)
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(stripANSI(w.partial[:i]))
		if nixActivity.MatchString(line) {
			// What Nix is building or fetching is the stage the user
			// waits for; the rest is detail.
			w.log.Info("nix: " + strings.TrimSpace(line))
		} else {
			w.log.Debug(w.cmd, "stderr", line)
		}
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > 64<<10 {
		w.partial = w.partial[:0]
	}
	return len(p), nil
}

var nixActivity = regexp.MustCompile(`^(building|copying|downloading|fetching) `)

var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

func stripANSI(b []byte) []byte { return ansi.ReplaceAll(b, nil) }

// cascade matches Nix's error lines that only say that something else
// failed ("1 dependencies of derivation ... failed to build", "build of
// ... failed"): the error that matters is the one before them.
var cascade = regexp.MustCompile(`^error: (\d+ dependencies of derivation .* failed to build|build of .* failed)`)

// NixErrorSummary condenses Nix's standard error into one line: from the
// last line that starts with "error:" and is not a mere consequence of an
// earlier failure, to the end or the next such consequence (the failing
// builder's log tail included), with colour codes and runs of white space
// removed, at most 600 bytes. Without an "error:" line it returns the last
// non-empty lines.
func NixErrorSummary(stderr []byte) string {
	lines := strings.Split(string(stripANSI(stderr)), "\n")
	start, end := -1, len(lines)
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "error:") {
			continue
		}
		if cascade.MatchString(l) {
			if start < 0 {
				end = i
			}
			continue
		}
		if start < 0 || i < start {
			start = i
			break
		}
	}
	if start < 0 {
		// Only consequences, or no error line at all.
		for i, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), "error:") {
				start, end = i, len(lines)
				break
			}
		}
	}
	if start < 0 {
		start = max(len(lines)-3, 0)
	}
	var parts []string
	for _, l := range lines[start:end] {
		l = strings.Join(strings.Fields(l), " ")
		if l == "" || strings.HasPrefix(l, "For full logs, run") {
			continue
		}
		parts = append(parts, l)
	}
	s := strings.Join(parts, " ")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 600 {
		cut := 597
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

var (
	nixNoGroup     = regexp.MustCompile(`the group '([^']*)' specified in 'build-users-group' does not exist`)
	nixSandboxSh   = regexp.MustCompile(`executing '(/bin/[^']+|/usr/bin/[^']+)': No such file or directory`)
	nixSandboxFail = regexp.MustCompile(`(?i)(sandbox|cloning builder process|private mount namespace|user namespace).*(not permitted|not supported|denied|failed)`)
	nixRegistry    = regexp.MustCompile(`cannot find flake '(?:flake:)?([^']*)' in the flake registries`)
	nixNetwork     = regexp.MustCompile(`unable to download '[^']*': (Couldn't resolve host|Couldn't connect|Could not resolve|Connection refused|Timeout|SSL connect)`)
)

// NixSetupHint recognises, in Nix's standard error, a Nix installation or
// invocation that cannot work here, and returns one line saying what is
// wrong and what to do; "" when the failure is something else (a build
// that fails on its own). It knows the wording of Debian's Nix 2.8 and of
// current Nix.
func NixSetupHint(stderr []byte) string {
	s := string(stripANSI(stderr))
	if m := nixNoGroup.FindStringSubmatch(s); m != nil {
		return fmt.Sprintf("Nix's build users group %q does not exist: install nix-setup-systemd (it creates the nixbld group and users and /etc/nix/nix.conf), or set build-users-group empty in nix.conf for single-user Nix", m[1])
	}
	if m := nixSandboxSh.FindStringSubmatch(s); m != nil {
		return fmt.Sprintf("the build ran in Nix's sandbox, where the host's %s does not exist: set sandbox = false in /etc/nix/nix.conf (nix-setup-systemd writes it) or pass the Nix option sandbox=false", m[1])
	}
	if nixSandboxFail.MatchString(s) {
		return "Nix's build sandbox cannot run here (it needs user and mount namespaces): set sandbox = false in /etc/nix/nix.conf or pass the Nix option sandbox=false"
	}
	if m := nixRegistry.FindStringSubmatch(s); m != nil {
		return fmt.Sprintf("Nix took %q for a name in the flake registries, not a path: write ./%s for a local directory (a path flake starts with ./ or /)", m[1], m[1])
	}
	if nixNetwork.MatchString(s) {
		return "Nix needs the network (a substituter or a download) and cannot reach it, and what it needs is not in the local store: build offline with the Nix option substituters= (empty) where everything builds locally, or give this machine network access"
	}
	return ""
}

// checkFlakeRef catches a local directory written without "./": Nix would
// look it up in the flake registries (and fetch the global registry from
// the network) instead of reading the directory.
func checkFlakeRef(ref string) error {
	if ref == "" || strings.ContainsAny(ref[:1], "./~") || strings.Contains(ref, ":") {
		return nil
	}
	if st, err := os.Stat(filepath.Join(ref, "flake.nix")); err == nil && st.Mode().IsRegular() {
		return fmt.Errorf("flake reference %q is the directory ./%s, but Nix reads it as a name in the flake registries: write ./%s", ref, ref, ref)
	}
	return nil
}
