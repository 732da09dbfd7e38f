package verify

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Keyring locations, as systemd-importd uses them.
const (
	KeyringEnv         = "SYSTEMD_OPENPGP_KEYRING"
	UserKeyringPGP     = "/etc/systemd/import-pubring.pgp"
	UserKeyringGPG     = "/etc/systemd/import-pubring.gpg"
	VendorKeyringPGP   = "/usr/lib/systemd/import-pubring.pgp"
	VendorKeyringGPG   = "/usr/lib/systemd/import-pubring.gpg"
	maxKeyringSize     = 16 << 20
	maxSignatureSize   = 1 << 20
	maxSecretKeySize   = 1 << 20
	armorPrefix        = "-----BEGIN PGP"
	armorPublicKeyHead = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
)

// DefaultKeyrings returns the keyrings to trust when the user names none:
//
//  1. $SYSTEMD_OPENPGP_KEYRING if set (as systemd ≥ 258), whether or not it
//     exists — a missing file is then an error, not a silent fallback;
//  2. else the first existing user ring, /etc/systemd/import-pubring.pgp then
//     /etc/systemd/import-pubring.gpg; it replaces the vendor ring (systemd
//     252 semantics: an administrator who installs a ring narrows trust);
//  3. else the first existing vendor ring, /usr/lib/systemd/import-pubring.pgp
//     then /usr/lib/systemd/import-pubring.gpg (Debian 252's /lib path is the
//     same file on merged-/usr systems).
//
// It returns nil when there is none.
func DefaultKeyrings() []string {
	return defaultKeyrings(os.Getenv(KeyringEnv), func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && st.Mode().IsRegular()
	})
}

func defaultKeyrings(env string, exists func(string) bool) []string {
	if env != "" {
		return []string{env}
	}
	for _, group := range [][]string{{UserKeyringPGP, UserKeyringGPG}, {VendorKeyringPGP, VendorKeyringGPG}} {
		for _, p := range group {
			if exists(p) {
				return []string{p}
			}
		}
	}
	return nil
}

// LoadKeyring reads OpenPGP public keys from files that are binary
// (gpg --export) or armored (gpg --export --armor, several blocks allowed).
// With no path, or no key in the files, it fails with ErrNoKey.
func LoadKeyring(paths ...string) (openpgp.EntityList, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w: no OpenPGP keyring (pass --keyring FILE, or install %s)", ErrNoKey, UserKeyringGPG)
	}
	var all openpgp.EntityList
	for _, p := range paths {
		data, err := readLimited(p, maxKeyringSize, "keyring")
		if err != nil {
			return nil, err
		}
		el, err := parseKeyring(data)
		if err != nil {
			return nil, fmt.Errorf("reading keyring %s: %w", p, err)
		}
		if len(el) == 0 {
			return nil, fmt.Errorf("%w: keyring %s contains no keys", ErrNoKey, p)
		}
		all = append(all, el...)
	}
	return all, nil
}

func parseKeyring(data []byte) (openpgp.EntityList, error) {
	if !isArmored(data) {
		return openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	var all openpgp.EntityList
	rest := data
	for {
		i := bytes.Index(rest, []byte(armorPublicKeyHead))
		if i < 0 {
			break
		}
		el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(rest[i:]))
		if err != nil {
			return nil, err
		}
		all = append(all, el...)
		rest = rest[i+len(armorPublicKeyHead):]
	}
	if len(all) == 0 {
		return nil, errors.New("armored file has no PGP PUBLIC KEY BLOCK")
	}
	return all, nil
}

func isArmored(data []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(armorPrefix))
}

func readLimited(path string, limit int64, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", what, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", what, path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s %s is larger than %d bytes: refusing it", what, path, limit)
	}
	return data, nil
}

// acceptedHashes are the signature digests we trust. SHA-1 and MD5 (and
// RIPEMD-160) are refused: collisions make such signatures forgeable.
var acceptedHashes = []crypto.Hash{crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512, crypto.SHA3_256, crypto.SHA3_512}

func hashAccepted(h crypto.Hash) bool {
	for _, a := range acceptedHashes {
		if a == h {
			return true
		}
	}
	return false
}

func hashName(h crypto.Hash) string {
	switch h {
	case crypto.SHA1:
		return "SHA-1"
	case crypto.MD5:
		return "MD5"
	case crypto.RIPEMD160:
		return "RIPEMD-160"
	}
	return h.String()
}

