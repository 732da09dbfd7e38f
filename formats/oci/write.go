package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/ctxio"
)

// archiveModTime is the mtime of every entry of the archives written here.
var archiveModTime = DefaultCreated

// blob is one content-addressed file of an image.
type blob struct {
	digest v1.Hash
	size   int64
	data   []byte                        // manifest and config
	open   func() (io.ReadCloser, error) // layers
	spool  *os.File                      // a NewLayer layer's file, when known
}

// imageBlobs lists the manifest, config and layer blobs of img, sorted by
// digest and without duplicates, and returns the manifest's descriptor.
func imageBlobs(img v1.Image) ([]blob, v1.Descriptor, error) {
	var desc v1.Descriptor
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, desc, fmt.Errorf("image manifest: %w", err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, desc, fmt.Errorf("image manifest: %w", err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, desc, fmt.Errorf("image config: %w", err)
	}
	desc = v1.Descriptor{MediaType: mt, Size: int64(len(rawManifest)), Digest: sha256Hash(rawManifest)}
	if cf, err := img.ConfigFile(); err == nil && cf.OS != "" {
		desc.Platform = &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	}
	blobs := []blob{
		{digest: desc.Digest, size: desc.Size, data: rawManifest},
		{digest: sha256Hash(rawConfig), size: int64(len(rawConfig)), data: rawConfig},
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, desc, fmt.Errorf("image layers: %w", err)
	}
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, desc, fmt.Errorf("layer %d: %w", i, err)
		}
		size, err := l.Size()
		if err != nil {
			return nil, desc, fmt.Errorf("layer %d: %w", i, err)
		}
		b := blob{digest: d, size: size, open: l.Compressed}
		if nl, ok := l.(*Layer); ok {
			b.spool = nl.file
		}
		blobs = append(blobs, b)
	}
	slices.SortFunc(blobs, func(a, b blob) int { return strings.Compare(a.digest.String(), b.digest.String()) })
	blobs = slices.CompactFunc(blobs, func(a, b blob) bool { return a.digest == b.digest })
	for _, b := range blobs {
		if b.digest.Algorithm != "sha256" {
			return nil, desc, fmt.Errorf("blob %s: only sha256 digests are supported", b.digest)
		}
	}
	return blobs, desc, nil
}

func sha256Hash(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func totalSize(blobs []blob) int64 {
	var n int64
	for _, b := range blobs {
		n += b.size
	}
	return n
}

// copyBlob writes exactly the bytes of b to w and checks them against its
// digest: a layer that changed or was cut short must not end up in an image
// under its old name.
func copyBlob(ctx context.Context, w io.Writer, b blob) error {
	var r io.Reader
	if b.data != nil {
		r = bytes.NewReader(b.data)
	} else {
		rc, err := b.open()
		if err != nil {
			return fmt.Errorf("blob %s: %w", b.digest, err)
		}
		defer rc.Close()
		r = rc
	}
	h := &countingHash{h: sha256.New()}
	n, err := io.Copy(io.MultiWriter(w, h), ctxio.Reader(ctx, io.LimitReader(r, b.size+1)))
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.digest, err)
	}
	if n != b.size {
		return fmt.Errorf("blob %s: %d bytes, expected %d", b.digest, n, b.size)
	}
	if got := h.sum(); got != b.digest {
		return fmt.Errorf("blob %s: content has digest %s", b.digest, got)
	}
	return nil
}

