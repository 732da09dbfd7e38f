// Package raw writes and inspects GPT disk images holding one root file
// system, the kind `systemd-nspawn -i`, `systemd-dissect` and
// `machinectl import-raw` take.
//
// Why this shape:
//
//   - The partition table is written here, in Go (~200 lines), because it is
//     small, fully specified and must be reproducible byte for byte; the
//     file systems are not, so they come from the reference tools: mke2fs
//     (ext4, the default: writable, what systemd-repart makes) and sqfstar
//     (squashfs: compressed, read-only). go-diskfs's ext4 and squashfs
//     writers lack hard links, device nodes and xattrs, which every NixOS
//     root needs.
//   - The one partition is typed by the Discoverable Partitions
//     Specification ("root-x86-64", …), so no fstab or kernel command line
//     is needed: systemd finds the root by type. Squashfs partitions also
//     carry the read-only attribute.
//   - No root privileges, loop devices or mounts are needed to write an
//     image (staging a tree with foreign owners and device nodes for ext4
//     does need root; squashfs needs nothing). Both tools write straight
//     into the output at the 1 MiB partition offset (mke2fs -E offset,
//     sqfstar -offset), so there is no intermediate file-system image and
//     no copy, and the output stays sparse: unwritten blocks are holes.
//   - Reproducible: identifiers (disk and partition GUIDs, ext4 UUID and
//     directory hash seed) derive from Options.Seed or from a hash of the
//     entries; both tools run with a fixed clock; inode change and access
//     times, which mke2fs copies from the staging tree, are reset to the
//     modification time afterwards (with the inode checksums recomputed).
//   - Debian 12's mke2fs (1.47.0) cannot read a tar, and the file-system
//     size must be known before mkfs while a Source can be read only once,
//     so ext4 stages the tree in a temporary directory (formats/dirtree,
//     which refuses anything that would leave it) and sizes the file system
//     from what it staged. Squashfs streams: the entries go as a tar into
//     sqfstar's stdin.
//
// Compressed images (.raw.xz, .raw.zst) are made by WriteCompressed, which
// writes the image to an unnamed temporary file and streams it through
// formats/compress. Inspect parses and checks a GPT, for import-raw to
// sanity-check an image before installing it.
package raw
