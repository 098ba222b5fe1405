package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/amber-backup/amber/sidecar/storage"
)

// RepairResult reports what RepairIndex did.
type RepairResult struct {
	PacksStored  int       `json:"packs_stored"`  // packs found in data/
	PacksIndexed int       `json:"packs_indexed"` // packs read and added to new index files
	Blobs        int       `json:"blobs"`         // blobs those packs hold
	IndexWritten int       `json:"index_files_written"`
	IndexRemoved []string  `json:"index_files_removed"` // damaged index files replaced
	Problems     []Problem `json:"problems"`            // packs whose header cannot be read
}

// RepairIndex rebuilds the index from the packs themselves: every pack in
// storage that no readable index file names (with its size) has its header
// read and is added to a new index file; damaged index files are then
// removed. Pack data is never changed or deleted. It holds the prune lock.
func (r *Repository) RepairIndex(ctx context.Context) (*RepairResult, error) {
	lock, _, err := r.acquirePruneLock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.release(ctx)
	res := &RepairResult{IndexRemoved: []string{}, Problems: []Problem{}}
	idx, damaged, err := r.loadIndexTolerant(ctx)
	if err != nil {
		return nil, err
	}
	var todo []storage.FileInfo
	packs := idx.Packs()
	err = r.be.List(ctx, dataDir, func(fi storage.FileInfo) error {
		id, err := ParseID(fi.Name[strings.LastIndex(fi.Name, "/")+1:])
		if err != nil || fi.Name != packName(id) {
			return nil
		}
		res.PacksStored++
		if _, ok := packs[id]; !ok || (idx.PackSize(id) != 0 && idx.PackSize(id) != fi.Size) {
			todo = append(todo, fi)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	sort.Slice(todo, func(i, j int) bool { return todo[i].Name < todo[j].Name })

	var mu sync.Mutex
	var found []indexPack
	work := make(chan storage.FileInfo)
	var wg sync.WaitGroup
	for range max(runtime.GOMAXPROCS(0), 4) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for fi := range work {
				p, err := r.readPackHeader(ctx, fi)
				mu.Lock()
				if err != nil {
					res.Problems = append(res.Problems, problemFor(fi.Name, err))
				} else {
					found = append(found, p)
				}
				mu.Unlock()
			}
		}()
	}
	for _, fi := range todo {
		if ctx.Err() != nil {
			break
		}
		work <- fi
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sort.Slice(found, func(i, j int) bool { return found[i].ID.String() < found[j].ID.String() })
	for _, p := range found {
		res.Blobs += len(p.Blobs)
	}
	res.PacksIndexed = len(found)
	if len(found) > 0 {
		if _, res.IndexWritten, err = r.saveIndexFiles(ctx, nil, found); err != nil {
			return nil, err
		}
	}
	// Only damage is removed: an index file that failed to load for another
	// reason (storage unreachable) stays.
	for _, pr := range damaged {
		if !strings.HasPrefix(pr.Object, indexDir) || !strings.Contains(pr.Error, "corrupt") {
			continue
		}
		if err := lock.valid(); err != nil {
			return nil, pruneStalled(err)
		}
		if err := r.be.Remove(ctx, pr.Object); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("remove %s: %w", pr.Object, err)
		}
		if r.cache != nil {
			r.cache.drop(pr.Object)
		}
		res.IndexRemoved = append(res.IndexRemoved, pr.Object)
	}
	sort.Slice(res.Problems, func(i, j int) bool { return res.Problems[i].Object < res.Problems[j].Object })
	r.resetIndex()
	return res, nil
}

// readPackHeader reads only a pack's header (two ranged reads) and returns
// the pack as an index names it.
func (r *Repository) readPackHeader(ctx context.Context, fi storage.FileInfo) (indexPack, error) {
	if fi.Size > r.maxPackObject() {
		return indexPack{}, &CorruptError{Object: fi.Name, Err: fmt.Errorf("pack of %d bytes is larger than the format allows", fi.Size)}
	}
	tail, err := r.readRange(ctx, fi.Name, fi.Size-4, 4)
	if err != nil {
		return indexPack{}, err
	}
	hlen, err := packHeaderLen(tail, fi.Size)
	if err != nil {
		return indexPack{}, &CorruptError{Object: fi.Name, Err: err}
	}
	dataLen := fi.Size - 4 - hlen
	sealed, err := r.readRange(ctx, fi.Name, dataLen, hlen)
	if err != nil {
		return indexPack{}, err
	}
	hdr, err := openPackHeader(r.seal, sealed)
	if err != nil {
		return indexPack{}, &CorruptError{Object: fi.Name, Err: err}
	}
	blobs, err := parseHeaderEntries(hdr, dataLen)
	if err != nil {
		return indexPack{}, &CorruptError{Object: fi.Name, Err: err}
	}
	id, _ := ParseID(fi.Name[strings.LastIndex(fi.Name, "/")+1:])
	return indexPack{ID: id, Size: fi.Size, Blobs: blobs}, nil
}

func (r *Repository) readRange(ctx context.Context, name string, off, n int64) ([]byte, error) {
	if off < 0 || n <= 0 {
		return nil, &CorruptError{Object: name, Err: errors.New("pack too short")}
	}
	rd, err := r.be.Load(ctx, name, off, n)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer rd.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(rd, b); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}
