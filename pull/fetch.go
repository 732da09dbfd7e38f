package pull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// HTTPOptions tune downloads. The zero value gives systemd-pull's stall rule
// (abort below 30 B/s for 60 s) plus what systemd lacks: a connect timeout
// and bounded retries that resume the image download.
type HTTPOptions struct {
	UserAgent      string        // default "berth/dev"
	ConnectTimeout time.Duration // TCP connect and TLS handshake; default 30 s
	StallTimeout   time.Duration // abort when fewer than MinRate*StallTimeout bytes arrive in this window; default 60 s
	MinRate        int64         // bytes per second; default 30
	Retries        int           // further attempts after a failure; default 3, negative means none
	Log            *slog.Logger
}

func (o HTTPOptions) withDefaults() HTTPOptions {
	if o.UserAgent == "" {
		o.UserAgent = "berth/dev"
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 60 * time.Second
	}
	if o.MinRate <= 0 {
		o.MinRate = 30
	}
	if o.Retries == 0 {
		o.Retries = 3
	} else if o.Retries < 0 {
		o.Retries = 0
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// ErrNotFound is returned (wrapped) when a URL answers 404 or a file:// path
// does not exist. Optional files (.nspawn, signatures) treat it as absent.
var ErrNotFound = errors.New("not found")

// auxLimit bounds checksum, signature and settings files, as systemd does.
const auxLimit = 1 << 20

// Fetcher downloads over http(s) and file://. It holds no state between
// downloads other than the HTTP connection pool.
type Fetcher struct {
	opts   HTTPOptions
	client *http.Client
}

// NewFetcher returns a Fetcher. Proxies come from the environment
// (http_proxy, HTTP_PROXY, https_proxy, HTTPS_PROXY, no_proxy), as Go's
// http.ProxyFromEnvironment reads them; unlike systemd/libcurl, HTTP_PROXY is
// honoured too.
func NewFetcher(opts HTTPOptions) *Fetcher {
	opts = opts.withDefaults()
	dialer := &net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   opts.ConnectTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Bytes are hashed as sent; never let the transport gunzip them.
		DisableCompression: true,
	}
	return &Fetcher{opts: opts, client: &http.Client{Transport: tr}}
}

// Options returns the effective options.
func (f *Fetcher) Options() HTTPOptions { return f.opts }

// SiblingURL replaces the last path component of raw with name and drops
// query and fragment, as systemd's import_url_change_suffix: checksum,
// signature and settings files are looked up next to the ORIGINAL URL, even
// when the image itself is redirected elsewhere.
func SiblingURL(raw, name string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("URL %q: %w", raw, err)
	}
	if _, err := URLFileName(raw); err != nil {
		return "", err
	}
	if name == "" || strings.ContainsRune(name, '/') {
		return "", fmt.Errorf("sibling name %q is not a file name", name)
	}
	u.RawQuery, u.Fragment, u.RawFragment, u.ForceQuery = "", "", "", false
	u.Path = path.Dir(u.Path) + "/" + name
	if strings.HasPrefix(u.Path, "//") {
		u.Path = "/" + strings.TrimLeft(u.Path, "/")
	}
	u.RawPath = ""
	return u.String(), nil
}

// URLFileName is the last path component of a URL (query and fragment
// ignored): the name looked up in SHA256SUMS and the default image name.
func URLFileName(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "http", "https", "file":
	default:
		return "", fmt.Errorf("URL %q: only http://, https:// and file:// are supported", raw)
	}
	if u.Scheme != "file" && u.Host == "" {
		return "", fmt.Errorf("URL %q has no host", raw)
	}
	if strings.HasSuffix(u.Path, "/") || u.Path == "" {
		return "", fmt.Errorf("URL %q does not name a file", raw)
	}
	base := path.Base(u.Path)
	if base == "." || base == ".." || base == "/" {
		return "", fmt.Errorf("URL %q does not name a file", raw)
	}
	return base, nil
}

