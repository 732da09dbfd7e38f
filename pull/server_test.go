package pull

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fileServer is a loopback HTTP server over a directory, configurable the
// ways real mirrors differ: ETags on or off, redirects, a connection cut
// halfway (once), a stall, and it records every request.
type fileServer struct {
	*httptest.Server
	dir string

	mu        sync.Mutex
	etag      bool
	ranges    bool              // Accept-Ranges / Range support (default on)
	redirects map[string]string // path -> target path
	cutOnce   map[string]int64  // path -> cut the connection after N body bytes, once
	stall     map[string]int64  // path -> send N bytes, then stall until the client goes
	etagSalt  string            // changes the ETag (simulates a new version)
	log       []request
}

type request struct {
	Method, Path, Range, IfRange, IfNoneMatch, UserAgent string
	Status                                               int
}

func newFileServer(t *testing.T, dir string) *fileServer {
	t.Helper()
	s := &fileServer{dir: dir, etag: true, ranges: true, redirects: map[string]string{}, cutOnce: map[string]int64{}, stall: map[string]int64{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Server.Listener.Close()
	s.Server.Listener = l
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *fileServer) url(name string) string { return s.URL + "/" + name }

func (s *fileServer) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.log...)
}

func (s *fileServer) reset() {
	s.mu.Lock()
	s.log = nil
	s.mu.Unlock()
}

// statusRecorder keeps the status code for the request log.
type statusRecorder struct {
	http.ResponseWriter
	status  int
	written int64
	limit   int64 // stop after this many body bytes (-1: none)
	onLimit func()
}

func (w *statusRecorder) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	if w.limit >= 0 && w.written+int64(len(p)) > w.limit {
		p = p[:w.limit-w.written]
		n, _ := w.ResponseWriter.Write(p)
		w.written += int64(n)
		w.ResponseWriter.(http.Flusher).Flush()
		w.onLimit()
		panic(http.ErrAbortHandler)
	}
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

func (s *fileServer) serve(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, limit: -1}
	s.mu.Lock()
	entry := request{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), IfRange: r.Header.Get("If-Range"), IfNoneMatch: r.Header.Get("If-None-Match"), UserAgent: r.Header.Get("User-Agent")}
	target, redirect := s.redirects[r.URL.Path]
	cut, doCut := s.cutOnce[r.URL.Path]
	if doCut {
		delete(s.cutOnce, r.URL.Path)
	}
	stallAt, doStall := s.stall[r.URL.Path]
	etagOn, rangesOn, salt := s.etag, s.ranges, s.etagSalt
	s.mu.Unlock()
	defer func() {
		entry.Status = rec.status
		s.mu.Lock()
		s.log = append(s.log, entry)
		s.mu.Unlock()
	}()
	if redirect {
		http.Redirect(rec, r, target, http.StatusFound)
		return
	}
	p := filepath.Join(s.dir, filepath.FromSlash(path.Clean("/"+r.URL.Path)))
	f, err := os.Open(p)
	if err != nil {
		http.NotFound(rec, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		http.NotFound(rec, r)
		return
	}
	if etagOn {
		h := sha256.Sum256([]byte(fmt.Sprint(p, st.Size(), st.ModTime().UnixNano(), salt)))
		rec.Header().Set("ETag", `"`+hex.EncodeToString(h[:8])+`"`)
	}
	if doStall {
		rec.Header().Set("Content-Length", fmt.Sprint(st.Size()))
		rec.WriteHeader(200)
		buf := make([]byte, stallAt)
		n, _ := f.Read(buf)
		rec.Write(buf[:n])
		rec.ResponseWriter.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
		return
	}
	if doCut {
		rec.limit = cut
		rec.onLimit = func() {}
	}
	if !rangesOn {
		// A server without range support (ServeContent would add it).
		rec.Header().Set("Content-Length", fmt.Sprint(st.Size()))
		rec.WriteHeader(200)
		io.Copy(rec, f)
		return
	}
	http.ServeContent(rec, r, st.Name(), st.ModTime(), f)
}

func (s *fileServer) count(pathSuffix string) int {
	n := 0
	for _, r := range s.requests() {
		if strings.HasSuffix(r.Path, pathSuffix) {
			n++
		}
	}
	return n
}
