// Package oci turns entry streams into OCI images and OCI images back into
// directory trees.
//
// Why not just go-containerregistry's helpers:
//
//   - Writing: tarball.LayerFromOpener reads its input twice (digest, then
//     diffID) and stream.NewLayer is single-core stdlib gzip. NewLayer writes
//     each layer in one pass (entries -> tar -> compressor -> temporary file)
//     hashing the tar (diffID) and the compressed bytes (digest) on the way,
//     so nothing is compressed or hashed twice, and zstd layers are possible.
//     Images use OCI media types throughout (ggcr's empty.Image is Docker
//     schema2, and mixing the two is refused by skopeo and CRI-O). Every
//     output is reproducible: a fixed creation time, fixed tar metadata and
//     deterministic compressors give identical digests run after run.
//
//   - Reading: mutate.Extract walks layers top-down and gets hard links
//     wrong when a later layer replaces or removes their target (ggcr #2002,
//     #977), and keeps every path of the image in memory. Apply instead
//     extracts layers bottom-up into a real directory through the confined
//     dirtree.Sink, so whiteouts are deletions, opaque directories are
//     emptied, and a hard link links to what exists on disk at that moment,
//     exactly as the layer was meant. Every layer's digest and diffID are
//     checked while it is read; unknown layer media types are an error rather
//     than silently skipped (as systemd-importd does).
//
// formats/oci knows nothing of Nix, pulling policy or signatures: callers
// (build, pull-oci, export-oci) decide the layers and where images go.
package oci
