package pull

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/formats/dirtree/treecmp"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/verify"
)

func sh(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-ec", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func openRoot(t *testing.T) *imageroot.Root {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "machines")
	r, err := imageroot.Open(dir, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { imageroot.RemoveTree(dir) })
	return r
}

// smallTarball makes a tiny OS tree with the entry kinds that matter and
// returns it as an uncompressed tar made by GNU tar.
func smallTarball(t *testing.T) []byte {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "tar")
	d := filepath.Join(t.TempDir(), "tree")
	out := filepath.Join(t.TempDir(), "t.tar")
	sh(t, `d=`+d+`
mkdir -p $d/etc $d/usr/bin $d/tmp $d/dev
echo 'ID=test' > $d/etc/os-release
echo hello > $d/usr/bin/tool; chmod 4755 $d/usr/bin/tool
ln $d/usr/bin/tool $d/usr/bin/tool2
ln -s /usr/bin/tool $d/usr/bin/abs-link
chmod 1777 $d/tmp
mknod $d/dev/null c 1 3
setfattr -n user.test -v berth $d/usr/bin/tool
chown 1234:2345 $d/etc/os-release
tar --xattrs --xattrs-include='*' --numeric-owner -C $d -cpf `+out+` .`)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func compressWith(t *testing.T, data []byte, cmd ...string) []byte {
	t.Helper()
	testenv.RequireTool(t, cmd[0])
	c := exec.Command(cmd[0], cmd[1:]...)
	c.Stdin = bytes.NewReader(data)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		t.Fatalf("%v: %v: %s", cmd, err, errb.String())
	}
	return out.Bytes()
}

