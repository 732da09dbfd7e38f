// Package verify decides whether downloaded or local release files can be
// trusted, and produces the files that let others decide the same about
// ours: SHA256SUMS checksum lists, OpenPGP detached signatures over them
// (what systemd-importd checks), and sigstore/cosign key signatures (blob
// signatures and the simple-signing payloads of container images).
//
// It exists as one package so that `berth pull-*` and `berth verify` apply
// the very same rules: a file is trusted only when its SHA-256 is listed in a
// checksum file whose signature is made by a key the user trusts. The rules
// are deliberately stricter than systemd's where systemd is weak (SHA-1 and
// MD5 signature hashes and expired keys are refused) and more liberal where
// systemd rejects harmless input (BSD-style lines, uppercase hex, "./name",
// CRLF, a missing final newline).
//
// Everything streams: data is hashed or verified as it is read, and inputs
// that must be held in memory (checksum files, signatures, keys) are bounded.
// Callers classify failures with errors.Is against ErrMismatch, ErrNotListed,
// ErrBadSignature and ErrNoKey.
package verify

import "errors"

// Error classes. Every error this package returns for a failed check wraps
// one of them, with the file, key or reason in its message.
var (
	// ErrMismatch: data does not have the digest it is supposed to have
	// (a checksum, or the manifest digest or repository in a signed payload).
	ErrMismatch = errors.New("checksum mismatch")
	// ErrNotListed: the checksum file has no line for the file.
	ErrNotListed = errors.New("not listed in the checksum file")
	// ErrBadSignature: a signature does not verify, uses a refused hash, or
	// was made by an expired or revoked key.
	ErrBadSignature = errors.New("bad signature")
	// ErrNoKey: no trusted key is available, or the signer's key is not
	// among the trusted ones.
	ErrNoKey = errors.New("no trusted key")
)
