package publish

import (
	"bytes"
	"context"
	"crypto"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/formats/oci"
	"github.com/berth-dev/berth/verify"
)

// Media type and annotation of cosign's legacy (tag-based) image
// signatures, as `cosign sign --key` writes them and `cosign verify --key`
// and berth pull-oci read them.
const (
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	SignatureAnnotation    = "dev.cosignproject.cosign/signature"
)

// SignatureTag returns the reference of the signature of the image with
// manifest digest ("sha256:<hex>") in the repository of ref:
// "<repo>:sha256-<hex>.sig".
func SignatureTag(ref, digest string) (string, error) {
	r, err := oci.ParseReference(ref)
	if err != nil {
		return "", err
	}
	h, err := hexDigest(digest)
	if err != nil {
		return "", err
	}
	return r.Context().Name() + ":sha256-" + h + ".sig", nil
}

// SignatureImage returns cosign's signature image for the image with
// manifest digest in repository repo: one simple-signing layer whose
// annotation carries key's signature over the exact payload bytes. The
// image is deterministic (no timestamps; ECDSA per RFC 6979).
func SignatureImage(key crypto.Signer, repo, digest string) (v1.Image, error) {
	if _, err := hexDigest(digest); err != nil {
		return nil, err
	}
	payload := verify.SimpleSigningPayload(repo, digest)
	sig, err := verify.SignBlob(key, bytesReader(payload))
	if err != nil {
		return nil, fmt.Errorf("signing the image %s: %w", digest, err)
	}
	layer := static.NewLayer(payload, SimpleSigningMediaType)
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:       layer,
		MediaType:   SimpleSigningMediaType,
		Annotations: map[string]string{SignatureAnnotation: string(sig)},
	})
	if err != nil {
		return nil, err
	}
	return img, nil
}

// PushSignature signs the image pushed as ref (manifest digest) and pushes
// the signature to its "sha256-<hex>.sig" tag. It returns that tag.
func PushSignature(ctx context.Context, key crypto.Signer, ref, digest string, opts ...oci.Option) (string, error) {
	tag, err := SignatureTag(ref, digest)
	if err != nil {
		return "", err
	}
	r, err := oci.ParseReference(ref, opts...)
	if err != nil {
		return "", err
	}
	img, err := SignatureImage(key, r.Context().Name(), digest)
	if err != nil {
		return "", err
	}
	if err := oci.Push(ctx, tag, img, opts...); err != nil {
		return "", fmt.Errorf("pushing the signature: %w", err)
	}
	return tag, nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
