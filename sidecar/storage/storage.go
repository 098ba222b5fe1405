package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// Backend stores named objects. Names are slash-separated paths such as
// "data/3f/3f0a…"; a backend maps them onto its own namespace under the
// repository's prefix. All methods are safe for concurrent use.
type Backend interface {
	// Save stores size bytes read from r under name. The object becomes
	// visible to Load, Stat and List only once it is complete: a reader
	// never sees a partial object, and a failed Save leaves no object
	// behind. Save may read r more than once (to retry), and concurrently
	// at different offsets (to upload parts in parallel).
	Save(ctx context.Context, name string, r io.ReaderAt, size int64) error

	// Load returns a reader over length bytes of the object starting at
	// offset. A length of 0 reads to the end of the object. The caller
	// must close the reader. Missing objects give an error for which
	// errors.Is(err, ErrNotFound) holds.
	Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)

	// Stat returns the object's size and modification time.
	Stat(ctx context.Context, name string) (FileInfo, error)

	// List calls fn for every object whose name starts with prefix, in no
	// particular order. A non-nil error from fn stops the listing and is
	// returned.
	List(ctx context.Context, prefix string, fn func(FileInfo) error) error

	// Remove makes the object disappear from Load, Stat and List. Where the
	// store keeps versions (a versioned S3 bucket, B2), it only writes a
	// delete or hide marker by default, so older versions stay recoverable
	// (bucket versioning, Object Lock); deleting every version is the
	// backend's explicit purge option. Removing a missing object gives
	// ErrNotFound.
	Remove(ctx context.Context, name string) error

	// Location describes where the backend stores objects, without
	// credentials, for messages such as "b2://bucket/prefix".
	Location() string

	// Close releases connections and other resources.
	Close() error
}

// FileInfo describes a stored object.
type FileInfo struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// ErrNotFound is returned (wrapped) when an object does not exist.
var ErrNotFound = errors.New("object not found")

// ErrExists is returned (wrapped) by Creator.Create when the name is taken.
var ErrExists = errors.New("object already exists")

// Creator is implemented by backends that can store an object only if no
// object of that name exists (a conditional create).
type Creator interface {
	// Create stores size bytes read from r under name, like Save, but
	// fails with an error for which errors.Is(err, ErrExists) holds when
	// the name already exists; the existing object is then left as it
	// was. Two concurrent Creates of one name never both succeed (each
	// backend documents the narrow cases where it cannot promise more).
	Create(ctx context.Context, name string, r io.ReaderAt, size int64) error
}

// AsCreator returns b's Creator. A wrapper that exposes the backend it wraps
// with an Inner method counts only when everything beneath it can create
// too, so that the retry wrapper (which itself implements Create) is
// returned, not bypassed.
func AsCreator(b Backend) (Creator, bool) {
	if w, ok := b.(interface{ Inner() Backend }); ok {
		if _, ok := AsCreator(w.Inner()); !ok {
			return nil, false
		}
	}
	c, ok := b.(Creator)
	return c, ok
}

// permanent marks an error that retrying cannot fix.
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// Permanent wraps err so that IsPermanent reports true for it. Use it for
// authentication failures, missing buckets, bad requests: anything a retry
// would only repeat.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanent{err: err}
}

// IsPermanent reports whether retrying the operation that returned err is
// pointless. Not-found and already-exists errors, a local file system's
// permission errors (a repository directory another user owns), context
// cancellation and errors wrapped with Permanent are permanent; everything
// else (timeouts, resets, 5xx, 429) is assumed transient.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var p *permanent
	return errors.As(err, &p) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || errors.Is(err, fs.ErrPermission) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// retryAfter carries a server's request to wait before retrying.
type retryAfter struct {
	err   error
	delay time.Duration
}

func (r *retryAfter) Error() string { return r.err.Error() }
func (r *retryAfter) Unwrap() error { return r.err }

// WithRetryAfter annotates a transient error with the delay the server asked
// for (an HTTP Retry-After header, say). The retry wrapper waits at least that
// long before the next attempt.
func WithRetryAfter(err error, delay time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfter{err: err, delay: delay}
}

// RetryAfter returns the delay requested with WithRetryAfter, if any.
func RetryAfter(err error) (time.Duration, bool) {
	var r *retryAfter
	if errors.As(err, &r) {
		return r.delay, true
	}
	return 0, false
}

// NotFound returns an error wrapping ErrNotFound that names the object.
func NotFound(name string) error {
	return fmt.Errorf("%s: %w", name, ErrNotFound)
}

// ReadAll loads a whole object into memory. Use it only for objects known to
// be small (keys, config, manifests, index files, packs).
func ReadAll(ctx context.Context, b Backend, name string) ([]byte, error) {
	rd, err := b.Load(ctx, name, 0, 0)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

// Sweeper is implemented by backends where a crash can leave incomplete
// uploads behind that List does not show (temporary files, unfinished
// multipart or large-file uploads). Sweep removes those older than before.
type Sweeper interface {
	Sweep(ctx context.Context, before time.Time) (int, error)
}

// AsSweeper returns b's Sweeper, looking through wrappers that expose the
// backend they wrap with an Inner method.
func AsSweeper(b Backend) (Sweeper, bool) {
	for {
		if s, ok := b.(Sweeper); ok {
			return s, true
		}
		w, ok := b.(interface{ Inner() Backend })
		if !ok {
			return nil, false
		}
		b = w.Inner()
	}
}
