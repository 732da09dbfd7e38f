package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	_ "crypto/sha512" // SHA-384/512 for crypto.Hash.New
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// MaxEd25519Message bounds what VerifyBlob and SignBlob hold in memory for
// Ed25519 keys: cosign signs the whole message with pure Ed25519, which
// cannot be streamed. Checksum files are far smaller.
const MaxEd25519Message = 64 << 20

const maxSigB64 = 64 << 10

// LoadPublicKey parses a PEM public key (PKIX "PUBLIC KEY", as cosign
// generate-key-pair and openssl pkey -pubout write) of type ECDSA, Ed25519
// or RSA.
func LoadPublicKey(pemBytes []byte) (crypto.PublicKey, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: not a PEM public key: %v", ErrNoKey, err)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey, *rsa.PublicKey:
		return k, nil
	}
	return nil, fmt.Errorf("%w: unsupported public key type %T (want ECDSA, Ed25519 or RSA)", ErrNoKey, pub)
}

// decodeSig accepts a signature as cosign writes it (base64, possibly with
// a trailing newline) and, like cosign verify-blob, raw bytes that are not
// base64.
func decodeSig(sigB64 []byte) ([]byte, error) {
	if len(sigB64) > maxSigB64 {
		return nil, fmt.Errorf("%w: signature is larger than %d bytes", ErrBadSignature, maxSigB64)
	}
	t := bytes.TrimSpace(sigB64)
	if len(t) == 0 {
		return nil, fmt.Errorf("%w: signature is empty", ErrBadSignature)
	}
	if raw, err := base64.StdEncoding.DecodeString(string(t)); err == nil {
		return raw, nil
	}
	return sigB64, nil
}

// blobHashes are the digests a blob signature may use for a key: SHA-256
// (cosign's historical fixed choice, and ours) and for larger curves the
// curve's own digest (sigstore's default algorithm for the key).
func blobHashes(pub crypto.PublicKey) []crypto.Hash {
	if k, ok := pub.(*ecdsa.PublicKey); ok {
		switch k.Curve {
		case elliptic.P384():
			return []crypto.Hash{crypto.SHA256, crypto.SHA384}
		case elliptic.P521():
			return []crypto.Hash{crypto.SHA256, crypto.SHA512}
		}
	}
	return []crypto.Hash{crypto.SHA256}
}

// VerifyBlob checks a signature made by `cosign sign-blob --key` (base64 of
// an ASN.1 ECDSA, Ed25519 or RSA PKCS#1 v1.5 signature) over data. ECDSA and
// RSA stream data through the hash; Ed25519 reads at most MaxEd25519Message
// bytes. It fails with ErrBadSignature.
func VerifyBlob(pub crypto.PublicKey, data io.Reader, sigB64 []byte) error {
	sig, err := decodeSig(sigB64)
	if err != nil {
		return err
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		msg, err := readMessage(data)
		if err != nil {
			return err
		}
		v, err := signature.LoadED25519Verifier(k)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrNoKey, err)
		}
		if err := v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg)); err != nil {
			return fmt.Errorf("%w: Ed25519 signature does not match the data (tampered with, or another key)", ErrBadSignature)
		}
		return nil
	case *ecdsa.PublicKey, *rsa.PublicKey:
		hs := blobHashes(k)
		hashers := make([]hash.Hash, len(hs))
		ws := make([]io.Writer, len(hs))
		for i, h := range hs {
			hashers[i] = h.New()
			ws[i] = hashers[i]
		}
		if _, err := io.Copy(io.MultiWriter(ws...), data); err != nil {
			return fmt.Errorf("reading signed data: %w", err)
		}
		for i, h := range hs {
			v, err := signature.LoadVerifier(k, h)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrNoKey, err)
			}
			if v.VerifySignature(bytes.NewReader(sig), nil, options.WithDigest(hashers[i].Sum(nil))) == nil {
				return nil
			}
		}
		return fmt.Errorf("%w: signature does not match the data (tampered with, or another key)", ErrBadSignature)
	case nil:
		return fmt.Errorf("%w: no public key (pass --key FILE)", ErrNoKey)
	}
	return fmt.Errorf("%w: unsupported public key type %T", ErrNoKey, pub)
}

func readMessage(data io.Reader) ([]byte, error) {
	msg, err := io.ReadAll(io.LimitReader(data, MaxEd25519Message+1))
	if err != nil {
		return nil, fmt.Errorf("reading signed data: %w", err)
	}
	if len(msg) > MaxEd25519Message {
		return nil, fmt.Errorf("data is larger than %d bytes, too large for an Ed25519 blob signature", MaxEd25519Message)
	}
	return msg, nil
}

// SimpleSigningPayload returns the payload cosign signs for a container
// image: the simple-signing JSON binding the manifest digest ("sha256:…")
// to the repository (normalized as cosign does, e.g. "alpine" becomes
// "index.docker.io/library/alpine"). The bytes are deterministic.
func SimpleSigningPayload(repo, digest string) []byte {
	p := payload.SimpleContainerImage{Critical: payload.Critical{
		Identity: payload.Identity{DockerReference: normalizeRepo(repo)},
		Image:    payload.Image{DockerManifestDigest: digest},
		Type:     payload.CosignSignatureType,
	}}
	b, _ := json.Marshal(p) // cannot fail: strings and a nil map
	return b
}

