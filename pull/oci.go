package pull

// pull-oci: an image from a container registry, flattened into a directory
// image. Unlike systemd-importd's pull-oci (v260) it verifies a cosign
// signature before anything is downloaded beyond manifests, accepts Docker
// schema2 media types, digest references and credentials, and flattens the
// layers into one ordinary directory tree that every systemd version boots.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/formats/oci"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/progress"
	"github.com/berth-dev/berth/verify"
)

// OCIVerify is how pull-oci checks an image before downloading its layers.
type OCIVerify string

// The --verify modes of pull-oci.
const (
	// OCIVerifyNo trusts the registry (and TLS) alone.
	OCIVerifyNo OCIVerify = "no"
	// OCIVerifySignature requires a cosign signature made with the key
	// given in OCIOptions.CosignKey.
	OCIVerifySignature OCIVerify = "signature"
)

// ParseOCIVerify parses pull-oci's --verify ("" means signature).
func ParseOCIVerify(s string) (OCIVerify, error) {
	switch s {
	case "", string(OCIVerifySignature):
		return OCIVerifySignature, nil
	case string(OCIVerifyNo):
		return OCIVerifyNo, nil
	case "checksum":
		return "", fmt.Errorf("--verify=checksum: registries address content by digest already; use --verify=signature (with --key) or --verify=no")
	}
	return "", fmt.Errorf("--verify=%q: pull-oci takes no or signature", s)
}

// Cosign's legacy ("tag-based") signature format, as cosign sign writes it
// without --new-bundle-format.
const (
	// CosignSimpleSigningType is the media type of a signature layer: the
	// layer blob is the signed simple-signing JSON payload.
	CosignSimpleSigningType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// CosignSignatureAnnotation holds the base64 signature over the blob.
	CosignSignatureAnnotation = "dev.cosignproject.cosign/signature"
)

// Limits on what a signature manifest may make us read: the payloads are a
// few hundred bytes; an attacker's registry must not make us read more.
const (
	maxSignatureLayers  = 64
	maxSignaturePayload = 1 << 20
	maxIndexDepth       = 4
)

// ErrUnsigned: the registry holds no cosign signature for the image.
var ErrUnsigned = errors.New("no cosign signature found")

// OCIOptions say how pull-oci fetches, verifies and installs an image.
type OCIOptions struct {
	ImportOptions
	Verify OCIVerify
	// CosignKey is the PEM public key signatures must verify with
	// (required with OCIVerifySignature).
	CosignKey []byte
	// Platform picks the image of a multi-platform index; nil means
	// linux and the architecture berth was built for.
	Platform *v1.Platform
	// Insecure allows plain HTTP to any registry (loopback registries
	// always may).
	Insecure bool
	// Keychain provides credentials; nil means authn.DefaultKeychain
	// (docker and podman config files and credential helpers).
	Keychain authn.Keychain
	// NoSettings skips writing NAME.nspawn from the image config.
	NoSettings bool
	Progress   *progress.Progress
}

