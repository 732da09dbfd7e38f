package verify

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"os"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// Trust is the set of keys a checksum file must be signed with. It encodes
// the one rule shared by `berth pull-* --verify=signature` and `berth
// verify`: every trust anchor the user configures must be satisfied.
//
//   - With a cosign public key (--key), "<sums>.sig" must exist and verify.
//   - With an OpenPGP keyring (--keyring, or systemd's default ring when
//     --key is not given), "<sums>.gpg" or "<sums>.asc" must exist and verify.
//
// So at least one signature always verifies, and giving both requires both.
type Trust struct {
	Keyring  openpgp.EntityList // nil: no OpenPGP signature required
	Keyrings []string           // where Keyring came from, for messages
	Cosign   crypto.PublicKey   // nil: no cosign signature required
}

// LoadTrust builds the trust anchors from --keyring paths (nil: none given)
// and the PEM of --key (nil: none given). When neither is given, the default
// keyrings (DefaultKeyrings) are used, and their absence is an ErrNoKey
// error.
func LoadTrust(keyrings []string, cosignPEM []byte) (*Trust, error) {
	t := &Trust{}
	if len(cosignPEM) > 0 {
		pub, err := LoadPublicKey(cosignPEM)
		if err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		t.Cosign = pub
	}
	defaults := false
	if len(keyrings) == 0 && t.Cosign == nil {
		defaults = true
		keyrings = DefaultKeyrings()
		if len(keyrings) == 0 {
			return nil, fmt.Errorf("%w: no OpenPGP keyring found (%s, %s, %s, %s): pass --keyring FILE or --key FILE",
				ErrNoKey, UserKeyringPGP, UserKeyringGPG, VendorKeyringPGP, VendorKeyringGPG)
		}
	}
	if len(keyrings) > 0 {
		ring, err := LoadKeyring(keyrings...)
		if err != nil && defaults {
			return nil, fmt.Errorf("default OpenPGP keyring: %w: pass --keyring FILE or --key FILE", err)
		}
		if err != nil {
			return nil, fmt.Errorf("--keyring: %w", err)
		}
		t.Keyring, t.Keyrings = ring, keyrings
	}
	return t, nil
}

// Signatures holds the signature files found next to a checksum file; a nil
// slice means the file is absent.
type Signatures struct {
	OpenPGP     []byte // SHA256SUMS.gpg (binary) or SHA256SUMS.asc (armored)
	OpenPGPName string // which of the two, for messages
	Cosign      []byte // SHA256SUMS.sig (base64, cosign sign-blob)
}

// ReadSignatures reads "<sums>.gpg" (else "<sums>.asc") and "<sums>.sig"
// next to the checksum file at path, each bounded to 1 MiB. Missing files
// are left nil; other errors are returned.
func ReadSignatures(sumsPath string) (Signatures, error) {
	var s Signatures
	for _, ext := range []string{".gpg", ".asc"} {
		data, err := readOptional(sumsPath + ext)
		if err != nil {
			return s, err
		}
		if data != nil {
			s.OpenPGP, s.OpenPGPName = data, sumsPath+ext
			break
		}
	}
	data, err := readOptional(sumsPath + ".sig")
	if err != nil {
		return s, err
	}
	s.Cosign = data
	return s, nil
}

func readOptional(path string) ([]byte, error) {
	data, err := readLimited(path, maxSignatureSize, "signature")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

// Check verifies the signatures over the checksum file content sums, as
// the rule of Trust says, and returns the text to parse with ParseSums: sums
// itself, or the signed text of an inline-signed (gpg --clearsign) file,
// whose inline signature stands in for a missing .gpg/.asc. verified has one
// line per verified signature ("OpenPGP signature by KEYID (name)", "cosign
// signature") for reports. Errors wrap ErrBadSignature (missing or failing
// signature) or ErrNoKey.
func (t *Trust) Check(sumsName string, sums []byte, sigs Signatures) (text []byte, verified []string, err error) {
	if t == nil || (t.Keyring == nil && t.Cosign == nil) {
		return nil, nil, fmt.Errorf("%w: no key to check the signatures of %s with", ErrNoKey, sumsName)
	}
	text = sums
	inline, clearsigned := ClearsignedText(sums)
	if clearsigned {
		text = inline
	}
	if t.Keyring != nil {
		switch {
		case sigs.OpenPGP != nil:
			signer, err := VerifyOpenPGP(t.Keyring, bytes.NewReader(sums), sigs.OpenPGP)
			if err != nil {
				return nil, nil, fmt.Errorf("OpenPGP signature %s: %w", sigs.OpenPGPName, err)
			}
			verified = append(verified, "OpenPGP signature by "+signer)
		case clearsigned:
			_, signer, err := VerifyClearsigned(t.Keyring, sums)
			if err != nil {
				return nil, nil, fmt.Errorf("inline OpenPGP signature of %s: %w", sumsName, err)
			}
			verified = append(verified, "inline OpenPGP signature by "+signer)
		default:
			return nil, nil, fmt.Errorf("%w: %s has no OpenPGP signature (%s.gpg or %s.asc)", ErrBadSignature, sumsName, sumsName, sumsName)
		}
	}
	if t.Cosign != nil {
		if sigs.Cosign == nil {
			return nil, nil, fmt.Errorf("%w: --key given but %s has no cosign signature (%s.sig)", ErrBadSignature, sumsName, sumsName)
		}
		if err := VerifyBlob(t.Cosign, bytes.NewReader(sums), sigs.Cosign); err != nil {
			return nil, nil, fmt.Errorf("cosign signature %s.sig: %w", sumsName, err)
		}
		verified = append(verified, "cosign signature")
	}
	return text, verified, nil
}
