package main

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/ctxio"
	"github.com/berth-dev/berth/verify"
)

// Environment variables holding key passphrases (never flags: they would
// show in ps and shell history).
const (
	envGPGPassphrase  = "BERTH_GPG_PASSPHRASE"
	envCosignPassword = "COSIGN_PASSWORD"
)

func (a *app) sumsCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "sums FILE... [-o SHA256SUMS]",
		Short: "Write a SHA256SUMS checksum file for FILEs",
		Long: `Hash each FILE and write "<sha256> *<basename>" lines sorted by name: the
form every systemd version reads. With -o the file appears only when
complete (replacing an existing one needs --force); otherwise it goes to
standard output.`,
		Args: rangeArgs(1, 1<<20),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			files := map[string]string{}
			for _, f := range args {
				base := filepath.Base(f)
				if _, dup := files[base]; dup {
					return usagef("two files are named %s: a checksum file lists base names, which must be unique", base)
				}
				d, err := a.hashFile(ctx, f)
				if err != nil {
					return err
				}
				files[base] = d
			}
			var buf bytes.Buffer
			if err := verify.WriteSums(&buf, files); err != nil {
				return err
			}
			if out == "" {
				out = "-"
			}
			return a.writeOutput(out, func(w io.Writer) error {
				_, err := w.Write(buf.Bytes())
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the checksum file here (default: standard output)")
	return cmd
}

// hashFile hashes a file with a progress bar, honouring cancellation.
func (a *app) hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	size := int64(-1)
	if st, err := f.Stat(); err == nil {
		if st.IsDir() {
			return "", fmt.Errorf("%s is a directory, not a file", path)
		}
		size = st.Size()
	}
	prog := a.progress(ctx)
	bar := prog.Bar("sha256 "+filepath.Base(path), size)
	d, err := verify.HashReader(bar.Reader(ctxio.Reader(ctx, f)))
	bar.Done(err == nil)
	prog.Wait()
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return d, nil
}

func (a *app) signCommand() *cobra.Command {
	var gpgKey, cosignKey string
	cmd := &cobra.Command{
		Use:   "sign SHA256SUMS [--gpg-key FILE] [--key FILE]",
		Short: "Sign a checksum file (OpenPGP and/or cosign)",
		Long: `Sign the checksum file with an OpenPGP secret key (--gpg-key, armored or
binary as gpg --export-secret-keys writes it; passphrase from
BERTH_GPG_PASSPHRASE), writing SHA256SUMS.gpg, a detached binary SHA-256
signature that systemd-pull and gpg --verify read; and/or with a PEM private
key (--key: PKCS#8, EC or RSA, or a cosign-encrypted key with its password
in COSIGN_PASSWORD), writing SHA256SUMS.sig, a base64 signature as
cosign sign-blob writes it (cosign verify-blob --key reads it). At least one
key is required. The checksum file must parse. Outputs appear only when
complete; replacing existing ones needs --force.

Signatures are reproducible: cosign signatures are deterministic (ECDSA per
RFC 6979), and with SOURCE_DATE_EPOCH set the OpenPGP signature is dated
then (or at the key's creation, if later), so the same inputs give the same
bytes with Ed25519 and RSA keys.`,
		Args: rangeArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if gpgKey == "" && cosignKey == "" {
				return usagef("sign needs a key: --gpg-key FILE (OpenPGP) and/or --key FILE (cosign PEM)")
			}
			sumsPath := args[0]
			data, err := readSmall(sumsPath, verify.MaxSumsSize)
			if err != nil {
				return err
			}
			if _, err := verify.ParseSums(bytes.NewReader(data)); err != nil {
				return fmt.Errorf("%s is not a checksum file berth can read (refusing to sign it): %w", sumsPath, err)
			}
			// Load every key before writing anything: a wrong passphrase
			// for the second key must not leave the first signature behind.
			var pgpKey []byte
			if gpgKey != "" {
				if pgpKey, err = readSmall(gpgKey, 1<<20); err != nil {
					return fmt.Errorf("--gpg-key: %w", err)
				}
			}
			var signer crypto.Signer
			if cosignKey != "" {
				pemBytes, err := readSmall(cosignKey, 1<<20)
				if err != nil {
					return fmt.Errorf("--key: %w", err)
				}
				pw, _ := os.LookupEnv(envCosignPassword)
				k, err := verify.LoadPrivateKey(pemBytes, []byte(pw))
				if err != nil {
					return fmt.Errorf("--key %s: %w", cosignKey, err)
				}
				signer = k
			}
			at, err := sourceDateEpoch()
			if err != nil {
				return err
			}
			var pgpSig, cosignSig []byte
			if pgpKey != nil {
				var b bytes.Buffer
				pass := []byte(os.Getenv(envGPGPassphrase))
				if err := verify.SignOpenPGPAt(&b, bytes.NewReader(pgpKey), pass, bytes.NewReader(data), at); err != nil {
					return fmt.Errorf("--gpg-key %s: %w", gpgKey, err)
				}
				pgpSig = b.Bytes()
			}
			if signer != nil {
				if cosignSig, err = verify.SignBlob(signer, bytes.NewReader(data)); err != nil {
					return fmt.Errorf("--key %s: %w", cosignKey, err)
				}
			}
			return a.writeSignatures(sumsPath, pgpSig, cosignSig)
		},
	}
	cmd.Flags().StringVar(&gpgKey, "gpg-key", "", "OpenPGP secret key file (armored or binary); passphrase in $BERTH_GPG_PASSPHRASE")
	cmd.Flags().StringVar(&cosignKey, "key", "", "PEM private key or cosign-encrypted key; password in $COSIGN_PASSWORD")
	return cmd
}

