package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/build/buildtest"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/publish"
	"github.com/berth-dev/berth/verify"
	"github.com/berth-dev/berth/verify/verifytest"
)

const systemdPull = "/usr/lib/systemd/systemd-pull"

// publishKeys are a passphrase-protected OpenPGP key and a cosign-style
// P-256 PEM key made with the real gpg and openssl.
type publishKeys struct {
	gpg     *verifytest.GPG
	secret  string // OpenPGP secret key file
	pubring string // binary public keyring
	cosign  *verifytest.PEMKey
}

func newPublishKeys(t *testing.T) publishKeys {
	t.Helper()
	dir := t.TempDir()
	g := verifytest.NewGPG(t)
	fpr := g.GenKey(t, "Release <release@example.invalid>", "ed25519", "", "pw")
	k := publishKeys{gpg: g, secret: filepath.Join(dir, "release.key"), pubring: filepath.Join(dir, "release.gpg"),
		cosign: verifytest.GenPEMKey(t, dir, "p256")}
	writeTestFile(t, k.secret, g.ExportSecret(t, fpr, "pw", true))
	writeTestFile(t, k.pubring, g.Export(t, false, fpr))
	t.Setenv(envGPGPassphrase, "pw")
	t.Setenv("SOURCE_DATE_EPOCH", "")
	return k
}

func writeTestFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func publishArgs(t *testing.T, k publishKeys, out string, extra ...string) []string {
	settings := filepath.Join(t.TempDir(), "any.nspawn")
	writeTestFile(t, settings, []byte("[Exec]\nEnvironment=RELEASE=1\n"))
	args := []string{"publish", "--flake", buildtest.Flake(t, "test"), "--nix-option", "substituters=",
		"--format", "tar.xz", "--format", "tar.zst", "--format", "raw.zst", "--format", "oci.tar",
		"--settings", settings, "--gpg-key", k.secret, "--key", k.cosign.Priv, "--out", out}
	return append(args, extra...)
}

// bootsWithMarker boots dir with systemd-nspawn -b and requires the test
// system's marker.
func bootsWithMarker(t *testing.T, dir string) {
	t.Helper()
	nspawn := testenv.RequireTool(t, "systemd-nspawn")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got, err := exec.CommandContext(ctx, nspawn, "--register=no", "--keep-unit", "-q", "-D", dir, "-b").CombinedOutput()
	if !strings.Contains(string(got), buildtest.Marker) {
		t.Fatalf("%s did not boot the test system (err %v):\n%s", dir, err, got)
	}
}

// runSystemdPull runs systemd-pull tar --verify=signature in a private mount
// namespace whose /etc/systemd is a tmpfs holding only the test keyring, so
// the host's keyring and configuration are untouched. systemd-pull 252 now
// and then hangs in its event loop after the download (see
// TestPullMatchesSystemdPull in pull/): an attempt is bounded and a hang
// (never a failure) is retried on an emptied image root.
func runSystemdPull(t *testing.T, keyring, url, name, root string) ([]byte, error) {
	t.Helper()
	script := `mount --make-rprivate / && mount -t tmpfs tmpfs /etc/systemd &&
cp "$1" /etc/systemd/import-pubring.gpg &&
exec ` + systemdPull + ` tar --verify=signature "$2" "$3" --image-root="$4"`
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, "unshare", "-m", "sh", "-c", script, "sh", keyring, url, name, root).CombinedOutput()
		hung := ctx.Err() != nil
		cancel()
		if !hung || attempt == 3 {
			return out, err
		}
		t.Logf("systemd-pull hung (attempt %d); retrying", attempt)
		clearRoot(root)
	}
}

// clearRoot empties an image root systemd-pull wrote (its cache copies are
// immutable).
func clearRoot(root string) {
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		exec.Command("chattr", "-R", "-i", filepath.Join(root, e.Name())).Run()
		os.RemoveAll(filepath.Join(root, e.Name()))
	}
}

// unimmutable lets t.TempDir remove what systemd-pull made immutable.
func unimmutable(t *testing.T, root string) {
	t.Cleanup(func() { clearRoot(root) })
}

func serveRelease(t *testing.T, dir string) string {
	srv := httptest.NewServer(http.FileServer(http.Dir(dir))) // 127.0.0.1
	t.Cleanup(srv.Close)
	return srv.URL
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	sh(t, "cp -a '"+src+"' '"+dst+"'")
}

