package pull

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/ctxio"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/progress"
	"github.com/berth-dev/berth/verify"
)

// ImageType says what a pull produces: a directory tree or a raw disk image.
type ImageType string

// The image types.
const (
	Tar ImageType = "tar"
	Raw ImageType = "raw"
)

// DefaultName derives the local image name from a URL as systemd does: the
// last path component with the tar (or raw) suffixes stripped.
func DefaultName(typ ImageType, rawURL string) (string, error) {
	base, err := URLFileName(rawURL)
	if err != nil {
		return "", err
	}
	if typ == Raw {
		return imageroot.RawName(base), nil
	}
	return imageroot.TarName(base), nil
}

// PullOptions say how an image is fetched, verified and installed.
type PullOptions struct {
	ImportOptions
	Verify Verify
	// Keyrings are OpenPGP keyring files. Nil means the systemd default
	// rings (verify.DefaultKeyrings).
	Keyrings []string
	// CosignKey is a PEM public key; when set, "<checksum file>.sig" must
	// exist and verify.
	CosignKey []byte
	// NoSettings skips the ".nspawn" settings file.
	NoSettings bool
	// KeepDownload keeps the verified download in a cache in the image
	// root; a later pull of the same URL uses it after verifying it again.
	KeepDownload bool
	HTTP         HTTPOptions
	Progress     *progress.Progress
}

// Pull downloads rawURL, unpacks it into a hidden work directory (Tar) or
// hidden sparse file (Raw) in the image root while hashing the compressed
// bytes, verifies the result, and only then installs it as name (Raw:
// name.raw), with its settings file as name.nspawn. On any failure or
// cancellation nothing is left behind.
func Pull(ctx context.Context, root *imageroot.Root, typ ImageType, rawURL, name string, opts PullOptions) (err error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	opts.Log = log
	if opts.HTTP.Log == nil {
		opts.HTTP.Log = log
	}
	fileName, err := URLFileName(rawURL)
	if err != nil {
		return err
	}
	if err := imageroot.ValidName(name); err != nil {
		return err
	}
	if typ != Tar && typ != Raw {
		return fmt.Errorf("unknown image type %q", typ)
	}
	v := opts.Verify
	if v.Mode == "" {
		v.Mode = VerifySignature
	}
	if v.Mode == VerifySignature || v.Mode == VerifyChecksum {
		if strings.HasSuffix(fileName, ".sha256") || fileName == "SHA256SUMS" || strings.HasPrefix(fileName, "SHA256SUMS.") {
			return fmt.Errorf("%s is a checksum or signature file, not an image", rawURL)
		}
	}
	var trust *verify.Trust
	if v.Mode == VerifySignature {
		if trust, err = loadTrust(opts.Keyrings, opts.CosignKey); err != nil {
			return err
		}
	}
	unlock, err := lockImport(ctx, root, name, opts.Force)
	if err != nil {
		return err
	}
	defer unlock()
	target := name
	if typ == Raw {
		target = name + ".raw"
	}

	fetch := NewFetcher(opts.HTTP)
	auxCtx, cancelAux := context.WithCancel(ctx)
	p := &puller{
		ctx: ctx, auxCtx: auxCtx, root: root, typ: typ, url: rawURL, file: fileName, name: name,
		opts: opts, verify: v, trust: trust, fetch: fetch, log: log,
	}
	// Auxiliary files come in parallel, as in systemd, but everything that
	// can be checked without the image is checked before it is downloaded:
	// a missing checksum or signature file, a signature that does not
	// verify, an image the checksum file does not list.
	aux := p.startAux()
	defer aux.wait()
	defer cancelAux() // on an early return, stop the auxiliary fetches first
	if v.Mode == VerifyChecksum || v.Mode == VerifySignature {
		aux.wait()
		if err := p.precheck(aux); err != nil {
			return err
		}
	}

	stage(log, "download", "url", rawURL, "image", name)
	res, err := p.receive(aux)
	if err != nil {
		return err
	}
	defer res.cleanup()

	aux.wait()
	if v.Mode == VerifyNo || v.Mode == VerifyHash {
		if err := p.precheck(aux); err != nil { // only the settings file's fetch can fail here
			return err
		}
	}
	stage(log, "verify", "image", name, "mode", string(v.Mode), "sha256", res.digest)
	if err := p.checkDigest(res.digest, aux); err != nil {
		res.evict()
		return err
	}
	if err := res.keep(); err != nil {
		log.Warn("could not keep the download in the cache", "err", err)
	}

	stage(log, "install", "image", name, "path", root.Path(target))
	path := res.path
	if typ == Tar {
		if path, err = imageroot.MangleOSTree(path); err != nil {
			return fmt.Errorf("unpacking %s: %w", name, err)
		}
	}
	inst := opts.InstallOptions
	inst.Settings = aux.settings
	if err := root.Install(path, target, inst); err != nil {
		return err
	}
	res.path = "" // installed: nothing to clean up
	log.Info("pulled", "image", name, "path", root.Path(target), "sha256", res.digest, "bytes", res.size)
	return nil
}

// stage logs the start of one step of a job (download, verify, install),
// one event each, for CI logs and --log-format=json.
func stage(log *slog.Logger, name string, args ...any) {
	log.Info("stage "+name, append([]any{"stage", name}, args...)...)
}

type puller struct {
	ctx    context.Context
	auxCtx context.Context
	root   *imageroot.Root
	typ    ImageType
	url    string
	file   string
	name   string
	opts   PullOptions
	verify Verify
	trust  *verify.Trust
	fetch  *Fetcher
	log    *slog.Logger
}

// auxFiles are the small files fetched next to the image.
type auxFiles struct {
	once     sync.Once
	done     chan struct{}
	settings []byte // nil: none
	sums     []byte // checksum file content
	sumsName string // "FILE.sha256" or "SHA256SUMS"
	sumsURL  string
	pgpSig   []byte
	pgpName  string
	cosign   []byte
	listed   string // the image's digest in the checksum file, once checked
	err      error
}

func (a *auxFiles) wait() { <-a.done }

func (p *puller) sibling(name string) string {
	u, _ := SiblingURL(p.url, name) // p.url was validated by URLFileName
	return u
}

func (p *puller) startAux() *auxFiles {
	a := &auxFiles{done: make(chan struct{})}
	ctx := p.auxCtx
	var wg sync.WaitGroup
	var mu sync.Mutex
	setErr := func(err error) {
		mu.Lock()
		if a.err == nil {
			a.err = err
		}
		mu.Unlock()
	}
	if !p.opts.NoSettings && p.verify.Mode != VerifyHash {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stripped := imageroot.TarName(p.file)
			if p.typ == Raw {
				stripped = imageroot.RawName(p.file)
			}
			b, err := p.fetch.FetchSmall(ctx, p.sibling(stripped+".nspawn"), auxLimit)
			switch {
			case errors.Is(err, ErrNotFound):
				p.log.Info("no settings file next to the image", "url", p.sibling(stripped+".nspawn"))
			case err != nil:
				setErr(fmt.Errorf("settings file: %w", err))
			default:
				a.settings = b
			}
		}()
	}
	if p.verify.Mode == VerifyChecksum || p.verify.Mode == VerifySignature {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.sumsName = p.file + ".sha256"
			a.sumsURL = p.sibling(a.sumsName)
			b, err := p.fetch.FetchSmall(ctx, a.sumsURL, auxLimit)
			if errors.Is(err, ErrNotFound) {
				a.sumsName = "SHA256SUMS"
				a.sumsURL = p.sibling(a.sumsName)
				b, err = p.fetch.FetchSmall(ctx, a.sumsURL, auxLimit)
			}
			if err != nil {
				if errors.Is(err, ErrNotFound) {
					err = fmt.Errorf("neither %s.sha256 nor SHA256SUMS exists next to the image: cannot verify (use --verify=no to skip)", p.file)
				}
				setErr(fmt.Errorf("checksum file: %w", err))
				return
			}
			a.sums = b
			if p.verify.Mode != VerifySignature {
				return
			}
			if p.trust.Keyring != nil {
				names := []string{a.sumsName + ".gpg", a.sumsName + ".asc"}
				if a.sumsName != "SHA256SUMS" {
					names = []string{a.sumsName + ".asc", a.sumsName + ".gpg"}
				}
				for _, n := range names {
					b, err := p.fetch.FetchSmall(ctx, p.sibling(n), auxLimit)
					if errors.Is(err, ErrNotFound) {
						continue
					}
					if err != nil {
						setErr(fmt.Errorf("signature file: %w", err))
						return
					}
					a.pgpSig, a.pgpName = b, n
					break
				}
			}
			if p.trust.Cosign != nil {
				b, err := p.fetch.FetchSmall(ctx, p.sibling(a.sumsName+".sig"), auxLimit)
				if err != nil && !errors.Is(err, ErrNotFound) {
					setErr(fmt.Errorf("signature file: %w", err))
					return
				}
				a.cosign = b
			}
		}()
	}
	go func() {
		wg.Wait()
		close(a.done)
	}()
	return a
}

// received is an unpacked but unverified download.
type received struct {
	root   *imageroot.Root
	path   string // work directory or hidden raw file; "" once installed
	digest string // sha256 of the bytes as downloaded
	size   int64
	keep   func() error // files the download in the cache
	drop   func()       // discards the cache copy unless kept
	evict  func()       // removes a cached source that failed verification
	cache  *cacheEntry
	log    *slog.Logger
}

func (r *received) cleanup() {
	r.drop()
	r.cache.close()
	if r.path == "" {
		return
	}
	if err := r.root.Discard(r.path); err != nil {
		r.log.Warn("could not remove work files", "path", r.path, "err", err)
	}
	r.path = ""
}

// receive runs the one streaming pass: download (or cached copy) → sha256
// (and the cache file) → decompress → unpack into a hidden work path.
func (p *puller) receive(aux *auxFiles) (_ *received, err error) {
	res := &received{root: p.root, log: p.log, keep: func() error { return nil }, drop: func() {}, evict: func() {}}
	defer func() {
		if err != nil {
			res.cleanup()
		}
	}()
	var cache *cacheEntry
	if p.opts.KeepDownload {
		cache = openCache(p.root, p.url, p.log)
		res.cache = cache // closed by cleanup, after keep or evict
	}
	var src io.Reader
	var size int64 = -1
	label := p.file
	if cached, digest := p.cacheHit(cache, aux); cached != nil {
		defer cached.Close()
		src = cached
		if st, err := cached.Stat(); err == nil {
			size = st.Size()
		}
		label += " (cached)"
		res.evict = func() { cache.evict(digest) }
	} else {
		var etags []string
		if cache != nil {
			etags = cache.etags()
		}
		d, err := p.openImage(etags)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		if d.NotModified {
			f, digest := cache.byETag(d.ETag)
			if f == nil {
				return nil, fmt.Errorf("%s: server answered 304 Not Modified for an ETag berth has no copy of", p.url)
			}
			defer f.Close()
			p.log.Info("image not modified on the server: using the cached download (it is verified again)", "url", p.url)
			src = f
			if st, err := f.Stat(); err == nil {
				size = st.Size()
			}
			label += " (cached)"
			res.evict = func() { cache.evict(digest) }
		} else {
			if d.FinalURL != p.url {
				p.log.Info("redirected", "url", p.url, "to", d.FinalURL)
			}
			src, size = d, d.Size
			if cache != nil {
				w, keep, err := cache.writer(d.ETag)
				if err != nil {
					p.log.Warn("download cache unavailable", "err", err)
				} else {
					src = io.TeeReader(src, w)
					res.keep = func() error { return keep(res.digest) }
					res.drop = func() { _ = keep("") }
				}
			}
		}
	}

	bar := p.opts.Progress.Bar(label, size)
	defer func() { bar.Done(err == nil) }()
	h := sha256.New()
	var n int64
	counted := &countingReader{r: io.TeeReader(ctxio.Reader(p.ctx, bar.Reader(src)), h), n: &n}

	// Two goroutines feed the one that unpacks: this one downloads and
	// hashes, the readahead below decompresses.
	fetched := newNetReadahead(io.NopCloser(counted), 4, 128<<10)
	defer fetched.Close()

	dr, kind, err := compress.NewReader(fetched, compress.WithSpillDir(p.root.Dir))
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: the download is empty", p.url)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p.url, err)
	}
	// From here the readahead goroutine owns dr (and closes it).
	ra := newReadahead(dr, 4, 256<<10)
	defer ra.Close()
	p.log.Debug("receiving", "url", p.url, "compression", kind)

	switch p.typ {
	case Tar:
		work, err := p.root.WorkDir(p.name)
		if err != nil {
			return nil, err
		}
		res.path = work
		if err := Unpack(p.ctx, work, formats.NewTarSource(ra), p.log); err != nil {
			return nil, fmt.Errorf("%s: %w", p.url, err)
		}
	case Raw:
		f, err := p.root.WorkFile(p.name)
		if err != nil {
			return nil, err
		}
		res.path = f.Name()
		if _, err := WriteSparse(f, ctxio.Reader(p.ctx, ra)); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", p.url, err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("writing %s: %w", res.path, err)
		}
	}
	// The decoders are strict about what follows the data; drain anything
	// left so the digest covers every byte that was downloaded. Draining
	// the readahead first means its goroutine is done with the download.
	if _, err := io.Copy(io.Discard, ra); err != nil {
		return nil, fmt.Errorf("reading %s: %w", p.url, err)
	}
	if _, err := io.Copy(io.Discard, fetched); err != nil {
		return nil, fmt.Errorf("reading %s: %w", p.url, err)
	}
	res.digest = hex.EncodeToString(h.Sum(nil))
	res.size = n
	return res, nil
}

// openImage opens the image download, retrying failures to connect.
func (p *puller) openImage(etags []string) (*Download, error) {
	var last error
	for attempt := 0; attempt <= p.fetch.opts.Retries; attempt++ {
		if attempt > 0 {
			if err := sleepCtx(p.ctx, backoff(attempt)); err != nil {
				return nil, err
			}
			p.log.Warn("retrying", "url", p.url, "err", last, "attempt", attempt)
		}
		d, err := p.fetch.Open(p.ctx, p.url, etags)
		if err == nil {
			return d, nil
		}
		if !retryable(p.ctx, err) {
			if errors.Is(err, ErrNotFound) {
				return nil, fmt.Errorf("retrieving image: %w", err)
			}
			return nil, err
		}
		last = err
	}
	return nil, fmt.Errorf("retrieving image: %w", last)
}

type countingReader struct {
	r io.Reader
	n *int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}
