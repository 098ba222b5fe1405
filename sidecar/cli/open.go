package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime/debug"
	"strings"

	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/file"
)

// location is a parsed repository URL.
type location struct {
	scheme string // file, b2, s3
	bucket string
	path   string // directory for file, prefix for buckets
	query  url.Values
}

func parseLocation(raw string) (location, error) {
	if raw == "" {
		return location{}, usagef("no repository given: use --repo URL or set AMBER_REPO")
	}
	if !strings.Contains(raw, "://") {
		return location{scheme: "file", path: raw}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return location{}, usagef("repository URL %q: %v", raw, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return location{}, usagef("file URL %q names a host; use file:///absolute/path", raw)
		}
		return location{scheme: "file", path: u.Path}, nil
	case "b2", "s3":
		if u.Host == "" {
			return location{}, usagef("repository URL %q has no bucket; use %s://bucket/prefix", raw, u.Scheme)
		}
		return location{scheme: u.Scheme, bucket: u.Host, path: strings.Trim(u.Path, "/"), query: u.Query()}, nil
	}
	return location{}, usagef("unknown repository scheme %q in %q; use a path, file:///path, b2://bucket/prefix or s3://bucket/prefix", u.Scheme, raw)
}

// openBackend connects to the repository's storage. With create, a missing
// local directory is made (repo init); otherwise its absence is an error.
func (e *env) openBackend(ctx context.Context, create bool) (storage.Backend, error) {
	loc, err := parseLocation(e.repoURL)
	if err != nil {
		return nil, err
	}
	var be storage.Backend
	switch loc.scheme {
	case "file":
		fb, err := file.Open(loc.path, create)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("no repository at %s: the directory does not exist (create one with `amber repo init`)", loc.path)
		}
		if err != nil {
			return nil, err
		}
		be = fb
	default:
		be, err = openRemote(ctx, loc)
		if err != nil {
			return nil, err
		}
	}
	return wrapRetry(be, e), nil
}

// password reads the repository password from --password-file or AMBER_PASSWORD.
func (e *env) password() ([]byte, error) {
	return readSecret(e.passwordFile, "AMBER_PASSWORD", "--password-file")
}

func readSecret(file, envVar, flag string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read password file: %w", err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return nil, fmt.Errorf("password file %s is empty", file)
		}
		return []byte(p), nil
	}
	if p := os.Getenv(envVar); p != "" {
		return []byte(p), nil
	}
	return nil, usagef("no repository password: set %s or use %s", envVar, flag)
}

func (e *env) repoOptions() repo.Options {
	return repo.Options{CacheDir: e.cacheDir, KDF: kdfFromEnv()}
}

// kdfFromEnv lets tests lower the key-derivation cost of new key slots
// (AMBER_KDF_TEST=1); never set it for real repositories.
func kdfFromEnv() repo.KDFParams {
	if os.Getenv("AMBER_KDF_TEST") == "1" {
		return repo.KDFParams{Time: 1, Memory: 1024, Threads: 1}
	}
	return repo.KDFParams{}
}

// openRepo opens the repository named by --repo with the password.
func (e *env) openRepo(ctx context.Context) (*repo.Repository, error) {
	pw, err := e.password()
	if err != nil {
		return nil, err
	}
	be, err := e.openBackend(ctx, false)
	if err != nil {
		return nil, err
	}
	r, err := repo.Open(ctx, be, pw, e.repoOptions())
	// The key derivation's memory is garbage now; give it back.
	debug.FreeOSMemory()
	if err != nil {
		be.Close()
		return nil, err
	}
	return r, nil
}