// normalizeRepo reduces a repository or image reference to the repository
// name cosign records; what does not parse is kept as given.
func normalizeRepo(repo string) string {
	if ref, err := name.ParseReference(repo, name.WeakValidation); err == nil {
		return ref.Context().Name()
	}
	if r, err := name.NewRepository(repo, name.WeakValidation); err == nil {
		return r.Name()
	}
	return repo
}

// VerifySimpleSigning checks a cosign container image signature: sigB64
// (the dev.cosignproject.cosign/signature annotation) must be pub's
// signature over payload, payload must be a cosign simple-signing document
// for wantDigest, and its docker-reference must name the repository
// wantRepo (compared after normalization; a tag or digest in either is
// ignored). An empty wantRepo skips the repository check. Errors wrap
// ErrBadSignature or ErrMismatch.
func VerifySimpleSigning(pub crypto.PublicKey, payloadBytes []byte, sigB64 string, wantDigest string, wantRepo string) error {
	if err := VerifyBlob(pub, bytes.NewReader(payloadBytes), []byte(sigB64)); err != nil {
		return err
	}
	var p payload.SimpleContainerImage
	if err := json.Unmarshal(payloadBytes, &p); err != nil {
		return fmt.Errorf("%w: signed payload is not simple-signing JSON: %v", ErrBadSignature, err)
	}
	if p.Critical.Type != payload.CosignSignatureType {
		return fmt.Errorf("%w: signed payload has type %q, want %q", ErrBadSignature, p.Critical.Type, payload.CosignSignatureType)
	}
	if got := p.Critical.Image.DockerManifestDigest; got == "" || !strings.EqualFold(got, wantDigest) {
		return fmt.Errorf("%w: signature is for manifest %s, not %s", ErrMismatch, got, wantDigest)
	}
	if wantRepo != "" {
		got := p.Critical.Identity.DockerReference
		if normalizeRepo(got) != normalizeRepo(wantRepo) {
			return fmt.Errorf("%w: signature is for repository %q, not %q", ErrMismatch, got, normalizeRepo(wantRepo))
		}
	}
	return nil
}

// LoadPrivateKey parses a PEM private key: PKCS#8 "PRIVATE KEY", SEC 1
// "EC PRIVATE KEY", PKCS#1 "RSA PRIVATE KEY", password-protected PKCS#8
// "ENCRYPTED PRIVATE KEY", and cosign's "ENCRYPTED SIGSTORE PRIVATE KEY" /
// "ENCRYPTED COSIGN PRIVATE KEY" (scrypt + NaCl secretbox, password from
// COSIGN_PASSWORD at the caller; an empty password is valid for cosign).
func LoadPrivateKey(pemBytes []byte, password []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		return nil, errors.New("private key file is not PEM")
	}
	encrypted := strings.HasPrefix(blk.Type, "ENCRYPTED ")
	pw := password
	if pw == nil {
		pw = []byte{}
	}
	k, err := cryptoutils.UnmarshalPEMToPrivateKey(pemBytes, cryptoutils.StaticPasswordFunc(pw))
	if err != nil {
		if encrypted {
			return nil, fmt.Errorf("decrypting %s failed (wrong COSIGN_PASSWORD?): %v", strings.ToLower(blk.Type), err)
		}
		return nil, fmt.Errorf("reading private key: %w", err)
	}
	switch s := k.(type) {
	case *ecdsa.PrivateKey, ed25519.PrivateKey, *rsa.PrivateKey:
		return s.(crypto.Signer), nil
	}
	return nil, fmt.Errorf("unsupported private key type %T (want ECDSA, Ed25519 or RSA)", k)
}

// SignBlob signs data as `cosign sign-blob --key` does and returns the
// base64 signature (no newline): ECDSA (ASN.1) and RSA PKCS#1 v1.5 over the
// SHA-256 of data, streamed; pure Ed25519 over data (at most
// MaxEd25519Message bytes). Signatures are deterministic (ECDSA per
// RFC 6979): the same key and data give the same bytes.
func SignBlob(key crypto.Signer, data io.Reader) (sigB64 []byte, err error) {
	var sig []byte
	switch k := key.(type) {
	case ed25519.PrivateKey:
		msg, err := readMessage(data)
		if err != nil {
			return nil, err
		}
		sig = ed25519.Sign(k, msg)
	case *ecdsa.PrivateKey, *rsa.PrivateKey:
		h := sha256.New()
		if _, err := io.Copy(h, data); err != nil {
			return nil, fmt.Errorf("reading data to sign: %w", err)
		}
		// A nil random source makes ECDSA deterministic (RFC 6979), so a
		// release set signed twice is byte-identical; RSA PKCS#1 v1.5 is
		// deterministic anyway.
		var random io.Reader
		if _, isRSA := k.(*rsa.PrivateKey); isRSA {
			random = rand.Reader
		}
		if sig, err = key.Sign(random, h.Sum(nil), crypto.SHA256); err != nil {
			return nil, fmt.Errorf("signing: %w", err)
		}
	default:
		return nil, fmt.Errorf("unsupported private key type %T (want ECDSA, Ed25519 or RSA)", key)
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sig)))
	base64.StdEncoding.Encode(out, sig)
	return out, nil
}
