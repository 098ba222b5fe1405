package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/amber-backup/amber/plugins/api/clock"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
)

// Defaults for Options fields left zero.
const (
	DefaultMaxAttempts  = 10
	DefaultMaxElapsed   = 5 * time.Minute
	DefaultInitialDelay = 500 * time.Millisecond
	DefaultMaxDelay     = 60 * time.Second
	DefaultMultiplier   = 2.0
	DefaultJitter       = 0.5
)

// Options tune the retry policy. The zero value is a sensible production
// policy: up to 10 attempts within 5 minutes, delays from 0.5 s doubling to at
// most 60 s, each shortened by up to half at random.
type Options struct {
	// MaxAttempts bounds the attempts of one operation, the first included.
	// For a Load reader it bounds consecutive reopens that deliver no new
	// byte.
	MaxAttempts int
	// MaxElapsed bounds the time spent on one operation: no retry is
	// started that would wait beyond it.
	MaxElapsed time.Duration
	// InitialDelay is the wait before the first retry; it grows by
	// Multiplier per attempt up to MaxDelay.
	InitialDelay time.Duration
	MaxDelay     time.Duration
	Multiplier   float64
	// Jitter is the fraction of each delay that is randomised (0 to 1):
	// the wait is in [d*(1-Jitter), d]. Negative means no jitter.
	Jitter float64
	// A server's Retry-After (storage.RetryAfter) raises the wait to at
	// least that delay, even beyond MaxDelay; MaxElapsed still applies.

	// Clock measures elapsed time and waits between attempts (default
	// clock.Real); tests pass fakes.
	Clock clock.Clock
	// Rand returns a number in [0, 1) for jitter (default math/rand/v2).
	Rand func() float64

	// OnRetry, if set, is called before each retry with the operation
	// ("save", "create", "load", "stat", "list", "remove"), the object name (or list
	// prefix), the number of the attempt that failed (1 for the first) and
	// its error.
	OnRetry func(op, name string, attempt int, err error)
}

// Backend retries the operations of the backend it wraps.
type Backend struct {
	inner storage.Backend
	opts  Options
}

var _ storage.Backend = (*Backend)(nil)

// New wraps b with the retry policy opts.
func New(b storage.Backend, opts Options) *Backend {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.MaxElapsed <= 0 {
		opts.MaxElapsed = DefaultMaxElapsed
	}
	if opts.InitialDelay <= 0 {
		opts.InitialDelay = DefaultInitialDelay
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.Multiplier < 1 {
		opts.Multiplier = DefaultMultiplier
	}
	switch {
	case opts.Jitter == 0:
		opts.Jitter = DefaultJitter
	case opts.Jitter < 0:
		opts.Jitter = 0
	case opts.Jitter > 1:
		opts.Jitter = 1
	}
	opts.Clock = clock.Or(opts.Clock)
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	return &Backend{inner: b, opts: opts}
}

// Inner returns the wrapped backend.
func (b *Backend) Inner() storage.Backend { return b.inner }

// delay is the wait after the given failed attempt (1-based).
func (b *Backend) delay(attempt int, err error) time.Duration {
	d := float64(b.opts.InitialDelay) * math.Pow(b.opts.Multiplier, float64(attempt-1))
	if d > float64(b.opts.MaxDelay) {
		d = float64(b.opts.MaxDelay)
	}
	d -= d * b.opts.Jitter * b.opts.Rand()
	wait := time.Duration(d)
	if ra, ok := storage.RetryAfter(err); ok && ra > wait {
		wait = ra
	}
	return wait
}

// policy tracks the attempts of one operation (or of one reader's run of
// failures without progress).
type policy struct {
	b        *Backend
	op, name string
	start    time.Time
	attempt  int
}

func (b *Backend) newPolicy(op, name string) *policy {
	return &policy{b: b, op: op, name: name, start: b.opts.Clock.Now()}
}

// next decides after a failed attempt whether to try again. It waits for the
// backoff and returns nil to go on, or the error to give back.
func (p *policy) next(ctx context.Context, err error) error {
	p.attempt++
	if storage.IsPermanent(err) {
		return err
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return p.stopped(ctxErr, err)
	}
	if p.attempt >= p.b.opts.MaxAttempts {
		return p.giveUp(err)
	}
	wait := p.b.delay(p.attempt, err)
	if p.b.opts.Clock.Now().Add(wait).Sub(p.start) > p.b.opts.MaxElapsed {
		return p.giveUp(err)
	}
	if p.b.opts.OnRetry != nil {
		p.b.opts.OnRetry(p.op, p.name, p.attempt, err)
	}
	if serr := clock.Sleep(ctx, p.b.opts.Clock, wait); serr != nil {
		return p.stopped(serr, err)
	}
	return nil
}

func (p *policy) giveUp(err error) error {
	elapsed := p.b.opts.Clock.Now().Sub(p.start).Round(time.Millisecond)
	return fmt.Errorf("%s %s: giving up after %d attempts in %s: %w", p.op, p.name, p.attempt, elapsed, err)
}

// stopped reports that the context ended while retrying; the result is
// permanent (it wraps the context's error) and keeps the last failure.
func (p *policy) stopped(ctxErr, last error) error {
	return fmt.Errorf("%s %s: %w (after %d attempts; last error: %v)", p.op, p.name, ctxErr, p.attempt, last)
}

// do runs fn until it succeeds or the policy gives up.
func (b *Backend) do(ctx context.Context, op, name string, fn func() error) error {
	p := b.newPolicy(op, name)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if err := p.next(ctx, err); err != nil {
			return err
		}
	}
}

