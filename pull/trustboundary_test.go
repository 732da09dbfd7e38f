package pull

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/formats/dirtree/treecmp"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestReservedNamesRefusedBeforeDownload: no name an image can take reaches
// berth's own files (the download cache, work trees), collides with another
// image's files (NAME.raw, NAME.nspawn) or overflows a derived name; and
// such a name is refused before anything is fetched.
func TestReservedNamesRefusedBeforeDownload(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, ".berth-cache.tar", []byte("x"))
	s := newFileServer(t, dir)
	r := openRoot(t)
	for _, name := range []string{".berth-cache", imageroot.CacheDirName, ".#berth-work-0000000000000000",
		".hidden", "web.raw", "web.nspawn", strings.Repeat("n", imageroot.MaxNameLen+1)} {
		err := Pull(context.Background(), r, Tar, s.url(".berth-cache.tar"), name, baseOpts(t, "no"))
		if err == nil || !strings.Contains(err.Error(), "image name") {
			t.Errorf("name %.40q: %v", name, err)
		}
	}
	if n := len(s.requests()); n != 0 {
		t.Errorf("refused names still fetched %d files", n)
	}
	if name, err := DefaultName(Tar, s.url(".berth-cache.tar")); err == nil && imageroot.ValidName(name) == nil {
		t.Errorf("the URL's default name %q is accepted", name)
	}
	if n := names(t, r.Dir); len(n) != 0 {
		t.Errorf("image root holds %v", n)
	}
}

// TestPlantedSymlinksInImageRoot: whatever a previous image or a local user
// planted in the image root, berth's own writes there never follow a
// symlink out of it.
func TestPlantedSymlinksInImageRoot(t *testing.T) {
	testenv.RequireRoot(t)
	img := compressWith(t, smallTarball(t), "gzip", "-c")
	settings := []byte("[Exec]\nBoot=yes\n")
	dir := t.TempDir()
	writeFile(t, dir, "s.tar.gz", img)
	writeFile(t, dir, "s.nspawn", settings)
	writeFile(t, dir, "SHA256SUMS", sums(t, map[string][]byte{"s.tar.gz": img, "s.nspawn": settings}))
	srv := newFileServer(t, dir)
	r := openRoot(t)
	victim := t.TempDir()
	writeFile(t, victim, "passwd", []byte("root:x:0:0::/root:/bin/sh\n"))
	victimState := func() map[string]treecmp.Node {
		s, err := treecmp.Snapshot(victim)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	want := victimState()
	cache := filepath.Join(r.Dir, imageroot.CacheDirName)

	// 1. The cache directory is a symlink: the cache is not used.
	os.Symlink(victim, cache)
	os.Symlink(victim, filepath.Join(r.Dir, ".#berth-work-planted")) // looks like debris
	os.Symlink(filepath.Join(victim, "passwd"), filepath.Join(r.Dir, "s.nspawn"))
	o := baseOpts(t, "checksum")
	o.KeepDownload, o.Force = true, true
	if err := Pull(context.Background(), r, Tar, srv.url("s.tar.gz"), "s", o); err != nil {
		t.Fatal(err)
	}
	sameState(t, "victim changed through a planted symlink", want, victimState())
	if st, err := os.Lstat(filepath.Join(r.Dir, "s.nspawn")); err != nil || !st.Mode().IsRegular() {
		t.Fatalf("settings file is not a regular file: %v %v", st, err)
	}
	if _, err := os.Lstat(filepath.Join(r.Dir, ".#berth-work-planted")); err != nil {
		t.Fatal("a symlink named like debris was removed or followed")
	}

	// 2. A real cache whose entries were swapped for symlinks.
	os.Remove(cache)
	if err := Pull(context.Background(), r, Tar, srv.url("s.tar.gz"), "s", o); err != nil {
		t.Fatal(err)
	}
	entry := filepath.Join(cache, "sha256-"+sha256Hex(img))
	if _, err := os.Stat(entry); err != nil {
		t.Fatalf("download not cached: %v", err)
	}
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		p := filepath.Join(cache, e.Name())
		os.Remove(p)
		os.Symlink(filepath.Join(victim, "passwd"), p)
	}
	srv.reset()
	if err := Pull(context.Background(), r, Tar, srv.url("s.tar.gz"), "s", o); err != nil {
		t.Fatal(err)
	}
	if srv.count("/s.tar.gz") == 0 {
		t.Error("a symlinked cache entry was used instead of downloading")
	}
	sameState(t, "victim changed through a symlink in the cache", want, victimState())
	if st, err := os.Lstat(entry); err != nil || !st.Mode().IsRegular() {
		t.Fatalf("cache entry not replaced by a real file: %v", err)
	}

	// 3. A cache directory that is not private is not used.
	os.Chmod(cache, 0o755)
	srv.reset()
	if err := Pull(context.Background(), r, Tar, srv.url("s.tar.gz"), "s", o); err != nil {
		t.Fatal(err)
	}
	if srv.count("/s.tar.gz") == 0 {
		t.Error("a cache open to others was used")
	}
}
