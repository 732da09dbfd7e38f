package pull

import (
	"io"
	"sync"
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
}

func newReadahead(src io.ReadCloser, n, size int) *readahead {
	r := &readahead{full: make(chan []byte, n), free: make(chan []byte, n), stop: make(chan struct{})}
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
		n, err := io.ReadFull(src, b)
		if n > 0 {
			select {
			case r.full <- b[:n]:
			case <-r.stop:
				r.err = io.ErrClosedPipe
				return
			}
		}
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
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
		b, ok := <-r.full
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
