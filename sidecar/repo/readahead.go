package repo

import (
	"errors"
	"io"
)

// readAhead reads from a slow source (a pipe, a socket) in its own
// goroutine, so the chunker does not wait on read system calls.
type readAhead struct {
	full  chan []byte // filled buffers in order; closed at the end
	empty chan []byte // buffers to fill again
	errc  chan error  // the source's error, if it failed
	done  chan struct{}
	buf   []byte // buffer being consumed
	cur   []byte // its unread part
}

const (
	readAheadBuf   = 1 << 20
	readAheadDepth = 4
)

func newReadAhead(src io.Reader) *readAhead {
	r := &readAhead{full: make(chan []byte, readAheadDepth), empty: make(chan []byte, readAheadDepth+1),
		errc: make(chan error, 1), done: make(chan struct{})}
	for range readAheadDepth + 1 {
		r.empty <- make([]byte, readAheadBuf)
	}
	go r.fill(src)
	return r
}

func (r *readAhead) fill(src io.Reader) {
	defer close(r.full)
	for {
		var buf []byte
		select {
		case buf = <-r.empty:
		case <-r.done:
			return
		}
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			select {
			case r.full <- buf[:n]:
			case <-r.done:
				return
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return
		}
		if err != nil {
			r.errc <- err
			return
		}
	}
}

func (r *readAhead) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.buf != nil {
			r.empty <- r.buf[:cap(r.buf)]
			r.buf = nil
		}
		buf, ok := <-r.full
		if !ok {
			select {
			case err := <-r.errc:
				r.errc <- err // keep reporting it
				return 0, err
			default:
				return 0, io.EOF
			}
		}
		r.buf, r.cur = buf, buf
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close stops reading ahead. A read already blocked in the source ends when
// the source does.
func (r *readAhead) Close() { close(r.done) }