// writeSignatures writes SHA256SUMS.gpg and/or SHA256SUMS.sig: both are
// created (and checked for existence) before either is committed.
func (a *app) writeSignatures(sumsPath string, pgpSig, cosignSig []byte) error {
	type out struct {
		path string
		data []byte
	}
	var outs []out
	if pgpSig != nil {
		outs = append(outs, out{sumsPath + ".gpg", pgpSig})
	}
	if cosignSig != nil {
		outs = append(outs, out{sumsPath + ".sig", cosignSig})
	}
	files := make([]*atomicfile.File, 0, len(outs))
	defer func() {
		for _, f := range files {
			f.Abort()
		}
	}()
	for _, o := range outs {
		f, err := atomicfile.Create(o.path, a.outputOptions())
		if err != nil {
			return err
		}
		files = append(files, f)
		if _, err := f.Write(o.data); err != nil {
			return fmt.Errorf("writing %s: %w", o.path, err)
		}
	}
	for i, f := range files {
		if err := f.Commit(); err != nil {
			return err
		}
		if !a.quiet {
			fmt.Fprintf(a.stdout, "wrote %s\n", outs[i].path)
		}
	}
	return nil
}

// readSmall reads a whole file that must not exceed limit bytes.
func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: refusing it", path, limit)
	}
	return data, nil
}

