package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/amber-backup/amber/sidecar/pluginhost"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/location"
	"github.com/amber-backup/amber/sidecar/storage/throttle"
)

// openBackend connects to the repository's storage. With create, a missing
// local directory is made (repo init); otherwise its absence is an error.
func (e *env) openBackend(ctx context.Context, create bool) (storage.Backend, error) {
	getenv := e.getenv
	if getenv == nil && os.Getenv("AMBER_CREDENTIALS_DIR") != "" {
		// Storage keys as files, as a mounted Kubernetes Secret presents
		// them (the clone pods of a Kubernetes restore).
		getenv = credentialsDir(os.Getenv("AMBER_CREDENTIALS_DIR"))
	}
	be, err := location.Open(ctx, e.repoURL, location.Options{Create: create, Getenv: getenv, Logger: e.log})
	if errors.Is(err, location.ErrBadURL) {
		return nil, &usageError{err: err}
	}
	if err != nil {
		return nil, err
	}
	// Uploads honour a bandwidth limit a job puts in its context (the
	// agent's per-request limits); without one nothing is slowed.
	return throttle.Wrap(be), nil
}

// credentialsDir returns a getenv that reads the variable NAME from the
// file dir/NAME, as a mounted Kubernetes Secret presents its keys, and
// falls back to the environment when there is no such file. Values are
// read when the storage is opened, so a rotated Secret applies on the next
// open.
func credentialsDir(dir string) func(string) string {
	return func(name string) string {
		if name == "" || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
			return os.Getenv(name)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return os.Getenv(name)
		}
		return strings.TrimRight(string(b), "\r\n")
	}
}

// password reads the repository password from --password-file or AMBER_PASSWORD.
func (e *env) password() ([]byte, error) {
	return readSecret(e.passwordFile, "AMBER_PASSWORD", "--password-file")
}

// readSecret reads a secret from file, else from the environment variable.
func readSecret(file, envVar, flag string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", flag, err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return nil, fmt.Errorf("%s %s is empty", strings.TrimPrefix(flag, "--"), file)
		}
		return []byte(p), nil
	}
	if p := os.Getenv(envVar); p != "" {
		return []byte(p), nil
	}
	return nil, usagef("no repository password: set %s or use %s", envVar, flag)
}

// dsn reads a connection string from --dsn-file, --dsn or envVar, in that
// order. It is never a flag's default, so help output never shows it.
func dsn(flagValue, file, envVar string) (api.Secret, error) {
	switch {
	case file != "" && flagValue != "":
		return "", usagef("give the connection string with --dsn or --dsn-file, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read --dsn-file: %w", err)
		}
		return api.Secret(strings.TrimSpace(string(b))), nil
	case flagValue != "":
		return api.Secret(flagValue), nil
	case envVar != "":
		return api.Secret(os.Getenv(envVar)), nil
	}
	return "", nil
}

func (e *env) repoOptions() (repo.Options, error) {
	c, err := repo.ParseCompression(e.compression)
	if err != nil {
		return repo.Options{}, usagef("--compression: %v", err)
	}
	return repo.Options{CacheDir: e.cacheDir, KDF: testKDF, KeySlot: e.keySlot, Logger: e.log, Compression: c}, nil
}

// openRepo opens the repository named by --repo with the password.
func (e *env) openRepo(ctx context.Context) (*repo.Repository, error) {
	opts, err := e.repoOptions()
	if err != nil {
		return nil, err
	}
	pw, err := e.password()
	if err != nil {
		return nil, err
	}
	be, err := e.openBackend(ctx, false)
	if err != nil {
		return nil, err
	}
	r, err := repo.Open(ctx, be, pw, opts)
	// The key derivation's memory is garbage now; give it back.
	debug.FreeOSMemory()
	if err != nil {
		be.Close()
		return nil, err
	}
	return r, nil
}

// openEngine launches the plugin for engine.
func (e *env) openEngine(ctx context.Context, engine string) (*pluginhost.Host, *pluginhost.Plugin, error) {
	if engine == "" {
		return nil, nil, usagef("name the database engine with --engine (postgres)")
	}
	host := pluginhost.New(pluginhost.Options{Logger: e.log})
	p, err := host.Engine(ctx, engine)
	if err != nil {
		host.Close()
		return nil, nil, err
	}
	return host, p, nil
}

// openEngineAndRepo launches the plugin for engine while the repository
// opens, for a command that needs both at once: the password's key
// derivation (Argon2id, about 0.2 s of two cores) and the repository's
// first reads then overlap with starting the plugin process. An engine
// error is reported before a repository error, as if they ran in turn.
func (e *env) openEngineAndRepo(ctx context.Context, engine string) (*pluginhost.Host, *pluginhost.Plugin, *repo.Repository, error) {
	if engine == "" {
		_, _, err := e.openEngine(ctx, engine) // the usage error, before any work
		return nil, nil, nil, err
	}
	type opened struct {
		r   *repo.Repository
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		r, err := e.openRepo(ctx)
		ch <- opened{r, err}
	}()
	host, eng, err := e.openEngine(ctx, engine)
	o := <-ch
	if err != nil {
		if o.r != nil {
			o.r.Close()
		}
		return nil, nil, nil, err
	}
	if o.err != nil {
		host.Close()
		return nil, nil, nil, o.err
	}
	return host, eng, o.r, nil
}

// opener opens the repository and the plugin only when a job asks, and
// closes what it opened.
type opener struct {
	e    *env
	r    *repo.Repository
	host *pluginhost.Host
	eng  *pluginhost.Plugin
}

var _ job.Opener = (*opener)(nil)

func (o *opener) Repository(ctx context.Context) (*repo.Repository, error) {
	if o.r == nil {
		r, err := o.e.openRepo(ctx)
		if err != nil {
			return nil, err
		}
		o.r = r
	}
	return o.r, nil
}

func (o *opener) Engine(ctx context.Context, name string) (api.Engine, error) {
	if o.eng == nil {
		host, eng, err := o.e.openEngine(ctx, name)
		if err != nil {
			return nil, err
		}
		o.host, o.eng = host, eng
	}
	return o.eng, nil
}

func (o *opener) Close() {
	if o.host != nil {
		o.host.Close()
	}
	if o.r != nil {
		o.r.Close()
	}
}
