package oci

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/formats/dirtree"
	"github.com/berth-dev/berth/internal/ctxio"
)

// Whiteout names of the OCI image spec (layer.md, "Whiteouts").
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueWhiteout = ".wh..wh..opq"
)

// whiteoutKind classifies an entry name of a layer.
type whiteoutKind int

const (
	notWhiteout    whiteoutKind = iota
	whiteoutFile                // ".wh.<name>": remove <name> of lower layers
	whiteoutOpaque              // ".wh..wh..opq": hide the lower content of the directory
	whiteoutOther               // other ".wh..wh.*" (aufs metadata): ignored
)

// parseWhiteout classifies a canonical entry name. For whiteoutFile it
// returns the canonical name to remove, for whiteoutOpaque the directory to
// make opaque. A whiteout that names nothing removable (".wh.", ".wh..",
// ".wh..." with only dots, a root whiteout) is an error.
func parseWhiteout(name string) (whiteoutKind, string, error) {
	dir, base := path.Split(name)
	if !strings.HasPrefix(base, whiteoutPrefix) {
		return notWhiteout, "", nil
	}
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if base == opaqueWhiteout {
		return whiteoutOpaque, dir, nil
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return whiteoutOther, "", nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return 0, "", fmt.Errorf("whiteout %q names no file", name)
	}
	return whiteoutFile, path.Join(dir, target), nil
}

// Apply extracts the layers of img, bottom first, into dir, which must exist
// and should be empty, and returns when the tree is the image's root file
// system:
//
//   - every entry goes through dirtree.Sink, so nothing is written outside
//     dir (no "..", no extraction through symlinks or mount points);
//   - ".wh.<name>" removes <name> (a file or a whole tree) left by lower
//     layers, ".wh..wh..opq" removes the lower layers' content of its
//     directory; neither touches what the same layer brings, whatever the
//     order of the entries in the layer;
//   - a hard link links to what is on disk when its layer is applied, so it
//     stays right when a later layer replaces or removes its target;
//   - each layer's compressed digest and size, and its diffID, are checked
//     while it is read: a layer that does not match its manifest fails the
//     whole Apply.
//
// Layer media types accepted: OCI tar, tar+gzip, tar+zstd and Docker
// rootfs.diff.tar(.gzip); the compression is detected from the bytes.
// Others (foreign/non-distributable layers, anything unknown) are an error
// naming the media type. On error dir holds a partial tree: the caller
// extracts into a quarantine and removes it.
func Apply(ctx context.Context, dir string, img v1.Image, log *slog.Logger, opts ...Option) error {
	if log == nil {
		log = slog.Default()
	}
	o := collect(opts)
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("image layers: %w", err)
	}
	var diffIDs []v1.Hash
	if cf, err := img.ConfigFile(); err != nil {
		return fmt.Errorf("image config: %w", err)
	} else if cf != nil {
		diffIDs = cf.RootFS.DiffIDs
	}
	if len(diffIDs) != len(layers) {
		return fmt.Errorf("image config lists %d layers (diff_ids), the manifest %d", len(diffIDs), len(layers))
	}
	sink, err := dirtree.NewSink(dir, dirtree.Options{Logger: log})
	if err != nil {
		return err
	}
	for i, l := range layers {
		if err := applyLayer(ctx, sink, l, diffIDs[i], i, len(layers), log, &o); err != nil {
			sink.Abort()
			return err
		}
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("finishing %s: %w", dir, err)
	}
	return nil
}

