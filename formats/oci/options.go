package oci

import (
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/berth-dev/berth/internal/progress"
)

// Option tunes the writers, Push and Apply.
type Option func(*options)

type options struct {
	progress *progress.Progress
	barLabel string
	refName  string
	replace  bool
	keychain authn.Keychain
	insecure bool
	jobs     int

	concurrency int
}

func collect(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithProgress shows byte counters (blobs written, pushed or applied) on p.
func WithProgress(p *progress.Progress) Option { return func(o *options) { o.progress = p } }

// WithLabel names the progress bar of NewLayer (say, the store path the
// layer holds).
func WithLabel(label string) Option { return func(o *options) { o.barLabel = label } }

func (o *options) label(def string) string {
	if o.barLabel != "" {
		return o.barLabel
	}
	return def
}

// WithRefName records name as the org.opencontainers.image.ref.name
// annotation in the index of an OCI layout or archive (what skopeo and
// podman call the tag inside an OCI layout).
func WithRefName(name string) Option { return func(o *options) { o.refName = name } }

// WithReplace lets WriteLayout replace an existing directory (atomically:
// the old one is swapped out, then removed).
func WithReplace() Option { return func(o *options) { o.replace = true } }

// WithKeychain makes Push use kc instead of authn.DefaultKeychain (the docker
// and podman credential files and helpers).
func WithKeychain(kc authn.Keychain) Option { return func(o *options) { o.keychain = kc } }

// WithInsecure lets Push talk plain HTTP to any registry (loopback
// registries always may).
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithConcurrency sets how many goroutines compress a zstd layer (default
// GOMAXPROCS). The layer's bytes do not depend on it.
func WithConcurrency(n int) Option { return func(o *options) { o.concurrency = n } }

// WithJobs sets how many blobs Push uploads at once (default 4).
func WithJobs(n int) Option { return func(o *options) { o.jobs = n } }
