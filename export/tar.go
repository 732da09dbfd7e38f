// Package export turns machines back into images: tarballs, raw disk images
// and OCI images.
//
// A machine directory is read as a stream of entries (formats/dirtree)
// through filters and written to a sink (tar, OCI layer) and a compressor, in
// one pass with bounded memory. Two things distinguish it from copying a
// directory, and are why it is a package of its own rather than a line in
// the CLI:
//
//   - A tree that systemd-nspawn -U shifted into a private UID range is
//     exported with its ids shifted back (owners, ACLs, file capabilities),
//     so the image works anywhere, not only under the same nspawn base.
//   - A running machine is read consistently: from a btrfs read-only
//     snapshot, or with its cgroup frozen for the duration of the read and
//     always thawed afterwards. systemd-export reads the live tree.
package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/ctxio"
)

// TarOptions control a tar export.
type TarOptions struct {
	Compression compress.Kind // "" means none
	Level       int           // 0 means the codec's default
	Log         *slog.Logger
	// KeepUIDShift and Live: see Options.
	KeepUIDShift bool
	Live         bool
	// Meter, if set, wraps the uncompressed tar stream (progress counting).
	Meter func(io.Writer) io.Writer
}

// Tar writes the machine tree at dir to w as a (compressed) tar stream:
// consistent if it runs, with any nspawn UID shift undone.
func Tar(ctx context.Context, dir string, w io.Writer, opts TarOptions) (err error) {
	t, err := OpenTree(ctx, dir, Options{KeepUIDShift: opts.KeepUIDShift, Live: opts.Live, Log: opts.Log})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := t.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	return promptly(ctx, func() error { return WriteTar(ctx, t, w, opts) })
}

// promptly runs job and returns its error, or ctx's as soon as ctx ends:
// a compressor busy with its blocks does not look at ctx, and a frozen
// machine must be thawed at Ctrl-C, not when the compressor is done. The
// abandoned job fails by itself at its next write (its writers check ctx).
func promptly(ctx context.Context, job func() error) error {
	done := make(chan error, 1)
	go func() { done <- job() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		select {
		case err := <-done:
			return err
		default:
		}
		return ctx.Err()
	}
}

// WriteTar writes an open Tree to w as a (compressed) tar stream.
func WriteTar(ctx context.Context, t *Tree, w io.Writer, opts TarOptions) error {
	src, filters, err := t.Source()
	if err != nil {
		return err
	}
	defer src.Close()
	var copts []compress.WriterOption
	if opts.Level != 0 {
		copts = append(copts, compress.WithLevel(opts.Level))
	}
	kind := opts.Compression
	if kind == "" {
		kind = compress.None
	}
	g := &gate{w: ctxio.Writer(ctx, w)}
	cw, err := compress.NewWriter(g, kind, copts...)
	if err != nil {
		return err
	}
	var tw io.Writer = cw
	if opts.Meter != nil {
		tw = opts.Meter(cw)
	}
	sink := formats.NewTarSink(tw, formats.TarOptions{})
	if _, err := formats.Copy(ctx, sink, src, filters...); err != nil {
		g.abandon(cw)
		return fmt.Errorf("exporting %s: %w", t.Dir, err)
	}
	if err := sink.Close(); err != nil {
		g.abandon(cw)
		return fmt.Errorf("exporting %s: %w", t.Dir, err)
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("exporting %s: %w", t.Dir, err)
	}
	return nil
}

// gate passes writes through until closed; then every write fails at once.
// A compressor abandoned after an error is closed in the background behind
// a closed gate, so that the caller returns (and thaws a frozen machine) at
// once instead of waiting for the compressor to finish its blocks.
type gate struct {
	w      io.Writer
	closed atomic.Bool
}

var errAbandoned = errors.New("output abandoned")

func (g *gate) Write(p []byte) (int, error) {
	if g.closed.Load() {
		return 0, errAbandoned
	}
	return g.w.Write(p)
}

// abandon closes the gate and lets the compressor wind down on its own.
func (g *gate) abandon(cw io.Closer) {
	g.closed.Store(true)
	go func() { _ = cw.Close() }()
}
