package pull

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSiblingURL(t *testing.T) {
	cases := []struct{ in, name, want string }{
		{"http://h/a/b/img.tar.xz", "SHA256SUMS", "http://h/a/b/SHA256SUMS"},
		{"http://h/img.tar.xz?x=1#frag", "img.tar.xz.sha256", "http://h/img.tar.xz.sha256"},
		{"https://h:8080/d/latest.tar.gz", "latest.nspawn", "https://h:8080/d/latest.nspawn"},
		{"file:///srv/i/x.raw.xz", "SHA256SUMS.gpg", "file:///srv/i/SHA256SUMS.gpg"},
		{"http://h/a%20b/img.tar", "SHA256SUMS", "http://h/a%20b/SHA256SUMS"},
	}
	for _, c := range cases {
		got, err := SiblingURL(c.in, c.name)
		if err != nil || got != c.want {
			t.Errorf("SiblingURL(%q, %q) = %q, %v; want %q", c.in, c.name, got, err, c.want)
		}
	}
	for _, bad := range []string{"http://h/", "http://h", "ftp://h/x.tar", "/local/x.tar", "http:///x.tar"} {
		if _, err := SiblingURL(bad, "SHA256SUMS"); err == nil {
			t.Errorf("SiblingURL(%q) succeeded", bad)
		}
	}
	if n, _ := DefaultName(Tar, "http://h/d/debian-12.tar.xz?token=1"); n != "debian-12" {
		t.Errorf("DefaultName tar = %q", n)
	}
	if n, _ := DefaultName(Raw, "http://h/d/disk.raw.xz"); n != "disk" {
		t.Errorf("DefaultName raw = %q", n)
	}
}