// A release set of the test system: published twice byte-identical;
// SHA256SUMS.gpg accepted by gpg --verify, SHA256SUMS.sig by openssl;
// release.json describes every file; served on 127.0.0.1 it is pulled by
// systemd-pull tar --verify=signature and berth pull-tar --verify=signature,
// and both trees boot. Tampering with the image, the .nspawn or SHA256SUMS
// makes both pullers fail, and berth's image root stays as it was.
func TestPublishReleaseSet(t *testing.T) {
	buildtest.Require(t)
	testenv.RequireTool(t, "unshare")
	testenv.RequireTool(t, systemdPull)
	testenv.RequireTool(t, "systemd-nspawn")
	testenv.RequireTool(t, "mkfs.ext4")
	k := newPublishKeys(t)
	w := t.TempDir()
	rel := filepath.Join(w, "release")
	again := filepath.Join(w, "again")
	mustBerth(t, publishArgs(t, k, rel)...)
	mustBerth(t, publishArgs(t, k, again)...)

	want := "SHA256SUMS SHA256SUMS.gpg SHA256SUMS.sig release.json test.nspawn test.oci.tar test.raw.zst test.tar.xz test.tar.zst"
	if got := listing(t, rel); got != want {
		t.Fatalf("release set holds %q, want %q", got, want)
	}
	if got := listing(t, w); got != "again release" {
		t.Errorf("left next to the sets: %q", got)
	}
	// Reproducible: every file of the two sets, signatures included.
	for _, n := range strings.Fields(want) {
		a, _ := os.ReadFile(filepath.Join(rel, n))
		b, _ := os.ReadFile(filepath.Join(again, n))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s differs between two publishes of the same inputs (%d vs %d bytes)", n, len(a), len(b))
		}
	}

	// The standard tools accept the signatures.
	sums := filepath.Join(rel, "SHA256SUMS")
	if err := k.gpg.Verify(sums+".gpg", sums); err != nil {
		t.Errorf("gpg --verify SHA256SUMS.gpg: %v", err)
	}
	sig64, _ := os.ReadFile(sums + ".sig")
	rawSig, err := base64.StdEncoding.DecodeString(string(sig64))
	if err != nil {
		t.Fatalf("SHA256SUMS.sig is not base64: %v", err)
	}
	if err := k.cosign.Verify(sums, rawSig); err != nil {
		t.Errorf("openssl dgst -verify SHA256SUMS.sig: %v", err)
	}

	// release.json lists every image and the .nspawn with their digests.
	var r publish.Release
	js, _ := os.ReadFile(filepath.Join(rel, "release.json"))
	if err := json.Unmarshal(js, &r); err != nil {
		t.Fatal(err)
	}
	if r.Name != "test" || !strings.HasPrefix(r.System, "/nix/store/") || !strings.HasSuffix(r.System, "nixos-system-berth-test") {
		t.Errorf("release.json: name %q system %q", r.Name, r.System)
	}
	formats := map[string]string{}
	for _, f := range r.Files {
		formats[f.File] = f.Format
		st, err := os.Stat(filepath.Join(rel, f.File))
		if err != nil || st.Size() != f.Size || sha256File(t, filepath.Join(rel, f.File)) != f.SHA256 {
			t.Errorf("release.json entry %+v does not match the file (%v)", f, err)
		}
	}
	if len(formats) != 5 || formats["test.tar.xz"] != "tar.xz" || formats["test.raw.zst"] != "raw.zst" || formats["test.nspawn"] != "nspawn" {
		t.Errorf("release.json files: %v", formats)
	}

	url := serveRelease(t, rel)
	// systemd-pull, with the key where systemd reads it (private namespace).
	sdRoot := filepath.Join(w, "sd-machines")
	os.Mkdir(sdRoot, 0o755)
	unimmutable(t, sdRoot)
	if out, err := runSystemdPull(t, k.pubring, url+"/test.tar.xz", "test", sdRoot); err != nil {
		t.Fatalf("systemd-pull tar --verify=signature: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(sdRoot, "test.nspawn")); !strings.Contains(string(got), "RELEASE=1") {
		t.Errorf("systemd-pull did not install the settings file: %q", got)
	}
	sdTree := snap(t, filepath.Join(sdRoot, "test"))
	bootsWithMarker(t, filepath.Join(sdRoot, "test"))

	// berth pull-tar, with the keyring and with the cosign key.
	root := filepath.Join(w, "machines")
	mustBerth(t, "--image-root", root, "pull-tar", "--verify=signature", "--keyring", k.pubring, url+"/test.tar.xz")
	mustBerth(t, "--image-root", root, "pull-tar", "--verify=signature", "--key", k.cosign.Pub, url+"/test.tar.zst", "test-zst")
	berthTree := snap(t, filepath.Join(root, "test"))
	delete(sdTree, ".") // systemd-pull leaves the root directory's mtime at the time of the pull
	delete(berthTree, ".")
	sameTree(t, "berth pull-tar vs systemd-pull", sdTree, berthTree)
	bootsWithMarker(t, filepath.Join(root, "test"))

	// Tampering: with the image, with the .nspawn, and with SHA256SUMS
	// (the tampered image's true digest written in: only the signature
	// can tell).
	tamper := map[string]func(dir string){
		"image": func(dir string) { flipByte(t, filepath.Join(dir, "test.tar.xz")) },
		"nspawn": func(dir string) {
			writeTestFile(t, filepath.Join(dir, "test.nspawn"), []byte("[Exec]\nPrivileged=yes\n"))
		},
		"SHA256SUMS": func(dir string) {
			img := filepath.Join(dir, "test.tar.xz")
			old := sha256File(t, img)
			flipByte(t, img)
			s, _ := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
			writeTestFile(t, filepath.Join(dir, "SHA256SUMS"), bytes.ReplaceAll(s, []byte(old), []byte(sha256File(t, img))))
		},
	}
	for what, f := range tamper {
		t.Run("tampered "+what, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "set")
			copyDir(t, rel, dir)
			f(dir)
			u := serveRelease(t, dir)
			before := listing(t, root)
			for _, flag := range [][]string{{"--keyring", k.pubring}, {"--key", k.cosign.Pub}} {
				args := append([]string{"--image-root", root, "pull-tar", "--verify=signature"}, flag...)
				res := berth(t, nil, append(args, u+"/test.tar.xz", "tampered")...)
				if res.code == 0 {
					t.Errorf("berth pull-tar %s accepted a set with a tampered %s", flag[0], what)
				}
				if got := listing(t, root); got != before {
					t.Errorf("image root changed by a failed pull: %q, was %q", got, before)
				}
			}
			sd := filepath.Join(t.TempDir(), "sd")
			os.Mkdir(sd, 0o755)
			unimmutable(t, sd)
			if out, err := runSystemdPull(t, k.pubring, u+"/test.tar.xz", "tampered", sd); err == nil {
				t.Errorf("systemd-pull accepted a set with a tampered %s:\n%s", what, out)
			}
			if _, err := os.Lstat(filepath.Join(sd, "tampered")); err == nil {
				t.Errorf("systemd-pull installed the tampered image")
			}
		})
	}
}

