package build

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/oci"
)

// DefaultMaxLayers is the layer budget of an OCI image, as nixpkgs'
// dockerTools.streamLayeredImage has it: registries and runtimes cope with
// 100 layers, and a NixOS closure of a few hundred paths then shares its
// most popular paths layer for layer with other images of the same nixpkgs.
const DefaultMaxLayers = 100

// OCIOptions shape the OCI image of a system.
type OCIOptions struct {
	// Plan adds files to the generated layer (see PlanOptions).
	Plan PlanOptions
	// Compression of the layers ("" is zstd).
	Compression oci.LayerCompression
	// MaxLayers is the layer budget, generated layer included; 0 is
	// DefaultMaxLayers. It must be at least 2: one layer for the store, one
	// for the generated files.
	MaxLayers int
	// TmpDir holds the layers' unlinked spool files ("" is os.TempDir()).
	TmpDir string
	// Jobs is how many layers are written at once (0: 2, or 1 on a single
	// CPU). The image does not depend on it.
	Jobs int
	// Meter, if set, wraps the content of every file as it is read (one
	// progress bar for all layers).
	Meter func(io.Reader) io.Reader
}

// OCIImage is a system packed as an OCI image: store paths in layers by
// popularity, the generated files on top. Close releases the layers'
// temporary files; the image is unusable afterwards.
type OCIImage struct {
	v1.Image
	// Groups are the store paths of each store layer, bottom first; the
	// generated layer follows them.
	Groups [][]string
	layers []*oci.Layer
}

// Close releases the layers' spool files.
func (img *OCIImage) Close() error {
	var errs []error
	for _, l := range img.layers {
		if l != nil {
			errs = append(errs, l.Close())
		}
	}
	img.layers = nil
	return errors.Join(errs...)
}

// OCIImage packs the system as an OCI image the way nixpkgs'
// streamLayeredImage does, so that images of systems built from the same
// nixpkgs share their bottom layers in a registry: the closure is ordered by
// popularity (oci.GroupByPopularity over the registration's references), the
// most popular paths get a layer each, the rest share one, and a last layer
// holds the generated root (sbin/init, etc/os-release, the profile,
// nix-path-registration, proc, sys, dev, --add files). Every store layer
// also carries the nix and nix/store directories, so that it unpacks alone
// with the store's modes.
//
// Each layer is written in one pass from the store (oci.NewLayer), several
// at once; the image is reproducible: the same system gives the same layer
// digests and manifest digest, whatever Jobs is and whether or not the
// store was optimised. The configuration says os linux, the system's
// architecture, /sbin/init as entrypoint, and creation time 1.
func (s *System) OCIImage(ctx context.Context, opts OCIOptions) (_ *OCIImage, err error) {
	maxLayers := opts.MaxLayers
	if maxLayers == 0 {
		maxLayers = DefaultMaxLayers
	}
	if maxLayers < 2 {
		return nil, fmt.Errorf("OCI image: %d layers are too few: at least 2 are needed (store and generated files)", maxLayers)
	}
	arch, variant, err := GOArch(s.System)
	if err != nil {
		return nil, err
	}
	refs := make(map[string][]string, len(s.Records))
	for _, r := range s.Records {
		refs[r.Path] = r.References
	}
	groups := oci.GroupByPopularity(s.Closure, refs, maxLayers)
	for _, g := range groups {
		slices.Sort(g) // tree order within a layer
	}
	out := &OCIImage{Groups: groups, layers: make([]*oci.Layer, len(groups)+1)}
	defer func() {
		if err != nil {
			out.Close()
		}
	}()
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = min(2, runtime.GOMAXPROCS(0))
	}
	// Each zstd layer may compress on every CPU (one large store path often
	// dominates a closure); a few layers at once keep the CPUs busy through
	// the many small store paths, whose compression is too short to spread.
	layerOpts := []oci.Option{oci.WithConcurrency(runtime.GOMAXPROCS(0))}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	work := make(chan int)
	for range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				var tree *Tree
				what := "the generated files"
				if i < len(groups) {
					tree = s.storeLayerSource(groups[i])
					what = groups[i][0]
					if len(groups[i]) > 1 {
						what = fmt.Sprintf("%d store paths", len(groups[i]))
					}
				} else {
					tree = s.GeneratedSource(opts.Plan)
				}
				var src formats.Source = tree
				if opts.Meter != nil {
					src = &meteredSource{src: tree, meter: opts.Meter}
				}
				l, err := oci.NewLayer(ctx, src, opts.Compression, opts.TmpDir, layerOpts...)
				tree.Close()
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("OCI layer %d (%s): %w", i+1, what, err)
					}
					cancel()
				} else {
					out.layers[i] = l
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for i := range out.layers {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	layers := make([]v1.Layer, len(out.layers))
	history := make([]v1.History, len(out.layers))
	for i, l := range out.layers {
		layers[i] = l
		by := "berth build: generated files"
		if i < len(groups) {
			by = "berth build: " + strings.Join(groups[i], " ")
			if len(groups[i]) > 3 {
				by = fmt.Sprintf("berth build: %d store paths", len(groups[i]))
			}
		}
		history[i] = v1.History{Created: v1.Time{Time: oci.DefaultCreated}, CreatedBy: by}
	}
	out.Image, err = oci.NewImage(layers, oci.ImageConfig{
		Arch:       arch,
		Variant:    variant,
		Entrypoint: []string{"/sbin/init"},
		Labels:     map[string]string{"org.nixos.toplevel": s.Toplevel},
	}, history...)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// storeLayerSource returns the entries of a store layer: nix, nix/store
// (as the generated tree has them) and the group's store paths.
func (s *System) storeLayerSource(paths []string) *Tree {
	parents := []*formats.Entry{
		{Header: &tar.Header{Typeflag: tar.TypeDir, Name: "nix", Mode: 0o755}},
		{Header: &tar.Header{Typeflag: tar.TypeDir, Name: "nix/store", Mode: 0o755}},
	}
	for _, e := range parents {
		normalise(e.Header)
	}
	return newTree([]formats.Source{
		&sliceSource{ents: parents},
		&storeSource{paths: slices.Clone(paths), log: s.logger(nil)},
	})
}

// GOArch maps a Nix system double ("x86_64-linux") to the OCI architecture
// and variant (GOARCH names: "amd64", "arm64"/"v8", "arm"/"v7").
func GOArch(system string) (arch, variant string, err error) {
	cpu, _, _ := strings.Cut(system, "-")
	switch cpu {
	case "x86_64":
		return "amd64", "", nil
	case "i686", "i586", "i486", "i386":
		return "386", "", nil
	case "aarch64":
		return "arm64", "v8", nil
	case "armv7l":
		return "arm", "v7", nil
	case "armv6l":
		return "arm", "v6", nil
	case "armv5tel":
		return "arm", "v5", nil
	case "riscv64":
		return "riscv64", "", nil
	case "powerpc64le":
		return "ppc64le", "", nil
	case "powerpc64":
		return "ppc64", "", nil
	case "s390x":
		return "s390x", "", nil
	case "loongarch64":
		return "loong64", "", nil
	case "mips64el":
		return "mips64le", "", nil
	}
	return "", "", fmt.Errorf("OCI image: no OCI architecture for the Nix system %q", system)
}

// meteredSource passes every file's content through meter.
type meteredSource struct {
	src   formats.Source
	meter func(io.Reader) io.Reader
}

func (m *meteredSource) Next() (*formats.Entry, error) {
	e, err := m.src.Next()
	if err != nil {
		return nil, err
	}
	if e.Body != nil {
		e.Body = m.meter(e.Body)
	}
	return e, nil
}