func FuzzSiblingURL(f *testing.F) {
	for _, s := range []string{"http://h/a/b/img.tar.xz", "https://x:1/%2F/a?b#c", "file:///a/b", "http://h/..", "http://h/a/./b/../c.tar", "http://[::1]/x"} {
		f.Add(s, "SHA256SUMS")
	}
	f.Fuzz(func(t *testing.T, raw, name string) {
		got, err := SiblingURL(raw, name)
		if err != nil {
			return
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatalf("SiblingURL(%q, %q) = %q, which does not parse: %v", raw, name, got, err)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("SiblingURL(%q) = %q keeps a query or fragment", raw, got)
		}
		if base, err := URLFileName(got); err != nil || base != name {
			t.Fatalf("SiblingURL(%q, %q) = %q whose file name is %q (%v)", raw, name, got, base, err)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 5-9/*", "bytes 9-5/10", "bytes 0-9/5", "bytes -1-2/3", "bytes 1-2", "items 0-1/2", "bytes 00-099999999999999999999/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, total, err := ParseContentRange(s)
		if err != nil {
			return
		}
		if start < 0 || end < start || (total != -1 && total <= end) {
			t.Fatalf("ParseContentRange(%q) = %d, %d, %d", s, start, end, total)
		}
	})
}

func randomFile(t *testing.T, dir, name string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func quickOpts() HTTPOptions {
	return HTTPOptions{UserAgent: "berth/test", StallTimeout: 2 * time.Second, ConnectTimeout: 2 * time.Second}
}

func TestDownloadResumes(t *testing.T) {
	dir := t.TempDir()
	want := randomFile(t, dir, "blob", 3<<20)
	for _, validator := range []string{"etag", "last-modified"} {
		t.Run(validator, func(t *testing.T) {
			s := newFileServer(t, dir)
			s.etag = validator == "etag"
			s.cutOnce["/blob"] = 1 << 20
			d, err := NewFetcher(quickOpts()).Open(context.Background(), s.url("blob"), nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(d)
			d.Close()
			if err != nil {
				t.Fatalf("download failed instead of resuming: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("resumed download differs from the file (%d vs %d bytes)", len(got), len(want))
			}
			if d.Resumes != 1 {
				t.Errorf("Resumes = %d, want 1", d.Resumes)
			}
			reqs := s.requests()
			if len(reqs) != 2 || !strings.HasPrefix(reqs[1].Range, "bytes=") || reqs[1].IfRange == "" || reqs[1].Status != 206 {
				t.Fatalf("want a first GET and a Range+If-Range GET answered 206, got %+v", reqs)
			}
			if reqs[0].UserAgent != "berth/test" {
				t.Errorf("User-Agent = %q", reqs[0].UserAgent)
			}
		})
	}
}

func TestDownloadChangedDuringResume(t *testing.T) {
	dir := t.TempDir()
	randomFile(t, dir, "blob", 2<<20)
	s := newFileServer(t, dir)
	s.cutOnce["/blob"] = 1 << 19
	d, err := NewFetcher(quickOpts()).Open(context.Background(), s.url("blob"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.etagSalt = "v2" // the file "changes" before the client resumes
	s.mu.Unlock()
	_, err = io.ReadAll(d)
	d.Close()
	if err == nil || !strings.Contains(err.Error(), "changed on the server") {
		t.Fatalf("want a 'changed on the server' error, got %v", err)
	}
}

func TestDownloadTruncatedWithoutRanges(t *testing.T) {
	dir := t.TempDir()
	randomFile(t, dir, "blob", 1<<20)
	s := newFileServer(t, dir)
	s.ranges = false
	s.cutOnce["/blob"] = 1000
	d, err := NewFetcher(quickOpts()).Open(context.Background(), s.url("blob"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(d)
	d.Close()
	if err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("want a truncation error, got %v", err)
	}
}

func TestDownloadStalls(t *testing.T) {
	dir := t.TempDir()
	randomFile(t, dir, "blob", 1<<20)
	s := newFileServer(t, dir)
	s.stall["/blob"] = 100
	opts := quickOpts()
	opts.StallTimeout = time.Second
	opts.Retries = -1
	start := time.Now()
	d, err := NewFetcher(opts).Open(context.Background(), s.url("blob"), nil)
	if err == nil {
		_, err = io.ReadAll(d)
		d.Close()
	}
	el := time.Since(start)
	if err == nil || !errors.Is(err, errStalled) || !strings.Contains(err.Error(), "bytes/s") {
		t.Fatalf("want a stall error, got %v", err)
	}
	if el > 2500*time.Millisecond {
		t.Fatalf("stall detected after %s, configured 1s", el)
	}
}

func TestFetchSmall(t *testing.T) {
	dir := t.TempDir()
	randomFile(t, dir, "big", auxLimit+1)
	want := randomFile(t, dir, "ok", 100)
	s := newFileServer(t, dir)
	f := NewFetcher(quickOpts())
	ctx := context.Background()
	if _, err := f.FetchSmall(ctx, s.url("big"), auxLimit); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized file: %v", err)
	}
	if _, err := f.FetchSmall(ctx, s.url("missing"), auxLimit); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing file: %v, want ErrNotFound", err)
	}
	if got, err := f.FetchSmall(ctx, s.url("ok"), auxLimit); err != nil || !bytes.Equal(got, want) {
		t.Errorf("small file: %v", err)
	}
	if got, err := f.FetchSmall(ctx, "file://"+filepath.Join(dir, "ok"), auxLimit); err != nil || !bytes.Equal(got, want) {
		t.Errorf("file:// small file: %v", err)
	}
	if _, err := f.FetchSmall(ctx, "file://"+filepath.Join(dir, "nope"), auxLimit); !errors.Is(err, ErrNotFound) {
		t.Errorf("file:// missing: %v", err)
	}
}

func TestWriteSparse(t *testing.T) {
	data := make([]byte, 8<<20)
	copy(data[5000:], []byte("hello"))
	copy(data[len(data)-3:], []byte("end"))
	p := filepath.Join(t.TempDir(), "img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	n, err := WriteSparse(f, bytes.NewReader(data))
	f.Close()
	if err != nil || n != int64(len(data)) {
		t.Fatal(n, err)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, data) {
		t.Fatal("sparse copy differs")
	}
	st, _ := os.Stat(p)
	if u := usage(st); u > 64<<10 {
		t.Errorf("8 MiB mostly-zero image uses %d bytes: not sparse", u)
	}
}

// TestProxyFromEnvironment runs a download in a child process (Go reads
// the proxy variables once per process) with http_proxy / HTTP_PROXY set,
// against a host name that only the proxy can resolve.
func TestProxyFromEnvironment(t *testing.T) {
	if os.Getenv("BERTH_PROXY_CHILD") == "1" {
		o := quickOpts()
		o.Retries = -1
		b, err := NewFetcher(o).FetchSmall(context.Background(), "http://berth-proxy-test.invalid/f", 100)
		if err != nil {
			os.Stdout.WriteString("ERR " + err.Error())
			return
		}
		os.Stdout.Write(b)
		return
	}
	var seen []string
	var mu sync.Mutex
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.RequestURI)
		mu.Unlock()
		io.WriteString(w, "via proxy")
	}))
	proxy.Listener.Close()
	proxy.Listener = l
	proxy.Start()
	defer proxy.Close()
	for _, env := range [][]string{
		{"http_proxy=" + proxy.URL},
		{"HTTP_PROXY=" + proxy.URL},
		{"http_proxy=" + proxy.URL, "no_proxy=berth-proxy-test.invalid"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestProxyFromEnvironment$")
		cmd.Env = append(os.Environ(), "BERTH_PROXY_CHILD=1", "http_proxy=", "HTTP_PROXY=", "no_proxy=", "NO_PROXY=")
		cmd.Env = append(cmd.Env, env...)
		out, _ := cmd.Output()
		viaProxy := strings.HasPrefix(string(out), "via proxy")
		wantProxy := len(env) == 1
		if viaProxy != wantProxy {
			t.Errorf("%v: got %q", env, out)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "http://berth-proxy-test.invalid/f" {
		t.Errorf("proxy saw %q, want two absolute-URI requests", seen)
	}
}

func FuzzParseVerify(f *testing.F) {
	for _, s := range []string{"no", "checksum", "signature", strings.Repeat("Ab", 32), "abc", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVerify(s)
		if err != nil {
			return
		}
		switch v.Mode {
		case VerifyNo, VerifyChecksum, VerifySignature:
		case VerifyHash:
			if len(v.Hash) != 64 || strings.Trim(v.Hash, "0123456789abcdef") != "" {
				t.Fatalf("ParseVerify(%q) hash %q", s, v.Hash)
			}
		default:
			t.Fatalf("ParseVerify(%q) mode %q", s, v.Mode)
		}
	})
}
