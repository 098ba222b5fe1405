package repo

import (
	"errors"
	"io"
	"sync/atomic"
)

// A slab holds a run of a stream's bytes. Chunks are cut as slices of
// slabs, never copied out: a slab goes back to its pool once the one
// writing into it, the chunker and every chunk cut from it are done with it.
type slab struct {
	buf  []byte       // head (room for a chunk begun in the previous slab), then body
	refs atomic.Int32 // holds: its filler's, the chunker's, one per chunk in flight
	pool *slabPool
}

// hold takes one more hold on s.
func (s *slab) hold() { s.refs.Add(1) }

// release drops one hold on s; the last one gives s back to its pool.
func (s *slab) release() {
	if s.refs.Add(-1) == 0 {
		s.pool.put(s)
	}
}

// slabPool keeps a writer's idle slabs, so a stream reuses the pages an
// earlier one faulted in instead of allocating fresh ones.
type slabPool struct {
	head int // the chunker's largest chunk: a chunk begun in one slab is moved to the next slab's head
	size int
	free chan *slab
}

const (
	slabBody   = 4 << 20 // a slab's body, filled from the stream
	slabsKept  = 6       // idle slabs a writer keeps
	readPiece  = 1 << 20 // bytes the read-ahead reads before handing them on
	readPieces = 4       // pieces the read-ahead may be ahead of the chunker
)

func newSlabPool(maxChunk int) *slabPool {
	return &slabPool{head: maxChunk, size: maxChunk + max(slabBody, maxChunk), free: make(chan *slab, slabsKept)}
}

// get returns an idle or new slab with one hold, its caller's.
func (p *slabPool) get() *slab {
	var s *slab
	select {
	case s = <-p.free:
	default:
		s = &slab{buf: make([]byte, p.size), pool: p}
	}
	s.refs.Store(1)
	return s
}

func (p *slabPool) put(s *slab) {
	select {
	case p.free <- s:
	default: // enough kept; the garbage collector takes it
	}
}

// piece is a run of a stream's bytes, s.buf[lo:hi]: either right after the
// previous piece in the same slab, or at the start of a new slab's body.
type piece struct {
	s      *slab
	lo, hi int
}

// pieces delivers a stream's bytes in slabs.
type pieces interface {
	// next returns the bytes after the piece that ended at cur.buf[end]
	// (cur nil at the start), or io.EOF after the last. A piece in
	// another slab than cur comes with a hold on that slab for the caller.
	next(cur *slab, end int) (piece, error)
}

// directPieces reads a stream into slabs in the chunker's goroutine, for
// sources that are fast to read or read ahead themselves.
type directPieces struct {
	rd   io.Reader
	pool *slabPool
	err  error // the source's error, returned after its last bytes
}

func (d *directPieces) next(cur *slab, end int) (piece, error) {
	if d.err != nil {
		return piece{}, d.err
	}
	p := piece{s: cur, lo: end}
	if cur == nil || end == len(cur.buf) {
		p.s, p.lo = d.pool.get(), d.pool.head
	}
	for {
		n, err := d.rd.Read(p.s.buf[p.lo:])
		if err != nil {
			d.err = err
		}
		if n > 0 {
			p.hi = p.lo + n
			return p, nil
		}
		if err != nil {
			if p.s != cur {
				p.s.release()
			}
			return piece{}, err
		}
	}
}

// readAhead reads from a slow source (a pipe, a socket) into slabs in its
// own goroutine, so the chunker does not wait on read system calls.
type readAhead struct {
	full chan piece // filled pieces in order; closed at the end
	errc chan error // the source's error, if it failed
	done chan struct{}
}

func newReadAhead(src io.Reader, pool *slabPool) *readAhead {
	r := &readAhead{full: make(chan piece, readPieces), errc: make(chan error, 1), done: make(chan struct{})}
	go r.fill(src, pool)
	return r
}

func (r *readAhead) fill(src io.Reader, pool *slabPool) {
	defer close(r.full)
	var s *slab // the slab being filled, with the filler's hold
	defer func() {
		if s != nil {
			s.release()
		}
	}()
	off := 0
	for {
		if s == nil || off == len(s.buf) {
			if s != nil {
				s.release()
			}
			s, off = pool.get(), pool.head
		}
		n, err := io.ReadFull(src, s.buf[off:min(off+readPiece, len(s.buf))])
		if n > 0 {
			if off == pool.head {
				s.hold() // the chunker's, passed on with the slab's first piece
			}
			select {
			case r.full <- piece{s: s, lo: off, hi: off + n}:
			case <-r.done:
				if off == pool.head {
					s.release()
				}
				return
			}
			off += n
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

func (r *readAhead) next(*slab, int) (piece, error) {
	p, ok := <-r.full
	if ok {
		return p, nil
	}
	select {
	case err := <-r.errc:
		r.errc <- err // keep reporting it
		return piece{}, err
	default:
		return piece{}, io.EOF
	}
}

// Close stops reading ahead. A read already blocked in the source ends when
// the source does; its slab is not reused before. Slabs of pieces never
// taken go to the garbage collector, not back to the pool.
func (r *readAhead) Close() { close(r.done) }