// FetchSmall downloads a small auxiliary file (checksums, signature,
// settings), refusing anything above limit bytes. A 404 or a missing file://
// path returns an error wrapping ErrNotFound. Transient failures are retried.
func (f *Fetcher) FetchSmall(ctx context.Context, raw string, limit int64) ([]byte, error) {
	var last error
	for attempt := 0; attempt <= f.opts.Retries; attempt++ {
		if attempt > 0 {
			if err := sleepCtx(ctx, backoff(attempt)); err != nil {
				return nil, err
			}
		}
		d, err := f.Open(ctx, raw, nil)
		if err != nil {
			if errors.Is(err, ErrNotFound) || !retryable(ctx, err) {
				return nil, err
			}
			last = err
			continue
		}
		if d.Size > limit {
			d.Close()
			return nil, fmt.Errorf("%s is %d bytes, more than the limit of %d", raw, d.Size, limit)
		}
		b, err := io.ReadAll(io.LimitReader(d, limit+1))
		d.Close()
		if err != nil {
			if !retryable(ctx, err) {
				return nil, err
			}
			last = err
			continue
		}
		if int64(len(b)) > limit {
			return nil, fmt.Errorf("%s is larger than the limit of %d bytes", raw, limit)
		}
		return b, nil
	}
	return nil, last
}

// Download is an image being downloaded. Read delivers the body exactly once
// and in order; when the connection breaks it re-requests the rest with
// Range and If-Range (the ETag, else Last-Modified) and carries on, so a
// streaming pipeline (hash, decompress, unpack) never notices. It fails if
// the server cannot resume the same version, if the body is shorter than
// Content-Length ("download truncated"), or if it stalls.
type Download struct {
	URL          string // as asked for
	FinalURL     string // after redirects
	Size         int64  // Content-Length, -1 if unknown
	ETag         string
	LastModified string
	NotModified  bool // the server answered 304 to If-None-Match
	Resumes      int  // how many times the download was resumed

	f       *Fetcher
	ctx     context.Context
	body    io.ReadCloser
	cancel  context.CancelCauseFunc
	off     int64
	ranges  bool
	counter atomic.Int64 // bytes received, for the stall watchdog
	reading atomic.Bool
	stopW   func()
	stalled atomic.Bool
	file    bool
}

// statusError is an HTTP answer other than 2xx/304/404.
type statusError struct {
	url    string
	code   int
	status string
}

func (e *statusError) Error() string { return fmt.Sprintf("%s: HTTP %s", e.url, e.status) }

var errStalled = errors.New("stalled")

// Open starts downloading raw. ifNoneMatch lists ETags of cached copies;
// a 304 answer gives a Download with NotModified set and no body.
func (f *Fetcher) Open(ctx context.Context, raw string, ifNoneMatch []string) (*Download, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("URL %q: %w", raw, err)
	}
	d := &Download{URL: raw, FinalURL: raw, Size: -1, f: f, ctx: ctx}
	if u.Scheme == "file" {
		fh, err := os.Open(u.Path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", raw, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		if st, err := fh.Stat(); err == nil && st.Mode().IsRegular() {
			d.Size = st.Size()
		} else if err == nil && st.IsDir() {
			fh.Close()
			return nil, fmt.Errorf("%s is a directory", raw)
		}
		d.body, d.file = fh, true
		return d, nil
	}
	if err := d.request(0, ifNoneMatch); err != nil {
		return nil, err
	}
	return d, nil
}

