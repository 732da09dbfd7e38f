package pull

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/verify"
)

// VerifyMode is what --verify asks for.
type VerifyMode string

// The verification modes of systemd-pull; VerifyHash is a literal digest.
const (
	VerifyNo        VerifyMode = "no"
	VerifyChecksum  VerifyMode = "checksum"
	VerifySignature VerifyMode = "signature"
	VerifyHash      VerifyMode = "hash"
)

// Verify is a parsed --verify value.
type Verify struct {
	Mode VerifyMode
	Hash string // lowercase hex, for VerifyHash
}

// ParseVerify parses --verify: no, checksum, signature, or a literal
// 64-hex-digit SHA-256 of the file as downloaded (any case).
func ParseVerify(s string) (Verify, error) {
	switch s {
	case "no", "checksum", "signature":
		return Verify{Mode: VerifyMode(s)}, nil
	case "":
		return Verify{Mode: VerifySignature}, nil
	}
	if strings.TrimLeft(strings.ToLower(s), "0123456789abcdef") == "" {
		if len(s) != 64 {
			return Verify{}, fmt.Errorf("--verify=%s: a SHA-256 hash has 64 hex digits, got %d", s, len(s))
		}
		return Verify{Mode: VerifyHash, Hash: strings.ToLower(s)}, nil
	}
	return Verify{}, fmt.Errorf("--verify=%q: want no, checksum, signature or a 64-hex-digit SHA-256", s)
}

// loadTrust loads the keys a signature check needs, with verify's rule (the
// same as `berth verify`): with --key a cosign .sig must verify; with
// --keyring, or systemd's default ring when --key is not given, an OpenPGP
// signature must. Giving both requires both.
func loadTrust(keyrings []string, cosignPEM []byte) (*verify.Trust, error) {
	t, err := verify.LoadTrust(keyrings, cosignPEM)
	if err != nil {
		return nil, fmt.Errorf("%w (or use --verify=checksum)", err)
	}
	return t, nil
}

// precheck checks, before the image is downloaded, everything verification
// needs besides the image's own digest: that the checksum file exists and
// lists the image, that its signatures verify, that a settings file is
// listed with the right digest. A pull that is bound to fail verification
// fails before a byte of the image is unpacked. It records the image's
// listed digest in aux.listed.
func (p *puller) precheck(aux *auxFiles) error {
	if aux.err != nil {
		return aux.err
	}
	switch p.verify.Mode {
	case VerifyNo, VerifyHash:
		return nil
	}
	if len(bytes.TrimSpace(aux.sums)) == 0 {
		return fmt.Errorf("checksum file %s is empty: cannot verify", aux.sumsURL)
	}
	if p.verify.Mode == VerifySignature {
		if err := p.checkSignatures(aux); err != nil {
			return err
		}
	}
	sums, err := verify.ParseSums(bytes.NewReader(aux.sums))
	if err != nil {
		return fmt.Errorf("checksum file %s: %w", aux.sumsURL, err)
	}
	want, ok := sums.Lookup(p.file)
	if !ok {
		return fmt.Errorf("%w: %s is not listed in %s (the name comes from the URL as given, before redirects)", verify.ErrNotListed, p.file, aux.sumsURL)
	}
	aux.listed = want
	if aux.settings != nil {
		stripped := imagerootStripped(p.typ, p.file)
		sn := stripped + ".nspawn"
		want, ok := sums.Lookup(sn)
		if !ok {
			return fmt.Errorf("%w: settings file %s is not listed in %s: refusing it (use --verify=no, or list it)", verify.ErrNotListed, sn, aux.sumsName)
		}
		if got := sha256Hex(aux.settings); got != want {
			return fmt.Errorf("%w: settings file %s has SHA-256 %s but %s lists %s", verify.ErrMismatch, sn, got, aux.sumsName, want)
		}
	}
	return nil
}

// checkDigest verifies the download's digest against the literal hash or
// the checksum file's entry (precheck has checked everything else).
func (p *puller) checkDigest(digest string, aux *auxFiles) error {
	switch p.verify.Mode {
	case VerifyNo:
		p.log.Warn("the download was not verified (--verify=no)", "url", p.url, "sha256", digest)
		return nil
	case VerifyHash:
		if digest != p.verify.Hash {
			return fmt.Errorf("%w: %s has SHA-256 %s, but --verify asks for %s: the download was tampered with or is not the expected file", verify.ErrMismatch, p.file, digest, p.verify.Hash)
		}
		p.log.Info("download matches the given SHA-256", "sha256", digest)
		return nil
	}
	if aux.listed != digest {
		return fmt.Errorf("%w: %s has SHA-256 %s but %s lists %s: the download was tampered with or corrupted", verify.ErrMismatch, p.file, digest, aux.sumsName, aux.listed)
	}
	p.log.Info("download matches the checksum file", "file", p.file, "checksums", aux.sumsName, "sha256", digest)
	return nil
}

// checkSignatures verifies the checksum file's signatures and, for an
// inline clear-signed checksum file, replaces it by its signed text.
func (p *puller) checkSignatures(aux *auxFiles) error {
	text, verified, err := p.trust.Check(aux.sumsName, aux.sums, verify.Signatures{
		OpenPGP: aux.pgpSig, OpenPGPName: aux.pgpName, Cosign: bytes.TrimSpace(aux.cosign),
	})
	if err != nil {
		return fmt.Errorf("%w (use --verify=checksum to skip signatures)", err)
	}
	for _, v := range verified {
		p.log.Info("signature verified", "checksums", aux.sumsName, "by", v)
	}
	aux.sums = text
	return nil
}

// lookupSums finds name in a checksum file; false if it does not parse or
// has no entry.
func lookupSums(data []byte, name string) (string, bool) {
	sums, err := verify.ParseSums(bytes.NewReader(data))
	if err != nil {
		return "", false
	}
	return sums.Lookup(name)
}