func applyLayer(ctx context.Context, sink *dirtree.Sink, l v1.Layer, diffID v1.Hash, i, n int, log *slog.Logger, o *options) (err error) {
	digest, err := l.Digest()
	if err != nil {
		return fmt.Errorf("layer %d: %w", i+1, err)
	}
	what := fmt.Sprintf("layer %d/%d (%s)", i+1, n, shortDigest(digest))
	mt, err := l.MediaType()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := checkLayerMediaType(mt); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	size, err := l.Size()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if digest.Algorithm != "sha256" || diffID.Algorithm != "sha256" {
		return fmt.Errorf("%s: only sha256 digests are supported", what)
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer rc.Close()
	bar := o.progress.Bar(fmt.Sprintf("layer %d/%d", i+1, n), size)
	defer func() { bar.Done(err == nil) }()

	ch := &countingHash{h: sha256.New()}
	compressed := io.TeeReader(ctxio.Reader(ctx, bar.Reader(io.LimitReader(rc, size+1))), ch)
	dec, kind, err := compress.NewReader(compressed)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer dec.Close()
	log.Debug("applying layer", "layer", i+1, "digest", digest.String(), "mediaType", string(mt), "compression", string(kind))
	uh := &countingHash{h: sha256.New()}
	tee := io.TeeReader(dec, uh)
	if err := applyEntries(ctx, sink, formats.NewTarSource(tee), log); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	// The tar source has read to the end of the decompressed stream; read
	// what may remain of the compressed one so its digest is complete.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := io.Copy(io.Discard, compressed); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if ch.n != size {
		return fmt.Errorf("%s: %d bytes, the manifest says %d: refusing the image", what, ch.n, size)
	}
	if got := ch.sum(); got != digest {
		return fmt.Errorf("%s: content has digest %s: the layer is corrupt or was tampered with", what, got)
	}
	if got := uh.sum(); got != diffID {
		return fmt.Errorf("%s: uncompressed content has digest %s, the config says %s: refusing the image", what, got, diffID)
	}
	return nil
}

func shortDigest(h v1.Hash) string {
	if len(h.Hex) > 12 {
		return h.Algorithm + ":" + h.Hex[:12]
	}
	return h.String()
}

func checkLayerMediaType(mt types.MediaType) error {
	switch mt {
	case types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer,
		types.DockerLayer, types.DockerUncompressedLayer:
		return nil
	case types.DockerForeignLayer, types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer:
		return fmt.Errorf("non-distributable (foreign) layer %q is not supported: its content is not in the registry", mt)
	}
	return fmt.Errorf("unsupported layer media type %q (expected an OCI or Docker tar layer)", mt)
}

// applyEntries writes one layer's entries, handling whiteouts. touched
// holds the names this layer has written and their parent directories:
// whiteouts must not remove them. It is the only per-layer state, one
// string per entry of the layer.
func applyEntries(ctx context.Context, sink *dirtree.Sink, src formats.Source, log *slog.Logger) error {
	touched := map[string]bool{".": true}
	touch := func(name string) {
		for name != "." && !touched[name] {
			touched[name] = true
			name = path.Dir(name)
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := e.Header.Name // canonical: TarSource cleaned it
		kind, target, err := parseWhiteout(name)
		if err != nil {
			return err
		}
		switch kind {
		case whiteoutFile:
			if touched[target] {
				log.Debug("whiteout of a file of the same layer ignored", "path", target)
				continue
			}
			if err := sink.Remove(target); err != nil {
				return fmt.Errorf("whiteout %s: %w", name, err)
			}
			continue
		case whiteoutOpaque:
			touch(target)
			if err := clearLower(sink, target, touched); err != nil {
				return fmt.Errorf("opaque whiteout %s: %w", name, err)
			}
			continue
		case whiteoutOther:
			log.Debug("whiteout metadata entry ignored", "path", name)
			continue
		}
		if e.Body == nil {
			e.Body = strings.NewReader("")
		}
		if err := sink.WriteEntry(e); err != nil {
			return err
		}
		touch(name)
	}
}

// clearLower removes everything below dir that the current layer did not
// write, descending into the directories it did write (or wrote into).
func clearLower(sink *dirtree.Sink, dir string, touched map[string]bool) error {
	names, err := sink.Children(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(dir, n)
		if !touched[p] {
			if err := sink.Remove(p); err != nil {
				return err
			}
			continue
		}
		if err := clearLower(sink, p, touched); err != nil {
			return err
		}
	}
	return nil
}
