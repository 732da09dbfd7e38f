// Package verifytest makes real signing material for tests: OpenPGP keys and
// detached signatures from GnuPG in a private GNUPGHOME, and PEM keys and
// signatures from OpenSSL. Signatures made by the reference tools (not by
// berth) are what prove that berth reads what users publish, and the tools'
// verifiers prove that others read what berth signs. Tools are required
// through internal/testenv: missing ones skip outside CI and fail in CI.
package verifytest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// GPG is a throw-away GnuPG home.
type GPG struct {
	Home string
	gpg  string
}

// NewGPG creates an empty GnuPG home that is removed (and its agent
// stopped) when the test ends.
func NewGPG(t testing.TB) *GPG {
	t.Helper()
	g := &GPG{gpg: testenv.RequireTool(t, "gpg")}
	// A short path: the agent socket must fit in sun_path.
	home, err := os.MkdirTemp("", "bgpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	g.Home = home
	t.Cleanup(func() {
		if p, err := exec.LookPath("gpgconf"); err == nil {
			cmd := exec.Command(p, "--kill", "all")
			cmd.Env = g.env()
			_ = cmd.Run()
		}
		os.RemoveAll(home)
	})
	return g
}

func (g *GPG) env() []string {
	return append(os.Environ(), "GNUPGHOME="+g.Home, "LC_ALL=C")
}

// Run runs gpg with the home and returns stdout; it fails the test on error.
func (g *GPG) Run(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	out, err := g.Try(stdin, args...)
	if err != nil {
		t.Fatalf("gpg %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// Try runs gpg and returns stdout, or an error carrying stderr.
func (g *GPG) Try(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command(g.gpg, append([]string{"--batch", "--no-tty", "--yes"}, args...)...)
	cmd.Env = g.env()
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &toolError{err, stderr.String()}
	}
	return stdout.Bytes(), nil
}

type toolError struct {
	err    error
	stderr string
}

func (e *toolError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }

// GenKey makes a signing key (algo: "ed25519", "rsa3072", …) with user id
// uid and returns its fingerprint. passphrase may be empty. extra arguments
// go before the command (e.g. "--faked-system-time", "20200101T000000").
func (g *GPG) GenKey(t testing.TB, uid, algo, expire, passphrase string, extra ...string) string {
	t.Helper()
	if expire == "" {
		expire = "never"
	}
	args := append([]string{"--pinentry-mode", "loopback", "--passphrase", passphrase}, extra...)
	args = append(args, "--quick-gen-key", uid, algo, "sign", expire)
	g.Run(t, nil, args...)
	out := g.Run(t, nil, "--with-colons", "--list-keys", uid)
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Split(line, ":"); len(f) > 9 && f[0] == "fpr" {
			return f[9]
		}
	}
	t.Fatalf("no fingerprint for %s in:\n%s", uid, out)
	return ""
}

// Export returns the public key(s), binary or armored.
func (g *GPG) Export(t testing.TB, armor bool, fprs ...string) []byte {
	t.Helper()
	args := []string{"--export"}
	if armor {
		args = append(args, "--armor")
	}
	return g.Run(t, nil, append(args, fprs...)...)
}

// ExportSecret returns a secret key as gpg --export-secret-keys writes it.
func (g *GPG) ExportSecret(t testing.TB, fpr, passphrase string, armor bool) []byte {
	t.Helper()
	args := []string{"--pinentry-mode", "loopback", "--passphrase", passphrase, "--export-secret-keys"}
	if armor {
		args = append(args, "--armor")
	}
	return g.Run(t, nil, append(args, fpr)...)
}

// DetachSign signs file with key fpr (gpg --detach-sign); extra arguments
// such as "--armor" or "--digest-algo", "SHA1" are passed on.
func (g *GPG) DetachSign(t testing.TB, fpr, file string, extra ...string) []byte {
	t.Helper()
	out := filepath.Join(g.Home, "sig.tmp")
	args := append([]string{"--pinentry-mode", "loopback", "--passphrase", "", "--local-user", fpr}, extra...)
	args = append(args, "--output", out, "--detach-sign", file)
	g.Run(t, nil, args...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(out)
	return b
}

// Verify runs gpg --verify SIG FILE against the keys in the home.
func (g *GPG) Verify(sigFile, file string) error {
	_, err := g.Try(nil, "--verify", sigFile, file)
	return err
}

// OpenSSL runs openssl and returns stdout, failing the test on error.
func OpenSSL(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := TryOpenSSL(args...)
	if err != nil {
		t.Fatalf("openssl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// TryOpenSSL runs openssl and returns stdout or an error carrying its output.
func TryOpenSSL(args ...string) ([]byte, error) {
	p, err := exec.LookPath("openssl")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(p, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, &toolError{err, stdout.String() + stderr.String()}
	}
	return stdout.Bytes(), nil
}

// PEMKey is a key pair made by openssl, as files.
type PEMKey struct {
	Alg     string // "p256", "p384", "ed25519", "rsa"
	Priv    string // private key PEM file
	Pub     string // public key PEM file (PKIX)
	PrivPEM []byte
	PubPEM  []byte
}

// GenPEMKey makes a key pair with openssl in dir: "p256" (ecparam, SEC 1
// "EC PRIVATE KEY"), "p384", "ed25519" or "rsa" (2048, PKCS#8).
func GenPEMKey(t testing.TB, dir, alg string) *PEMKey {
	t.Helper()
	testenv.RequireTool(t, "openssl")
	k := &PEMKey{Alg: alg, Priv: filepath.Join(dir, alg+".key"), Pub: filepath.Join(dir, alg+".pub")}
	switch alg {
	case "p256":
		OpenSSL(t, "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", k.Priv)
	case "p384":
		OpenSSL(t, "ecparam", "-genkey", "-name", "secp384r1", "-noout", "-out", k.Priv)
	case "ed25519":
		OpenSSL(t, "genpkey", "-algorithm", "ed25519", "-out", k.Priv)
	case "rsa":
		OpenSSL(t, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k.Priv)
	default:
		t.Fatalf("GenPEMKey: unknown algorithm %q", alg)
	}
	OpenSSL(t, "pkey", "-in", k.Priv, "-pubout", "-out", k.Pub)
	var err error
	if k.PrivPEM, err = os.ReadFile(k.Priv); err != nil {
		t.Fatal(err)
	}
	if k.PubPEM, err = os.ReadFile(k.Pub); err != nil {
		t.Fatal(err)
	}
	return k
}

// Sign signs file with openssl as cosign sign-blob would (SHA-256 for
// ECDSA/RSA unless digest says otherwise, pure Ed25519) and returns the raw
// signature.
func (k *PEMKey) Sign(t testing.TB, file, digest string) []byte {
	t.Helper()
	if k.Alg == "ed25519" {
		return OpenSSL(t, "pkeyutl", "-sign", "-inkey", k.Priv, "-rawin", "-in", file)
	}
	if digest == "" {
		digest = "sha256"
	}
	return OpenSSL(t, "dgst", "-"+digest, "-sign", k.Priv, file)
}

// Verify checks a raw signature over file with openssl.
func (k *PEMKey) Verify(file string, sig []byte) error {
	f, err := os.CreateTemp("", "sig")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(sig); err != nil {
		return err
	}
	f.Close()
	if k.Alg == "ed25519" {
		_, err = TryOpenSSL("pkeyutl", "-verify", "-pubin", "-inkey", k.Pub, "-rawin", "-in", file, "-sigfile", f.Name())
		return err
	}
	_, err = TryOpenSSL("dgst", "-sha256", "-verify", k.Pub, "-signature", f.Name(), file)
	return err
}
