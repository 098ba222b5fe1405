// Package location turns a repository URL into an open storage backend:
// a path or file:///path, b2://bucket/prefix, s3://bucket/prefix. Each
// backend parses its own URL (b2.FromURL, s3.FromURL); this package only
// dispatches on the scheme and wraps the backend in retries, so the CLI,
// the agent and the controller open repositories the same way.
//
// Like all of sidecar/storage it knows nothing of the repository format.
package location

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/b2"
	"github.com/amber-backup/amber/sidecar/storage/file"
	"github.com/amber-backup/amber/sidecar/storage/retry"
	"github.com/amber-backup/amber/sidecar/storage/s3"
)

// ErrBadURL is wrapped by every error about the URL itself (as opposed to
// the storage behind it).
var ErrBadURL = errors.New("bad repository URL")

// Options tune Open.
type Options struct {
	// Create makes a missing local directory (repository init); otherwise
	// its absence is an error that says how to create one.
	Create bool
	// Getenv reads credentials and defaults; nil means os.Getenv.
	Getenv func(string) string
	// Logger hears about retried storage operations; nil: they are silent.
	Logger *slog.Logger
}

// Parse checks raw and returns its scheme ("file", "b2", "s3").
func Parse(raw string) (scheme string, err error) {
	u, err := parse(raw)
	if err != nil {
		return "", err
	}
	return u.Scheme, nil
}

func badf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadURL, fmt.Sprintf(format, args...))
}

func parse(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, badf("no repository given: use --repo URL or set AMBER_REPO")
	}
	if !strings.Contains(raw, "://") {
		return &url.URL{Scheme: "file", Path: raw}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, badf("repository URL %q: %v", raw, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, badf("file URL %q names a host; use file:///absolute/path", raw)
		}
	case "b2", "s3":
		if u.Host == "" {
			return nil, badf("repository URL %q has no bucket; use %s://bucket/prefix", u.Redacted(), u.Scheme)
		}
	default:
		return nil, badf("unknown repository scheme %q in %q; use a path, file:///path, b2://bucket/prefix or s3://bucket/prefix", u.Scheme, u.Redacted())
	}
	return u, nil
}

// Absolute returns raw with a local path made absolute, for handing the
// URL to a process that runs elsewhere (a database server's log command).
func Absolute(raw string) (string, error) {
	u, err := parse(raw)
	if err != nil {
		return "", err
	}
	if u.Scheme != "file" || strings.Contains(raw, "://") {
		return raw, nil
	}
	return filepath.Abs(raw)
}

// Open connects to the storage named by raw.
func Open(ctx context.Context, raw string, o Options) (storage.Backend, error) {
	u, err := parse(raw)
	if err != nil {
		return nil, err
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var be storage.Backend
	switch u.Scheme {
	case "file":
		fb, err := file.Open(u.Path, o.Create)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("no repository at %s: the directory does not exist (create one with `amber repo init`)", u.Path)
		}
		if err != nil {
			return nil, err
		}
		be = fb
	case "b2":
		cfg, err := b2.FromURL(u, getenv)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
		}
		if be, err = b2.Open(ctx, cfg); err != nil {
			return nil, err
		}
	case "s3":
		cfg, err := s3.FromURL(u, getenv)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
		}
		if be, err = s3.Open(ctx, cfg); err != nil {
			return nil, err
		}
	}
	log := o.Logger
	return retry.New(be, retry.Options{OnRetry: func(op, name string, attempt int, err error) {
		if log != nil {
			log.Warn("storage operation failed; retrying", "op", op, "object", name, "attempt", attempt, "err", err)
		}
	}}), nil
}
