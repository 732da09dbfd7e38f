// Package build turns a NixOS configuration into the root tree of a
// systemd-nspawn machine, as one sorted stream of file-system entries that
// any formats.Sink (tar, raw disk image, OCI layers) can consume.
//
// The work is split where the inputs change:
//
//   - Realise asks Nix for the system's toplevel store path (nix build of a
//     flake's nixosConfigurations, nix-build of <nixpkgs/nixos>, or a path
//     built before). Only the stable command-line interfaces are used, those
//     that Debian's Nix 2.8 and current Nix share: "nix build --json"
//     (there is no --print-out-paths in 2.8), "nix-store -qR" and
//     "nix-store --dump-db". "nix path-info --json" is avoided because its
//     shape changed from an array to an object keyed by path.
//   - Load reads what the tree needs to know about the system: its closure,
//     the registration records for the first boot's "nix-store --load-db",
//     the architecture and os-release, and refuses store paths that are not
//     NixOS systems (no init) before anything is written.
//   - System.Source streams the root tree straight from /nix/store. Nothing
//     is staged: each store path is walked with formats/dirtree and its
//     entries renamed under nix/store/<base>, merged in tree order with the
//     few generated entries (sbin/init, etc/os-release, the system profile,
//     nix-path-registration, empty proc, sys and dev) and files added with
//     --add.
//
// The stream is reproducible by construction, so that one system gives the
// same bytes run after run and on any machine whose store holds it:
// entries come depth first with the children of each directory sorted by
// name (what GNU tar --sort=name does); every entry has mtime 1
// (1970-01-01T00:00:01Z, the store's), uid and gid 0, no extended attributes
// (a NAR has none, so the store's content is defined without them), and
// store modes are the NAR's: directories 0555, files 0444 or 0555, symlinks
// 0777. Hard links are dereferenced: "nix-store --optimise" links identical
// files within and across store paths, so links in the store say how the
// store was stored, not what the system is; each name is written as a
// regular file with its content, as nixpkgs' streamLayeredImage and GNU tar
// --hard-dereference do. This costs size in an uncompressed tar only; the
// compressors find the duplicates.
package build