func indexJSON(desc v1.Descriptor, refName string) ([]byte, error) {
	if refName != "" {
		desc.Annotations = map[string]string{"org.opencontainers.image.ref.name": refName}
	}
	idx := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests:     []v1.Descriptor{desc},
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

var ociLayoutJSON = []byte(`{"imageLayoutVersion":"1.0.0"}` + "\n")

// WriteLayout writes img as an OCI image-layout directory (oci-layout,
// index.json, blobs/sha256/…) at dir. The layout is built in a hidden
// sibling directory and renamed to dir when complete, so dir either does not
// exist or holds the whole image; an existing dir is an error unless
// WithReplace is given. Every blob is checked against its digest on the way.
func WriteLayout(ctx context.Context, dir string, img v1.Image, opts ...Option) (err error) {
	o := collect(opts)
	dir = filepath.Clean(dir)
	if !o.replace {
		if _, err := os.Lstat(dir); err == nil {
			return fmt.Errorf("%s already exists: remove it or replace it (--force)", dir)
		}
	}
	blobs, desc, err := imageBlobs(img)
	if err != nil {
		return err
	}
	index, err := indexJSON(desc, o.refName)
	if err != nil {
		return err
	}
	parent, base := filepath.Split(dir)
	if parent == "" {
		parent = "."
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".tmp-")
	if err != nil {
		return fmt.Errorf("writing OCI layout %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	blobDir := filepath.Join(tmp, "blobs", "sha256")
	if err := os.MkdirAll(blobDir, 0o755); err != nil {
		return fmt.Errorf("writing OCI layout %s: %w", dir, err)
	}
	bar := o.progress.Bar("write "+filepath.Base(dir), totalSize(blobs))
	defer func() { bar.Done(err == nil) }()
	for _, b := range blobs {
		if err := writeFile(filepath.Join(blobDir, b.digest.Hex), func(w *os.File) error {
			if b.spool != nil {
				if done, err := copySpool(ctx, w, b); done || err != nil {
					if err == nil {
						advance(bar, b.size)
					}
					return err
				}
			}
			return copyBlob(ctx, bar.Writer(w), b)
		}); err != nil {
			return fmt.Errorf("writing OCI layout %s: %w", dir, err)
		}
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"index.json", index}, {"oci-layout", ociLayoutJSON}} {
		if err := writeFile(filepath.Join(tmp, f.name), func(w *os.File) error {
			_, err := w.Write(f.data)
			return err
		}); err != nil {
			return fmt.Errorf("writing OCI layout %s: %w", dir, err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("writing OCI layout %s: %w", dir, err)
	}
	return install(tmp, dir, o.replace)
}

// install renames the finished tmp to dir; with replace an existing dir is
// exchanged atomically and then removed.
func install(tmp, dir string, replace bool) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) && replace {
		if err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE); err == nil {
			if err := os.RemoveAll(tmp); err != nil {
				return fmt.Errorf("removing the replaced %s (now %s): %w", dir, tmp, err)
			}
			return nil
		}
	}
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%s already exists: remove it or replace it (--force)", dir)
	}
	if err != nil {
		return fmt.Errorf("installing OCI layout %s: %w", dir, err)
	}
	return nil
}

func writeFile(p string, fill func(*os.File) error) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// copySpool copies a NewLayer spool file into dst inside the kernel
// (copy_file_range: a reflink or an in-kernel copy, no pass through user
// space). The spool has no name and was hashed when written, so it is not
// hashed again. done is false when the kernel cannot do it (other file
// system types, old kernels) and nothing was written: copy normally then.
func copySpool(ctx context.Context, dst *os.File, b blob) (done bool, err error) {
	var off int64
	for off < b.size {
		if err := ctx.Err(); err != nil {
			return true, err
		}
		roff := off
		n, err := unix.CopyFileRange(int(b.spool.Fd()), &roff, int(dst.Fd()), nil, int(min(b.size-off, 64<<20)), 0)
		if err != nil {
			if off == 0 && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) ||
				errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
				return false, nil
			}
			return true, fmt.Errorf("blob %s: copy: %w", b.digest, err)
		}
		if n == 0 {
			return true, fmt.Errorf("blob %s: layer file ends at %d of %d bytes", b.digest, off, b.size)
		}
		off += int64(n)
	}
	return true, nil
}