// Save implements storage.Backend; each attempt re-reads r from the start.
func (b *Backend) Save(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	return b.do(ctx, "save", name, func() error { return b.inner.Save(ctx, name, r, size) })
}

// Stat implements storage.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (storage.FileInfo, error) {
	var fi storage.FileInfo
	err := b.do(ctx, "stat", name, func() error {
		var err error
		fi, err = b.inner.Stat(ctx, name)
		return err
	})
	return fi, err
}

// callbackError marks an error returned by List's callback, which is the
// caller's and never retried.
type callbackError struct{ err error }

func (c *callbackError) Error() string { return c.err.Error() }
func (c *callbackError) Unwrap() error { return c.err }

// List implements storage.Backend. A listing that fails part-way is retried
// and objects already passed to fn are not passed again. Errors from fn are
// returned as they are, without retrying.
func (b *Backend) List(ctx context.Context, prefix string, fn func(storage.FileInfo) error) error {
	seen := make(map[string]struct{})
	var cbErr error
	err := b.do(ctx, "list", prefix, func() error {
		err := b.inner.List(ctx, prefix, func(fi storage.FileInfo) error {
			if _, ok := seen[fi.Name]; ok {
				return nil
			}
			seen[fi.Name] = struct{}{}
			if err := fn(fi); err != nil {
				cbErr = err
				return storage.Permanent(&callbackError{err})
			}
			return nil
		})
		if cbErr != nil {
			return storage.Permanent(&callbackError{cbErr})
		}
		return err
	})
	if cbErr != nil {
		return cbErr
	}
	return err
}

// Remove implements storage.Backend. If an attempt removed the object but
// its response was lost, the retry reports ErrNotFound: callers that delete
// should take ErrNotFound as done.
func (b *Backend) Remove(ctx context.Context, name string) error {
	return b.do(ctx, "remove", name, func() error { return b.inner.Remove(ctx, name) })
}

var _ storage.Creator = (*Backend)(nil)

// Create implements storage.Creator when the wrapped backend does
// (storage.AsCreator tells), retrying like Save.
//
// A retry can meet the object that an earlier attempt stored before its
// reply was lost. So when an attempt after the first gets ErrExists, Create
// compares the stored object with its source, size first, then byte for
// byte (one download, only on this rare path): the same content means the
// object is ours and Create succeeds; different content gives ErrExists. A
// concurrent writer that stored the very same bytes is indistinguishable
// from our own earlier attempt and counts as success too, which is what the
// caller wanted: the name holds exactly its content. A first attempt that
// gets ErrExists returns it without comparing.
func (b *Backend) Create(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	c, ok := storage.AsCreator(b.inner)
	if !ok {
		return storage.Permanent(fmt.Errorf("create %s: %s cannot create objects conditionally", name, b.inner.Location()))
	}
	attempts := 0
	return b.do(ctx, "create", name, func() error {
		attempts++
		err := c.Create(ctx, name, r, size)
		if attempts == 1 || !errors.Is(err, storage.ErrExists) {
			return err
		}
		same, cerr := sameContent(ctx, b.inner, name, r, size)
		if cerr != nil {
			if errors.Is(cerr, storage.ErrNotFound) {
				// Removed meanwhile: try again.
				return fmt.Errorf("create %s: the existing object vanished while being compared: %w", name, errRetryCreate)
			}
			return fmt.Errorf("create %s: compare with the existing object: %w", name, cerr)
		}
		if same {
			return nil
		}
		return err
	})
}

// errRetryCreate is a transient error that makes Create try again.
var errRetryCreate = errors.New("retry")