// request issues the GET for the body from offset off.
func (d *Download) request(off int64, ifNoneMatch []string) error {
	rctx, cancel := context.WithCancelCause(d.ctx)
	target := d.URL
	if off > 0 {
		target = d.FinalURL
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, target, nil)
	if err != nil {
		cancel(nil)
		return fmt.Errorf("URL %q: %w", target, err)
	}
	req.Header.Set("User-Agent", d.f.opts.UserAgent)
	req.Header.Set("Accept", "*/*")
	if len(ifNoneMatch) > 0 {
		req.Header.Set("If-None-Match", strings.Join(ifNoneMatch, ", "))
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		if d.ETag != "" && !strings.HasPrefix(d.ETag, "W/") {
			req.Header.Set("If-Range", d.ETag)
		} else {
			req.Header.Set("If-Range", d.LastModified)
		}
	}
	d.cancel = cancel
	d.startWatchdog(rctx)
	resp, err := d.f.client.Do(req)
	d.reading.Store(false)
	if err != nil {
		d.stop()
		return d.explain(fmt.Errorf("requesting %s: %w", target, err))
	}
	fail := func(err error) error {
		resp.Body.Close()
		d.stop()
		return err
	}
	switch {
	case off == 0 && resp.StatusCode == http.StatusNotModified:
		d.NotModified = true
		d.ETag = resp.Header.Get("ETag")
		resp.Body.Close()
		d.stop()
		d.body = io.NopCloser(strings.NewReader(""))
		return nil
	case resp.StatusCode == http.StatusNotFound:
		return fail(fmt.Errorf("%s: HTTP 404: %w (wrong URL?)", target, ErrNotFound))
	case off == 0 && resp.StatusCode == http.StatusOK:
		d.FinalURL = resp.Request.URL.String()
		d.Size = resp.ContentLength
		d.ETag = resp.Header.Get("ETag")
		d.LastModified = resp.Header.Get("Last-Modified")
		d.ranges = strings.EqualFold(strings.TrimSpace(resp.Header.Get("Accept-Ranges")), "bytes")
	case off > 0 && resp.StatusCode == http.StatusPartialContent:
		start, _, total, err := ParseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return fail(fmt.Errorf("resuming %s: %w", target, err))
		}
		if start != off || (d.Size >= 0 && total >= 0 && total != d.Size) {
			return fail(fmt.Errorf("resuming %s: server sent bytes from %d of %d, wanted from %d of %d", target, start, total, off, d.Size))
		}
	case off > 0 && resp.StatusCode == http.StatusOK:
		return fail(fmt.Errorf("resuming %s: the file changed on the server during the download (If-Range did not match); pull again", target))
	default:
		return fail(&statusError{target, resp.StatusCode, resp.Status})
	}
	d.body = resp.Body
	return nil
}

// canResume reports whether a broken download can be continued safely: the
// server announced byte ranges and a validator pins the version.
func (d *Download) canResume() bool {
	return !d.file && d.ranges && (d.ETag != "" && !strings.HasPrefix(d.ETag, "W/") || d.LastModified != "")
}

// Read implements io.Reader.
func (d *Download) Read(p []byte) (int, error) {
	for {
		if d.body == nil {
			return 0, errors.New("download is closed")
		}
		d.reading.Store(true)
		n, err := d.body.Read(p)
		d.reading.Store(false)
		d.off += int64(n)
		d.counter.Add(int64(n))
		if err == io.EOF && !d.file && d.Size >= 0 && d.off < d.Size {
			err = io.ErrUnexpectedEOF
		}
		if err == nil || err == io.EOF {
			if err == io.EOF {
				d.stop()
			}
			return n, err
		}
		if d.file {
			return n, err
		}
		err = d.explain(err)
		if d.ctx.Err() != nil {
			return n, d.ctx.Err()
		}
		if d.Resumes >= d.f.opts.Retries || !d.canResume() {
			d.stop()
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return n, fmt.Errorf("download of %s truncated at %d of %d bytes: %w", d.URL, d.off, d.Size, err)
			}
			return n, fmt.Errorf("downloading %s: %w", d.URL, err)
		}
		d.Resumes++
		d.f.opts.Log.Warn("download interrupted, resuming", "url", d.URL, "offset", d.off, "err", err, "attempt", d.Resumes)
		d.body.Close()
		d.stop()
		if err := sleepCtx(d.ctx, backoff(d.Resumes)); err != nil {
			return n, err
		}
		if rerr := d.request(d.off, nil); rerr != nil {
			return n, fmt.Errorf("downloading %s: %w (after: %v)", d.URL, rerr, err)
		}
		if n > 0 {
			return n, nil
		}
	}
}

