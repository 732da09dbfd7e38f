// Package ctxio makes plain readers and writers stop when a context ends, so
// that Ctrl-C or SIGTERM interrupts a long copy at the next buffer instead of
// after the whole image.
package ctxio

import (
	"context"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

type reader struct {
	ctx context.Context
	r   io.Reader
}

// Reader returns r, failing with ctx.Err() once ctx is done.
func Reader(ctx context.Context, r io.Reader) io.Reader { return reader{ctx, r} }

func (r reader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	if err != nil && r.ctx.Err() != nil {
		// A read cut short because the job was cancelled (a closed or
		// timed-out descriptor) reports the cancellation, not the
		// symptom.
		return n, r.ctx.Err()
	}
	return n, err
}

// Interruptible returns a reader of f that a cancelled ctx interrupts even
// while a read is blocked (a stalled pipe or socket on standard input),
// and a function that undoes what it did; call it when done. Regular files
// and terminals are read as they are: reads from them do not block for
// long, and a terminal must not be left in non-blocking mode.
func Interruptible(ctx context.Context, f *os.File) (io.Reader, func()) {
	st, err := f.Stat()
	if err != nil || st.Mode()&(os.ModeNamedPipe|os.ModeSocket) == 0 {
		return Reader(ctx, f), func() {}
	}
	raw, err := f.SyscallConn()
	if err != nil {
		return Reader(ctx, f), func() {}
	}
	nfd := -1
	_ = raw.Control(func(fd uintptr) { nfd, err = unix.Dup(int(fd)) })
	if err != nil || nfd < 0 {
		return Reader(ctx, f), func() {}
	}
	unix.CloseOnExec(nfd)
	// O_NONBLOCK makes the duplicate pollable: os.NewFile registers it
	// with the runtime's poller, where a deadline ends a blocked read.
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return Reader(ctx, f), func() {}
	}
	nf := os.NewFile(uintptr(nfd), f.Name())
	stop := context.AfterFunc(ctx, func() { _ = nf.SetReadDeadline(time.Now()) })
	return Reader(ctx, nf), func() {
		stop()
		// The flag belongs to the open file description, which the
		// original descriptor shares: give it back as it was.
		_ = unix.SetNonblock(nfd, false)
		_ = nf.Close()
	}
}

type writer struct {
	ctx context.Context
	w   io.Writer
}

// Writer returns w, failing with ctx.Err() once ctx is done.
func Writer(ctx context.Context, w io.Writer) io.Writer { return writer{ctx, w} }

func (w writer) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	return w.w.Write(p)
}
