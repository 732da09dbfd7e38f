package main

import (
	"bytes"
	"crypto/elliptic"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/verify"
	"github.com/berth-dev/berth/verify/verifytest"
)

// releaseDir makes a small release set: two images and a settings file.
func releaseDir(t *testing.T) (dir string, files []string) {
	t.Helper()
	dir = t.TempDir()
	for name, content := range map[string]string{
		"nixos.tar.xz": "not really xz, but bytes to hash\n",
		"nixos.raw":    strings.Repeat("raw disk ", 1000),
		"nixos.nspawn": "[Exec]\nBoot=yes\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	return dir, files
}

func TestVerifyCmdSumsFormat(t *testing.T) {
	sha := testenv.RequireTool(t, "sha256sum")
	dir, files := releaseDir(t)
	r := mustBerth(t, append([]string{"sums"}, files...)...)
	// coreutils writes the same "<hex> *name" lines for base names, in the
	// order given: give them sorted.
	cmd := exec.Command(sha, "--binary", "nixos.nspawn", "nixos.raw", "nixos.tar.xz")
	cmd.Dir = dir
	want, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if r.stdout != string(want) {
		t.Fatalf("berth sums:\n%s\nsha256sum --binary:\n%s", r.stdout, want)
	}

	out := filepath.Join(dir, "SHA256SUMS")
	mustBerth(t, append([]string{"sums", "-o", out}, files...)...)
	if got, _ := os.ReadFile(out); string(got) != string(want) {
		t.Fatalf("-o wrote %q", got)
	}
	cmd = exec.Command(sha, "--check", "--strict", "SHA256SUMS")
	cmd.Dir = dir
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum --check: %v\n%s", err, o)
	}
	// An existing output is not replaced without --force, and nothing is
	// left behind.
	r = berth(t, nil, append([]string{"sums", "-o", out}, files[:1]...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("existing output: exit %d, %s", r.code, r.stderr)
	}
	mustBerth(t, append([]string{"--force", "sums", "-o", out}, files[:1]...)...)
	if got, _ := os.ReadFile(out); strings.Count(string(got), "\n") != 1 {
		t.Fatalf("--force did not replace: %q", got)
	}
	if l := listing(t, dir); l != "SHA256SUMS nixos.nspawn nixos.raw nixos.tar.xz" {
		t.Fatalf("left behind: %s", l)
	}

	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"sums"}, 2, "argument"},
		{[]string{"sums", files[0], files[0]}, 2, "two files are named"},
		{[]string{"sums", filepath.Join(dir, "missing")}, 1, "no such file"},
		{[]string{"sums", dir}, 1, "directory"},
	} {
		r := berth(t, nil, c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("berth %q: exit %d %q, want %d containing %q", c.args, r.code, r.stderr, c.code, c.msg)
		}
	}
}