// tarWriter writes the reproducible archives: fixed mtime, root owner,
// fixed modes, no user names.
type tarWriter struct{ tw *tar.Writer }

func (t tarWriter) dir(name string) error {
	return t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: archiveModTime, Format: tar.FormatPAX})
}

func (t tarWriter) file(name string, size int64) error {
	return t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: archiveModTime, Format: tar.FormatPAX})
}

func (t tarWriter) data(name string, b []byte) error {
	if err := t.file(name, int64(len(b))); err != nil {
		return err
	}
	_, err := t.tw.Write(b)
	return err
}

// WriteArchive writes img as an OCI image layout in a tar stream (an
// "oci-archive", .oci.tar): entries in name order, mtime 1970-01-01T00:00:01Z,
// owner 0, so the same image gives the same bytes. It does not close w.
func WriteArchive(ctx context.Context, w io.Writer, img v1.Image, opts ...Option) (err error) {
	o := collect(opts)
	blobs, desc, err := imageBlobs(img)
	if err != nil {
		return err
	}
	index, err := indexJSON(desc, o.refName)
	if err != nil {
		return err
	}
	bar := o.progress.Bar("write OCI archive", totalSize(blobs))
	defer func() { bar.Done(err == nil) }()
	t := tarWriter{tar.NewWriter(w)}
	if err := t.dir("blobs"); err != nil {
		return fmt.Errorf("writing OCI archive: %w", err)
	}
	if err := t.dir("blobs/sha256"); err != nil {
		return fmt.Errorf("writing OCI archive: %w", err)
	}
	for _, b := range blobs {
		if err := t.file("blobs/sha256/"+b.digest.Hex, b.size); err != nil {
			return fmt.Errorf("writing OCI archive: %w", err)
		}
		if err := copyBlob(ctx, bar.Writer(t.tw), b); err != nil {
			return fmt.Errorf("writing OCI archive: %w", err)
		}
	}
	if err := t.data("index.json", index); err != nil {
		return fmt.Errorf("writing OCI archive: %w", err)
	}
	if err := t.data("oci-layout", ociLayoutJSON); err != nil {
		return fmt.Errorf("writing OCI archive: %w", err)
	}
	if err := t.tw.Close(); err != nil {
		return fmt.Errorf("writing OCI archive: %w", err)
	}
	return nil
}

// dockerManifest is one entry of a `docker save` manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string `json:",omitempty"`
	Layers   []string
}

