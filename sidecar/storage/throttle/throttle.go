// Package throttle bounds the upload bandwidth of one job. A limit rides in
// the job's context (WithLimit); Wrap makes a backend honour it in Save, so
// a backup and the archiver sharing one repository each keep their own
// limit, and work without a limit is never slowed.
package throttle

import (
	"context"
	"errors"
	"io"

	"golang.org/x/time/rate"

	"github.com/amber-backup/amber/sidecar/storage"
)

type limitKey struct{}

// chunk is the most bytes read at once under a limit, and the limiter's
// burst: small enough that a low limit stays smooth, large enough that
// the limiter costs nothing at high ones.
const chunk = 256 << 10

// WithLimit returns ctx with uploads limited to bytesPerSecond (<= 0: no
// limit) for every backend Wrap returned.
func WithLimit(ctx context.Context, bytesPerSecond int64) context.Context {
	if bytesPerSecond <= 0 {
		return ctx
	}
	return context.WithValue(ctx, limitKey{}, rate.NewLimiter(rate.Limit(bytesPerSecond), chunk))
}

// Limit returns the limit in ctx in bytes per second, 0 for none.
func Limit(ctx context.Context) int64 {
	if l, ok := ctx.Value(limitKey{}).(*rate.Limiter); ok {
		return int64(l.Limit())
	}
	return 0
}

// Wrap returns be whose Save reads its data no faster than the limit in
// the call's context.
func Wrap(be storage.Backend) storage.Backend { return &backend{Backend: be} }

type backend struct{ storage.Backend }

func (b *backend) Save(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	l, ok := ctx.Value(limitKey{}).(*rate.Limiter)
	if !ok {
		return b.Backend.Save(ctx, name, r, size)
	}
	return b.Backend.Save(ctx, name, &reader{ctx: ctx, r: r, l: l}, size)
}

// Create is the inner backend's conditional create, throttled the same way;
// storage.AsCreator offers it only when the inner backend can create.
func (b *backend) Create(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	c, ok := storage.AsCreator(b.Backend)
	if !ok {
		return errors.ErrUnsupported
	}
	if l, ok := ctx.Value(limitKey{}).(*rate.Limiter); ok {
		r = &reader{ctx: ctx, r: r, l: l}
	}
	return c.Create(ctx, name, r, size)
}

// Inner is the wrapped backend (storage.AsCreator, storage.AsSweeper).
func (b *backend) Inner() storage.Backend { return b.Backend }

type reader struct {
	ctx context.Context
	r   io.ReaderAt
	l   *rate.Limiter
}

// ReadAt waits for the limiter before each chunk it reads.
func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		c := min(len(p)-n, chunk)
		if err := r.l.WaitN(r.ctx, c); err != nil {
			return n, err
		}
		m, err := r.r.ReadAt(p[n:n+c], off+int64(n))
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
