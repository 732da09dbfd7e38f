package oci

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/testenv"
)

// parseSettings reads a rendered file back: key -> values (one per line).
func parseSettings(t *testing.T, b []byte) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || line == "[Exec]" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("not a setting: %q", line)
		}
		if strings.HasSuffix(line, `\`) {
			t.Fatalf("line ends with a backslash (continuation): %q", line)
		}
		m[k] = append(m[k], v)
	}
	return m
}

func TestConfigToNspawn(t *testing.T) {
	cases := []struct {
		name string
		cfg  v1.Config
		want map[string][]string
	}{
		{"init", v1.Config{Entrypoint: []string{"/sbin/init"}}, map[string][]string{"Boot": {"yes"}}},
		{"nixos init with args", v1.Config{Entrypoint: []string{"/nix/store/abc-nixos-system/init"}, Cmd: []string{"--log-level=debug"}},
			map[string][]string{"Boot": {"yes"}, "Parameters": {"--log-level=debug"}}},
		{"command", v1.Config{
			Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{`echo "hi there" 'x' \n`},
			Env:        []string{"PATH=/usr/bin:/bin", "EMPTY=", "SPACE=a b", `BS=c:\dir\`},
			WorkingDir: "/srv/app", User: "nobody:nogroup", StopSignal: "SIGINT",
		}, map[string][]string{
			"Boot":             {"no"},
			"Parameters":       {`/bin/sh -c "echo "'"'"hi there"'"'" 'x' \n"`},
			"Environment":      {"PATH=/usr/bin:/bin", "EMPTY=", `"SPACE=a b"`, `"BS=c:\dir\"`},
			"WorkingDirectory": {"/srv/app"},
			"User":             {"nobody"},
			"KillSignal":       {"SIGINT"},
		}},
		{"left out", v1.Config{
			Cmd:        []string{"/bin/app", "line\nbreak"},
			Env:        []string{"NOEQUALS", "1BAD=x", "NL=a\nb", "OK=1"},
			WorkingDir: "relative", User: "root", StopSignal: "KILL",
		}, map[string][]string{"Boot": {"no"}, "Environment": {"OK=1"}, "KillSignal": {"SIGKILL"}}},
		{"empty", v1.Config{}, map[string][]string{"Boot": {"no"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := ConfigToNspawn(&v1.ConfigFile{Config: c.cfg})
			got := parseSettings(t, out)
			for k, v := range c.want {
				if !slices.Equal(got[k], v) {
					t.Errorf("%s = %q, want %q\n%s", k, got[k], v, out)
				}
			}
			for k := range got {
				if _, ok := c.want[k]; !ok {
					t.Errorf("unexpected %s=%q\n%s", k, got[k], out)
				}
			}
		})
	}
	if !bytes.Contains(ConfigToNspawn(nil), []byte("Boot=no")) {
		t.Error("nil config")
	}
}

// FuzzConfigToNspawn renders arbitrary commands and environments and parses
// them back as systemd would: every line is a setting or a comment, and
// what is written reads back as the image meant it.
func FuzzConfigToNspawn(f *testing.F) {
	f.Add("/bin/sh", "-c", `echo "a'b" \`, "K", `v "x" 'y' \`, "/w d")
	f.Add("/sbin/init", "", "", "PATH", "", "")
	f.Add("", "\n", "\x00", "=", "\xff", "rel")
	f.Fuzz(func(t *testing.T, a0, a1, a2, key, val, wd string) {
		cfg := &v1.ConfigFile{Config: v1.Config{Entrypoint: []string{a0}, Cmd: []string{a1, a2}, Env: []string{key + "=" + val}, WorkingDir: wd}}
		out := ConfigToNspawn(cfg)
		if !utf8Valid(out) {
			t.Fatalf("output is not UTF-8: %q", out)
		}
		got := parseSettings(t, out)
		argv := []string{a0, a1, a2}
		if ps, ok := got["Parameters"]; ok {
			words, err := SplitWords(ps[0])
			ok := err == nil
			if !ok {
				t.Fatalf("Parameters=%s does not parse", ps[0])
			}
			want := argv
			if got["Boot"][0] == "yes" {
				want = argv[1:]
			}
			if !slices.Equal(words, want) {
				t.Fatalf("Parameters=%s reads back as %q, want %q", ps[0], words, want)
			}
		}
		if es, ok := got["Environment"]; ok {
			words, err := SplitWords(es[0])
			ok := err == nil
			if !ok || len(words) != 1 || words[0] != key+"="+val {
				t.Fatalf("Environment=%s reads back as %q", es[0], words)
			}
		}
		if ws, ok := got["WorkingDirectory"]; ok && !strings.HasPrefix(ws[0], "/") {
			t.Fatalf("WorkingDirectory=%s", ws[0])
		}
	})
}

func utf8Valid(b []byte) bool { return strings.ToValidUTF8(string(b), "\ufffd") == string(b) }

// TestConfigToNspawnRealNspawn runs a busybox container with the rendered
// settings file next to it and checks that systemd-nspawn reads the
// command, environment and working directory as the image config says.
func TestConfigToNspawnRealNspawn(t *testing.T) {
	requireRoot(t)
	nspawn := testenv.RequireTool(t, "systemd-nspawn")
	busybox := testenv.RequireTool(t, "/bin/busybox")
	parent := t.TempDir()
	root := filepath.Join(parent, "ocitest")
	for _, d := range []string{"bin", "etc", "usr", "srv/my app"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("busybox", filepath.Join(root, "bin/sh")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("ID=berth-test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &v1.ConfigFile{Config: v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{`echo "A=[$A] B=[$B] C=[$C]"; pwd`},
		Env:        []string{`A=x y\z`, `B=q'r`, `C=a"b`},
		WorkingDir: "/srv/my app",
	}}
	if err := os.WriteFile(filepath.Join(parent, "ocitest.nspawn"), ConfigToNspawn(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, nspawn, "--register=no", "--keep-unit", "--quiet", "--console=pipe", "-D", root).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-nspawn: %v\n%s", err, out)
	}
	want := "A=[x y\\z] B=[q'r] C=[a\"b]\n/srv/my app\n"
	if !strings.HasPrefix(string(out), want) {
		t.Fatalf("container printed %q, want %q\nsettings:\n%s", out, want, ConfigToNspawn(cfg))
	}
}