// DefaultPlatform is the platform pulled from an index unless told:
// linux on the architecture berth runs on.
func DefaultPlatform() *v1.Platform {
	return &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// ParsePlatform parses --platform: OS/ARCH or OS/ARCH/VARIANT
// ("linux/arm64/v8").
func ParsePlatform(s string) (*v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return nil, fmt.Errorf("platform %q: want OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64", s)
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != "" {
			return nil, fmt.Errorf("platform %q: want OS/ARCH or OS/ARCH/VARIANT in lower case letters and digits, e.g. linux/amd64", s)
		}
	}
	p := &v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// DefaultOCIName derives the image name from a reference: the last
// component of the repository path ("debian" for docker.io/library/debian,
// "app" for registry:5000/team/app@sha256:…).
func DefaultOCIName(ref string) (string, error) {
	r, err := oci.ParseReference(ref)
	if err != nil {
		return "", err
	}
	n := path.Base(r.Context().RepositoryStr())
	if err := imageroot.ValidName(n); err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	return n, nil
}

// PullOCI fetches the image ref from its registry and installs it as name:
//
//  1. the reference is resolved once to a manifest digest; a multi-platform
//     index is resolved to the manifest of opts.Platform, fetched by digest;
//  2. with OCIVerifySignature, a cosign signature for that digest (or for
//     the index it was picked from) must verify with opts.CosignKey and
//     name the image's repository, before any layer is downloaded;
//  3. the layers, each checked against its digest and diffID, are applied
//     bottom-up into a hidden work directory of the image root (whiteouts,
//     opaque directories and hard links as the layers mean them);
//  4. only then is the tree renamed to name, and the image config written
//     as name.nspawn (an existing one is kept unless Force).
//
// On any failure or cancellation nothing is left in the image root.
func PullOCI(ctx context.Context, root *imageroot.Root, ref, name string, opts OCIOptions) (err error) {
	log := opts.Log
	if log == nil {
		log = root.Log
	}
	mode := opts.Verify
	if mode == "" {
		mode = OCIVerifySignature
	}
	var pub crypto.PublicKey
	switch mode {
	case OCIVerifyNo:
	case OCIVerifySignature:
		if len(opts.CosignKey) == 0 {
			return fmt.Errorf("%w: pull-oci --verify=signature needs the signer's public key: pass --key FILE, or --verify=no to skip verification", verify.ErrNoKey)
		}
		if pub, err = verify.LoadPublicKey(opts.CosignKey); err != nil {
			return fmt.Errorf("--key: %w", err)
		}
	default:
		return fmt.Errorf("--verify=%q: pull-oci takes no or signature", mode)
	}
	want := opts.Platform
	if want == nil {
		want = DefaultPlatform()
	}
	if err := imageroot.ValidName(name); err != nil {
		return err
	}
	var oopts []oci.Option
	if opts.Insecure {
		oopts = append(oopts, oci.WithInsecure())
	}
	if opts.Keychain != nil {
		oopts = append(oopts, oci.WithKeychain(opts.Keychain))
	}
	r, err := oci.ParseReference(ref, oopts...)
	if err != nil {
		return err
	}
	unlock, err := root.Lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	if !opts.Force && (root.Exists(name) || root.Exists(name+".raw")) {
		return fmt.Errorf("image %q already exists in %s (use --force to replace it)", name, root.Dir)
	}
	ro := oci.RemoteOptions(ctx, oopts...)

	stage(log, "resolve", "ref", r.String())
	res, err := resolve(r, want, ro, log)
	if err != nil {
		return err
	}
	pinned := r.Context().Digest(res.digest.String())
	log.Info("resolved", "ref", r.String(), "digest", res.digest.String(), "platform", platformString(want))

	if mode == OCIVerifySignature {
		stage(log, "verify", "digest", res.digest.String())
		if err := verifyCosign(ctx, r.Context(), res.signed, pub, ro, log); err != nil {
			return err
		}
	} else {
		log.Warn("not verifying the image signature (--verify=no)", "image", pinned.String())
	}

	cfg, err := res.img.ConfigFile()
	if err != nil {
		return fmt.Errorf("reading the config of %s: %w", pinned, err)
	}
	if err := checkPlatform(cfg, want, opts.Platform != nil, log); err != nil {
		return fmt.Errorf("%s: %w", pinned, err)
	}

	work, err := root.WorkDir(name)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if rerr := imageroot.RemoveTree(work); rerr != nil {
				log.Warn("could not remove work directory", "path", work, "err", rerr)
			}
		}
	}()
	stage(log, "download", "image", pinned.String(), "into", work)
	if err := oci.Apply(ctx, work, res.img, log, oci.WithProgress(opts.Progress)); err != nil {
		return fmt.Errorf("pulling %s: %w", pinned, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	stage(log, "install", "image", name)
	inst := opts.InstallOptions
	if !opts.NoSettings {
		inst.Settings = oci.ConfigToNspawn(cfg)
	}
	if err := root.Install(work, name, inst); err != nil {
		return err
	}
	log.Info("pulled", "image", name, "path", root.Path(name), "from", pinned.String())
	return nil
}

// resolved is the image a reference resolved to.
type resolved struct {
	img    v1.Image
	digest v1.Hash   // the image manifest's digest
	signed []v1.Hash // digests a signature may be for: the manifest's, then each index it was picked from
}

// resolve fetches ref's manifest once and, for an index, the manifest of
// the wanted platform by digest. Every manifest is hashed by
// go-containerregistry as it is read, so the digests returned are those of
// the bytes the image is built from: what is verified is what is pulled.
func resolve(ref name.Reference, want *v1.Platform, ro []remote.Option, log *slog.Logger) (*resolved, error) {
	desc, err := remote.Get(ref, ro...)
	if err != nil {
		return nil, fmt.Errorf("fetching the manifest of %s: %w", ref, explainRegistry(err))
	}
	var chain []v1.Hash
	for depth := 0; ; depth++ {
		switch mt := desc.MediaType; {
		case mt == types.OCIManifestSchema1 || mt == types.DockerManifestSchema2:
			img, err := desc.Image()
			if err != nil {
				return nil, fmt.Errorf("reading %s: %w", ref, err)
			}
			return &resolved{img: img, digest: desc.Digest, signed: append([]v1.Hash{desc.Digest}, chain...)}, nil
		case mt == types.OCIImageIndex || mt == types.DockerManifestList:
			if depth >= maxIndexDepth {
				return nil, fmt.Errorf("%s: indexes nested more than %d deep", ref, maxIndexDepth)
			}
			im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
			if err != nil {
				return nil, fmt.Errorf("%s: parsing index %s: %w", ref, desc.Digest, err)
			}
			child, err := pickPlatform(im, want)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ref, err)
			}
			log.Debug("picked platform from index", "index", desc.Digest.String(), "manifest", child.Digest.String(), "platform", platformString(child.Platform))
			chain = append([]v1.Hash{desc.Digest}, chain...)
			byDigest := ref.Context().Digest(child.Digest.String())
			if desc, err = remote.Get(byDigest, ro...); err != nil {
				return nil, fmt.Errorf("fetching the manifest of %s: %w", byDigest, explainRegistry(err))
			}
		case mt == types.DockerManifestSchema1 || mt == types.DockerManifestSchema1Signed:
			return nil, fmt.Errorf("%s is a Docker schema 1 image, which is obsolete and unsupported: push it again with a current tool", ref)
		default:
			return nil, fmt.Errorf("%s has media type %q, which is not an OCI or Docker image or index", ref, mt)
		}
	}
}

