// Package file is the local-directory storage backend, Amber's default. Each
// object is one file below the root directory; Save writes a temporary file,
// syncs it and renames it into place, so an object is either whole or absent;
// Create (storage.Creator) hard-links the temporary file into place instead,
// which fails atomically when the name exists.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
)

// Backend stores objects as files under a root directory.
type Backend struct {
	root string
}

var _ storage.Backend = (*Backend)(nil)

// Open returns a backend rooted at dir. With create, a missing dir is made;
// without it, a missing dir is a permanent error (the repository is not there).
func Open(dir string, create bool) (*Backend, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, storage.Permanent(err)
	}
	if create {
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return nil, storage.Permanent(fmt.Errorf("create repository directory: %w", err))
		}
	}
	st, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, storage.Permanent(fmt.Errorf("directory %s does not exist: %w", abs, storage.ErrNotFound))
	}
	if err != nil {
		return nil, storage.Permanent(err)
	}
	if !st.IsDir() {
		return nil, storage.Permanent(fmt.Errorf("%s is not a directory", abs))
	}
	return &Backend{root: abs}, nil
}

func (b *Backend) path(name string) (string, error) {
	clean := filepath.Clean("/" + name)
	if clean == "/" || strings.Contains(name, "\\") || clean != "/"+name {
		return "", storage.Permanent(fmt.Errorf("invalid object name %q", name))
	}
	return filepath.Join(b.root, filepath.FromSlash(name)), nil
}

// Location implements storage.Backend.
func (b *Backend) Location() string { return b.root }

// Save implements storage.Backend.
func (b *Backend) Save(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	p, tmp, err := b.writeTemp(ctx, name, r, size)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save %s: %w", name, err)
	}
	return syncDir(filepath.Dir(p))
}

var _ storage.Creator = (*Backend)(nil)

// Create implements storage.Creator: it writes and syncs a temporary file,
// then hard-links it to the object's name with link(2), which fails if the
// name exists, atomically, whoever else is writing.
func (b *Backend) Create(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	p, tmp, err := b.writeTemp(ctx, name, r, size)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", name, storage.ErrExists)
		}
		return fmt.Errorf("create %s: %w", name, err)
	}
	return syncDir(filepath.Dir(p))
}

// writeTemp writes the object's content to a synced, read-only temporary
// file next to its final path and returns both paths.
func (b *Backend) writeTemp(ctx context.Context, name string, r io.ReaderAt, size int64) (path, tmpPath string, err error) {
	p, err := b.path(name)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", "", fmt.Errorf("save %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p)+"-*")
	if err != nil {
		return "", "", fmt.Errorf("save %s: %w", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	n, err := io.Copy(tmp, io.NewSectionReader(r, 0, size))
	if err != nil {
		return "", "", fmt.Errorf("save %s: %w", name, err)
	}
	if n != size {
		return "", "", fmt.Errorf("save %s: short source: %d of %d bytes", name, n, size)
	}
	if err := ctx.Err(); err != nil {
		return "", "", err
	}
	if err := tmp.Sync(); err != nil {
		return "", "", fmt.Errorf("save %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return "", "", fmt.Errorf("save %s: %w", name, err)
	}
	if err := os.Chmod(tmp.Name(), 0o400); err != nil {
		return "", "", fmt.Errorf("save %s: %w", name, err)
	}
	ok = true
	return p, tmp.Name(), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Load implements storage.Backend.
func (b *Backend) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	p, err := b.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, storage.NotFound(name)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	if offset < 0 || length < 0 {
		f.Close()
		return nil, storage.Permanent(fmt.Errorf("load %s: negative offset or length", name))
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, fmt.Errorf("load %s: %w", name, err)
		}
	}
	if length == 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, length), f}, nil
}

// Stat implements storage.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (storage.FileInfo, error) {
	p, err := b.path(name)
	if err != nil {
		return storage.FileInfo{}, err
	}
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return storage.FileInfo{}, storage.NotFound(name)
	}
	if err != nil {
		return storage.FileInfo{}, fmt.Errorf("stat %s: %w", name, err)
	}
	return storage.FileInfo{Name: name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List implements storage.Backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(storage.FileInfo) error) error {
	// Walk the deepest directory that the prefix names in full.
	dir := b.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		dir = filepath.Join(b.root, filepath.FromSlash(prefix[:i]))
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		rel, err := filepath.Rel(b.root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while listing
		}
		if err != nil {
			return err
		}
		return fn(storage.FileInfo{Name: name, Size: info.Size(), ModTime: info.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	return nil
}

// Remove implements storage.Backend.
func (b *Backend) Remove(ctx context.Context, name string) error {
	p, err := b.path(name)
	if err != nil {
		return err
	}
	err = os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return storage.NotFound(name)
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// Close implements storage.Backend.
func (b *Backend) Close() error { return nil }

var _ storage.Sweeper = (*Backend)(nil)

// Sweep removes temporary files that a Save interrupted by a crash left
// behind, if they were last written before the given time.
func (b *Backend) Sweep(ctx context.Context, before time.Time) (int, error) {
	n := 0
	err := filepath.WalkDir(b.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		info, err := d.Info()
		if err != nil || !info.ModTime().Before(before) {
			return nil
		}
		if err := os.Remove(p); err == nil {
			n++
		}
		return nil
	})
	return n, err
}
