package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/verify/verifytest"
)

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBlobSignaturesAgainstOpenSSL: signatures made by openssl verify with
// VerifyBlob, ours verify with openssl, tampering is caught.
func TestBlobSignaturesAgainstOpenSSL(t *testing.T) {
	dir := t.TempDir()
	data := []byte(hexA + " *image.tar.xz\n")
	file := writeFile(t, filepath.Join(dir, "SHA256SUMS"), data)
	tampered := bytes.Clone(data)
	tampered[0] ^= 1
	keys := map[string]*verifytest.PEMKey{}
	for _, alg := range []string{"p256", "p384", "ed25519", "rsa"} {
		keys[alg] = verifytest.GenPEMKey(t, dir, alg)
	}
	for _, alg := range []string{"p256", "p384", "ed25519", "rsa"} {
		k := keys[alg]
		t.Run(alg, func(t *testing.T) {
			pub, err := LoadPublicKey(k.PubPEM)
			if err != nil {
				t.Fatal(err)
			}
			raw := k.Sign(t, file, "")
			b64 := []byte(base64.StdEncoding.EncodeToString(raw) + "\n")
			if err := VerifyBlob(pub, bytes.NewReader(data), b64); err != nil {
				t.Fatalf("openssl signature refused: %v", err)
			}
			if err := VerifyBlob(pub, bytes.NewReader(data), raw); err != nil {
				t.Errorf("raw (not base64) openssl signature refused: %v", err)
			}
			if err := VerifyBlob(pub, bytes.NewReader(tampered), b64); !errors.Is(err, ErrBadSignature) {
				t.Errorf("tampered data: err = %v, want ErrBadSignature", err)
			}
			other := keys["p256"]
			if alg == "p256" {
				other = keys["p384"]
			}
			otherPub, _ := LoadPublicKey(other.PubPEM)
			if err := VerifyBlob(otherPub, bytes.NewReader(data), b64); !errors.Is(err, ErrBadSignature) {
				t.Errorf("another key: err = %v, want ErrBadSignature", err)
			}

			signer, err := LoadPrivateKey(k.PrivPEM, nil)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := SignBlob(signer, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			sig, err := base64.StdEncoding.DecodeString(string(ours))
			if err != nil {
				t.Fatalf("SignBlob output is not base64: %q", ours)
			}
			if err := k.Verify(file, sig); err != nil {
				t.Fatalf("openssl refuses our signature: %v", err)
			}
			if err := VerifyBlob(pub, bytes.NewReader(data), ours); err != nil {
				t.Fatal(err)
			}
			// sigstore's signer-verifier is what cosign sign-blob and
			// verify-blob run with --key: both directions must agree.
			sv, err := signature.LoadSignerVerifier(signer, crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if err := sv.VerifySignature(bytes.NewReader(sig), bytes.NewReader(data)); err != nil {
				t.Errorf("sigstore verifier refuses our signature: %v", err)
			}
			theirs, err := sv.SignMessage(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyBlob(pub, bytes.NewReader(data), []byte(base64.StdEncoding.EncodeToString(theirs))); err != nil {
				t.Errorf("sigstore signer's signature refused: %v", err)
			}
			again, _ := SignBlob(signer, bytes.NewReader(data))
			if !bytes.Equal(ours, again) {
				t.Errorf("signing twice gave different signatures: not reproducible")
			}
		})
	}
	t.Run("p384 with SHA-384", func(t *testing.T) {
		pub, _ := LoadPublicKey(keys["p384"].PubPEM)
		raw := keys["p384"].Sign(t, file, "sha384")
		if err := VerifyBlob(pub, bytes.NewReader(data), []byte(base64.StdEncoding.EncodeToString(raw))); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		pub, _ := LoadPublicKey(keys["p256"].PubPEM)
		for _, sig := range []string{"", "  \n", "AAAA", strings.Repeat("A", 100<<10)} {
			if err := VerifyBlob(pub, bytes.NewReader(data), []byte(sig)); !errors.Is(err, ErrBadSignature) {
				t.Errorf("VerifyBlob(%.10q) = %v, want ErrBadSignature", sig, err)
			}
		}
		if err := VerifyBlob(nil, bytes.NewReader(data), []byte("AAAA")); !errors.Is(err, ErrNoKey) {
			t.Errorf("nil key: %v", err)
		}
		for _, p := range [][]byte{nil, []byte("garbage"), keys["p256"].PrivPEM} {
			if _, err := LoadPublicKey(p); err == nil {
				t.Errorf("LoadPublicKey(%.20q) succeeded", p)
			}
		}
	})
}

// cosignEncrypt wraps a PKCS#8 key the way cosign generate-key-pair does,
// written here from the format's description (go-securesystemslib
// "encrypted"): scrypt N=32768 r=8 p=1 over a random 32-byte salt,
// NaCl secretbox with a random 24-byte nonce, JSON, PEM type
// "ENCRYPTED SIGSTORE PRIVATE KEY".
func cosignEncrypt(t *testing.T, der, password []byte) []byte {
	t.Helper()
	salt := make([]byte, 32)
	var nonce [24]byte
	rand.Read(salt)
	rand.Read(nonce[:])
	k, err := scrypt.Key(password, salt, 32768, 8, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	copy(key[:], k)
	ct := secretbox.Seal(nil, der, &nonce, &key)
	doc := map[string]any{
		"kdf": map[string]any{
			"name":   "scrypt",
			"params": map[string]int{"N": 32768, "r": 8, "p": 1},
			"salt":   base64.StdEncoding.EncodeToString(salt),
		},
		"cipher": map[string]any{
			"name":  "nacl/secretbox",
			"nonce": base64.StdEncoding.EncodeToString(nonce[:]),
		},
		"ciphertext": base64.StdEncoding.EncodeToString(ct),
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED SIGSTORE PRIVATE KEY", Bytes: js})
}

func TestCosignEncryptedKey(t *testing.T) {
	dir := t.TempDir()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pubFile := writeFile(t, filepath.Join(dir, "cosign.pub"), pubPEM)
	data := []byte("SHA256SUMS content\n")
	file := writeFile(t, filepath.Join(dir, "f"), data)

	for _, pw := range []string{"s3cret", ""} {
		enc := cosignEncrypt(t, der, []byte(pw))
		k, err := LoadPrivateKey(enc, []byte(pw))
		if err != nil {
			t.Fatalf("password %q: %v", pw, err)
		}
		sig, err := SignBlob(k, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := base64.StdEncoding.DecodeString(string(sig))
		pk := &verifytest.PEMKey{Alg: "p256", Pub: pubFile}
		testenvOpenSSL(t)
		if err := pk.Verify(file, raw); err != nil {
			t.Fatalf("openssl refuses the signature of the decrypted cosign key: %v", err)
		}
		if _, err := LoadPrivateKey(enc, []byte(pw+"x")); err == nil || !strings.Contains(err.Error(), "COSIGN_PASSWORD") {
			t.Errorf("wrong password: err = %v, want a hint about COSIGN_PASSWORD", err)
		}
	}
	// The legacy PEM type of older cosign versions.
	enc := cosignEncrypt(t, der, []byte("pw"))
	legacy := bytes.Replace(enc, []byte("SIGSTORE"), []byte("COSIGN"), 2)
	if _, err := LoadPrivateKey(legacy, []byte("pw")); err != nil {
		t.Errorf("ENCRYPTED COSIGN PRIVATE KEY: %v", err)
	}
	// Ed25519 PKCS#8 from Go, unencrypted.
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(edPriv)
	if _, err := LoadPrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER}), nil); err != nil {
		t.Errorf("ed25519 PKCS#8: %v", err)
	}
	for _, bad := range [][]byte{nil, []byte("not pem"), pubPEM} {
		if _, err := LoadPrivateKey(bad, nil); err == nil {
			t.Errorf("LoadPrivateKey(%.20q) succeeded", bad)
		}
	}
}

func testenvOpenSSL(t *testing.T) {
	t.Helper()
	verifytest.GenPEMKey(t, t.TempDir(), "p256") // requires openssl
}

func TestSimpleSigning(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const digest = "sha256:" + hexA
	p := SimpleSigningPayload("127.0.0.1:5000/berth/nixos:latest", digest)
	// The exact bytes cosign signs (cosign's payload.Cosign.MarshalJSON).
	want := `{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/berth/nixos"},"image":{"docker-manifest-digest":"` + digest + `"},"type":"cosign container image signature"},"optional":null}`
	if string(p) != want {
		t.Fatalf("payload\n%s\nwant\n%s", p, want)
	}
	sig, err := SignBlob(priv, bytes.NewReader(p))
	if err != nil {
		t.Fatal(err)
	}
	pub := &priv.PublicKey
	if err := VerifySimpleSigning(pub, p, string(sig), digest, "127.0.0.1:5000/berth/nixos"); err != nil {
		t.Fatalf("good signature: %v", err)
	}
	if err := VerifySimpleSigning(pub, p, string(sig), digest, "127.0.0.1:5000/berth/nixos:other-tag"); err != nil {
		t.Errorf("a tag in the wanted reference must not matter: %v", err)
	}
	if err := VerifySimpleSigning(pub, p, string(sig), "sha256:"+hexB, "127.0.0.1:5000/berth/nixos"); !errors.Is(err, ErrMismatch) {
		t.Errorf("wrong digest: %v, want ErrMismatch", err)
	}
	if err := VerifySimpleSigning(pub, p, string(sig), digest, "127.0.0.1:5000/evil/nixos"); !errors.Is(err, ErrMismatch) {
		t.Errorf("wrong repository: %v, want ErrMismatch", err)
	}
	if err := VerifySimpleSigning(&other.PublicKey, p, string(sig), digest, "127.0.0.1:5000/berth/nixos"); !errors.Is(err, ErrBadSignature) {
		t.Errorf("another key: %v, want ErrBadSignature", err)
	}
	// A payload edited after signing (to point at another digest) fails
	// the signature check before anything else.
	edited := bytes.Replace(p, []byte(hexA), []byte(hexB), 1)
	if err := VerifySimpleSigning(pub, edited, string(sig), "sha256:"+hexB, "127.0.0.1:5000/berth/nixos"); !errors.Is(err, ErrBadSignature) {
		t.Errorf("edited payload: %v, want ErrBadSignature", err)
	}
	// Docker Hub short names normalize like cosign's.
	hub := SimpleSigningPayload("alpine", digest)
	if !bytes.Contains(hub, []byte(`"index.docker.io/library/alpine"`)) {
		t.Errorf("short name not normalized: %s", hub)
	}
	hsig, _ := SignBlob(priv, bytes.NewReader(hub))
	for _, ref := range []string{"alpine", "docker.io/library/alpine", "index.docker.io/library/alpine:3"} {
		if err := VerifySimpleSigning(pub, hub, string(hsig), digest, ref); err != nil {
			t.Errorf("%s: %v", ref, err)
		}
	}
	// A signed document that is not a cosign signature.
	wrongType := bytes.Replace(p, []byte("cosign container image signature"), []byte("atomic container signature"), 1)
	wsig, _ := SignBlob(priv, bytes.NewReader(wrongType))
	if err := VerifySimpleSigning(pub, wrongType, string(wsig), digest, ""); !errors.Is(err, ErrBadSignature) {
		t.Errorf("wrong type: %v, want ErrBadSignature", err)
	}
	notJSON := []byte("not json")
	nsig, _ := SignBlob(priv, bytes.NewReader(notJSON))
	if err := VerifySimpleSigning(pub, notJSON, string(nsig), digest, ""); !errors.Is(err, ErrBadSignature) {
		t.Errorf("not JSON: %v, want ErrBadSignature", err)
	}
}

func FuzzVerifySimpleSigning(f *testing.F) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	const digest = "sha256:" + hexA
	f.Add(SimpleSigningPayload("r/x", digest), "r/x", "", true)
	f.Add([]byte(`{"critical":{}}`), "", "", true)
	f.Add([]byte(`[]`), "reg:1/a", "", true)
	f.Add([]byte(`{}`), "", "MEUCIQ==", false)
	f.Add([]byte(`{}`), "", "\x30\x06\x02\x01\x01\x02\x01\x01", false)
	f.Fuzz(func(t *testing.T, payload []byte, repo, sig string, sign bool) {
		if sign {
			s, err := SignBlob(priv, bytes.NewReader(payload))
			if err != nil {
				t.Fatal(err)
			}
			sig = string(s)
		}
		err = VerifySimpleSigning(&priv.PublicKey, payload, sig, digest, repo)
		if err != nil && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMismatch) {
			t.Fatalf("unclassified error: %v", err)
		}
		if err == nil && !sign {
			t.Fatalf("a fuzzed signature %q verified", sig)
		}
	})
}