func TestVerifyCmdSignAndVerify(t *testing.T) {
	g := verifytest.NewGPG(t)
	const pass = "release passphrase"
	fpr := g.GenKey(t, "Berth Release <release@berth.test>", "ed25519", "", pass)
	otherFpr := g.GenKey(t, "Other <other@berth.test>", "ed25519", "", "")
	keys := t.TempDir()
	secret := filepath.Join(keys, "release.sec.asc")
	os.WriteFile(secret, g.ExportSecret(t, fpr, pass, true), 0o600)
	ring := filepath.Join(keys, "release.gpg")
	os.WriteFile(ring, g.Export(t, false, fpr), 0o644)
	otherRing := filepath.Join(keys, "other.asc")
	os.WriteFile(otherRing, g.Export(t, true, otherFpr), 0o644)
	cosign := verifytest.GenPEMKey(t, keys, "p256")
	cosignOther := verifytest.GenPEMKey(t, keys, "ed25519")

	dir, files := releaseDir(t)
	sums := filepath.Join(dir, "SHA256SUMS")
	mustBerth(t, append([]string{"sums", "-o", sums}, files...)...)

	// Signing needs a key (usage error), a readable checksum file, and
	// the passphrase.
	if r := berth(t, nil, "sign", sums); r.code != 2 {
		t.Fatalf("sign without key: exit %d %s", r.code, r.stderr)
	}
	notSums := files[0]
	if r := berth(t, nil, "sign", notSums, "--key", cosign.Priv); r.code != 1 || !strings.Contains(r.stderr, "not a checksum file") {
		t.Fatalf("sign a non-checksum file: exit %d %s", r.code, r.stderr)
	}
	t.Setenv("BERTH_GPG_PASSPHRASE", "")
	if r := berth(t, nil, "sign", sums, "--gpg-key", secret, "--key", cosign.Priv); r.code != 1 || !strings.Contains(r.stderr, "BERTH_GPG_PASSPHRASE") {
		t.Fatalf("sign without passphrase: exit %d %s", r.code, r.stderr)
	}
	if l := listing(t, dir); strings.Contains(l, ".sig") || strings.Contains(l, ".gpg") || strings.Contains(l, ".#") {
		t.Fatalf("failed sign left files: %s", l)
	}
	t.Setenv("BERTH_GPG_PASSPHRASE", pass)
	mustBerth(t, "sign", sums, "--gpg-key", secret, "--key", cosign.Priv)
	if r := berth(t, nil, "sign", sums, "--key", cosign.Priv); r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("re-sign without --force: exit %d %s", r.code, r.stderr)
	}

	// The standard tools accept both signatures.
	if err := g.Verify(sums+".gpg", sums); err != nil {
		t.Fatalf("gpg --verify SHA256SUMS.gpg SHA256SUMS: %v", err)
	}
	sigB64, _ := os.ReadFile(sums + ".sig")
	raw, err := base64.StdEncoding.DecodeString(string(sigB64))
	if err != nil {
		t.Fatalf("SHA256SUMS.sig is not base64: %q", sigB64)
	}
	if err := cosign.Verify(sums, raw); err != nil {
		t.Fatalf("openssl refuses SHA256SUMS.sig: %v", err)
	}

	// berth verify: every combination of trust anchors.
	ok := func(args ...string) result {
		t.Helper()
		r := mustBerth(t, append([]string{"verify"}, args...)...)
		for _, f := range files {
			if !strings.Contains(r.stdout, "OK "+f+"\n") {
				t.Fatalf("verify %q: no OK line for %s:\n%s", args, f, r.stdout)
			}
		}
		return r
	}
	fail := func(want string, args ...string) result {
		t.Helper()
		r := berth(t, nil, append([]string{"verify"}, args...)...)
		if r.code != 1 || !strings.Contains(r.stdout+r.stderr, want) {
			t.Fatalf("verify %q: exit %d, want 1 with %q\nstdout: %s\nstderr: %s", args, r.code, want, r.stdout, r.stderr)
		}
		return r
	}
	r := ok(append(files, "--keyring", ring)...)
	if !strings.Contains(r.stdout, "OpenPGP signature by") || !strings.Contains(r.stdout, "Berth Release") {
		t.Errorf("verify does not name the signer:\n%s", r.stdout)
	}
	ok(append(files, "--key", cosign.Pub)...)
	ok(append(files, "--key", cosign.Pub, "--keyring", ring)...)
	ok(append(files, "--keyring", otherRing, "--keyring", ring)...)
	ok("--sums", sums, "--key", cosign.Pub) // every listed file
	t.Setenv("SYSTEMD_OPENPGP_KEYRING", ring)
	ok(files...) // the default keyring
	t.Setenv("SYSTEMD_OPENPGP_KEYRING", otherRing)
	fail("not in the keyring", files...)
	t.Setenv("SYSTEMD_OPENPGP_KEYRING", filepath.Join(keys, "missing.gpg"))
	fail("missing.gpg", files...)

	fail("not in the keyring", append(files, "--keyring", otherRing)...)
	fail("cosign signature", append(files, "--key", cosignOther.Pub)...)
	fail("cosign signature", append(files, "--key", cosignOther.Pub, "--keyring", ring)...)

	// A tampered file: FAILED line for it, OK for the others, exit 1.
	orig, _ := os.ReadFile(files[1])
	os.WriteFile(files[1], append([]byte("x"), orig...), 0o644)
	r = fail("FAILED "+files[1]+": ", append(files, "--keyring", ring)...)
	if !strings.Contains(r.stdout, "checksum mismatch") || !strings.Contains(r.stdout, "OK "+files[0]+"\n") {
		t.Errorf("tampered file report:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "1 of 3 files failed") {
		t.Errorf("summary: %s", r.stderr)
	}
	os.WriteFile(files[1], orig, 0o644)

	// A file the checksum file does not list.
	extra := filepath.Join(dir, "unlisted.raw")
	os.WriteFile(extra, []byte("x"), 0o644)
	fail("FAILED "+extra+": not listed", extra, "--keyring", ring)

	// A tampered checksum file (a digest replaced to match a swapped
	// image) fails the signatures, and files are not reported OK.
	sumsOrig, _ := os.ReadFile(sums)
	os.WriteFile(sums, append(sumsOrig, []byte(strings.Repeat("0", 64)+" *evil.raw\n")...), 0o644)
	for _, args := range [][]string{{"--keyring", ring}, {"--key", cosign.Pub}} {
		r = fail("FAILED "+sums, append(files, args...)...)
		if strings.Contains(r.stdout, "OK "+files[0]) {
			t.Errorf("files reported OK under a bad signature:\n%s", r.stdout)
		}
	}
	// --no-signature checks checksums only.
	mustBerth(t, append([]string{"verify", "--no-signature"}, files...)...)
	os.WriteFile(sums, sumsOrig, 0o644)

	// A missing signature is an error for the anchor that needs it.
	os.Rename(sums+".sig", sums+".sig.away")
	fail("no cosign signature", append(files, "--key", cosign.Pub)...)
	ok(append(files, "--keyring", ring)...)
	os.Rename(sums+".sig.away", sums+".sig")
	os.Rename(sums+".gpg", sums+".asc.tmp")
	fail("no OpenPGP signature", append(files, "--keyring", ring)...)
	// An armored .asc is read as well.
	asc := g.Run(t, nil, "--pinentry-mode", "loopback", "--passphrase", pass, "--local-user", fpr, "--armor", "--detach-sign", "--output", "-", sums)
	os.WriteFile(sums+".asc", asc, 0o644)
	ok(append(files, "--keyring", ring)...)

	// An inline-signed checksum file (gpg --clearsign) needs no .gpg.
	os.Remove(sums + ".asc")
	cs := g.Run(t, nil, "--pinentry-mode", "loopback", "--passphrase", pass, "--local-user", fpr, "--clearsign", "--output", "-", sums)
	os.WriteFile(sums, cs, 0o644)
	r = ok(append(files, "--keyring", ring)...)
	if !strings.Contains(r.stdout, "inline OpenPGP signature by") {
		t.Errorf("clear-signed checksum file:\n%s", r.stdout)
	}
	os.WriteFile(sums, bytes.Replace(cs, []byte(" *nixos.raw"), []byte(" *nixos.raX"), 1), 0o644)
	fail("FAILED "+sums, append(files, "--keyring", ring)...)
	os.WriteFile(sums, sumsOrig, 0o644)

	// Usage errors.
	for _, args := range [][]string{
		{"verify"},
		{"verify", files[0], "--no-signature", "--key", cosign.Pub},
	} {
		if r := berth(t, nil, args...); r.code != 2 {
			t.Errorf("berth %q: exit %d, want 2: %s", args, r.code, r.stderr)
		}
	}
	if r := berth(t, nil, "verify", filepath.Join(t.TempDir(), "f"), "--no-signature"); r.code != 1 || !strings.Contains(r.stderr, "--sums") {
		t.Errorf("no checksum file: exit %d %s", r.code, r.stderr)
	}
}