// pickPlatform chooses the index entry for want: same OS and architecture,
// and the same variant when want names one; entries with the wanted
// variant, then without any, are preferred when want names none (for
// arm64, "v8" is the default variant). Attestation manifests
// ("unknown/unknown") never match.
func pickPlatform(im *v1.IndexManifest, want *v1.Platform) (*v1.Descriptor, error) {
	var fallback *v1.Descriptor
	var seen []string
	for i := range im.Manifests {
		d := &im.Manifests[i]
		if d.Platform == nil {
			continue
		}
		p := d.Platform
		seen = append(seen, platformString(p))
		if p.OS != want.OS || p.Architecture != want.Architecture {
			continue
		}
		if want.Variant != "" {
			if p.Variant == want.Variant || p.Variant == "" && defaultVariant(want.Architecture) == want.Variant {
				return d, nil
			}
			continue
		}
		if p.Variant == "" || p.Variant == defaultVariant(p.Architecture) {
			return d, nil
		}
		if fallback == nil {
			fallback = d
		}
	}
	if fallback != nil {
		return fallback, nil
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("the index names no platforms: cannot pick one for %s", platformString(want))
	}
	return nil, fmt.Errorf("no image for platform %s in the index (it has %s): pass --platform", platformString(want), strings.Join(seen, ", "))
}

func defaultVariant(arch string) string {
	if arch == "arm64" {
		return "v8"
	}
	return ""
}

