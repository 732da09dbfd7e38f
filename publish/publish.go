// Package publish turns images already written into a directory into a
// release set that every puller trusts: SHA256SUMS over every file (the
// form systemd-pull reads), its OpenPGP (.gpg) and cosign (.sig)
// signatures, and release.json describing the set for tools and humans.
//
// A set is written into a hidden directory next to its final name and
// renamed into place only when complete, so a failed or interrupted publish
// never leaves a half set that a mirror or an upload step could pick up.
// Every byte is a function of the inputs (images, keys, SOURCE_DATE_EPOCH):
// publishing the same system twice gives identical sets, which is what
// makes a CI release checkable by anyone who rebuilds it.
package publish

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/ctxio"
	"github.com/berth-dev/berth/internal/durable"
	"github.com/berth-dev/berth/internal/scratch"
	"github.com/berth-dev/berth/verify"
)

// Names of the files a release set always or optionally has.
const (
	SumsFile    = "SHA256SUMS"
	ReleaseFile = "release.json"
)

// File describes one published file in release.json.
type File struct {
	Format string `json:"format"`
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Pushed records an OCI image pushed with the release.
type Pushed struct {
	Ref       string `json:"ref"`
	Digest    string `json:"digest"`
	Signature string `json:"signature,omitempty"` // the cosign signature tag, when signed
}

// Release is the content of release.json.
type Release struct {
	Name   string  `json:"name"`
	System string  `json:"system"`
	Files  []File  `json:"files"`
	OCI    *Pushed `json:"oci,omitempty"`
}

// Signers are the keys a set is signed with; either may be absent.
type Signers struct {
	PGPKey        []byte    // OpenPGP secret key, armored or binary
	PGPPassphrase []byte    // its passphrase
	At            time.Time // signature time of the OpenPGP signature (zero: now)
	Cosign        crypto.Signer
}

// Dir is a release set being written.
type Dir struct {
	final   string
	tmp     *scratch.Item
	replace bool
	noSync  bool
	done    bool
}

// Create starts a release set for dir. dir must not exist, or be empty, or
// replace must be set; its parent must exist. Files go into Dir.Path until
// Commit moves the whole set into place. The set is written in a hidden
// scratch directory next to dir; a job killed before Commit leaves it for
// the next Create to remove. With noSync Commit does not sync the set
// before it becomes visible.
func Create(dir string, replace, noSync bool) (*Dir, error) {
	dir = filepath.Clean(dir)
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 && !replace {
		return nil, fmt.Errorf("output directory %s exists and is not empty (use --force to replace it)", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("output directory %s: %w", dir, err)
	}
	parent := filepath.Dir(dir)
	_, _ = scratch.Reap(context.Background(), parent, nil)
	tmp, err := scratch.Dir(parent, "set")
	if err != nil {
		return nil, fmt.Errorf("creating the release set next to %s: %w", dir, err)
	}
	return &Dir{final: dir, tmp: tmp, replace: replace, noSync: noSync}, nil
}

// Path returns where the file name of the set is written before Commit.
func (d *Dir) Path(name string) string { return filepath.Join(d.tmp.Path, name) }

// Final returns the directory the set appears in after Commit.
func (d *Dir) Final() string { return d.final }

// Abort removes the unfinished set. It does nothing after Commit, so
// `defer d.Abort()` is the usual pattern.
func (d *Dir) Abort() {
	if d.done {
		return
	}
	d.done = true
	_ = d.tmp.Remove()
}

// Commit moves the complete set to its final name, durable unless noSync:
// a rename onto a missing or empty directory, or (with replace) an atomic
// exchange with the old set, which is then removed.
func (d *Dir) Commit() error {
	if d.done {
		return errors.New("publish: set already committed or aborted")
	}
	tmp := d.tmp.Path
	if err := os.Chmod(tmp, 0o755); err != nil {
		d.Abort()
		return err
	}
	if !d.noSync {
		if err := durable.SyncFS(tmp); err != nil {
			d.Abort()
			return err
		}
	}
	err := os.Rename(tmp, d.final)
	switch {
	case err == nil:
	case !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.ENOTEMPTY):
		d.Abort()
		return fmt.Errorf("moving the release set to %s: %w", d.final, err)
	case !d.replace:
		d.Abort()
		return fmt.Errorf("output directory %s appeared and is not empty (use --force to replace it)", d.final)
	default:
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, d.final, unix.RENAME_EXCHANGE); err != nil {
			d.Abort()
			return fmt.Errorf("replacing %s: %w", d.final, err)
		}
		// tmp now holds the previous set.
		if err := scratch.RemoveTree(tmp); err != nil {
			d.done = true
			d.tmp.Release()
			return fmt.Errorf("removing the previous set (now %s): %w", tmp, err)
		}
	}
	d.done = true
	d.tmp.Release()
	if !d.noSync {
		if err := durable.SyncDir(filepath.Dir(d.final)); err != nil {
			return err
		}
	}
	return nil
}

