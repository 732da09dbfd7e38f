package verify

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/berth-dev/berth/verify/verifytest"
)

// pgpFixture holds keys made once per test by the real gpg.
type pgpFixture struct {
	g                   *verifytest.GPG
	ed, rsa, other, exp string // fingerprints
	dir, sums           string
	sumsData            []byte
}

func newPGPFixture(t *testing.T) *pgpFixture {
	t.Helper()
	g := verifytest.NewGPG(t)
	f := &pgpFixture{g: g, dir: t.TempDir()}
	f.ed = g.GenKey(t, "Berth Ed25519 <ed@berth.test>", "ed25519", "", "")
	f.rsa = g.GenKey(t, "Berth RSA <rsa@berth.test>", "rsa3072", "", "")
	f.other = g.GenKey(t, "Someone Else <other@berth.test>", "ed25519", "", "")
	// Made and expired in the past: created 2020-01-01, valid for a year.
	f.exp = g.GenKey(t, "Expired <expired@berth.test>", "ed25519", "1y", "", "--faked-system-time", "20200101T000000")
	f.sumsData = []byte(hexA + " *image.tar.xz\n" + hexB + " *image.nspawn\n")
	f.sums = filepath.Join(f.dir, "SHA256SUMS")
	if err := os.WriteFile(f.sums, f.sumsData, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *pgpFixture) ring(t *testing.T, armor bool, fprs ...string) string {
	t.Helper()
	name := "ring-" + strings.Join(fprs, "-")[:16]
	if armor {
		name += ".asc"
	} else {
		name += ".gpg"
	}
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, f.g.Export(t, armor, fprs...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenPGP(t *testing.T) {
	f := newPGPFixture(t)

	for _, key := range []struct{ name, fpr string }{{"ed25519", f.ed}, {"rsa3072", f.rsa}} {
		for _, ringArmor := range []bool{false, true} {
			for _, sigArmor := range []bool{false, true} {
				name := key.name
				name += map[bool]string{false: "/binary-ring", true: "/armored-ring"}[ringArmor]
				name += map[bool]string{false: "/binary-sig", true: "/armored-sig"}[sigArmor]
				t.Run(name, func(t *testing.T) {
					kr, err := LoadKeyring(f.ring(t, ringArmor, key.fpr))
					if err != nil {
						t.Fatal(err)
					}
					var extra []string
					if sigArmor {
						extra = []string{"--armor"}
					}
					sig := f.g.DetachSign(t, key.fpr, f.sums, extra...)
					if sigArmor != bytes.HasPrefix(sig, []byte("-----BEGIN PGP SIGNATURE")) {
						t.Fatalf("gpg did not make the signature form asked for")
					}
					signer, err := VerifyOpenPGP(kr, bytes.NewReader(f.sumsData), sig)
					if err != nil {
						t.Fatalf("good signature refused: %v", err)
					}
					if !strings.Contains(signer, key.fpr[24:]) || !strings.Contains(signer, "@berth.test") {
						t.Errorf("signer %q does not name key %s", signer, key.fpr)
					}
					// Tampered data: one byte changed.
					bad := bytes.Clone(f.sumsData)
					bad[3] ^= 1
					if _, err := VerifyOpenPGP(kr, bytes.NewReader(bad), sig); !errors.Is(err, ErrBadSignature) {
						t.Errorf("tampered data: err = %v, want ErrBadSignature", err)
					}
					// Appended data.
					if _, err := VerifyOpenPGP(kr, bytes.NewReader(append(bytes.Clone(f.sumsData), '\n')), sig); !errors.Is(err, ErrBadSignature) {
						t.Errorf("appended data: err = %v, want ErrBadSignature", err)
					}
				})
			}
		}
	}

	t.Run("wrong key", func(t *testing.T) {
		kr, err := LoadKeyring(f.ring(t, false, f.other))
		if err != nil {
			t.Fatal(err)
		}
		sig := f.g.DetachSign(t, f.ed, f.sums)
		_, err = VerifyOpenPGP(kr, bytes.NewReader(f.sumsData), sig)
		if !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), f.ed[24:]) {
			t.Fatalf("signature by a key not in the ring: err = %v, want ErrNoKey naming %s", err, f.ed[24:])
		}
	})

	t.Run("ring with several keys, several rings", func(t *testing.T) {
		kr, err := LoadKeyring(f.ring(t, true, f.other, f.rsa), f.ring(t, false, f.ed))
		if err != nil {
			t.Fatal(err)
		}
		if len(kr) != 3 {
			t.Fatalf("loaded %d keys, want 3", len(kr))
		}
		for _, k := range []string{f.ed, f.rsa} {
			if _, err := VerifyOpenPGP(kr, bytes.NewReader(f.sumsData), f.g.DetachSign(t, k, f.sums)); err != nil {
				t.Errorf("key %s: %v", k, err)
			}
		}
	})

	t.Run("concatenated armored blocks", func(t *testing.T) {
		p := filepath.Join(f.dir, "two.asc")
		data := append(f.g.Export(t, true, f.other), f.g.Export(t, true, f.ed)...)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		kr, err := LoadKeyring(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyOpenPGP(kr, bytes.NewReader(f.sumsData), f.g.DetachSign(t, f.ed, f.sums)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("SHA-1 refused", func(t *testing.T) {
		kr, err := LoadKeyring(f.ring(t, false, f.rsa))
		if err != nil {
			t.Fatal(err)
		}
		sig := f.g.DetachSign(t, f.rsa, f.sums, "--digest-algo", "SHA1")
		// gpg itself accepts it: the refusal is ours.
		p := filepath.Join(f.dir, "sha1.sig")
		if err := os.WriteFile(p, sig, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := f.g.Verify(p, f.sums); err != nil {
			t.Fatalf("gpg --verify of the SHA-1 signature: %v", err)
		}
		_, err = VerifyOpenPGP(kr, bytes.NewReader(f.sumsData), sig)
		if !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "SHA-1") {
			t.Fatalf("SHA-1 signature: err = %v, want ErrBadSignature naming SHA-1", err)
		}
	})

	t.Run("SHA-512 accepted", func(t *testing.T) {
		kr, err := LoadKeyring(f.ring(t, false, f.rsa))
		if err != nil {
			t.Fatal(err)
		}
		sig := f.g.DetachSign(t, f.rsa, f.sums, "--digest-algo", "SHA512")
		if _, err := VerifyOpenPGP(kr, bytes.NewReader(f.sumsData), sig); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("expired key", func(t *testing.T) {
		kr, err := LoadKeyring(f.ring(t, false, f.exp))
		if err != nil {
			t.Fatal(err)
		}
		sig := f.g.DetachSign(t, f.exp, f.sums, "--faked-system-time", "20200601T000000")
		_, err = VerifyOpenPGP(kr, bytes.NewReader(f.sumsData), sig)
		if !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("signature by an expired key: err = %v, want ErrBadSignature saying expired", err)
		}
	})

	t.Run("not a signature", func(t *testing.T) {
		kr, err := LoadKeyring(f.ring(t, false, f.ed))
		if err != nil {
			t.Fatal(err)
		}
		for _, sig := range [][]byte{nil, []byte("garbage"), f.g.Export(t, false, f.ed), []byte("-----BEGIN PGP SIGNATURE-----\n\nxx\n-----END PGP SIGNATURE-----\n")} {
			if _, err := VerifyOpenPGP(kr, bytes.NewReader(f.sumsData), sig); !errors.Is(err, ErrBadSignature) {
				t.Errorf("VerifyOpenPGP(%.20q) = %v, want ErrBadSignature", sig, err)
			}
		}
	})

	t.Run("clear-signed", func(t *testing.T) {
		kr, err := LoadKeyring(f.ring(t, true, f.ed))
		if err != nil {
			t.Fatal(err)
		}
		cs := f.g.Run(t, nil, "--local-user", f.ed, "--clearsign", "--output", "-", f.sums)
		if _, err := ParseSums(bytes.NewReader(cs)); err == nil || !strings.Contains(err.Error(), "clear-signed") {
			t.Errorf("ParseSums of a clear-signed file: %v", err)
		}
		text, signer, err := VerifyClearsigned(kr, cs)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(signer, "ed@berth.test") {
			t.Errorf("signer %q", signer)
		}
		s, err := ParseSums(bytes.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := s.Lookup("image.tar.xz"); d != hexA {
			t.Errorf("signed text lost its lines: %q", text)
		}
		// Unsigned lines around the block are not part of the text.
		wrapped := append([]byte(hexB+" *evil\n"), cs...)
		wrapped = append(wrapped, []byte(hexB+" *evil2\n")...)
		if text, _, err := VerifyClearsigned(kr, wrapped); err == nil {
			t.Errorf("leading unsigned text accepted: %q", text)
		}
		trailing := append(bytes.Clone(cs), []byte(hexB+" *evil2\n")...)
		if text, _, err := VerifyClearsigned(kr, trailing); err != nil || bytes.Contains(text, []byte("evil")) {
			t.Errorf("trailing unsigned text: %q, %v", text, err)
		}
		tampered := bytes.Replace(cs, []byte(hexA), []byte(hexB), 1)
		if _, _, err := VerifyClearsigned(kr, tampered); !errors.Is(err, ErrBadSignature) {
			t.Errorf("tampered clear-signed file: %v", err)
		}
		other, _ := LoadKeyring(f.ring(t, false, f.other))
		if _, _, err := VerifyClearsigned(other, cs); !errors.Is(err, ErrNoKey) {
			t.Errorf("clear-signed by an unknown key: %v", err)
		}
		if _, _, err := VerifyClearsigned(kr, f.sumsData); !errors.Is(err, ErrBadSignature) {
			t.Errorf("plain file: %v", err)
		}
	})

	t.Run("keyring errors", func(t *testing.T) {
		if _, err := LoadKeyring(); !errors.Is(err, ErrNoKey) {
			t.Errorf("LoadKeyring() = %v, want ErrNoKey", err)
		}
		empty := filepath.Join(f.dir, "empty.gpg")
		os.WriteFile(empty, nil, 0o644)
		if _, err := LoadKeyring(empty); !errors.Is(err, ErrNoKey) {
			t.Errorf("empty keyring: %v, want ErrNoKey", err)
		}
		if _, err := LoadKeyring(filepath.Join(f.dir, "missing.gpg")); err == nil || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("missing keyring: %v", err)
		}
		if _, err := VerifyOpenPGP(nil, bytes.NewReader(f.sumsData), f.g.DetachSign(t, f.ed, f.sums)); !errors.Is(err, ErrNoKey) {
			t.Errorf("nil keyring: %v, want ErrNoKey", err)
		}
	})

	t.Run("SignOpenPGP verified by gpg", func(t *testing.T) {
		const pass = "correct horse"
		prot := f.g.GenKey(t, "Protected <prot@berth.test>", "ed25519", "", pass)
		for _, c := range []struct {
			name, fpr, pass string
			armor           bool
		}{
			{"ed25519 binary", f.ed, "", false},
			{"rsa armored", f.rsa, "", true},
			{"passphrase", prot, pass, true},
		} {
			t.Run(c.name, func(t *testing.T) {
				secret := f.g.ExportSecret(t, c.fpr, c.pass, c.armor)
				var sig bytes.Buffer
				if err := SignOpenPGP(&sig, bytes.NewReader(secret), []byte(c.pass), bytes.NewReader(f.sumsData)); err != nil {
					t.Fatal(err)
				}
				p := filepath.Join(f.dir, "ours.gpg")
				if err := os.WriteFile(p, sig.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := f.g.Verify(p, f.sums); err != nil {
					t.Fatalf("gpg --verify refuses our signature: %v", err)
				}
				// gpg reports the digest algorithm: we promise SHA-256.
				out, _ := f.g.Try(nil, "--list-packets", p)
				if !strings.Contains(string(out), "digest algo 8") {
					t.Errorf("our signature is not SHA-256:\n%s", out)
				}
				kr, err := LoadKeyring(f.ring(t, false, c.fpr))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := VerifyOpenPGP(kr, bytes.NewReader(f.sumsData), sig.Bytes()); err != nil {
					t.Fatal(err)
				}
			})
		}
		t.Run("reproducible with a fixed time", func(t *testing.T) {
			secret := f.g.ExportSecret(t, f.ed, "", false)
			at := time.Now().Add(-time.Minute)
			var a, b bytes.Buffer
			for _, buf := range []*bytes.Buffer{&a, &b} {
				if err := SignOpenPGPAt(buf, bytes.NewReader(secret), nil, bytes.NewReader(f.sumsData), at); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Fatalf("two Ed25519 signatures at the same time differ")
			}
			p := filepath.Join(f.dir, "repro.gpg")
			os.WriteFile(p, a.Bytes(), 0o644)
			if err := f.g.Verify(p, f.sums); err != nil {
				t.Fatalf("gpg --verify: %v", err)
			}
			// A time before the key existed is raised to its creation.
			var old bytes.Buffer
			if err := SignOpenPGPAt(&old, bytes.NewReader(secret), nil, bytes.NewReader(f.sumsData), time.Unix(1, 0)); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(p, old.Bytes(), 0o644)
			if err := f.g.Verify(p, f.sums); err != nil {
				t.Fatalf("gpg --verify of a signature dated before the key: %v", err)
			}
		})
		secret := f.g.ExportSecret(t, prot, pass, false)
		if err := SignOpenPGP(&bytes.Buffer{}, bytes.NewReader(secret), nil, bytes.NewReader(f.sumsData)); err == nil || !strings.Contains(err.Error(), "BERTH_GPG_PASSPHRASE") {
			t.Errorf("protected key without passphrase: %v", err)
		}
		if err := SignOpenPGP(&bytes.Buffer{}, bytes.NewReader(secret), []byte("wrong"), bytes.NewReader(f.sumsData)); err == nil || !strings.Contains(err.Error(), "passphrase") {
			t.Errorf("protected key, wrong passphrase: %v", err)
		}
		if err := SignOpenPGP(&bytes.Buffer{}, bytes.NewReader(f.g.Export(t, false, f.ed)), nil, bytes.NewReader(f.sumsData)); err == nil {
			t.Errorf("signing with a public key succeeded")
		}
	})
}

func TestDefaultKeyrings(t *testing.T) {
	all := []string{UserKeyringPGP, UserKeyringGPG, VendorKeyringPGP, VendorKeyringGPG}
	cases := []struct {
		env     string
		present []string
		want    []string
	}{
		{"", nil, nil},
		{"/x/ring.pgp", all, []string{"/x/ring.pgp"}},
		{"", all, []string{UserKeyringPGP}},
		{"", []string{UserKeyringGPG, VendorKeyringPGP}, []string{UserKeyringGPG}},
		{"", []string{VendorKeyringGPG, VendorKeyringPGP}, []string{VendorKeyringPGP}},
		{"", []string{VendorKeyringGPG}, []string{VendorKeyringGPG}},
	}
	for _, c := range cases {
		got := defaultKeyrings(c.env, func(p string) bool {
			for _, q := range c.present {
				if p == q {
					return true
				}
			}
			return false
		})
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("defaultKeyrings(%q, %q) = %q, want %q", c.env, c.present, got, c.want)
		}
	}
	// The real system: Debian ships the vendor ring with systemd-container.
	if rings := DefaultKeyrings(); len(rings) > 0 {
		if _, err := LoadKeyring(rings...); err != nil {
			t.Errorf("default keyring %v: %v", rings, err)
		}
	}
}

// FuzzVerifyOpenPGP feeds arbitrary signatures (binary or armored) and
// keyrings to the OpenPGP code: no panic, and every failure is classified.
func FuzzVerifyOpenPGP(f *testing.F) {
	ent, err := openpgp.NewEntity("Fuzz", "", "fuzz@berth.test", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		f.Fatal(err)
	}
	data := []byte(hexA + " *f\n")
	var sig, ring bytes.Buffer
	if err := openpgp.DetachSign(&sig, ent, bytes.NewReader(data), nil); err != nil {
		f.Fatal(err)
	}
	if err := ent.Serialize(&ring); err != nil {
		f.Fatal(err)
	}
	kr := openpgp.EntityList{ent}
	f.Add(sig.Bytes(), ring.Bytes())
	f.Add([]byte("-----BEGIN PGP SIGNATURE-----\n\n"+base64.StdEncoding.EncodeToString(sig.Bytes())+"\n-----END PGP SIGNATURE-----\n"), []byte(armorPublicKeyHead+"\n\n-----END PGP PUBLIC KEY BLOCK-----\n"))
	f.Add([]byte{}, []byte{0x99, 0x00})
	f.Add([]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"+hexA+" *f\n-----BEGIN PGP SIGNATURE-----\n\n"+base64.StdEncoding.EncodeToString(sig.Bytes())+"\n-----END PGP SIGNATURE-----\n"), []byte{})
	f.Fuzz(func(t *testing.T, sig, ringData []byte) {
		if _, err := VerifyOpenPGP(kr, bytes.NewReader(data), sig); err != nil &&
			!errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrNoKey) {
			t.Fatalf("unclassified error: %v", err)
		}
		if _, _, err := VerifyClearsigned(kr, sig); err != nil &&
			!errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrNoKey) {
			t.Fatalf("unclassified clear-signed error: %v", err)
		}
		el, err := parseKeyring(ringData)
		if err == nil && len(el) > 0 {
			_, _ = VerifyOpenPGP(el, bytes.NewReader(data), sig)
		}
	})
}
