package job

import (
	"context"
	"io"
	"log/slog"
)

type logKey struct{}

// WithLogger returns ctx carrying l; jobs log through it, adding the backup
// id, engine and stream as they learn them.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, logKey{}, l)
}

// Logger returns the logger ctx carries, or one that discards.
func Logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(logKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// with adds attributes to the context's logger.
func with(ctx context.Context, args ...any) context.Context {
	return WithLogger(ctx, Logger(ctx).With(args...))
}