func flipByte(t *testing.T, p string) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	writeTestFile(t, p, data)
}

// Bad publishes fail with one line and leave nothing: an existing set
// without --force, a failing Nix build, a wrong passphrase (before any
// build), an unknown format.
func TestPublishFailsCleanly(t *testing.T) {
	buildtest.Require(t)
	k := newPublishKeys(t)
	w := t.TempDir()
	existing := filepath.Join(w, "existing")
	os.Mkdir(existing, 0o755)
	writeTestFile(t, filepath.Join(existing, "keep"), []byte("old"))
	base := []string{"publish", "--nix-option", "substituters=", "--format", "tar.xz"}
	for _, c := range []struct {
		name string
		args []string
		env  string
		code int
	}{
		{"existing set", append(base, "--flake", buildtest.Flake(t, "test"), "--out", existing), "", 1},
		{"broken build", append(base, "--flake", buildtest.Flake(t, "broken"), "--out", filepath.Join(w, "broken")), "", 1},
		{"wrong passphrase", append(base, "--flake", buildtest.Flake(t, "test"), "--gpg-key", k.secret, "--out", filepath.Join(w, "pw")), "wrong", 1},
		{"unknown format", []string{"publish", "--flake", buildtest.Flake(t, "test"), "--format", "zip", "--out", filepath.Join(w, "f")}, "", 2},
		{"oci layout", []string{"publish", "--flake", buildtest.Flake(t, "test"), "--format", "oci", "--out", filepath.Join(w, "f")}, "", 2},
		{"no format", []string{"publish", "--flake", buildtest.Flake(t, "test"), "--out", filepath.Join(w, "f")}, "", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				t.Setenv(envGPGPassphrase, c.env)
			}
			start := time.Now()
			res := berth(t, nil, c.args...)
			if res.code != c.code {
				t.Fatalf("exit %d, want %d: %s", res.code, c.code, res.stderr)
			}
			if lines := strings.Count(strings.TrimSpace(res.stderr), "berth: "); lines != 1 {
				t.Errorf("want one error line, got: %s", res.stderr)
			}
			if got := listing(t, w); got != "existing" {
				t.Errorf("left behind: %q", got)
			}
			if got := listing(t, existing); got != "keep" {
				t.Errorf("existing set changed: %q", got)
			}
			if c.name == "wrong passphrase" && time.Since(start) > 5*time.Second {
				t.Errorf("the passphrase was checked only after %v", time.Since(start))
			}
		})
	}
}