// WriteDockerArchive writes img in the `docker save` format that
// `docker load` reads (.docker.tar): <config>.json, one file per layer and
// manifest.json, tagged tag ("repo:tag"; "" loads the image untagged).
//
// Docker before 23 cannot read zstd layers, and readers of the format
// expect all layers compressed alike: an image whose layers are all gzip
// keeps them as they are, any other image has all its layers written
// uncompressed, as `docker save` does (decompressed on the fly and checked
// against their diffID, which is what docker load checks against the
// config). Entries are in a fixed order with a fixed mtime. It does not
// close w.
func WriteDockerArchive(ctx context.Context, w io.Writer, img v1.Image, tag string, opts ...Option) (err error) {
	o := collect(opts)
	if tag != "" {
		t, err := name.NewTag(tag)
		if err != nil {
			return fmt.Errorf("docker archive tag %q: %w", tag, err)
		}
		tag = t.Context().String() + ":" + t.TagStr()
		tag = strings.TrimPrefix(tag, name.DefaultRegistry+"/")
		tag = strings.TrimPrefix(tag, "library/")
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("image layers: %w", err)
	}
	var files []dockerLayer
	seen := map[string]bool{}
	m := dockerManifest{Config: sha256Hash(rawConfig).Hex + ".json"}
	if tag != "" {
		m.RepoTags = []string{tag}
	}
	// Readers of this format (go-containerregistry's tarball among them)
	// look at the first layer to tell whether all are compressed, so the
	// layers must be uniform: gzip if all are gzip, else all uncompressed,
	// as `docker save` writes them.
	keepGzip := true
	for _, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			return err
		}
		if mt != types.OCILayer && mt != types.DockerLayer {
			keepGzip = false
		}
	}
	var total int64
	for i, l := range layers {
		f, err := dockerLayerFile(ctx, l, keepGzip)
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		m.Layers = append(m.Layers, f.name)
		if !seen[f.name] {
			seen[f.name] = true
			files = append(files, f)
			total += f.size
		}
	}
	manifest, err := json.Marshal([]dockerManifest{m})
	if err != nil {
		return err
	}
	bar := o.progress.Bar("write docker archive", total)
	defer func() { bar.Done(err == nil) }()
	t := tarWriter{tar.NewWriter(w)}
	if err := t.data(m.Config, rawConfig); err != nil {
		return fmt.Errorf("writing docker archive: %w", err)
	}
	for _, f := range files {
		if err := t.file(f.name, f.size); err != nil {
			return fmt.Errorf("writing docker archive: %w", err)
		}
		if err := copyBlob(ctx, bar.Writer(t.tw), blob{digest: f.digest, size: f.size, open: f.open}); err != nil {
			return fmt.Errorf("writing docker archive: %w", err)
		}
	}
	if err := t.data("manifest.json", append(manifest, '\n')); err != nil {
		return fmt.Errorf("writing docker archive: %w", err)
	}
	if err := t.tw.Close(); err != nil {
		return fmt.Errorf("writing docker archive: %w", err)
	}
	return nil
}

// dockerLayer is a layer file of a docker archive; digest is of the bytes
// written.
type dockerLayer struct {
	name   string
	size   int64
	digest v1.Hash
	open   func() (io.ReadCloser, error)
}

// dockerLayerFile decides how a layer goes into a docker archive: a gzip
// layer as it is when keepGzip, an uncompressed one as it is, anything else
// decompressed.
func dockerLayerFile(ctx context.Context, l v1.Layer, keepGzip bool) (dockerLayer, error) {
	mt, err := l.MediaType()
	if err != nil {
		return dockerLayer{}, err
	}
	if err := checkLayerMediaType(mt); err != nil {
		return dockerLayer{}, err
	}
	switch {
	case keepGzip || mt == types.OCIUncompressedLayer || mt == types.DockerUncompressedLayer:
		d, err := l.Digest()
		if err != nil {
			return dockerLayer{}, err
		}
		size, err := l.Size()
		if err != nil {
			return dockerLayer{}, err
		}
		ext := ".tar.gz"
		if mt == types.OCIUncompressedLayer || mt == types.DockerUncompressedLayer {
			ext = ".tar"
		}
		return dockerLayer{name: d.Hex + ext, size: size, digest: d, open: l.Compressed}, nil
	default:
		diffID, err := l.DiffID()
		if err != nil {
			return dockerLayer{}, err
		}
		open := func() (io.ReadCloser, error) { return decompressed(l) }
		var size int64
		if u, ok := l.(interface{ UncompressedSize() int64 }); ok {
			size = u.UncompressedSize()
		} else {
			// One extra decompression pass to learn the size the tar
			// header needs; memory stays bounded.
			rc, err := open()
			if err != nil {
				return dockerLayer{}, err
			}
			size, err = io.Copy(io.Discard, ctxio.Reader(ctx, rc))
			rc.Close()
			if err != nil {
				return dockerLayer{}, err
			}
		}
		return dockerLayer{name: diffID.Hex + ".tar", size: size, digest: diffID, open: open}, nil
	}
}

// decompressed opens a layer's tar, detecting the compression by magic.
func decompressed(l v1.Layer) (io.ReadCloser, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	dec, _, err := compress.NewReader(rc)
	if err != nil {
		rc.Close()
		return nil, err
	}
	return readCloser{dec, func() error { dec.Close(); return rc.Close() }}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }
