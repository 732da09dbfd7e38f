package pull

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/imageroot"
)

// The download cache (--keep-download) lives in "<root>/.berth-cache/".
// Contents are hash-addressed ("sha256-<hex>": the bytes as downloaded), so
// a server without ETags still gets cache hits once the expected digest is
// known (a literal --verify hash, or the checksum file). Per-URL pointer
// files "<sha256(URL)[:32]>.<sha256(ETag)[:16]>" hold "ETag\ndigest\n" and
// drive If-None-Match. A cached file is never trusted as such: it runs
// through the same hash, decompress, unpack and verify pass as a download
// (systemd skips verification on a cache hit).
const cacheDirName = ".berth-cache"

type cacheEntry struct {
	dir    string
	urlKey string
	log    *slog.Logger
}

func openCache(root *imageroot.Root, rawURL string, log *slog.Logger) *cacheEntry {
	dir := filepath.Join(root.Dir, cacheDirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Warn("download cache unavailable", "err", err)
		return nil
	}
	s := sha256.Sum256([]byte(rawURL))
	return &cacheEntry{dir: dir, urlKey: hex.EncodeToString(s[:16]), log: log}
}

func etagKey(etag string) string {
	s := sha256.Sum256([]byte(etag))
	return hex.EncodeToString(s[:8])
}

// etags lists the ETags of cached copies of this URL.
func (c *cacheEntry) etags() []string {
	if c == nil {
		return nil
	}
	m, _ := filepath.Glob(filepath.Join(c.dir, c.urlKey+".*"))
	var out []string
	for _, p := range m {
		if etag, digest, ok := readPointer(p); ok && c.exists(digest) {
			out = append(out, etag)
		}
	}
	return out
}

func readPointer(p string) (etag, digest string, ok bool) {
	b, err := os.ReadFile(p)
	if err != nil || len(b) > 4096 {
		return "", "", false
	}
	etag, rest, ok := strings.Cut(string(b), "\n")
	digest = strings.TrimSpace(rest)
	return etag, digest, ok && len(digest) == 64
}

func (c *cacheEntry) exists(digest string) bool {
	_, err := os.Stat(filepath.Join(c.dir, "sha256-"+digest))
	return err == nil
}

// byETag opens the cached copy the server confirmed with a 304.
func (c *cacheEntry) byETag(etag string) *os.File {
	if c == nil {
		return nil
	}
	_, digest, ok := readPointer(filepath.Join(c.dir, c.urlKey+"."+etagKey(etag)))
	if !ok {
		// Some servers omit the ETag on a 304: use the only copy if there
		// is exactly one.
		m, _ := filepath.Glob(filepath.Join(c.dir, c.urlKey+".*"))
		if len(m) != 1 {
			return nil
		}
		if _, digest, ok = readPointer(m[0]); !ok {
			return nil
		}
	}
	return c.byDigest(digest)
}

// byDigest opens the cached file with this digest, if any.
func (c *cacheEntry) byDigest(digest string) *os.File {
	if c == nil || len(digest) != 64 || strings.Trim(digest, "0123456789abcdef") != "" {
		return nil
	}
	f, err := os.Open(filepath.Join(c.dir, "sha256-"+digest))
	if err != nil {
		return nil
	}
	return f
}

// writer returns a hidden temporary file receiving a copy of the download,
// and keep, which files it under its digest (or discards it when digest is
// ""). keep must be called exactly once in the end.
func (c *cacheEntry) writer(etag string) (io.Writer, func(digest string) error, error) {
	f, err := os.CreateTemp(c.dir, ".#download")
	if err != nil {
		return nil, nil, err
	}
	done := false
	keep := func(digest string) error {
		if done {
			return nil
		}
		done = true
		tmp := f.Name()
		cerr := f.Close()
		if digest == "" {
			os.Remove(tmp)
			return nil
		}
		if cerr != nil {
			os.Remove(tmp)
			return cerr
		}
		if err := os.Chmod(tmp, 0o444); err != nil {
			os.Remove(tmp)
			return err
		}
		if err := os.Rename(tmp, filepath.Join(c.dir, "sha256-"+digest)); err != nil {
			os.Remove(tmp)
			return err
		}
		if etag != "" {
			ptr := filepath.Join(c.dir, c.urlKey+"."+etagKey(etag))
			if err := os.WriteFile(ptr+".tmp", []byte(etag+"\n"+digest+"\n"), 0o600); err != nil {
				return err
			}
			if err := os.Rename(ptr+".tmp", ptr); err != nil {
				return err
			}
		}
		c.log.Info("kept the download in the cache", "path", filepath.Join(c.dir, "sha256-"+digest))
		return nil
	}
	return f, keep, nil
}

// cacheHit looks for a cached copy by the digest the download must have
// (a literal hash, or the checksum file's entry). The caller still hashes
// and verifies it.
func (p *puller) cacheHit(c *cacheEntry, aux *auxFiles) *os.File {
	if c == nil {
		return nil
	}
	switch p.verify.Mode {
	case VerifyHash:
		return c.byDigest(p.verify.Hash)
	case VerifyChecksum, VerifySignature:
		aux.wait()
		if aux.err != nil || len(aux.sums) == 0 {
			return nil
		}
		digest, ok := lookupSums(aux.sums, p.file)
		if !ok {
			return nil
		}
		if f := c.byDigest(digest); f != nil {
			p.log.Info("using the cached download with the listed digest (it is verified again)", "sha256", digest)
			return f
		}
	}
	return nil
}