func writeFile(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sums(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	m := map[string]string{}
	for n, b := range files {
		m[n] = sha256Hex(b)
	}
	var buf bytes.Buffer
	if err := verify.WriteSums(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rootState is everything in the image root, hidden entries included.
func rootState(t *testing.T, r *imageroot.Root) map[string]treecmp.Node {
	t.Helper()
	s, err := treecmp.Snapshot(r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	delete(s, ".") // the root's own mtime changes when work files come and go
	return s
}

func sameState(t *testing.T, what string, a, b map[string]treecmp.Node) {
	t.Helper()
	if d := treecmp.Diff(a, b); len(d) > 0 {
		if len(d) > 20 {
			d = append(d[:20], "...")
		}
		t.Fatalf("%s:\n%s", what, strings.Join(d, "\n"))
	}
}

func baseOpts(t *testing.T, v string) PullOptions {
	t.Helper()
	vv, err := ParseVerify(v)
	if err != nil {
		t.Fatal(err)
	}
	return PullOptions{
		ImportOptions: ImportOptions{Log: testLog(t)},
		Verify:        vv,
		HTTP:          HTTPOptions{UserAgent: "berth/test", StallTimeout: 5 * time.Second, ConnectTimeout: 2 * time.Second},
	}
}

func TestParseVerify(t *testing.T) {
	for _, ok := range []string{"no", "checksum", "signature", strings.Repeat("aB", 32)} {
		if _, err := ParseVerify(ok); err != nil {
			t.Errorf("ParseVerify(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"yes", "abcd", strings.Repeat("a", 65), strings.Repeat("g", 64)} {
		if _, err := ParseVerify(bad); err == nil {
			t.Errorf("ParseVerify(%q) succeeded", bad)
		}
	}
}

// keys are test signing keys made with the real gpg and openssl.
type keys struct {
	dir                  string
	edRing, edRingArmor  string
	rsaRing, rsaRingArm  string
	cosignKey, cosignPub string
	otherPub             string
}

func makeKeys(t *testing.T) *keys {
	t.Helper()
	testenv.RequireTool(t, "gpg")
	testenv.RequireTool(t, "openssl")
	d := t.TempDir()
	k := &keys{dir: d,
		edRing: d + "/ed.gpg", edRingArmor: d + "/ed.asc", rsaRing: d + "/rsa.gpg", rsaRingArm: d + "/rsa.asc",
		cosignKey: d + "/cosign.key", cosignPub: d + "/cosign.pub", otherPub: d + "/other.pub"}
	sh(t, `export GNUPGHOME=`+d+`/gnupg; mkdir -m700 $GNUPGHOME; cd `+d+`
g() { gpg --batch --quiet --pinentry-mode loopback --passphrase '' "$@"; }
g --quick-gen-key 'Berth Ed <ed@test>' ed25519 sign never
g --quick-gen-key 'Berth RSA <rsa@test>' rsa2048 sign never
g --export ed@test > ed.gpg; g --armor --export ed@test > ed.asc
g --export rsa@test > rsa.gpg; g --armor --export rsa@test > rsa.asc
openssl ecparam -name prime256v1 -genkey -noout -out cosign.key 2>/dev/null
openssl ec -in cosign.key -pubout -out cosign.pub 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out other.key 2>/dev/null
openssl ec -in other.key -pubout -out other.pub 2>/dev/null`)
	return k
}

// gpgSign writes a detached signature of file by uid (armored or not).
func (k *keys) gpgSign(t *testing.T, uid, file, out string, armor bool) {
	t.Helper()
	a := ""
	if armor {
		a = "--armor"
	}
	sh(t, fmt.Sprintf(`GNUPGHOME=%s/gnupg gpg --batch --quiet --pinentry-mode loopback --passphrase '' --digest-algo SHA256 --local-user %s %s --detach-sign -o %s %s`, k.dir, uid, a, out, file))
}

func (k *keys) cosignSign(t *testing.T, keyFile, file, out string) {
	t.Helper()
	sh(t, fmt.Sprintf(`openssl dgst -sha256 -sign %s %s | base64 -w0 > %s`, keyFile, file, out))
}

func TestVerifyModes(t *testing.T) {
	testenv.RequireRoot(t)
	tarball := smallTarball(t)
	img := compressWith(t, tarball, "xz", "-c")
	k := makeKeys(t)
	cosignPEM, _ := os.ReadFile(k.cosignPub)
	otherPEM, _ := os.ReadFile(k.otherPub)
	settings := []byte("[Exec]\nBoot=yes\n")

	type tc struct {
		name    string
		verify  string
		layout  func(t *testing.T, dir string) // files next to img.tar.xz
		opts    func(o *PullOptions)
		wantErr string // "" = must succeed
		check   func(t *testing.T, r *imageroot.Root)
	}
	goodSums := func(t *testing.T, dir string) []byte {
		b := sums(t, map[string][]byte{"img.tar.xz": img})
		writeFile(t, dir, "SHA256SUMS", b)
		return b
	}
	signed := func(uid string, armor bool, sigName string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			goodSums(t, dir)
			k.gpgSign(t, uid, dir+"/SHA256SUMS", dir+"/"+sigName, armor)
		}
	}
	ring := func(p ...string) func(o *PullOptions) { return func(o *PullOptions) { o.Keyrings = p } }
	cases := []tc{
		{name: "checksum/SHA256SUMS", verify: "checksum", layout: func(t *testing.T, d string) { goodSums(t, d) }},
		{name: "checksum/FILE.sha256", verify: "checksum", layout: func(t *testing.T, d string) {
			writeFile(t, d, "img.tar.xz.sha256", []byte(sha256Hex(img)+"  img.tar.xz\n"))
		}},
		{name: "checksum/bsd-upper-crlf-nonl", verify: "checksum", layout: func(t *testing.T, d string) {
			writeFile(t, d, "SHA256SUMS", []byte("SHA256 (other) = "+strings.Repeat("0", 64)+"\r\nSHA256 (./img.tar.xz) = "+strings.ToUpper(sha256Hex(img))))
		}},
		{name: "checksum/tampered-image", verify: "checksum", wantErr: "checksum mismatch", layout: func(t *testing.T, d string) {
			writeFile(t, d, "SHA256SUMS", sums(t, map[string][]byte{"img.tar.xz": append([]byte("x"), img...)}))
		}},
		{name: "checksum/not-listed", verify: "checksum", wantErr: "not listed", layout: func(t *testing.T, d string) {
			writeFile(t, d, "SHA256SUMS", sums(t, map[string][]byte{"other.tar.xz": img}))
		}},
		{name: "checksum/missing", verify: "checksum", wantErr: "neither img.tar.xz.sha256 nor SHA256SUMS", layout: func(t *testing.T, d string) {}},
		{name: "checksum/empty", verify: "checksum", wantErr: "empty", layout: func(t *testing.T, d string) { writeFile(t, d, "SHA256SUMS", nil) }},
		{name: "settings/listed", verify: "checksum", layout: func(t *testing.T, d string) {
			writeFile(t, d, "img.nspawn", settings)
			writeFile(t, d, "SHA256SUMS", sums(t, map[string][]byte{"img.tar.xz": img, "img.nspawn": settings}))
		}, check: func(t *testing.T, r *imageroot.Root) {
			if b, err := os.ReadFile(filepath.Join(r.Dir, "img.nspawn")); err != nil || !bytes.Equal(b, settings) {
				t.Fatalf("settings not installed: %v", err)
			}
		}},
		{name: "settings/unlisted", verify: "checksum", wantErr: "img.nspawn is not listed", layout: func(t *testing.T, d string) {
			writeFile(t, d, "img.nspawn", settings)
			goodSums(t, d)
		}},
		{name: "settings/tampered", verify: "checksum", wantErr: "checksum mismatch", layout: func(t *testing.T, d string) {
			writeFile(t, d, "SHA256SUMS", sums(t, map[string][]byte{"img.tar.xz": img, "img.nspawn": settings}))
			writeFile(t, d, "img.nspawn", []byte("[Exec]\nPrivateUsers=no\n"))
		}},
		{name: "gpg/ed25519-binary", verify: "signature", layout: signed("ed@test", false, "SHA256SUMS.gpg"), opts: ring(k.edRing)},
		{name: "gpg/ed25519-armored-ring-asc", verify: "signature", layout: signed("ed@test", true, "SHA256SUMS.asc"), opts: ring(k.edRingArmor)},
		{name: "gpg/rsa-binary", verify: "signature", layout: signed("rsa@test", false, "SHA256SUMS.gpg"), opts: ring(k.rsaRing)},
		{name: "gpg/rsa-armored-sig", verify: "signature", layout: signed("rsa@test", true, "SHA256SUMS.gpg"), opts: ring(k.rsaRingArm)},
		{name: "gpg/per-file-sha256-asc", verify: "signature", layout: func(t *testing.T, d string) {
			writeFile(t, d, "img.tar.xz.sha256", []byte(sha256Hex(img)+" *img.tar.xz\n"))
			k.gpgSign(t, "ed@test", d+"/img.tar.xz.sha256", d+"/img.tar.xz.sha256.asc", true)
		}, opts: ring(k.edRing)},
		{name: "gpg/wrong-key", verify: "signature", wantErr: "not in the keyring", layout: signed("ed@test", false, "SHA256SUMS.gpg"), opts: ring(k.rsaRing)},
		{name: "gpg/tampered-sums", verify: "signature", wantErr: "bad signature", layout: func(t *testing.T, d string) {
			signed("ed@test", false, "SHA256SUMS.gpg")(t, d)
			f, _ := os.OpenFile(d+"/SHA256SUMS", os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString(strings.Repeat("1", 64) + " *evil.tar.xz\n")
			f.Close()
		}, opts: ring(k.edRing)},
		{name: "gpg/tampered-image", verify: "signature", wantErr: "checksum mismatch", layout: func(t *testing.T, d string) {
			writeFile(t, d, "SHA256SUMS", sums(t, map[string][]byte{"img.tar.xz": append([]byte("x"), img...)}))
			k.gpgSign(t, "ed@test", d+"/SHA256SUMS", d+"/SHA256SUMS.gpg", false)
		}, opts: ring(k.edRing)},
		{name: "gpg/no-signature", verify: "signature", wantErr: "no OpenPGP signature", layout: func(t *testing.T, d string) { goodSums(t, d) }, opts: ring(k.edRing)},
		{name: "cosign/good", verify: "signature", layout: func(t *testing.T, d string) {
			goodSums(t, d)
			k.cosignSign(t, k.cosignKey, d+"/SHA256SUMS", d+"/SHA256SUMS.sig")
		}, opts: func(o *PullOptions) { o.CosignKey = cosignPEM }},
		{name: "cosign/wrong-key", verify: "signature", wantErr: "bad signature", layout: func(t *testing.T, d string) {
			goodSums(t, d)
			k.cosignSign(t, k.cosignKey, d+"/SHA256SUMS", d+"/SHA256SUMS.sig")
		}, opts: func(o *PullOptions) { o.CosignKey = otherPEM }},
		{name: "cosign/tampered-sums", verify: "signature", wantErr: "bad signature", layout: func(t *testing.T, d string) {
			goodSums(t, d)
			k.cosignSign(t, k.cosignKey, d+"/SHA256SUMS", d+"/SHA256SUMS.sig")
			writeFile(t, d, "SHA256SUMS", append(goodSums(t, d), []byte(strings.Repeat("2", 64)+" *x\n")...))
		}, opts: func(o *PullOptions) { o.CosignKey = cosignPEM }},
		{name: "cosign/missing-sig", verify: "signature", wantErr: "has no cosign signature (SHA256SUMS.sig)", layout: func(t *testing.T, d string) { goodSums(t, d) },
			opts: func(o *PullOptions) { o.CosignKey = cosignPEM }},
		{name: "both/gpg-bad-cosign-good", verify: "signature", wantErr: "not in the keyring", layout: func(t *testing.T, d string) {
			signed("ed@test", false, "SHA256SUMS.gpg")(t, d)
			k.cosignSign(t, k.cosignKey, d+"/SHA256SUMS", d+"/SHA256SUMS.sig")
		}, opts: func(o *PullOptions) { o.CosignKey = cosignPEM; o.Keyrings = []string{k.rsaRing} }},
		{name: "hash/good", verify: sha256Hex(img), layout: func(t *testing.T, d string) {}},
		{name: "hash/good-uppercase", verify: strings.ToUpper(sha256Hex(img)), layout: func(t *testing.T, d string) {}},
		{name: "hash/bad", verify: strings.Repeat("0", 64), wantErr: "checksum mismatch", layout: func(t *testing.T, d string) {}},
		{name: "no", verify: "no", layout: func(t *testing.T, d string) {}},
	}
	r := openRoot(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "img.tar.xz", img)
			c.layout(t, dir)
			s := newFileServer(t, dir)
			o := baseOpts(t, c.verify)
			if c.opts != nil {
				c.opts(&o)
			}
			before := rootState(t, r)
			err := Pull(context.Background(), r, Tar, s.url("img.tar.xz"), "img", o)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("want error containing %q, got %v", c.wantErr, err)
				}
				sameState(t, "image root changed by a failed pull", before, rootState(t, r))
				// Only the image's own digest needs the image: every other
				// failure is found before a byte of it is fetched.
				if n := s.count("/img.tar.xz"); n != 0 && !strings.Contains(c.wantErr, "checksum mismatch") {
					t.Errorf("a pull bound to fail fetched the image %d times", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !imageroot.IsOSTree(r.Path("img")) {
				t.Fatal("pulled image is not installed")
			}
			if c.check != nil {
				c.check(t, r)
			}
			if err := RemoveImage(context.Background(), r, "img"); err != nil {
				t.Fatal(err)
			}
			if n := strings.Join(names(t, r.Dir), " "); n != "" {
				t.Fatalf("after remove the root holds %q", n)
			}
		})
	}
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func TestPullRedirectResumeAndCache(t *testing.T) {
	testenv.RequireRoot(t)
	tarball := smallTarball(t)
	// Big enough to cut halfway: pad the tar with a large file.
	img := compressWith(t, tarball, "gzip", "-c")
	dir := t.TempDir()
	writeFile(t, dir, "image.tar.gz", img)
	writeFile(t, dir, "SHA256SUMS", sums(t, map[string][]byte{"latest.tar.gz": img}))
	s := newFileServer(t, dir)
	s.redirects["/latest.tar.gz"] = "/image.tar.gz"
	s.cutOnce["/image.tar.gz"] = int64(len(img) / 2)
	r := openRoot(t)
	ctx := context.Background()

	o := baseOpts(t, "checksum")
	o.KeepDownload = true
	if err := Pull(ctx, r, Tar, s.url("latest.tar.gz"), "latest", o); err != nil {
		t.Fatalf("redirected, cut pull: %v", err)
	}
	sawRange := false
	for _, q := range s.requests() {
		if q.Path == "/image.tar.gz" && q.Range != "" && q.Status == 206 {
			sawRange = true
		}
		if q.Path == "/image.tar.gz.sha256" {
			t.Errorf("checksum looked up under the redirect target's name: %+v", q)
		}
	}
	if !sawRange {
		t.Fatalf("no resumed Range request: %+v", s.requests())
	}
	if s.count("/latest.tar.gz.sha256") != 1 || s.count("/SHA256SUMS") != 1 || s.count("/latest.nspawn") != 1 {
		t.Errorf("sibling files not looked up by the original name: %+v", s.requests())
	}

	cached := filepath.Join(r.Dir, imageroot.CacheDirName, "sha256-"+sha256Hex(img))
	if _, err := os.Stat(cached); err != nil {
		t.Fatalf("download not kept in the cache: %v", err)
	}
	// Cache hit: the server answers 304 (or the digest matches); the image
	// is verified again, so a wrong literal hash fails, and the cached copy
	// that failed is evicted...
	s.reset()
	o.Force = true
	bad := baseOpts(t, strings.Repeat("0", 64))
	bad.KeepDownload, bad.Force = true, true
	before := rootState(t, r)
	if err := Pull(ctx, r, Tar, s.url("latest.tar.gz"), "latest", bad); err == nil || !strings.Contains(err.Error(), "mismatch") {
		t.Fatalf("wrong literal hash on a cache hit: %v", err)
	}
	for _, q := range s.requests() {
		if q.Status == 200 && strings.HasSuffix(q.Path, ".tar.gz") {
			t.Fatalf("image downloaded again despite the cache: %+v", q)
		}
	}
	after := rootState(t, r)
	for _, st := range []map[string]treecmp.Node{before, after} {
		for k := range st {
			if strings.HasPrefix(k, imageroot.CacheDirName) {
				delete(st, k)
			}
		}
	}
	sameState(t, "failed cache-hit pull changed the root", before, after)
	if _, err := os.Stat(cached); !os.IsNotExist(err) {
		t.Fatalf("cached copy that failed verification not evicted: %v", err)
	}
	// ... so the right one downloads afresh (and caches it again) ...
	s.reset()
	good := baseOpts(t, sha256Hex(img))
	good.KeepDownload, good.Force = true, true
	if err := Pull(ctx, r, Tar, s.url("latest.tar.gz"), "latest", good); err != nil {
		t.Fatalf("right literal hash after an eviction: %v", err)
	}
	if n := s.count("/image.tar.gz"); n == 0 {
		t.Errorf("evicted image was not downloaded again: %+v", s.requests())
	}
	// ... and then comes from the cache.
	s.reset()
	if err := Pull(ctx, r, Tar, s.url("latest.tar.gz"), "latest", good); err != nil {
		t.Fatalf("right literal hash on a cache hit: %v", err)
	}
	if n := s.count(".tar.gz"); n != 0 {
		t.Errorf("literal-hash cache hit still asked the server for the image %d times", n)
	}
	// ETag path: checksum mode with If-None-Match → 304.
	s.reset()
	if err := os.Remove(filepath.Join(dir, "SHA256SUMS")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "latest.tar.gz.sha256", []byte(sha256Hex(img)+" *latest.tar.gz\n"))
	if err := Pull(ctx, r, Tar, s.url("latest.tar.gz"), "latest", o); err != nil {
		t.Fatalf("cache hit in checksum mode: %v", err)
	}
	for _, q := range s.requests() {
		if strings.HasSuffix(q.Path, ".tar.gz") && q.Status == 200 {
			t.Fatalf("image re-downloaded: %+v", s.requests())
		}
	}
}

func TestPullCancelLeavesNothing(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	// A big, slowly served image: cancel while it downloads.
	tarball := smallTarball(t)
	writeFile(t, dir, "slow.tar", tarball)
	s := newFileServer(t, dir)
	s.stall["/slow.tar"] = int64(len(tarball) / 2)
	r := openRoot(t)
	before := rootState(t, r)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	start := time.Now()
	err := Pull(ctx, r, Tar, s.url("slow.tar"), "slow", baseOpts(t, "no"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("cancel took %s", el)
	}
	sameState(t, "cancelled pull left something behind", before, rootState(t, r))
}

func TestPullStallTimeout(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	writeFile(t, dir, "stall.tar", smallTarball(t))
	s := newFileServer(t, dir)
	s.stall["/stall.tar"] = 1024
	r := openRoot(t)
	o := baseOpts(t, "no")
	o.HTTP.StallTimeout = time.Second
	o.HTTP.Retries = -1
	start := time.Now()
	err := Pull(context.Background(), r, Tar, s.url("stall.tar"), "stall", o)
	if err == nil || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("want a stall error, got %v", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("stall noticed after %s (timeout 1s)", el)
	}
	if n := names(t, r.Dir); len(n) != 0 {
		t.Fatalf("stalled pull left %v", n)
	}
}

func TestPullRawSparseAndFile(t *testing.T) {
	testenv.RequireRoot(t)
	raw := make([]byte, 16<<20)
	copy(raw[1<<20:], "GPT-ish header")
	copy(raw[len(raw)-4:], "tail")
	img := compressWith(t, raw, "zstd", "-q", "-c")
	dir := t.TempDir()
	writeFile(t, dir, "disk.raw.zst", img)
	writeFile(t, dir, "SHA256SUMS", sums(t, map[string][]byte{"disk.raw.zst": img}))
	r := openRoot(t)
	// file:// with --verify=checksum (systemd 252 hangs on this).
	done := make(chan error, 1)
	go func() {
		done <- Pull(context.Background(), r, Raw, "file://"+dir+"/disk.raw.zst", "disk", baseOpts(t, "checksum"))
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("file:// pull hangs")
	}
	p := filepath.Join(r.Dir, "disk.raw")
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("raw image differs: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 1<<20 {
		t.Errorf("16 MiB raw image uses %d bytes: not sparse", st.Blocks*512)
	}
	if got := names(t, r.Dir); strings.Join(got, " ") != "disk.raw" {
		t.Errorf("image root holds %v", got)
	}
	// ImportRaw of the same compressed file.
	f, _ := os.Open(filepath.Join(dir, "disk.raw.zst"))
	defer f.Close()
	if err := ImportRaw(context.Background(), r, f, "disk2", ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(r.Dir, "disk2.raw")); !bytes.Equal(b, raw) {
		t.Fatal("import-raw result differs")
	}
	imgs, err := ListImages(context.Background(), r, false)
	if err != nil || len(imgs) != 2 || imgs[0].Name != "disk" || imgs[0].Type != "raw" || imgs[0].Size > 1<<20 {
		t.Fatalf("ListImages = %+v, %v", imgs, err)
	}
}

// debianVariants serves a subset of the real Debian tree (etc, usr/bin,
// usr/sbin, dev, …: hard links, file capabilities, setuid) in every
// compression, made once and cached in testenv.CacheDir().
func debianVariants(t *testing.T) (dir string, files []string) {
	t.Helper()
	tree := testenv.DebianTree(t)
	for _, tool := range []string{"tar", "xz", "gzip", "bzip2", "zstd"} {
		testenv.RequireTool(t, tool)
	}
	dir = filepath.Join(testenv.CacheDir(), "pull-fixtures-v2")
	files = []string{"deb.tar", "deb.tar.xz", "deb-t2.tar.xz", "deb.tar.gz", "deb.tar.bz2", "deb.tar.zst"}
	if _, err := os.Stat(dir + "/.ok"); err == nil {
		return dir, files
	}
	lock, err := os.OpenFile(testenv.CacheDir()+"/.pull-fixtures.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	unix.Flock(int(lock.Fd()), unix.LOCK_EX)
	if _, err := os.Stat(dir + "/.ok"); err == nil {
		return dir, files
	}
	tmp := dir + ".new"
	os.RemoveAll(tmp)
	sh(t, `mkdir -p `+tmp+` && cd `+tmp+`
tar --xattrs --xattrs-include='*' --numeric-owner -C `+tree+` --exclude=./usr/lib --exclude=./usr/share --exclude=./var/lib --exclude=./var/cache -cpf deb.tar .
xz -2 -T1 -c deb.tar > deb.tar.xz
xz -2 -T2 -c deb.tar > deb-t2.tar.xz
head -c 10000000 deb.tar | gzip -c > deb.tar.gz; tail -c +10000001 deb.tar | gzip -c >> deb.tar.gz
bzip2 -c deb.tar > deb.tar.bz2
zstd -q -c deb.tar > deb.tar.zst
for f in deb*; do echo "$(sha256sum < $f | cut -c1-64) *$f"; done > SHA256SUMS
touch .ok`)
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	return dir, files
}

// TestPullMatchesSystemdPull pulls the same URLs with systemd-pull and
// berth and compares the trees (paths, types, modes, owners, xattrs, link
// targets, hard links).
func TestPullMatchesSystemdPull(t *testing.T) {
	testenv.RequireRoot(t)
	sdPull := testenv.RequireTool(t, "/usr/lib/systemd/systemd-pull")
	dir, files := debianVariants(t)
	s := newFileServer(t, dir)
	sdRoot := filepath.Join(t.TempDir(), "sd")
	t.Cleanup(func() { imageroot.RemoveTree(sdRoot) })
	// systemd-pull 252 now and then hangs in its event loop after the
	// download (seen about once in eight runs on a loaded machine, like the
	// file:// hang of the reference notes): bound it and try again.
	for attempt := 1; ; attempt++ {
		imageroot.RemoveTree(sdRoot)
		os.MkdirAll(sdRoot, 0o700)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, sdPull, "tar", "--verify=checksum", "--image-root="+sdRoot, s.url("deb.tar.xz"), "berth-sd-ref").CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil {
			break
		}
		if !timedOut || attempt == 3 {
			t.Fatalf("systemd-pull (attempt %d): %v\n%s", attempt, err, out)
		}
		t.Logf("systemd-pull hung (attempt %d); retrying", attempt)
	}
	ref, err := treecmp.Snapshot(filepath.Join(sdRoot, "berth-sd-ref"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ref) < 500 {
		t.Fatalf("systemd-pull's tree has only %d entries", len(ref))
	}
	r := openRoot(t)
	for _, f := range files {
		name := strings.NewReplacer(".", "-").Replace(f)
		start := time.Now()
		if err := Pull(context.Background(), r, Tar, s.url(f), name, baseOpts(t, "checksum")); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		t.Logf("%s: pulled in %s", f, time.Since(start).Round(time.Millisecond))
		got, err := treecmp.Snapshot(r.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		// systemd-pull copies its cache into a fresh directory, so its root
		// has the time of the copy; berth keeps the tarball's.
		if n, ok := got["."]; ok {
			n.ModTime = ref["."].ModTime
			got["."] = n
		}
		sameState(t, f+": berth's tree differs from systemd-pull's", ref, got)
		imageroot.RemoveTree(r.Path(name))
	}
}

// TestPulledImageBoots pulls a busybox tree whose init prints a marker and
// boots it with systemd-nspawn.
func TestPulledImageBoots(t *testing.T) {
	testenv.RequireRoot(t)
	nspawn := testenv.RequireTool(t, "systemd-nspawn")
	bb := testenv.RequireTool(t, "/bin/busybox")
	tree := filepath.Join(t.TempDir(), "bb")
	out := t.TempDir()
	sh(t, `d=`+tree+`; mkdir -p $d/bin $d/sbin $d/etc $d/proc $d/sys $d/dev $d/run $d/tmp $d/usr/lib
cp `+bb+` $d/bin/busybox
echo 'ID=berthtest' > $d/usr/lib/os-release; ln -s ../usr/lib/os-release $d/etc/os-release
printf '#!/bin/busybox sh\necho BERTH-BOOT-MARKER-$((6*7))\nexec /bin/busybox poweroff -f\n' > $d/sbin/init; chmod 755 $d/sbin/init
tar --numeric-owner -C $d -c . | xz -c > `+out+`/bb.tar.xz`)
	s := newFileServer(t, out)
	r := openRoot(t)
	if err := Pull(context.Background(), r, Tar, s.url("bb.tar.xz"), "bb", baseOpts(t, "no")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nspawn, "--register=no", "--keep-unit", "-q", "-D", r.Path("bb"), "-b")
	cmd.Stdin = nil
	b, err := cmd.CombinedOutput()
	if !strings.Contains(string(b), "BERTH-BOOT-MARKER-42") {
		t.Fatalf("container did not boot to the marker (err %v):\n%s", err, b)
	}
}

// TestSettingsKeptWithoutForce: an existing NAME.nspawn is not replaced
// unless --force, as systemd-pull does.
func TestSettingsKeptWithoutForce(t *testing.T) {
	testenv.RequireRoot(t)
	img := compressWith(t, smallTarball(t), "gzip", "-c")
	dir := t.TempDir()
	newSettings := []byte("[Exec]\nBoot=yes\n")
	writeFile(t, dir, "s.tar.gz", img)
	writeFile(t, dir, "s.nspawn", newSettings)
	writeFile(t, dir, "SHA256SUMS", sums(t, map[string][]byte{"s.tar.gz": img, "s.nspawn": newSettings}))
	srv := newFileServer(t, dir)
	r := openRoot(t)
	old := []byte("[Exec]\nBoot=no\n")
	writeFile(t, r.Dir, "s.nspawn", old)
	if err := Pull(context.Background(), r, Tar, srv.url("s.tar.gz"), "s", baseOpts(t, "checksum")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(r.Dir, "s.nspawn")); !bytes.Equal(b, old) {
		t.Fatalf("settings replaced without --force: %q", b)
	}
	o := baseOpts(t, "checksum")
	o.Force = true
	if err := Pull(context.Background(), r, Tar, srv.url("s.tar.gz"), "s", o); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(r.Dir, "s.nspawn")); !bytes.Equal(b, newSettings) {
		t.Fatalf("settings not replaced with --force: %q", b)
	}
	if got := strings.Join(names(t, r.Dir), " "); got != "s s.nspawn" {
		t.Fatalf("image root holds %q", got)
	}
}
