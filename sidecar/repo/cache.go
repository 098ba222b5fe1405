package repo

import (
	"os"
	"path/filepath"
	"strings"
)

// Cache keeps copies of immutable metadata objects (index files, manifests)
// on local disk, so opening a repository lists the index but downloads only
// what is new. Every cached object is checked against its name and
// authenticated on use exactly as if it came from storage, so a damaged cache
// costs a download, never correctness.
type Cache struct{ dir string }

func openCache(base, repoID string) *Cache {
	if base == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return nil
		}
		base = filepath.Join(d, "amber")
	}
	dir := filepath.Join(base, repoID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil
	}
	return &Cache{dir: dir}
}

func (c *Cache) path(name string) string { return filepath.Join(c.dir, filepath.FromSlash(name)) }

func (c *Cache) get(name string) []byte {
	b, err := os.ReadFile(c.path(name))
	if err != nil {
		return nil
	}
	return b
}

func (c *Cache) put(name string, data []byte) {
	p := c.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return
	}
	_ = os.Rename(tmp, p)
}

func (c *Cache) drop(name string) { _ = os.Remove(c.path(name)) }

// prune drops cached objects under dir that are no longer in the repository.
func (c *Cache) prune(dir string, present []string) {
	keep := make(map[string]bool, len(present))
	for _, n := range present {
		keep[n] = true
	}
	entries, err := os.ReadDir(c.path(strings.TrimSuffix(dir, "/")))
	if err != nil {
		return
	}
	for _, e := range entries {
		if name := dir + e.Name(); !keep[name] {
			c.drop(name)
		}
	}
}
