package pull

import (
	"io"
	"sync"
	"sync/atomic"
)

// readahead decouples a producer (the decompressor, which also pulls the
// download through the hash) from the consumer (the tar reader writing
// files): one goroutine fills a few fixed buffers ahead, so decoding and
// writing the tree run on two cores at once. Memory is bounded by
// n*size bytes.
//
// The goroutine owns src and closes it when it stops: Close only asks it to
// stop, so a caller never waits on a read blocked on the network (closing
// the download unblocks it).
type readahead struct {
	full  chan []byte
	free  chan []byte
	stop  chan struct{}
	once  sync.Once
	cur   []byte
	buf   []byte // the buffer cur points into, returned to free when used
	err   error  // set before full is closed
	ended bool

	partial bool        // hand over partly filled buffers
	waiting atomic.Bool // the reader is blocked on full
	started bool        // a buffer was handed over (fill's own)
}

// minHandover is the least a partial readahead hands over, after its first
// buffer, while the download keeps coming.
const minHandover = 64 << 10

func newReadahead(src io.ReadCloser, n, size int) *readahead {
	return startReadahead(src, n, size, false)
}

// newNetReadahead is a readahead over a download: its first bytes reach the
// reader at once (the decoder needs only the magic bytes to start), later
// ones as soon as the reader waits and minHandover bytes are there, not
// only when a buffer is full.
func newNetReadahead(src io.ReadCloser, n, size int) *readahead {
	return startReadahead(src, n, size, true)
}

func startReadahead(src io.ReadCloser, n, size int, partial bool) *readahead {
	r := &readahead{full: make(chan []byte, n), free: make(chan []byte, n), stop: make(chan struct{}), partial: partial}
	for range n {
		r.free <- make([]byte, size)
	}
	go r.fill(src)
	return r
}

func (r *readahead) fill(src io.ReadCloser) {
	defer func() {
		src.Close() // before full is closed: the reader may then use what src reads from
		close(r.full)
	}()
	for {
		var b []byte
		select {
		case b = <-r.free:
		case <-r.stop:
			r.err = io.ErrClosedPipe
			return
		}
		var n int
		var err error
		for n < len(b) && err == nil {
			var k int
			k, err = src.Read(b[n:])
			n += k
			// A partial readahead hands its first buffer over at
			// once (the decoder needs only the magic bytes to start),
			// later ones when the reader is waiting and they hold a
			// useful amount: handing over every short network read
			// costs more wake-ups than it saves.
			if r.partial && n > 0 && (!r.started || (n >= minHandover && r.waiting.Load())) {
				break
			}
		}
		if n == 0 && err == nil {
			r.free <- b // cannot block: b came from free
			continue
		}
		if n > 0 {
			r.started = true
			select {
			case r.full <- b[:n]:
			case <-r.stop:
				r.err = io.ErrClosedPipe
				return
			}
		}
		if err != nil {
			r.err = err
			return
		}
	}
}

// Read implements io.Reader.
func (r *readahead) Read(p []byte) (int, error) {
	if len(r.cur) == 0 {
		if r.buf != nil {
			r.free <- r.buf[:cap(r.buf)]
			r.buf = nil
		}
		if r.ended {
			return 0, r.err
		}
		r.waiting.Store(true)
		b, ok := <-r.full
		r.waiting.Store(false)
		if !ok {
			r.ended = true
			return 0, r.err
		}
		r.cur, r.buf = b, b
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close stops the goroutine (it closes the source when it notices).
func (r *readahead) Close() error {
	r.once.Do(func() { close(r.stop) })
	return nil
}
