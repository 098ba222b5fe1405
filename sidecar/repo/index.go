package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/amber-backup/amber/sidecar/storage"
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
	dups  []Location      // further copies of blobs already in blobs
	sizes map[ID]int64    // pack sizes, where an index file recorded them
	files map[string]bool // index objects already loaded
}

func newIndex() *Index {
	return &Index{blobs: make(map[ID]Location), sizes: make(map[ID]int64), files: make(map[string]bool)}
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
	if p.Size > 0 {
		ix.sizes[p.ID] = p.Size
	}
	for _, b := range p.Blobs {
		l := Location{Pack: p.ID, BlobInfo: b}
		if prev, dup := ix.blobs[b.ID]; !dup {
			ix.blobs[b.ID] = l
		} else if prev.Pack != p.ID {
			ix.dups = append(ix.dups, l)
		}
	}
}

// Packs returns every pack id the index names, with all its blobs (also
// those another pack holds a copy of).
func (ix *Index) Packs() map[ID][]BlobInfo {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make(map[ID][]BlobInfo)
	for _, l := range ix.blobs {
		out[l.Pack] = append(out[l.Pack], l.BlobInfo)
	}
	for _, l := range ix.dups {
		out[l.Pack] = append(out[l.Pack], l.BlobInfo)
	}
	return out
}

// PackSize returns the size an index file recorded for pack id (0: unknown).
func (ix *Index) PackSize(id ID) int64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.sizes[id]
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
// An index file may vanish between listing and reading (a prune replaced
// it; prune writes the replacement first), so a vanished file means: list
// again.
func (r *Repository) loadIndex(ctx context.Context, idx *Index) error {
	for attempt := 0; ; attempt++ {
		names, err := listNames(ctx, r.be, indexDir)
		if err != nil {
			return fmt.Errorf("list index: %w", err)
		}
		vanished := false
		for _, name := range names {
			if strings.Contains(name[len(indexDir):], "/") || idx.loaded(name) {
				continue
			}
			f, err := r.loadIndexFile(ctx, name)
			if errors.Is(err, storage.ErrNotFound) && attempt < 5 {
				vanished = true
				continue
			}
			if err != nil {
				return err
			}
			for _, p := range f.Packs {
				idx.addPack(p)
			}
			idx.markLoaded(name)
		}
		if vanished {
			continue
		}
		if r.cache != nil {
			r.cache.prune(indexDir, names)
		}
		return nil
	}
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
	return parseIndexFile(name, plain)
}

// saveIndex writes index files for packs (several when they name more than
// maxIndexBlobs blobs) and adds them to idx (if not nil) as loaded.
func (r *Repository) saveIndex(ctx context.Context, idx *Index, packs []indexPack) (int64, error) {
	n, _, err := r.saveIndexFiles(ctx, idx, packs)
	return n, err
}

// saveIndexFiles is saveIndex that also returns how many files it wrote.
func (r *Repository) saveIndexFiles(ctx context.Context, idx *Index, packs []indexPack) (int64, int, error) {
	var total int64
	files := 0
	for len(packs) > 0 {
		n, blobs := 0, 0
		for n < len(packs) && (n == 0 || blobs+len(packs[n].Blobs) <= maxIndexBlobs) {
			blobs += len(packs[n].Blobs)
			n++
		}
		plain, err := json.Marshal(indexFile{Version: indexVersion(packs[:n]), Packs: packs[:n]})
		if err != nil {
			return total, files, err
		}
		id, size, err := r.saveObject(ctx, indexDir, plain, adIndex)
		if err != nil {
			return total, files, err
		}
		total += size
		files++
		if idx != nil {
			for _, p := range packs[:n] {
				idx.addPack(p)
			}
			idx.markLoaded(indexDir + id.String())
		}
		packs = packs[n:]
	}
	return total, files, nil
}

// IndexVersionS2 is the version of an index file that names an S2 blob.
// It is written exactly for those files, as manifest version 2 is for
// manifests with file indexes: an amber that knows only zstd then refuses
// the repository, naming the file and asking for an upgrade, instead of
// failing on each blob as corrupt or, in a prune, dropping what it cannot
// read. Files of zstd blobs only stay version 1.
const IndexVersionS2 = 2

func indexVersion(packs []indexPack) int {
	for _, p := range packs {
		for _, b := range p.Blobs {
			if b.Compressed && b.Codec == CodecS2 {
				return IndexVersionS2
			}
		}
	}
	return Version
}

// indexFiles lists the index objects.
func (r *Repository) indexFiles(ctx context.Context) ([]string, error) {
	return listNames(ctx, r.be, indexDir)
}
