package build

import (
	"context"
	"fmt"
	"io"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/ctxio"
)

// TarOptions control WriteTar.
type TarOptions struct {
	// Compression of the tarball (compress.None for a plain tar).
	Compression compress.Kind
	// Level is the codec's level; 0 is its default.
	Level int
	// Concurrency is the number of compressing goroutines; 0 is GOMAXPROCS.
	// Output does not depend on it.
	Concurrency int
	// Meter, if set, wraps the uncompressed tar stream (to count bytes for
	// progress).
	Meter func(io.Writer) io.Writer
}

// WriteTar writes src as an nspawn tarball to w: PAX, numeric owners 0:0,
// mtime 1, compressed as asked. It does not close w.
func WriteTar(ctx context.Context, src formats.Source, w io.Writer, opts TarOptions) error {
	var copts []compress.WriterOption
	if opts.Level != 0 {
		copts = append(copts, compress.WithLevel(opts.Level))
	}
	if opts.Concurrency > 0 {
		copts = append(copts, compress.WithConcurrency(opts.Concurrency))
	}
	// Checked per write, so cancelling stops inside a large file too.
	cw, err := compress.NewWriter(ctxio.Writer(ctx, w), opts.Compression, copts...)
	if err != nil {
		return err
	}
	var tw io.Writer = cw
	if opts.Meter != nil {
		tw = opts.Meter(cw)
	}
	sink := formats.NewTarSink(tw, formats.TarOptions{ModTime: Epoch, RootOwner: true})
	if _, err := formats.Copy(ctx, sink, src); err != nil {
		cw.Close()
		return err
	}
	if err := sink.Close(); err != nil {
		cw.Close()
		return err
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("finishing %s stream: %w", opts.Compression, err)
	}
	return nil
}
