package oci

import (
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultCreated is the creation time of every image unless told otherwise:
// the Nix store's mtime, so that the config digest does not change from one
// build to the next.
var DefaultCreated = time.Unix(1, 0).UTC()

// ImageConfig is what NewImage puts in the image configuration.
type ImageConfig struct {
	OS      string // "linux" when empty
	Arch    string // GOARCH name ("amd64", "arm64"); required
	Variant string // e.g. "v8" for arm64, optional

	Entrypoint []string
	Cmd        []string
	Env        []string // "KEY=value"
	WorkingDir string
	User       string
	StopSignal string
	Labels     map[string]string

	// Created is the image creation time; zero means DefaultCreated.
	Created time.Time
}

// NewImage assembles an image from layers (bottom first) with OCI media
// types for the manifest, the config and (as the layers report them) the
// layers. history, when given, has one entry per layer; otherwise each layer
// gets an entry saying berth created it at cfg.Created.
//
// The image is computed lazily by go-containerregistry; nothing is read from
// the layers but their digests, diffIDs, sizes and media types.
func NewImage(layers []v1.Layer, cfg ImageConfig, history ...v1.History) (v1.Image, error) {
	if cfg.Arch == "" {
		return nil, fmt.Errorf("image config: architecture is required")
	}
	if len(history) != 0 && len(history) != len(layers) {
		return nil, fmt.Errorf("image config: %d history entries for %d layers", len(history), len(layers))
	}
	created := cfg.Created
	if created.IsZero() {
		created = DefaultCreated
	}
	osName := cfg.OS
	if osName == "" {
		osName = "linux"
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if !isOCILayer(mt) {
			return nil, fmt.Errorf("layer %d has media type %q: an OCI image needs OCI layer media types", i, mt)
		}
		h := v1.History{Created: v1.Time{Time: created}, CreatedBy: "berth"}
		if len(history) != 0 {
			h = history[i]
		}
		adds[i] = mutate.Addendum{Layer: l, History: h}
	}
	img, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, fmt.Errorf("assembling image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("assembling image: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = cfg.Arch
	cf.Variant = cfg.Variant
	cf.OS = osName
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{
		Entrypoint: cfg.Entrypoint,
		Cmd:        cfg.Cmd,
		Env:        cfg.Env,
		WorkingDir: cfg.WorkingDir,
		User:       cfg.User,
		StopSignal: cfg.StopSignal,
		Labels:     cfg.Labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("assembling image: %w", err)
	}
	return img, nil
}

func isOCILayer(mt types.MediaType) bool {
	switch mt {
	case types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer:
		return true
	}
	return false
}