func (a *app) verifyCommand() *cobra.Command {
	var sumsPath, cosignKey string
	var keyrings []string
	var noSignature bool
	cmd := &cobra.Command{
		Use:   "verify FILE... [--sums FILE] [--keyring FILE] [--key FILE]",
		Short: "Check local files against a signed checksum file",
		Long: `Check each FILE against the checksum file (--sums, default SHA256SUMS next to
the first FILE) and the checksum file against its signatures, with the rules
of pull --verify=signature:
  --key FILE       SHA256SUMS.sig (cosign sign-blob) must exist and verify;
  --keyring FILE   SHA256SUMS.gpg or .asc must exist and verify with a key
                   of the ring (repeatable);
  neither          the default ring (/etc/systemd/import-pubring.{pgp,gpg},
                   else /usr/lib/systemd/import-pubring.{pgp,gpg}) is used
                   and an OpenPGP signature is required.
A missing or failing signature is an error; --no-signature checks the
checksums only. Without FILE, every file listed in --sums is checked (paths
relative to the checksum file). Prints "OK name" or "FAILED name: reason"
per file and exits 1 if anything failed.`,
		Args: rangeArgs(0, 1<<20),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if len(args) == 0 && sumsPath == "" {
				return usagef("verify needs FILEs, or --sums FILE to check every file it lists")
			}
			if noSignature && (cosignKey != "" || len(keyrings) > 0) {
				return usagef("--no-signature contradicts --key/--keyring")
			}
			if sumsPath == "" {
				sumsPath = filepath.Join(filepath.Dir(args[0]), "SHA256SUMS")
			}
			data, err := readSmall(sumsPath, verify.MaxSumsSize)
			if err != nil {
				return fmt.Errorf("checksum file: %w (pass --sums FILE)", err)
			}
			text := data
			if noSignature {
				a.log.Warn("not checking signatures (--no-signature): the checksum file itself is not authenticated", "sums", sumsPath)
				if inline, ok := verify.ClearsignedText(data); ok {
					text = inline
				}
			} else {
				var pemBytes []byte
				if cosignKey != "" {
					if pemBytes, err = readSmall(cosignKey, 1<<20); err != nil {
						return fmt.Errorf("--key: %w", err)
					}
				}
				trust, err := verify.LoadTrust(keyrings, pemBytes)
				if err != nil {
					if errors.Is(err, verify.ErrNoKey) && cosignKey == "" && len(keyrings) == 0 {
						err = fmt.Errorf("%w (or --no-signature to check checksums only)", err)
					}
					return err
				}
				sigs, err := verify.ReadSignatures(sumsPath)
				if err != nil {
					return err
				}
				var okSigs []string
				text, okSigs, err = trust.Check(sumsPath, data, sigs)
				if err != nil {
					fmt.Fprintf(a.stdout, "FAILED %s: %v\n", sumsPath, err)
					return fmt.Errorf("checksum file %s is not trusted: %w", sumsPath, err)
				}
				if !a.quiet {
					fmt.Fprintf(a.stdout, "OK %s: %s\n", sumsPath, strings.Join(okSigs, ", "))
				}
			}
			sums, err := verify.ParseSums(bytes.NewReader(text))
			if err != nil {
				return fmt.Errorf("%s: %w", sumsPath, err)
			}
			if len(args) == 0 {
				for _, n := range sums.Names() {
					args = append(args, filepath.Join(filepath.Dir(sumsPath), n))
				}
			}
			failed := 0
			for _, f := range args {
				if err := a.verifyOne(ctx, sums, sumsPath, f); err != nil {
					if errors.Is(err, context.Canceled) {
						return err
					}
					failed++
					fmt.Fprintf(a.stdout, "FAILED %s: %v\n", f, err)
				} else if !a.quiet {
					fmt.Fprintf(a.stdout, "OK %s\n", f)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d files failed verification against %s", failed, len(args), sumsPath)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&sumsPath, "sums", "", "checksum file (default: SHA256SUMS next to the first FILE)")
	f.StringArrayVar(&keyrings, "keyring", nil, "OpenPGP public keyring, binary or armored (repeatable)")
	f.StringVar(&cosignKey, "key", "", "cosign/PEM public key: SHA256SUMS.sig must verify with it")
	f.BoolVar(&noSignature, "no-signature", false, "check checksums only, not signatures")
	return cmd
}

// verifyOne checks one file: looked up by base name (as systemd does), or
// else by its path relative to the checksum file.
func (a *app) verifyOne(ctx context.Context, sums *verify.Sums, sumsPath, file string) error {
	name := filepath.Base(file)
	if _, ok := sums.Lookup(name); !ok {
		if rel, err := filepath.Rel(filepath.Dir(sumsPath), file); err == nil && !strings.HasPrefix(rel, "..") {
			if _, ok := sums.Lookup(filepath.ToSlash(rel)); ok {
				name = filepath.ToSlash(rel)
			}
		}
	}
	if _, ok := sums.Lookup(name); !ok {
		return fmt.Errorf("%w", verify.ErrNotListed)
	}
	d, err := a.hashFile(ctx, file)
	if err != nil {
		return err
	}
	return sums.Check(name, d)
}

// sourceDateEpoch returns $SOURCE_DATE_EPOCH as a time, or the zero time
// (meaning now) when it is unset.
func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, usagef("SOURCE_DATE_EPOCH=%q: want seconds since 1970", v)
	}
	return time.Unix(n, 0).UTC(), nil
}