func platformString(p *v1.Platform) string {
	if p == nil {
		return "unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// checkPlatform compares the image config with the wanted platform: a
// mismatch is an error when the user asked for the platform, a warning
// otherwise (a single-platform image of another architecture needs
// binfmt emulation to run).
func checkPlatform(cfg *v1.ConfigFile, want *v1.Platform, explicit bool, log *slog.Logger) error {
	if cfg == nil || cfg.Architecture == "" {
		return nil
	}
	if cfg.OS != "" && cfg.OS != want.OS || cfg.Architecture != want.Architecture ||
		want.Variant != "" && cfg.Variant != "" && cfg.Variant != want.Variant {
		got := platformString(&v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant})
		if explicit {
			return fmt.Errorf("the image is for %s, not %s", got, platformString(want))
		}
		log.Warn("the image is for another platform", "image", got, "host", platformString(want))
	}
	return nil
}

// signatureTag is where cosign's legacy format stores the signatures of a
// manifest: tag "sha256-<hex>.sig" in the same repository.
func signatureTag(repo name.Repository, d v1.Hash) name.Tag {
	return repo.Tag(d.Algorithm + "-" + d.Hex + ".sig")
}

// sigLayer is one signature of a cosign signature manifest.
type sigLayer struct {
	digest v1.Hash
	size   int64
	sig    string
}

// signatureLayers selects the cosign signatures of a signature manifest:
// layers of the simple-signing media type that carry a signature
// annotation, at most maxSignatureLayers, each small.
func signatureLayers(m *v1.Manifest) ([]sigLayer, error) {
	var out []sigLayer
	for _, l := range m.Layers {
		if l.MediaType != CosignSimpleSigningType {
			continue
		}
		sig, ok := l.Annotations[CosignSignatureAnnotation]
		if !ok || sig == "" {
			continue
		}
		if l.Digest.Algorithm != "sha256" || len(l.Digest.Hex) != 64 {
			return nil, fmt.Errorf("signature payload %s: not a sha256 digest", l.Digest)
		}
		if l.Size < 0 || l.Size > maxSignaturePayload {
			return nil, fmt.Errorf("signature payload %s: size %d is out of bounds (at most %d bytes)", l.Digest, l.Size, maxSignaturePayload)
		}
		if len(out) == maxSignatureLayers {
			return nil, fmt.Errorf("signature manifest has more than %d signatures", maxSignatureLayers)
		}
		out = append(out, sigLayer{digest: l.Digest, size: l.Size, sig: sig})
	}
	return out, nil
}

// verifyCosign accepts the image if any cosign signature stored for one of
// the digests verifies with pub and binds that digest to repo. Digests are
// tried in order (the image manifest first, then the indexes it was picked
// from: signing an index covers the manifests it lists by digest).
func verifyCosign(ctx context.Context, repo name.Repository, digests []v1.Hash, pub crypto.PublicKey, ro []remote.Option, log *slog.Logger) error {
	var failures []string
	found := false
	for _, d := range digests {
		tag := signatureTag(repo, d)
		desc, err := remote.Get(tag, ro...)
		if isNotFound(err) {
			log.Debug("no signature tag", "tag", tag.String())
			continue
		}
		if err != nil {
			return fmt.Errorf("fetching signatures %s: %w", tag, explainRegistry(err))
		}
		m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return fmt.Errorf("signature manifest %s: %w", tag, err)
		}
		sigs, err := signatureLayers(m)
		if err != nil {
			return fmt.Errorf("signature manifest %s: %w", tag, err)
		}
		for _, s := range sigs {
			found = true
			payload, err := fetchPayload(ctx, repo, s, ro)
			if err != nil {
				return fmt.Errorf("signature manifest %s: %w", tag, err)
			}
			err = verify.VerifySimpleSigning(pub, payload, s.sig, d.String(), repo.Name())
			if err == nil {
				log.Info("signature verified", "image", repo.Digest(d.String()).String(), "signature", tag.String())
				return nil
			}
			log.Debug("signature does not verify", "tag", tag.String(), "payload", s.digest.String(), "err", err)
			failures = append(failures, err.Error())
		}
	}
	what := repo.Digest(digests[0].String()).String()
	if !found {
		return fmt.Errorf("%w for %s; pass --key for a signed image or --verify=no", ErrUnsigned, what)
	}
	return fmt.Errorf("no cosign signature of %s verifies with the key given (%s): refusing the image", what, strings.Join(dedup(failures), "; "))
}

// fetchPayload reads one signature payload blob, bounded and checked
// against its digest and size.
func fetchPayload(ctx context.Context, repo name.Repository, s sigLayer, ro []remote.Option) ([]byte, error) {
	l, err := remote.Layer(repo.Digest(s.digest.String()), ro...)
	if err != nil {
		return nil, fmt.Errorf("signature payload %s: %w", s.digest, explainRegistry(err))
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, fmt.Errorf("signature payload %s: %w", s.digest, explainRegistry(err))
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, s.size+1))
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("signature payload %s: %w", s.digest, err)
	}
	sum := sha256.Sum256(b)
	if int64(len(b)) != s.size || hex.EncodeToString(sum[:]) != s.digest.Hex {
		return nil, fmt.Errorf("signature payload %s: content does not match its digest and size", s.digest)
	}
	return b, nil
}

func dedup(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func isNotFound(err error) bool {
	var te *transport.Error
	if !errors.As(err, &te) {
		return false
	}
	if te.StatusCode == 404 {
		return true
	}
	for _, d := range te.Errors {
		if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
			return true
		}
	}
	return false
}

// explainRegistry adds what to do to the registry errors users meet most.
func explainRegistry(err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case 401, 403:
			return fmt.Errorf("%w (log in with docker login or podman login: credentials come from their config files)", err)
		case 404:
			return fmt.Errorf("%w (check the repository and tag)", err)
		}
	}
	return err
}