func TestVerifyCmdOtherKeyKinds(t *testing.T) {
	// An RSA OpenPGP key in binary form, a PKCS#8 Ed25519 PEM, and a
	// cosign-encrypted key.
	g := verifytest.NewGPG(t)
	fpr := g.GenKey(t, "Berth RSA <rsa@berth.test>", "rsa3072", "", "")
	keys := t.TempDir()
	secret := filepath.Join(keys, "rsa.sec.gpg")
	os.WriteFile(secret, g.ExportSecret(t, fpr, "", false), 0o600)
	ring := filepath.Join(keys, "rsa.asc")
	os.WriteFile(ring, g.Export(t, true, fpr), 0o644)
	ed := verifytest.GenPEMKey(t, keys, "ed25519")

	_, files := releaseDir(t)
	sums := filepath.Join(filepath.Dir(files[0]), "SHA256SUMS")
	mustBerth(t, append([]string{"sums", "-o", sums}, files...)...)
	t.Setenv("BERTH_GPG_PASSPHRASE", "")
	t.Setenv("COSIGN_PASSWORD", "")
	mustBerth(t, "sign", sums, "--gpg-key", secret, "--key", ed.Priv)
	if err := g.Verify(sums+".gpg", sums); err != nil {
		t.Fatalf("gpg --verify: %v", err)
	}
	sig, _ := os.ReadFile(sums + ".sig")
	raw, _ := base64.StdEncoding.DecodeString(string(sig))
	if err := ed.Verify(sums, raw); err != nil {
		t.Fatalf("openssl pkeyutl -verify: %v", err)
	}
	mustBerth(t, append([]string{"verify", "--keyring", ring, "--key", ed.Pub}, files...)...)

	// Reproducible: with SOURCE_DATE_EPOCH, signing again gives the same
	// bytes (RSA OpenPGP, Ed25519 cosign).
	gpg1, _ := os.ReadFile(sums + ".gpg")
	sig1, _ := os.ReadFile(sums + ".sig")
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	mustBerth(t, "--force", "sign", sums, "--gpg-key", secret, "--key", ed.Priv)
	gpg2, _ := os.ReadFile(sums + ".gpg")
	sig2, _ := os.ReadFile(sums + ".sig")
	mustBerth(t, "--force", "sign", sums, "--gpg-key", secret, "--key", ed.Priv)
	gpg3, _ := os.ReadFile(sums + ".gpg")
	sig3, _ := os.ReadFile(sums + ".sig")
	if !bytes.Equal(gpg2, gpg3) || !bytes.Equal(sig1, sig2) || !bytes.Equal(sig2, sig3) {
		t.Fatalf("signing is not reproducible under SOURCE_DATE_EPOCH")
	}
	// 1700000000 is before the key existed: the signature is dated at the
	// key's creation instead.
	_ = gpg1
	pkt, err := packet.Read(bytes.NewReader(gpg2))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := verify.LoadKeyring(ring)
	if err != nil {
		t.Fatal(err)
	}
	if sig, ok := pkt.(*packet.Signature); !ok || !sig.CreationTime.Equal(kr[0].PrimaryKey.CreationTime) {
		t.Fatalf("signature under SOURCE_DATE_EPOCH: %#v, want dated %v", pkt, kr[0].PrimaryKey.CreationTime)
	}
	if err := g.Verify(sums+".gpg", sums); err != nil {
		t.Fatalf("gpg --verify of the dated signature: %v", err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "soon")
	if r := berth(t, nil, "--force", "sign", sums, "--key", ed.Priv); r.code != 2 {
		t.Fatalf("bad SOURCE_DATE_EPOCH: exit %d %s", r.code, r.stderr)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "")

	// A key pair as cosign generate-key-pair makes it (same sigstore
	// helper), password in COSIGN_PASSWORD.
	priv, pub, err := cryptoutils.GeneratePEMEncodedECDSAKeyPair(elliptic.P256(), cryptoutils.StaticPasswordFunc([]byte("cosign pw")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(priv), "ENCRYPTED SIGSTORE PRIVATE KEY") {
		t.Fatalf("not a cosign-encrypted key:\n%s", priv)
	}
	os.WriteFile(filepath.Join(keys, "cosign.key"), priv, 0o600)
	os.WriteFile(filepath.Join(keys, "cosign.pub"), pub, 0o644)
	if r := berth(t, nil, "--force", "sign", sums, "--key", filepath.Join(keys, "cosign.key")); r.code != 1 || !strings.Contains(r.stderr, "COSIGN_PASSWORD") {
		t.Fatalf("wrong COSIGN_PASSWORD: exit %d %s", r.code, r.stderr)
	}
	t.Setenv("COSIGN_PASSWORD", "cosign pw")
	mustBerth(t, "--force", "sign", sums, "--key", filepath.Join(keys, "cosign.key"))
	mustBerth(t, append([]string{"verify", "--key", filepath.Join(keys, "cosign.pub")}, files...)...)
	if r := berth(t, nil, append([]string{"verify", "--key", ed.Pub}, files...)...); r.code != 1 {
		t.Fatalf("old key accepted after re-signing: exit %d", r.code)
	}
}
