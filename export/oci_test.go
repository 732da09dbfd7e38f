package export

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/formats/oci"
)

func TestParseNspawn(t *testing.T) {
	ns, err := ParseNspawn([]byte(`# comment
[Exec]
Boot=yes
Parameters=--log-level=debug "quiet splash" 'a"b' x\y
Environment=A=1 "B=two words"
Environment=C=c\
  D=d
WorkingDirectory=/srv/app dir
User=web
KillSignal=SIGRTMIN+3
[Files]
Bind=/x
Parameters=ignored
`))
	if err != nil {
		t.Fatal(err)
	}
	want := NspawnExec{
		Boot:             true,
		Parameters:       []string{"--log-level=debug", "quiet splash", `a"b`, `x\y`},
		Environment:      []string{"A=1", "B=two words", "C=c", "D=d"},
		WorkingDirectory: "/srv/app dir",
		User:             "web",
		KillSignal:       "SIGRTMIN+3",
	}
	if !reflect.DeepEqual(ns, want) {
		t.Fatalf("got %+v\nwant %+v", ns, want)
	}
	for _, bad := range []string{"[Exec\n", "[Exec]\nBoot=maybe\n", "[Exec]\nParameters=\"open\n", "[Exec]\nEnvironment=novalue\n", "[Exec]\njunk\n"} {
		if _, err := ParseNspawn([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// What formats/oci writes from an image config, export reads back.
func TestNspawnRoundTrip(t *testing.T) {
	for _, c := range []v1.Config{
		{Cmd: []string{"/bin/sh", "-c", `echo "hi there" 'x'`}, Env: []string{"A=1", "B=two words", `Q=a"b`}, WorkingDir: "/srv"},
		{Entrypoint: []string{"/sbin/init"}, Cmd: []string{"quiet"}, User: "web"},
	} {
		b := oci.ConfigToNspawn(&v1.ConfigFile{Config: c})
		ns, err := ParseNspawn(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		argv := append(append([]string(nil), c.Entrypoint...), c.Cmd...)
		got := ns.Parameters
		if ns.Boot {
			got = append([]string{"/sbin/init"}, got...)
		}
		if fmt.Sprint(got) != fmt.Sprint(argv) || fmt.Sprint(ns.Environment) != fmt.Sprint(c.Env) || ns.WorkingDirectory != c.WorkingDir || ns.User != c.User {
			t.Errorf("round trip of %+v via\n%s gives %+v", c, b, ns)
		}
	}
}

func TestMachineConfig(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "m")
	os.MkdirAll(filepath.Join(dir, "sbin"), 0o755)
	cfg, err := machineConfig(dir, "", nil)
	if err != nil || cfg.Cmd != nil {
		t.Fatalf("no settings, no init: %+v %v", cfg, err)
	}
	os.WriteFile(filepath.Join(dir, "sbin/init"), nil, 0o755)
	if cfg, _ := machineConfig(dir, "", nil); fmt.Sprint(cfg.Cmd) != "[/sbin/init]" {
		t.Fatalf("init tree: %+v", cfg)
	}
	os.WriteFile(filepath.Join(root, "m.nspawn"), []byte("[Exec]\nBoot=yes\nParameters=systemd.unit=rescue.target\nEnvironment=X=1\n"), 0o644)
	cfg, err = machineConfig(dir, "", nil)
	if err != nil || fmt.Sprint(cfg.Cmd, cfg.Env) != "[/sbin/init systemd.unit=rescue.target] [X=1]" {
		t.Fatalf("settings next to the image: %+v %v", cfg, err)
	}
	os.WriteFile(filepath.Join(root, "m.nspawn"), []byte("[Exec]\nParameters='\n"), 0o644)
	if _, err := machineConfig(dir, "", nil); err == nil || !strings.Contains(err.Error(), "m.nspawn") {
		t.Fatalf("bad settings: %v", err)
	}
}

func FuzzParseNspawn(f *testing.F) {
	f.Add([]byte("[Exec]\nBoot=yes\nParameters=a \"b c\" 'd'\nEnvironment=A=1\nWorkingDirectory=/x\n"))
	f.Add([]byte("[Exec]\nParameters=\"\n"))
	f.Add([]byte("[Exec]\nEnvironment=A=1\\\n B=2\\"))
	f.Add([]byte("["))
	f.Fuzz(func(t *testing.T, b []byte) {
		ns, err := ParseNspawn(b)
		if err != nil {
			return
		}
		for _, e := range ns.Environment {
			if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
				t.Fatalf("environment entry %q accepted", e)
			}
		}
	})
}