// sameContent reports whether the object name holds exactly size bytes equal
// to r's.
func sameContent(ctx context.Context, be storage.Backend, name string, r io.ReaderAt, size int64) (bool, error) {
	fi, err := be.Stat(ctx, name)
	if err != nil {
		return false, err
	}
	if fi.Size != size {
		return false, nil
	}
	rc, err := be.Load(ctx, name, 0, 0)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	want := io.NewSectionReader(r, 0, size)
	a, b := make([]byte, 64<<10), make([]byte, 64<<10)
	for off := int64(0); ; {
		n, err := io.ReadFull(rc, a)
		if n > 0 {
			if _, werr := io.ReadFull(want, b[:n]); werr != nil {
				return false, nil // stored object longer than the source
			}
			if !bytes.Equal(a[:n], b[:n]) {
				return false, nil
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return off == size, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// Location implements storage.Backend.
func (b *Backend) Location() string { return b.inner.Location() }

// Close implements storage.Backend.
func (b *Backend) Close() error { return b.inner.Close() }

// Load implements storage.Backend. Opening is retried; the reader resumes
// after read errors and premature ends, see the package doc.
func (b *Backend) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := b.do(ctx, "load", name, func() error {
		var err error
		rc, err = b.inner.Load(ctx, name, offset, length)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &reader{b: b, ctx: ctx, name: name, offset: offset, length: length, rc: rc, size: -1}, nil
}

// reader delivers length bytes (or the rest of the object) from offset,
// reopening the object where the stream broke.
type reader struct {
	b      *Backend
	ctx    context.Context
	name   string
	offset int64 // of the first byte requested
	length int64 // requested; 0 means to the end of the object
	read   int64 // bytes delivered so far

	mu     sync.Mutex
	rc     io.ReadCloser
	size   int64   // object size from Stat, -1 until needed
	pol    *policy // failures since the last byte delivered, nil if none
	err    error   // final error, returned from now on
	closed bool
}

func (r *reader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errors.New("read from closed reader")
	}
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.length > 0 {
		left := r.length - r.read
		if left <= 0 {
			return 0, io.EOF
		}
		if int64(len(p)) > left {
			p = p[:left]
		}
	}
	for {
		n, err := r.rc.Read(p)
		r.read += int64(n)
		if n > 0 {
			r.pol = nil // progress: a new run of failures starts afresh
		}
		if err == nil {
			return n, nil
		}
		done, serr := r.complete()
		switch {
		case done:
			r.err = io.EOF
		case err == io.EOF && serr != nil:
			r.err = serr
		case err == io.EOF:
			err = fmt.Errorf("load %s: stream ended after %d of %d bytes: %w", r.name, r.read, r.want(), io.ErrUnexpectedEOF)
		}
		if r.err == nil {
			// The stream broke before its end: reopen where it broke.
			r.err = r.resume(err)
		}
		if n > 0 {
			return n, nil // r.err, if any, comes with the next Read
		}
		if r.err != nil {
			return 0, r.err
		}
	}
}

// want is the number of bytes the reader must deliver, once size is known.
func (r *reader) want() int64 {
	w := r.size - r.offset
	if w < 0 {
		w = 0
	}
	if r.length > 0 && r.length < w {
		w = r.length
	}
	return w
}

// complete reports whether everything requested has been delivered, asking
// the object's size (once) when the request does not tell.
func (r *reader) complete() (bool, error) {
	if r.length > 0 && r.read >= r.length {
		return true, nil
	}
	if r.size < 0 {
		if s, ok := r.rc.(ObjectSizer); ok && s.ObjectSize() >= 0 {
			r.size = s.ObjectSize()
			return r.read >= r.want(), nil
		}
		fi, err := r.b.Stat(r.ctx, r.name)
		if err != nil {
			return false, fmt.Errorf("load %s: check size after end of stream: %w", r.name, err)
		}
		r.size = fi.Size
	}
	return r.read >= r.want(), nil
}

// resume reopens the object at the first byte not yet delivered, retrying
// within the policy. cause is why the stream broke.
func (r *reader) resume(cause error) error {
	if r.pol == nil {
		r.pol = r.b.newPolicy("load", r.name)
	}
	_ = r.rc.Close()
	r.rc = io.NopCloser(eofReader{})
	for {
		if err := r.pol.next(r.ctx, cause); err != nil {
			return err
		}
		var length int64
		if r.length > 0 {
			length = r.length - r.read
		}
		rc, err := r.b.inner.Load(r.ctx, r.name, r.offset+r.read, length)
		if err == nil {
			r.rc = rc
			return nil
		}
		cause = err
	}
}

// ObjectSizer is implemented by readers from backends that learn the whole
// object's size when opening it (S3's Content-Range, say). A Load reader
// that has it spares the Stat otherwise needed to tell a complete
// whole-object read from a truncated one. ObjectSize returns -1 if unknown.
type ObjectSizer interface {
	ObjectSize() int64
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

func (r *reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return r.rc.Close()
}