// Offset is the number of body bytes delivered so far.
func (d *Download) Offset() int64 { return d.off }

// Close releases the connection.
func (d *Download) Close() error {
	d.stop()
	if d.body != nil {
		err := d.body.Close()
		d.body = nil
		return err
	}
	return nil
}

// explain turns a cancelled request into a stall error when the watchdog
// cancelled it.
func (d *Download) explain(err error) error {
	if d.stalled.Load() {
		return fmt.Errorf("%w: less than %d bytes/s for %s (check the network or raise --timeout)", errStalled, d.f.opts.MinRate, d.f.opts.StallTimeout)
	}
	return err
}

func (d *Download) stop() {
	if d.stopW != nil {
		d.stopW()
		d.stopW = nil
	}
}

// startWatchdog cancels the request when, while the reader is waiting for
// data, fewer than MinRate*StallTimeout bytes arrive within StallTimeout.
// Time the consumer spends elsewhere (decompressing, writing) does not count.
func (d *Download) startWatchdog(rctx context.Context) {
	d.stalled.Store(false)
	stall := d.f.opts.StallTimeout
	need := int64(float64(d.f.opts.MinRate) * stall.Seconds())
	if need < 1 {
		need = 1
	}
	tick := stall / 8
	if tick > time.Second {
		tick = time.Second
	}
	if tick < 10*time.Millisecond {
		tick = 10 * time.Millisecond
	}
	done := make(chan struct{})
	var once sync.Once
	cancel := d.cancel
	d.reading.Store(true) // waiting for the response counts as reading
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		start, base := time.Now(), d.counter.Load()
		for {
			select {
			case <-done:
				return
			case <-rctx.Done():
				return
			case now := <-t.C:
				cur := d.counter.Load()
				if !d.reading.Load() {
					start, base = now, cur
					continue
				}
				if now.Sub(start) < stall {
					continue
				}
				if cur-base < need {
					d.stalled.Store(true)
					cancel(errStalled)
					return
				}
				start, base = now, cur
			}
		}
	}()
	d.stopW = func() {
		once.Do(func() { close(done) })
	}
}

// ParseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*", then
// -1). It rejects anything else, including END < START.
func ParseContentRange(s string) (start, end, total int64, err error) {
	bad := func() (int64, int64, int64, error) {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !ok {
		return bad()
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return bad()
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	num := func(x string) (int64, bool) {
		if x == "" || len(x) > 18 || strings.TrimLeft(x, "0123456789") != "" {
			return 0, false
		}
		v, err := strconv.ParseInt(x, 10, 64)
		return v, err == nil
	}
	if start, ok = num(a); !ok {
		return bad()
	}
	if end, ok = num(b); !ok || end < start {
		return bad()
	}
	if tot == "*" {
		return start, end, -1, nil
	}
	if total, ok = num(tot); !ok || total <= end {
		return bad()
	}
	return start, end, total, nil
}

func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, ErrNotFound) {
		return false
	}
	var se *statusError
	if errors.As(err, &se) {
		return se.code >= 500 || se.code == http.StatusTooManyRequests || se.code == http.StatusRequestTimeout
	}
	var ue *url.Error
	if errors.As(err, &ue) && strings.Contains(ue.Err.Error(), "unsupported protocol") {
		return false
	}
	return true
}

func backoff(attempt int) time.Duration {
	d := time.Duration(attempt) * 500 * time.Millisecond
	if d > 5*time.Second {
		d = 5 * time.Second
	}
	return d
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
