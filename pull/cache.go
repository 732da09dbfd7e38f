package pull

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/scratch"
)

// The download cache (--keep-download) lives in "<root>/.#berth.cache/"
// (imageroot.CacheDirName), a name no image can take. Contents are
// hash-addressed ("sha256-<hex>": the bytes as downloaded), so a server
// without ETags still gets cache hits once the expected digest is known (a
// literal --verify hash, or the checksum file). Per-URL pointer files
// "<sha256(URL)[:32]>.<sha256(ETag)[:16]>" hold "ETag\ndigest\n" and drive
// If-None-Match. A cached file is never trusted as such: it runs through the
// same hash, decompress, unpack and verify pass as a download (systemd
// skips verification on a cache hit), and a copy that fails is evicted.
//
// berth runs as root in a directory that images are unpacked into, so the
// cache is handled as hostile ground: the directory is used only if it is a
// real directory (not a symlink) owned by this user and private to it;
// every file in it is opened relative to the directory's descriptor without
// following symlinks and used only if it is a regular file of this user;
// new files are created exclusively under scratch names and renamed into
// place; pointer files are read with a size limit.

// pointerLimit bounds a pointer file (an ETag and a digest).
const pointerLimit = 4096

type cacheEntry struct {
	dir    string // path, for messages and scratch files
	fd     int    // the directory, opened without following symlinks
	urlKey string
	log    *slog.Logger
}

// openCache opens (creating it if need be) the cache of root for rawURL, or
// returns nil, with a warning, if it cannot be used safely.
func openCache(root *imageroot.Root, rawURL string, log *slog.Logger) *cacheEntry {
	dir := filepath.Join(root.Dir, imageroot.CacheDirName)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		log.Warn("download cache unavailable", "err", err)
		return nil
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		log.Warn("download cache unavailable", "path", dir, "err", err)
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
		unix.Close(fd)
		log.Warn("download cache is not a private directory of this user: not using it (berth clean removes it)", "path", dir)
		return nil
	}
	s := sha256.Sum256([]byte(rawURL))
	return &cacheEntry{dir: dir, fd: fd, urlKey: hex.EncodeToString(s[:16]), log: log}
}

