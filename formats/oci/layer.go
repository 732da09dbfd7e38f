package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/ctxio"
)

// LayerCompression is how a layer's tar is compressed.
type LayerCompression string

// Layer compressions. zstd is the default: faster and smaller than gzip,
// and understood by containerd, podman, CRI-O and Docker 23+.
const (
	Zstd LayerCompression = "zstd"
	Gzip LayerCompression = "gzip"
	None LayerCompression = "none"
)

// ParseLayerCompression parses a --layer-compression value ("" is zstd).
func ParseLayerCompression(s string) (LayerCompression, error) {
	switch LayerCompression(s) {
	case "", Zstd:
		return Zstd, nil
	case Gzip, None:
		return LayerCompression(s), nil
	case "uncompressed":
		return None, nil
	}
	return "", fmt.Errorf("unknown layer compression %q: use zstd, gzip or none", s)
}

func (c LayerCompression) kind() (compress.Kind, types.MediaType, error) {
	switch c {
	case "", Zstd:
		return compress.Zstd, types.OCILayerZStd, nil
	case Gzip:
		return compress.Gzip, types.OCILayer, nil
	case None:
		return compress.None, types.OCIUncompressedLayer, nil
	}
	return "", "", fmt.Errorf("unknown layer compression %q: use zstd, gzip or none", string(c))
}

// Reproducible tar metadata of every layer NewLayer writes: the Nix store's
// mtime, as the build's tarballs have it.
var layerModTime = time.Unix(1, 0).UTC()

// Fixed compressor settings: the output must not depend on the machine.
// The zstd encoder's output does not depend on its concurrency
// (TestLayerDigestIndependentOfConcurrency), so that follows GOMAXPROCS.
const (
	zstdLevel = 3
	gzipLevel = 6
)

// Layer is a layer written by NewLayer: a v1.Layer backed by an unlinked
// temporary file holding the compressed tar. Close releases the file; the
// layer is unusable afterwards. Nothing is left on disk even if the process
// dies, because the file has no name.
type Layer struct {
	v1.Layer
	file         *os.File
	uncompressed int64
	closeOnce    sync.Once
}

// UncompressedSize is the size of the layer's tar stream.
func (l *Layer) UncompressedSize() int64 { return l.uncompressed }

// Close releases the layer's temporary file.
func (l *Layer) Close() error {
	var err error
	l.closeOnce.Do(func() { err = l.file.Close() })
	return err
}

// NewLayer writes the entries of src as one layer in a single pass: entries
// are written as a reproducible PAX tar (mtime 1, numeric owners, see
// formats.TarSink), hashed for the diffID, compressed, hashed for the
// digest and spooled to an unlinked temporary file in tmpDir ("" means
// os.TempDir()). Entries are read exactly once and memory stays bounded.
// The media type is OCI (tar+zstd, tar+gzip or tar). WithProgress counts
// the tar bytes written.
func NewLayer(ctx context.Context, src formats.Source, comp LayerCompression, tmpDir string, opts ...Option) (_ *Layer, err error) {
	o := collect(opts)
	kind, mt, err := comp.kind()
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(tmpDir, ".berth-layer-*")
	if err != nil {
		return nil, fmt.Errorf("creating layer file: %w", err)
	}
	// Unlinked at once: the layer lives only as long as the descriptor.
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("creating layer file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()

	digest := &countingHash{h: sha256.New()}
	var copts []compress.WriterOption
	switch kind {
	case compress.Zstd:
		copts = append(copts, compress.WithLevel(zstdLevel), compress.WithConcurrency(o.concurrency))
	case compress.Gzip:
		copts = append(copts, compress.WithLevel(gzipLevel))
	}
	// Large writes to the file: the tar sink writes in 256 KiB pieces and
	// the compressors in blocks; no extra buffering needed.
	cw, err := compress.NewWriter(io.MultiWriter(f, digest), kind, copts...)
	if err != nil {
		return nil, fmt.Errorf("layer compressor: %w", err)
	}
	diff := &countingHash{h: sha256.New()}
	bar := o.progress.Bar(o.label("layer"), -1)
	defer func() { bar.Done(err == nil) }()
	sink := formats.NewTarSink(ctxio.Writer(ctx, bar.Writer(io.MultiWriter(cw, diff))), formats.TarOptions{ModTime: layerModTime})
	if _, err := formats.Copy(ctx, sink, src); err != nil {
		cw.Close()
		return nil, fmt.Errorf("writing layer: %w", err)
	}
	if err := sink.Close(); err != nil {
		cw.Close()
		return nil, fmt.Errorf("writing layer: %w", err)
	}
	if err := cw.Close(); err != nil {
		return nil, fmt.Errorf("compressing layer: %w", err)
	}
	cl := &spooledLayer{
		file:      f,
		size:      digest.n,
		digest:    digest.sum(),
		diffID:    diff.sum(),
		mediaType: mt,
	}
	l, err := partial.CompressedToLayer(cl)
	if err != nil {
		return nil, err
	}
	ok = true
	return &Layer{Layer: l, file: f, uncompressed: diff.n}, nil
}

// spooledLayer is the partial.CompressedLayer view of the temporary file,
// with every hash already known (DiffID is implemented, so ggcr never
// decompresses the layer to compute it).
type spooledLayer struct {
	file      *os.File
	size      int64
	digest    v1.Hash
	diffID    v1.Hash
	mediaType types.MediaType
}

func (l *spooledLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *spooledLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *spooledLayer) Size() (int64, error)                { return l.size, nil }
func (l *spooledLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }

// Compressed returns an independent reader of the file (ReadAt based, so
// concurrent uploads of the same layer do not interfere).
func (l *spooledLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(l.file, 0, l.size)), nil
}

// countingHash is a hash that also counts the bytes written.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	return len(p), nil
}

func (c *countingHash) sum() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(c.h.Sum(nil))}
}