// Seal completes the set: it hashes the files rel lists (filling their size
// and sha256), writes release.json, SHA256SUMS over all of them and
// release.json, and the signatures: SHA256SUMS.gpg with s.PGPKey,
// SHA256SUMS.sig with s.Cosign. hash, when not nil, wraps each file's
// reader (for progress). It returns the checksum file's bytes.
func (d *Dir) Seal(ctx context.Context, rel *Release, s Signers, hash func(name string, size int64, r io.Reader) io.Reader) ([]byte, error) {
	sort.Slice(rel.Files, func(i, j int) bool { return rel.Files[i].File < rel.Files[j].File })
	sums := map[string]string{}
	for i := range rel.Files {
		f := &rel.Files[i]
		if f.File == "" || f.File != filepath.Base(f.File) || strings.HasPrefix(f.File, ".") {
			return nil, fmt.Errorf("publish: bad file name %q in the release", f.File)
		}
		if _, dup := sums[f.File]; dup {
			return nil, fmt.Errorf("publish: %s is listed twice", f.File)
		}
		size, digest, err := hashFile(ctx, d.Path(f.File), hash)
		if err != nil {
			return nil, err
		}
		f.Size, f.SHA256 = size, digest
		sums[f.File] = digest
	}
	js, err := json.MarshalIndent(rel, "", "  ")
	if err != nil {
		return nil, err
	}
	js = append(js, '\n')
	if err := writeFile(d.Path(ReleaseFile), js); err != nil {
		return nil, err
	}
	if sums[ReleaseFile], err = verify.HashReader(bytes.NewReader(js)); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := verify.WriteSums(&b, sums); err != nil {
		return nil, err
	}
	sumsData := b.Bytes()
	if err := writeFile(d.Path(SumsFile), sumsData); err != nil {
		return nil, err
	}
	if s.PGPKey != nil {
		var sig bytes.Buffer
		if err := verify.SignOpenPGPAt(&sig, bytes.NewReader(s.PGPKey), s.PGPPassphrase, bytes.NewReader(sumsData), s.At); err != nil {
			return nil, fmt.Errorf("signing %s with the OpenPGP key: %w", SumsFile, err)
		}
		if err := writeFile(d.Path(SumsFile+".gpg"), sig.Bytes()); err != nil {
			return nil, err
		}
	}
	if s.Cosign != nil {
		sig, err := verify.SignBlob(s.Cosign, bytes.NewReader(sumsData))
		if err != nil {
			return nil, fmt.Errorf("signing %s with the cosign key: %w", SumsFile, err)
		}
		if err := writeFile(d.Path(SumsFile+".sig"), sig); err != nil {
			return nil, err
		}
	}
	return sumsData, nil
}

func hashFile(ctx context.Context, path string, wrap func(string, int64, io.Reader) io.Reader) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", fmt.Errorf("publish: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, "", err
	}
	if !st.Mode().IsRegular() {
		return 0, "", fmt.Errorf("publish: %s is not a regular file", path)
	}
	var r io.Reader = ctxio.Reader(ctx, f)
	if wrap != nil {
		r = wrap(filepath.Base(path), st.Size(), r)
	}
	d, err := verify.HashReader(r)
	if err != nil {
		return 0, "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return st.Size(), d, nil
}

func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("publish: writing %s: %w", filepath.Base(path), err)
	}
	return nil
}

// DefaultName derives the image name of a release from the build input: the
// attribute of a flake reference (".#web" → "web"), the file name of a
// configuration ("vm/configuration.nix" → "vm/configuration" → "configuration"),
// or the name part of a store path ("/nix/store/<hash>-nixos-system-web-24.05"
// → "nixos-system-web-24.05"). It returns "" when nothing usable is found.
func DefaultName(flake, config, toplevel string) string {
	var n string
	switch {
	case flake != "":
		i := strings.LastIndexByte(flake, '#')
		if i < 0 {
			return ""
		}
		n = flake[i+1:]
		// nixosConfigurations."web" or a full attribute path.
		if j := strings.LastIndexByte(n, '.'); j >= 0 {
			n = n[j+1:]
		}
		n = strings.Trim(n, `"`)
	case config != "":
		n = strings.TrimSuffix(filepath.Base(config), ".nix")
	case toplevel != "":
		n = filepath.Base(strings.TrimRight(toplevel, "/"))
		if h, rest, ok := strings.Cut(n, "-"); ok && len(h) == 32 {
			n = rest
		}
	}
	if !validName(n) {
		return ""
	}
	return n
}

// validName accepts what makes a safe file name prefix and machine name.
func validName(n string) bool {
	if n == "" || len(n) > 64 || n[0] == '.' || n[0] == '-' {
		return false
	}
	for _, c := range n {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// hexDigest returns the hex part of "sha256:<hex>".
func hexDigest(d string) (string, error) {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return "", fmt.Errorf("digest %q: want sha256:<64 hex digits>", d)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("digest %q: %w", d, err)
	}
	return h, nil
}