// VerifyOpenPGP checks a detached signature (binary, as SHA256SUMS.gpg, or
// armored, as SHA256SUMS.asc) over signed with the keys in keyring, and
// returns the signer as "KEYID (user id)". Like systemd (gpg
// --trust-model=always) every key in the ring is trusted; unlike it,
// signatures with SHA-1 or MD5 digests, and signatures by expired or revoked
// keys, are refused. Errors wrap ErrNoKey (signer not in the ring) or
// ErrBadSignature, and name the key id and the reason.
func VerifyOpenPGP(keyring openpgp.EntityList, signed io.Reader, sig []byte) (signer string, err error) {
	if len(keyring) == 0 {
		return "", fmt.Errorf("%w: the OpenPGP keyring is empty", ErrNoKey)
	}
	if len(sig) > maxSignatureSize {
		return "", fmt.Errorf("%w: signature is larger than %d bytes", ErrBadSignature, maxSignatureSize)
	}
	raw := sig
	if isArmored(sig) {
		blk, err := armor.Decode(bytes.NewReader(sig))
		if err != nil {
			return "", fmt.Errorf("%w: cannot decode armored signature: %v", ErrBadSignature, err)
		}
		if blk.Type != "PGP SIGNATURE" {
			return "", fmt.Errorf("%w: armored block is %q, want a PGP SIGNATURE", ErrBadSignature, blk.Type)
		}
		if raw, err = io.ReadAll(io.LimitReader(blk.Body, maxSignatureSize)); err != nil {
			return "", fmt.Errorf("%w: cannot decode armored signature: %v", ErrBadSignature, err)
		}
	}
	// Find the signature the library will check (the first one whose issuer
	// is in the ring) to report precise reasons before hashing anything.
	ids, chosen, err := scanSignatures(keyring, raw)
	if err != nil {
		return "", err
	}
	if chosen == nil {
		if len(ids) == 0 {
			return "", fmt.Errorf("%w: no signature in the signature file", ErrBadSignature)
		}
		return "", fmt.Errorf("%w: signed by key %s, which is not in the keyring", ErrNoKey, strings.Join(ids, ", "))
	}
	keyID := fmt.Sprintf("%016X", *chosen.IssuerKeyId)
	if !hashAccepted(chosen.Hash) {
		return "", fmt.Errorf("%w: signature by key %s uses %s, which is refused as too weak (re-sign with SHA-256)", ErrBadSignature, keyID, hashName(chosen.Hash))
	}
	s, ent, err := openpgp.VerifyDetachedSignature(keyring, signed, bytes.NewReader(raw), nil)
	if ent != nil {
		keyID = entityID(ent)
	}
	switch {
	case err == nil:
	case errors.Is(err, pgperrors.ErrKeyExpired):
		return "", fmt.Errorf("%w: key %s has expired", ErrBadSignature, keyID)
	case errors.Is(err, pgperrors.ErrSignatureExpired):
		return "", fmt.Errorf("%w: signature by key %s has expired", ErrBadSignature, keyID)
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return "", fmt.Errorf("%w: key %s is revoked", ErrBadSignature, keyID)
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return "", fmt.Errorf("%w: signed by key %s, which is not in the keyring", ErrNoKey, keyID)
	default:
		return "", fmt.Errorf("%w: signature by key %s does not match the data (tampered with?): %v", ErrBadSignature, keyID, err)
	}
	if s == nil || !hashAccepted(s.Hash) {
		return "", fmt.Errorf("%w: signature by key %s uses a refused hash", ErrBadSignature, keyID)
	}
	return entityID(ent), nil
}

// scanSignatures lists the issuers of the signatures in raw and returns the
// first one made by a signing key of the ring.
func scanSignatures(keyring openpgp.EntityList, raw []byte) (issuers []string, chosen *packet.Signature, err error) {
	pr := packet.NewReader(bytes.NewReader(raw))
	for {
		p, err := pr.Next()
		if err == io.EOF {
			return issuers, nil, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: cannot parse the signature: %v", ErrBadSignature, err)
		}
		sig, ok := p.(*packet.Signature)
		if !ok {
			return nil, nil, fmt.Errorf("%w: signature file holds a non-signature packet (not a detached signature?)", ErrBadSignature)
		}
		if sig.IssuerKeyId == nil {
			return nil, nil, fmt.Errorf("%w: signature names no issuer key", ErrBadSignature)
		}
		issuers = append(issuers, fmt.Sprintf("%016X", *sig.IssuerKeyId))
		if len(keyring.KeysByIdUsage(*sig.IssuerKeyId, packet.KeyFlagSign)) > 0 {
			return issuers, sig, nil
		}
	}
}

func entityID(e *openpgp.Entity) string {
	id := fmt.Sprintf("%016X", e.PrimaryKey.KeyId)
	if pi := e.PrimaryIdentity(); pi != nil && pi.Name != "" {
		id += " (" + pi.Name + ")"
	}
	return id
}