func (c *cacheEntry) close() {
	if c != nil && c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

func etagKey(etag string) string {
	s := sha256.Sum256([]byte(etag))
	return hex.EncodeToString(s[:8])
}

// open opens a file of the cache for reading: a regular file of this user,
// never through a symlink.
func (c *cacheEntry) open(name string) *os.File {
	fd, err := unix.Openat(c.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != os.Geteuid() {
		unix.Close(fd)
		return nil
	}
	return os.NewFile(uintptr(fd), filepath.Join(c.dir, name))
}

// names lists the cache's files whose names start with prefix.
func (c *cacheEntry) names(prefix string) []string {
	f, err := os.Open(c.dir)
	if err != nil {
		return nil
	}
	defer f.Close()
	all, err := f.Readdirnames(-1)
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range all {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// etags lists the ETags of cached copies of this URL.
func (c *cacheEntry) etags() []string {
	if c == nil {
		return nil
	}
	var out []string
	for _, n := range c.names(c.urlKey + ".") {
		if etag, digest, ok := c.readPointer(n); ok && c.exists(digest) {
			out = append(out, etag)
		}
	}
	return out
}

func (c *cacheEntry) readPointer(name string) (etag, digest string, ok bool) {
	f := c.open(name)
	if f == nil {
		return "", "", false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, pointerLimit+1))
	if err != nil || len(b) > pointerLimit {
		return "", "", false
	}
	etag, rest, ok := strings.Cut(string(b), "\n")
	digest = strings.TrimSpace(rest)
	return etag, digest, ok && validDigest(digest)
}

// isPointerName reports whether n has the form of a pointer file's name.
func isPointerName(n string) bool {
	k, e, ok := strings.Cut(n, ".")
	return ok && len(k) == 32 && len(e) == 16 && strings.Trim(k+e, "0123456789abcdef") == ""
}

func validDigest(d string) bool {
	return len(d) == 64 && strings.Trim(d, "0123456789abcdef") == ""
}

func (c *cacheEntry) exists(digest string) bool {
	f := c.byDigest(digest)
	if f != nil {
		f.Close()
	}
	return f != nil
}

// byETag opens the cached copy the server confirmed with a 304, and returns
// its digest.
func (c *cacheEntry) byETag(etag string) (*os.File, string) {
	if c == nil {
		return nil, ""
	}
	_, digest, ok := c.readPointer(c.urlKey + "." + etagKey(etag))
	if !ok {
		// Some servers omit the ETag on a 304: use the only copy if there
		// is exactly one.
		m := c.names(c.urlKey + ".")
		if len(m) != 1 {
			return nil, ""
		}
		if _, digest, ok = c.readPointer(m[0]); !ok {
			return nil, ""
		}
	}
	return c.byDigest(digest), digest
}

// byDigest opens the cached file with this digest, if any.
func (c *cacheEntry) byDigest(digest string) *os.File {
	if c == nil || !validDigest(digest) {
		return nil
	}
	return c.open("sha256-" + digest)
}

// evict removes the cached copy with this digest and the pointers to it,
// after it failed verification, so that the next pull downloads afresh.
func (c *cacheEntry) evict(digest string) {
	if c == nil || !validDigest(digest) {
		return
	}
	for _, n := range c.names("") {
		if !isPointerName(n) {
			continue
		}
		if _, d, ok := c.readPointer(n); ok && d == digest {
			_ = unix.Unlinkat(c.fd, n, 0)
		}
	}
	if err := unix.Unlinkat(c.fd, "sha256-"+digest, 0); err == nil {
		c.log.Warn("evicted the cached download that failed verification", "sha256", digest)
	}
}

// writer returns a hidden scratch file receiving a copy of the download,
// and keep, which files it under its digest (or discards it when digest is
// ""). keep must be called exactly once in the end.
func (c *cacheEntry) writer(etag string) (io.Writer, func(digest string) error, error) {
	f, it, err := scratch.File(c.dir, "download", 0o600)
	if err != nil {
		return nil, nil, err
	}
	done := false
	keep := func(digest string) error {
		if done {
			return nil
		}
		done = true
		defer it.Release()
		cerr := f.Close()
		if digest == "" || cerr != nil || !validDigest(digest) {
			_ = os.Remove(it.Path)
			return cerr
		}
		if err := os.Chmod(it.Path, 0o444); err != nil {
			_ = os.Remove(it.Path)
			return err
		}
		if err := unix.Renameat(unix.AT_FDCWD, it.Path, c.fd, "sha256-"+digest); err != nil {
			_ = os.Remove(it.Path)
			return fmt.Errorf("filing the download in the cache: %w", err)
		}
		if etag != "" {
			if err := c.writePointer(c.urlKey+"."+etagKey(etag), etag+"\n"+digest+"\n"); err != nil {
				return err
			}
		}
		c.log.Info("kept the download in the cache", "sha256", digest)
		return nil
	}
	return f, keep, nil
}

func (c *cacheEntry) writePointer(name, content string) error {
	if len(content) > pointerLimit || strings.Count(content, "\n") != 2 {
		return errors.New("ETag too long or not one line: not cached")
	}
	f, it, err := scratch.File(c.dir, "pointer", 0o600)
	if err != nil {
		return err
	}
	defer it.Release()
	_, werr := f.WriteString(content)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = unix.Renameat(unix.AT_FDCWD, it.Path, c.fd, name)
	}
	if werr != nil {
		_ = os.Remove(it.Path)
		return fmt.Errorf("writing a cache pointer: %w", werr)
	}
	return nil
}

// cacheHit looks for a cached copy by the digest the download must have
// (a literal hash, or the checksum file's entry). The caller still hashes
// and verifies it.
func (p *puller) cacheHit(c *cacheEntry, aux *auxFiles) (*os.File, string) {
	if c == nil {
		return nil, ""
	}
	var digest string
	switch p.verify.Mode {
	case VerifyHash:
		digest = p.verify.Hash
	case VerifyChecksum, VerifySignature:
		digest = aux.listed
	default:
		return nil, ""
	}
	f := c.byDigest(digest)
	if f != nil {
		p.log.Info("using the cached download with the expected digest (it is verified again)", "sha256", digest)
	}
	return f, digest
}
