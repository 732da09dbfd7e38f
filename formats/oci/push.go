package oci

import (
	"context"
	"fmt"
	"net"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/progress"
)

// UserAgent is sent to registries.
var UserAgent = "berth"

// ParseReference parses an image reference ("registry:5000/repo:tag",
// "repo@sha256:…", docker.io short names). Registries on a loopback address
// or "localhost" are spoken to over plain HTTP, as docker does; WithInsecure
// allows it for every registry.
func ParseReference(ref string, opts ...Option) (name.Reference, error) {
	o := collect(opts)
	var nopts []name.Option
	if o.insecure || loopbackRef(ref) {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	return r, nil
}

func loopbackRef(ref string) bool {
	r, err := name.ParseReference(ref)
	if err != nil {
		return false
	}
	host := r.Context().RegistryStr()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// RemoteOptions returns the go-containerregistry options berth uses to talk
// to registries: ctx, credentials from the keychain (docker and podman
// config files and credential helpers unless WithKeychain), the user agent,
// and WithJobs. pull-oci uses it with remote.Image and remote.Index.
func RemoteOptions(ctx context.Context, opts ...Option) []remote.Option {
	o := collect(opts)
	kc := o.keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	ro := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithUserAgent(UserAgent),
	}
	if o.jobs > 0 {
		ro = append(ro, remote.WithJobs(o.jobs))
	}
	return ro
}

// Push uploads img to the registry as ref (a tag or a digest reference).
// Blobs the registry already has are not uploaded again. Progress, when
// enabled with WithProgress, counts uploaded bytes.
func Push(ctx context.Context, ref string, img v1.Image, opts ...Option) (err error) {
	o := collect(opts)
	r, err := ParseReference(ref, opts...)
	if err != nil {
		return err
	}
	ro := RemoteOptions(ctx, opts...)
	if o.progress.Enabled() {
		updates := make(chan v1.Update, 16)
		ro = append(ro, remote.WithProgress(updates))
		done := make(chan struct{})
		bar := o.progress.Bar("push "+r.Context().String(), -1)
		go func() {
			defer close(done)
			var last int64
			for u := range updates {
				if u.Complete > last {
					advance(bar, u.Complete-last)
					last = u.Complete
				}
			}
		}()
		defer func() { <-done; bar.Done(err == nil) }()
	}
	if err := remote.Write(r, img, ro...); err != nil {
		return fmt.Errorf("pushing %s: %w", r, err)
	}
	return nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// advance moves a byte counter by n for work done elsewhere (in the kernel,
// in go-containerregistry): progress.Bar counts what passes through it.
func advance(bar *progress.Bar, n int64) {
	var zero [32 << 10]byte
	w := bar.Writer(discard{})
	for n > 0 {
		k := min(n, int64(len(zero)))
		w.Write(zero[:k])
		n -= k
	}
}