// SignOpenPGP writes a detached binary signature (SHA-256) of data to w,
// made now with the first signing-capable secret key in secretKey (armored
// or binary, as gpg --export-secret-keys writes). A passphrase-protected key
// needs passphrase.
func SignOpenPGP(w io.Writer, secretKey io.Reader, passphrase []byte, data io.Reader) error {
	return SignOpenPGPAt(w, secretKey, passphrase, data, time.Time{})
}

// SignOpenPGPAt is SignOpenPGP with the signature creation time set to at
// (zero: now), for reproducible release sets (SOURCE_DATE_EPOCH). A time
// before the signing key was created is raised to the key's creation time,
// since verifiers reject signatures older than their key. The signature
// carries no random salt notation (as GnuPG's), so the same key, data and
// time give the same bytes for Ed25519 and RSA keys.
func SignOpenPGPAt(w io.Writer, secretKey io.Reader, passphrase []byte, data io.Reader, at time.Time) error {
	keyData, err := io.ReadAll(io.LimitReader(secretKey, maxSecretKeySize+1))
	if err != nil {
		return fmt.Errorf("reading OpenPGP secret key: %w", err)
	}
	if len(keyData) > maxSecretKeySize {
		return fmt.Errorf("OpenPGP secret key is larger than %d bytes", maxSecretKeySize)
	}
	var el openpgp.EntityList
	if isArmored(keyData) {
		el, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(keyData))
	} else {
		el, err = openpgp.ReadKeyRing(bytes.NewReader(keyData))
	}
	if err != nil {
		return fmt.Errorf("reading OpenPGP secret key: %w", err)
	}
	noSalt := false
	cfg := &packet.Config{DefaultHash: crypto.SHA256, NonDeterministicSignaturesViaNotation: &noSalt}
	for _, e := range el {
		if e.PrivateKey == nil {
			continue
		}
		k, ok := e.SigningKey(cfg.Now())
		if !ok || k.PrivateKey == nil || k.PrivateKey.Dummy() {
			continue
		}
		if k.PrivateKey.Encrypted {
			if len(passphrase) == 0 {
				return fmt.Errorf("OpenPGP key %s is passphrase-protected: set BERTH_GPG_PASSPHRASE", entityID(e))
			}
			if err := k.PrivateKey.Decrypt(passphrase); err != nil {
				return fmt.Errorf("unlocking OpenPGP key %s: wrong passphrase? (%v)", entityID(e), err)
			}
		}
		cfg.SigningKeyId = k.PublicKey.KeyId
		if !at.IsZero() {
			t := at.UTC().Truncate(time.Second)
			if t.Before(k.PublicKey.CreationTime) {
				t = k.PublicKey.CreationTime
			}
			cfg.Time = func() time.Time { return t }
		}
		if err := openpgp.DetachSign(w, e, data, cfg); err != nil {
			return fmt.Errorf("signing with OpenPGP key %s: %w", entityID(e), err)
		}
		return nil
	}
	return errors.New("no usable OpenPGP secret signing key in the key file (export it with gpg --export-secret-keys)")
}

// clearsignedHead starts an inline-signed (gpg --clearsign) message.
const clearsignedHead = "-----BEGIN PGP SIGNED MESSAGE-----"

// ClearsignedText returns the signed text of an inline-signed (gpg
// --clearsign) document, unverified, and whether data is one.
func ClearsignedText(data []byte) ([]byte, bool) {
	if !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(clearsignedHead)) {
		return nil, false
	}
	b, _ := clearsign.Decode(data)
	if b == nil {
		return nil, false
	}
	return b.Plaintext, true
}

// VerifyClearsigned checks an inline-signed checksum file (gpg --clearsign,
// which systemd accepts for FILE.sha256) with the rules of VerifyOpenPGP,
// and returns the signed text, to be given to ParseSums, and the signer.
// Anything outside the signed block is dropped.
func VerifyClearsigned(keyring openpgp.EntityList, data []byte) (text []byte, signer string, err error) {
	if len(data) > MaxSumsSize {
		return nil, "", fmt.Errorf("%w: signed checksum file is larger than %d bytes", ErrBadSignature, MaxSumsSize)
	}
	if !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(clearsignedHead)) {
		return nil, "", fmt.Errorf("%w: not a clear-signed (inline OpenPGP) document", ErrBadSignature)
	}
	b, _ := clearsign.Decode(data)
	if b == nil {
		return nil, "", fmt.Errorf("%w: malformed clear-signed document", ErrBadSignature)
	}
	sig, err := io.ReadAll(io.LimitReader(b.ArmoredSignature.Body, maxSignatureSize))
	if err != nil {
		return nil, "", fmt.Errorf("%w: cannot decode the inline signature: %v", ErrBadSignature, err)
	}
	signer, err = VerifyOpenPGP(keyring, bytes.NewReader(b.Bytes), sig)
	if err != nil {
		return nil, "", err
	}
	return b.Plaintext, signer, nil
}
