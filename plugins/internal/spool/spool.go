// Package spool loads a backup's data entries with several database
// sessions at once. The host hands a plugin its entries one after another;
// a Pool copies each into a 0600 spool file and queues it for the next free
// session, so the sessions load in parallel while the stream goes on. At
// most twice as many entries as sessions wait on disk, never the whole
// backup. An entry may be queued before it is whole (follow): a session
// then reads its file as it is written.
//
// The first failure of any session, or of spooling, cancels the others
// and is the one every later call returns.
package spool

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
)

// Entry is one entry a session loads. Meta is the caller's (the database
// it goes to, for one).
type Entry struct {
	Name string
	Meta any
}

// File is an entry's spool file.
type File struct {
	Path   string
	follow *growing // set when queued before it was whole
}

// Whole says the file was complete when it was queued.
func (f *File) Whole() bool { return f.follow == nil }

// Open reads the file from its start; a file queued before it was whole
// is read up to what is written, until writing ends (then io.EOF, or the
// writer's error).
func (f *File) Open() (io.ReadCloser, error) {
	h, err := os.Open(f.Path)
	if err != nil || f.follow == nil {
		return h, err
	}
	return &followReader{f: h, g: f.follow}, nil
}

// A Worker is one session. The pool calls Load for one entry at a time,
// then End once, with failed set when any session or the spooling failed.
type Worker interface {
	Load(ctx context.Context, e Entry, f *File) error
	End(failed bool) error
}

// Pool is the sessions and their queue.
type Pool struct {
	dir, prefix string
	jobs        chan job
	pending     sync.WaitGroup // entries submitted and not yet loaded
	done        sync.WaitGroup // the sessions
	cancel      context.CancelFunc
	closed      sync.Once

	mu  sync.Mutex
	err error // the first failure
}

type job struct {
	e Entry
	f *File
}

// New starts workers sessions, each from newWorker; cancel is called at
// the first failure. Spool files go to dir (default the system's
// temporary directory), named prefix*.
func New(ctx context.Context, cancel context.CancelFunc, workers int, dir, prefix string, newWorker func(ctx context.Context) (Worker, error)) *Pool {
	p := &Pool{dir: dir, prefix: prefix, jobs: make(chan job, workers), cancel: cancel}
	for range workers {
		p.done.Add(1)
		go p.run(ctx, newWorker)
	}
	return p
}

// run is one session: it loads entries until the queue closes. After a
// failure it only drops what it is given.
func (p *Pool) run(ctx context.Context, newWorker func(ctx context.Context) (Worker, error)) {
	defer p.done.Done()
	w, err := newWorker(ctx)
	if err != nil {
		p.fail(err)
	}
	for j := range p.jobs {
		if w != nil && p.Failed() == nil && ctx.Err() == nil {
			if err := w.Load(ctx, j.e, j.f); err != nil {
				p.fail(err)
			}
		}
		os.Remove(j.f.Path)
		p.pending.Done()
	}
	if w == nil {
		return
	}
	if err := w.End(p.Failed() != nil || ctx.Err() != nil); err != nil {
		p.fail(err)
	}
}

func (p *Pool) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.cancel()
}

// Failed is the first failure, or nil.
func (p *Pool) Failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Submit spools r as entry e and queues it, and returns how many bytes it
// read. It waits while every session is busy and the queue is full. With
// follow, the entry is queued first and a session loads it while it is
// being spooled.
func (p *Pool) Submit(ctx context.Context, e Entry, r io.Reader, follow bool) (int64, error) {
	if err := p.Failed(); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(p.dir, p.prefix)
	if err != nil {
		return 0, fmt.Errorf("spool %s: %w", e.Name, err)
	}
	file := &File{Path: f.Name()}
	queue := func() error {
		p.pending.Add(1)
		select {
		case p.jobs <- job{e: e, f: file}:
			return nil
		case <-ctx.Done():
			p.pending.Done()
			os.Remove(file.Path)
			if err := p.Failed(); err != nil {
				return err
			}
			return ctx.Err()
		}
	}
	var w io.Writer = f
	if follow {
		file.follow = newGrowing()
		if err := queue(); err != nil {
			f.Close()
			return 0, err
		}
		w = growingWriter{f, file.follow}
	}
	// A failure elsewhere stops the copy at the next read.
	n, err := io.Copy(w, ctxReader{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		err = fmt.Errorf("spool %s: %w", e.Name, err)
		if perr := p.Failed(); perr != nil {
			err = perr
		}
	}
	if follow {
		file.follow.finish(err) // the session removes the file
		return n, err
	}
	if err != nil {
		os.Remove(file.Path)
		return n, err
	}
	return n, queue()
}

// Wait returns when every entry submitted is loaded, or the first failure.
func (p *Pool) Wait() error {
	p.pending.Wait()
	return p.Failed()
}

// Close ends the sessions (Worker.End) and returns the first failure.
func (p *Pool) Close() error {
	p.closed.Do(func() { close(p.jobs) })
	p.done.Wait()
	return p.Failed()
}

// WithContext reads r until ctx is done, then fails with ctx's error: a
// copy from it stops at its next read.
func WithContext(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// growing is the state of a spool file being written: how much is
// written, and whether (and how) writing ended.
type growing struct {
	mu      sync.Mutex
	cond    *sync.Cond
	written int64
	done    bool
	err     error
}

func newGrowing() *growing {
	g := &growing{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *growing) add(n int) {
	g.mu.Lock()
	g.written += int64(n)
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *growing) finish(err error) {
	g.mu.Lock()
	g.done, g.err = true, err
	g.mu.Unlock()
	g.cond.Broadcast()
}

// growingWriter writes to the spool file and tells its readers.
type growingWriter struct {
	f *os.File
	g *growing
}

func (w growingWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.g.add(n)
	return n, err
}

// followReader reads a spool file while it is written.
type followReader struct {
	f   *os.File
	g   *growing
	off int64
}

func (r *followReader) Read(b []byte) (int, error) {
	r.g.mu.Lock()
	for r.off >= r.g.written && !r.g.done {
		r.g.cond.Wait()
	}
	avail, done, werr := r.g.written-r.off, r.g.done, r.g.err
	r.g.mu.Unlock()
	if avail <= 0 {
		if done && werr != nil {
			return 0, werr
		}
		return 0, io.EOF
	}
	n, err := r.f.ReadAt(b[:min(int64(len(b)), avail)], r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (r *followReader) Close() error { return r.f.Close() }
