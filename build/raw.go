package build

import (
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"

	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/formats/raw"
)

// DefaultSquashfsCompression is the squashfs compressor of raw images.
// sqfstar 4.5.1 (Debian 12) cannot set a level, and at its defaults zstd,
// gzip and xz are 40 to 100 times slower than lz4 on a NixOS closure, for
// images about 40% smaller: lz4 keeps a squashfs build as fast as an ext4
// one. --squashfs-compression chooses another.
const DefaultSquashfsCompression = "lz4"

// RawOptions shape a raw disk image of a system.
type RawOptions struct {
	Plan PlanOptions
	// FS is raw.FSExt4 (default) or raw.FSSquashfs.
	FS string
	// SquashfsCompression is the squashfs compressor ("" is
	// DefaultSquashfsCompression).
	SquashfsCompression string
	// WorkDir holds the ext4 staging tree and the image of a compressed
	// output ("" is os.TempDir()): best on the output's file system.
	WorkDir string
	// Meter, if set, is given the content of every file (progress).
	Meter func(io.Writer) io.Writer
	Log   *slog.Logger
}

func (s *System) rawOptions(o RawOptions) raw.Options {
	fs := o.FS
	if fs == "" {
		fs = raw.FSExt4
	}
	comp := o.SquashfsCompression
	if comp == "" {
		comp = DefaultSquashfsCompression
	}
	ro := raw.Options{
		FS:          fs,
		Arch:        s.Arch,
		WorkDir:     o.WorkDir,
		Compression: comp,
		Meter:       o.Meter,
		Log:         s.logger(o.Log),
	}
	// The toplevel store path names the whole closure (its hash covers
	// every reference), so it identifies the tree as well as a hash of
	// every byte would, for free. Files added from the host are not
	// covered: then raw hashes the entries itself.
	if len(o.Plan.Adds) == 0 {
		h := sha256.New()
		for _, part := range []string{"berth build raw", fs, comp, s.Toplevel} {
			h.Write([]byte(part))
			h.Write([]byte{0})
		}
		ro.Seed = h.Sum(nil)
	}
	return ro
}

// WriteRaw writes the root tree as a GPT disk image to out (a regular file
// opened read-write), sparse, with one root partition typed for the
// system's architecture by the Discoverable Partitions Specification, so
// that systemd-nspawn -i boots it. Every identifier in the image derives
// from the toplevel: the same system gives the same bytes.
func (s *System) WriteRaw(ctx context.Context, out *os.File, opts RawOptions) error {
	tree := s.Source(opts.Plan)
	defer tree.Close()
	return raw.Write(ctx, out, tree, s.rawOptions(opts))
}

// WriteRawCompressed writes the disk image compressed with kind to w (for
// .raw.xz and .raw.zst): the image is made in an unlinked file in
// opts.WorkDir, then streamed through the compressor.
func (s *System) WriteRawCompressed(ctx context.Context, w io.Writer, opts RawOptions, kind compress.Kind, level int) error {
	tree := s.Source(opts.Plan)
	defer tree.Close()
	var wopts []compress.WriterOption
	if level != 0 {
		wopts = append(wopts, compress.WithLevel(level))
	}
	return raw.WriteCompressed(ctx, w, tree, s.rawOptions(opts), kind, wopts...)
}
