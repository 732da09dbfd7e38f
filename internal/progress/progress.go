// Package progress shows byte counters for long jobs on a terminal and stays
// silent otherwise. Jobs do not know whether a terminal is attached: they
// wrap their readers and writers through a *Progress, which is a no-op when
// disabled, so the same code path runs in CI logs and interactively.
package progress

import (
	"context"
	"io"
	"os"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// Progress draws bars on one output. The zero value and nil are disabled.
type Progress struct {
	p *mpb.Progress
}

// New returns a Progress drawing to out when enabled and out is a terminal.
func New(ctx context.Context, enabled bool, out *os.File) *Progress {
	if !enabled || out == nil || !term.IsTerminal(int(out.Fd())) {
		return &Progress{}
	}
	return &Progress{p: mpb.NewWithContext(ctx, mpb.WithOutput(out), mpb.WithWidth(40))}
}

// Enabled reports whether bars are drawn.
func (p *Progress) Enabled() bool { return p != nil && p.p != nil }

// Bar is one counter. Its methods are no-ops when progress is disabled.
type Bar struct{ b *mpb.Bar }

// Bar adds a byte counter named label. total <= 0 means unknown.
func (p *Progress) Bar(label string, total int64) *Bar {
	if !p.Enabled() {
		return &Bar{}
	}
	var b *mpb.Bar
	if total > 0 {
		b = p.p.AddBar(total,
			mpb.PrependDecorators(decor.Name(label, decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f")),
			mpb.AppendDecorators(decor.EwmaSpeed(decor.SizeB1024(0), "% .1f", 30), decor.Name(" ETA "), decor.EwmaETA(decor.ET_STYLE_GO, 30)),
		)
	} else {
		b = p.p.New(0, mpb.SpinnerStyle(),
			mpb.PrependDecorators(decor.Name(label, decor.WCSyncSpaceR), decor.CurrentKibiByte("% .1f")),
			mpb.AppendDecorators(decor.EwmaSpeed(decor.SizeB1024(0), "% .1f", 30)),
		)
	}
	return &Bar{b: b}
}

// Reader counts what is read through r.
func (b *Bar) Reader(r io.Reader) io.Reader {
	if b.b == nil {
		return r
	}
	return b.b.ProxyReader(r)
}

// Writer counts what is written through w.
func (b *Bar) Writer(w io.Writer) io.Writer {
	if b.b == nil {
		return w
	}
	return b.b.ProxyWriter(w)
}

// Done marks the bar complete (ok) or aborted.
func (b *Bar) Done(ok bool) {
	if b.b == nil {
		return
	}
	if ok {
		b.b.SetTotal(-1, true)
	} else {
		b.b.Abort(false)
	}
}

// Wait waits for all bars to be drawn for the last time.
func (p *Progress) Wait() {
	if p.Enabled() {
		p.p.Wait()
	}
}
