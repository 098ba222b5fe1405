// Package repotest makes new repositories for tests: with a key derivation
// cheap enough to run in every test and no local cache, closed when the test
// ends.
//
// Only tests import repotest: shipped code must never (its key derivation
// would make a real repository's password easy to guess).
package repotest

import (
	"context"
	"testing"

	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/file"
)

// Password is the password of the repositories made here.
const Password = "pw"

var kdf = repo.KDFParams{Time: 1, Memory: 1024, Threads: 1}

// New makes a repository on a file backend in a new temporary directory.
func New(t testing.TB) *repo.Repository {
	t.Helper()
	return NewIn(t, t.TempDir())
}

// NewIn makes a repository on a file backend in dir, created if missing.
func NewIn(t testing.TB, dir string) *repo.Repository {
	t.Helper()
	be, err := file.Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	return NewOn(t, be)
}

// NewOn makes a repository on be.
func NewOn(t testing.TB, be storage.Backend) *repo.Repository {
	t.Helper()
	r, err := repo.Init(context.Background(), be, []byte(Password), repo.Options{KDF: kdf, CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}
