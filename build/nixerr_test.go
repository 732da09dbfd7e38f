package build

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// tempFlake writes a flake whose derivations have names unique to this run,
// so that Nix really has to build them (a cached path would hide every
// set-up problem).
func tempFlake(t *testing.T) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	tag := hex.EncodeToString(b[:])
	dir := t.TempDir()
	flake := `{ outputs = { self }: let
  system = "x86_64-linux";
  sh = name: script: derivation { name = "${name}-` + tag + `"; inherit system; builder = "/bin/sh"; args = [ "-ec" script ]; };
  fails = sh "fails" "echo 'berth-nixerr: this dependency fails on purpose' >&2; exit 4";
  fetched = derivation { name = "fetched-` + tag + `"; inherit system; builder = "builtin:fetchurl";
    url = "http://127.0.0.1:9/berth-unreachable"; outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = "0000000000000000000000000000000000000000000000000000"; };
  nixos = top: { config.system.build.toplevel = top; };
in { nixosConfigurations = {
  plain = nixos (sh "plain" "echo x > $out");
  dependent = nixos (sh "dependent" "echo ${fails} > $out");
  online = nixos (sh "online" "echo ${fetched} > $out");
}; }; }
`
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func realiseErr(t *testing.T, in Input) string {
	t.Helper()
	_, err := Realise(context.Background(), in, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatalf("%+v built", in)
	}
	msg := err.Error()
	t.Log(msg)
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	return msg
}

// TestNixSetupErrors provokes, with the real Nix, each broken set-up a
// fresh machine can have and checks that berth says in one line what is
// wrong and what to do, with Nix's own words after it.
func TestNixSetupErrors(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "nix")
	dir := tempFlake(t)
	flake := func(name string) string { return "path:" + dir + "#" + name }
	offline := []string{"substituters="}

	t.Run("missing build users group", func(t *testing.T) {
		conf := t.TempDir()
		os.WriteFile(filepath.Join(conf, "nix.conf"), []byte("build-users-group = berthnosuchgroup\nsandbox = false\n"), 0o644)
		t.Setenv("NIX_CONF_DIR", conf)
		msg := realiseErr(t, Input{Flake: flake("plain"), NixOptions: offline})
		for _, want := range []string{"berthnosuchgroup", "install nix-setup-systemd", "Nix said: error:"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%q does not mention %q", msg, want)
			}
		}
	})
	t.Run("sandbox without the host's /bin/sh", func(t *testing.T) {
		msg := realiseErr(t, Input{Flake: flake("plain"), NixOptions: append(offline, "sandbox=true")})
		if !strings.Contains(msg, "sandbox = false") || !strings.Contains(msg, "/bin/sh") {
			t.Errorf("%q", msg)
		}
	})
	t.Run("no network and nothing offline", func(t *testing.T) {
		msg := realiseErr(t, Input{Flake: flake("online"), NixOptions: []string{"substituters=http://127.0.0.1:1", "connect-timeout=1", "download-attempts=1"}})
		if !strings.Contains(msg, "cannot reach it") || !strings.Contains(msg, "substituters=") || !strings.Contains(msg, "127.0.0.1:9") {
			t.Errorf("%q", msg)
		}
	})
	t.Run("flake path without ./", func(t *testing.T) {
		parent := filepath.Dir(dir)
		wd, _ := os.Getwd()
		os.Chdir(parent)
		defer os.Chdir(wd)
		msg := realiseErr(t, Input{Flake: filepath.Base(dir) + "#plain", NixOptions: offline})
		if !strings.Contains(msg, "write ./"+filepath.Base(dir)) {
			t.Errorf("%q", msg)
		}
	})
	t.Run("a failing dependency is named, not only counted", func(t *testing.T) {
		msg := realiseErr(t, Input{Flake: flake("dependent"), NixOptions: offline})
		if !strings.Contains(msg, "fails on purpose") || strings.HasPrefix(msg, "nix build") && strings.Contains(msg, ": error: 1 dependencies") {
			t.Errorf("%q", msg)
		}
	})
}

func TestNixSetupHint(t *testing.T) {
	for in, want := range map[string]string{
		"error: the group 'nixbld' specified in 'build-users-group' does not exist\n":                                "nix-setup-systemd",
		"error: cloning builder process: Operation not permitted\n":                                                  "sandbox = false",
		"error: cannot find flake 'flake:testdata' in the flake registries\n":                                        "write ./testdata",
		"error: unable to download 'https://cache.nixos.org/nix-cache-info': Couldn't resolve host name (6)\n":       "network",
		"error: builder for '/nix/store/x.drv' failed with exit code 3;\n       last 1 log lines:\n       > boom\n": "",
	} {
		if got := NixSetupHint([]byte(in)); (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%q: hint %q, want one mentioning %q", in, got, want)
		}
	}
}
