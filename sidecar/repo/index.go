package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

// Location says where a blob is stored.
type Location struct {
	Pack ID
	BlobInfo
}

// Index maps blob ids to their packs. It is safe for concurrent use.
type Index struct {
	mu    sync.RWMutex
	blobs map[ID]Location
	files map[string]bool // index objects already loaded
}

func newIndex() *Index {
	return &Index{blobs: make(map[ID]Location), files: make(map[string]bool)}
}

// Lookup returns where blob id is stored.
func (ix *Index) Lookup(id ID) (Location, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	l, ok := ix.blobs[id]
	return l, ok
}

// Has reports whether blob id is stored.
func (ix *Index) Has(id ID) bool {
	_, ok := ix.Lookup(id)
	return ok
}

// Len is the number of blobs indexed.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.blobs)
}

func (ix *Index) addPack(p indexPack) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, b := range p.Blobs {
		if _, dup := ix.blobs[b.ID]; !dup {
			ix.blobs[b.ID] = Location{Pack: p.ID, BlobInfo: b}
		}
	}
}

// Packs returns every pack id the index names, with its blobs.
func (ix *Index) Packs() map[ID][]BlobInfo {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make(map[ID][]BlobInfo)
	for _, l := range ix.blobs {
		out[l.Pack] = append(out[l.Pack], l.BlobInfo)
	}
	return out
}

// indexFile is the plaintext of an object in index/.
type indexFile struct {
	Version int         `json:"version"`
	Packs   []indexPack `json:"packs"`
}

type indexPack struct {
	ID    ID         `json:"id"`
	Size  int64      `json:"size"`
	Blobs []BlobInfo `json:"blobs"`
}

// Index loads (once) and returns the repository's index: every index file,
// read from the local cache where it holds them.
func (r *Repository) Index(ctx context.Context) (*Index, error) {
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	if r.idx != nil {
		return r.idx, nil
	}
	idx := newIndex()
	if err := r.loadIndex(ctx, idx); err != nil {
		return nil, err
	}
	r.idx = idx
	return idx, nil
}

// resetIndex makes the next Index call read every index file afresh.
func (r *Repository) resetIndex() {
	r.idxMu.Lock()
	r.idx = nil
	r.idxMu.Unlock()
}

// loadIndex adds to idx the index files it has not loaded yet.
func (r *Repository) loadIndex(ctx context.Context, idx *Index) error {
	names, err := listNames(ctx, r.be, indexDir)
	if err != nil {
		return fmt.Errorf("list index: %w", err)
	}
	for _, name := range names {
		if strings.Contains(name[len(indexDir):], "/") || idx.loaded(name) {
			continue
		}
		f, err := r.loadIndexFile(ctx, name)
		if err != nil {
			return err
		}
		for _, p := range f.Packs {
			idx.addPack(p)
		}
		idx.markLoaded(name)
	}
	if r.cache != nil {
		r.cache.prune(indexDir, names)
	}
	return nil
}

func (ix *Index) loaded(name string) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.files[name]
}

// loadedNames lists the index files merged into ix.
func (ix *Index) loadedNames() []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]string, 0, len(ix.files))
	for n := range ix.files {
		out = append(out, n)
	}
	return out
}

func (ix *Index) markLoaded(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.files[name] = true
}

func (r *Repository) loadIndexFile(ctx context.Context, name string) (*indexFile, error) {
	plain, err := r.loadObject(ctx, name, adIndex)
	if err != nil {
		return nil, fmt.Errorf("load index: %w", err)
	}
	var f indexFile
	if err := json.Unmarshal(plain, &f); err != nil {
		return nil, &CorruptError{Object: name, Err: err}
	}
	return &f, nil
}

// saveIndex writes one index file for packs, which idx (if not nil) already holds.
func (r *Repository) saveIndex(ctx context.Context, idx *Index, packs []indexPack) (int64, error) {
	plain, err := json.Marshal(indexFile{Version: Version, Packs: packs})
	if err != nil {
		return 0, err
	}
	id, n, err := r.saveObject(ctx, indexDir, plain, adIndex)
	if err == nil && idx != nil {
		idx.markLoaded(indexDir + id.String())
	}
	return n, err
}

// indexFiles lists the index objects.
func (r *Repository) indexFiles(ctx context.Context) ([]string, error) {
	return listNames(ctx, r.be, indexDir)
}