// --push uploads the OCI image and its cosign signature (tag
// sha256-<hex>.sig, simple-signing payload): berth pull-oci
// --verify=signature --key accepts it with the publisher's key and refuses
// another key; the signature layer also verifies directly.
func TestPublishPushSigned(t *testing.T) {
	buildtest.Require(t)
	addr := exportRegistry(t)
	k := newPublishKeys(t)
	w := t.TempDir()
	ref := addr + "/berth/published:v1"
	out := filepath.Join(w, "rel")
	mustBerth(t, "publish", "--flake", buildtest.Flake(t, "test"), "--nix-option", "substituters=",
		"--format", "oci.tar", "--key", k.cosign.Priv, "--push", ref, "--out", out)
	var r publish.Release
	js, _ := os.ReadFile(filepath.Join(out, "release.json"))
	if err := json.Unmarshal(js, &r); err != nil || r.OCI == nil {
		t.Fatalf("release.json has no pushed image: %s (%v)", js, err)
	}
	pr, _ := name.ParseReference(ref, name.Insecure)
	desc, err := remote.Head(pr)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != r.OCI.Digest {
		t.Fatalf("pushed digest %s, release.json says %s", desc.Digest, r.OCI.Digest)
	}
	wantTag := addr + "/berth/published:sha256-" + desc.Digest.Hex + ".sig"
	if r.OCI.Signature != wantTag {
		t.Errorf("signature tag %q, want %q", r.OCI.Signature, wantTag)
	}

	// Directly: the signature manifest as pushed.
	st, _ := name.ParseReference(wantTag, name.Insecure)
	sigImg, err := remote.Image(st)
	if err != nil {
		t.Fatalf("no signature at %s: %v", wantTag, err)
	}
	m, _ := sigImg.Manifest()
	layers, _ := sigImg.Layers()
	if len(layers) != 1 || m.Layers[0].MediaType != publish.SimpleSigningMediaType {
		t.Fatalf("signature manifest: %+v", m)
	}
	rc, _ := layers[0].Compressed()
	payload, _ := io.ReadAll(rc)
	pub, err := verify.LoadPublicKey(k.cosign.PubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.VerifySimpleSigning(pub, payload, m.Layers[0].Annotations[publish.SignatureAnnotation], desc.Digest.String(), addr+"/berth/published"); err != nil {
		t.Errorf("pushed signature does not verify: %v", err)
	}

	// With berth pull-oci.
	other := verifytest.GenPEMKey(t, t.TempDir(), "p256")
	root := filepath.Join(w, "machines")
	res := berth(t, nil, "--image-root", root, "pull-oci", "--verify=signature", "--key", other.Pub, ref, "wrongkey")
	if res.code == 0 {
		t.Error("pull-oci accepted the image with another key")
	}
	if got := listing(t, root); strings.Contains(got, "wrongkey") {
		t.Errorf("image root after a refused pull: %q", got)
	}
	mustBerth(t, "--image-root", root, "pull-oci", "--verify=signature", "--key", k.cosign.Pub, ref, "published")
	bootsWithMarker(t, filepath.Join(root, "published"))
}

// The release workflow passes actionlint (the real one, pinned in go.mod
// as a tool), and actionlint does catch a broken copy of it.
func TestReleaseWorkflowActionlint(t *testing.T) {
	goBin := testenv.RequireTool(t, "go")
	wf, err := filepath.Abs(filepath.Join(buildtest.FlakeDir(t), "..", "..", ".github", "workflows", "release.yml"))
	if err != nil {
		t.Fatal(err)
	}
	lint := func(file string) ([]byte, error) {
		cmd := exec.Command(goBin, "tool", "actionlint", "-no-color", file)
		cmd.Dir = filepath.Dir(filepath.Dir(filepath.Dir(wf)))
		return cmd.CombinedOutput()
	}
	if out, err := lint(wf); err != nil {
		t.Fatalf("actionlint %s: %v\n%s", wf, err, out)
	}
	data, err := os.ReadFile(wf)
	if err != nil {
		t.Fatal(err)
	}
	broken := bytes.Replace(data, []byte("${{ github.ref_name }}"), []byte("${{ github.no_such_field }}"), 1)
	if bytes.Equal(broken, data) {
		t.Fatal("the workflow no longer uses github.ref_name: update this test")
	}
	bad := filepath.Join(t.TempDir(), "release.yml")
	writeTestFile(t, bad, broken)
	if out, err := lint(bad); err == nil || !strings.Contains(string(out), "no_such_field") {
		t.Errorf("actionlint did not catch an unknown context field (err %v):\n%s", err, out)
	}
	// The workflow publishes what the README tells users to pull.
	for _, s := range []string{"berth)\" publish", "--gpg-key", "--key", "--push \"ghcr.io/", "softprops/action-gh-release", "install-nix-action"} {
		if !bytes.Contains(data, []byte(s)) {
			t.Errorf("workflow lacks %q", s)
		}
	}
}
