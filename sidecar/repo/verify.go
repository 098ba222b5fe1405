package repo

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/amber-backup/amber/sidecar/storage"
)

// VerifyOptions choose how deep verify goes.
type VerifyOptions struct {
	// Backup limits the check to one backup (id, prefix or "latest").
	Backup string
	// ReadData reads every pack (of the chosen backups) in full and checks
	// every blob; without it, verify checks metadata and that packs exist
	// with the right sizes.
	ReadData bool
	// Progress, if set, is told the bytes read so far.
	Progress func(bytesRead int64)
}

// Problem is one damaged or missing object.
type Problem struct {
	Object string `json:"object"`
	Error  string `json:"error"`
}

// VerifyReport summarises a verify run.
type VerifyReport struct {
	Backups   int       `json:"backups"`
	Packs     int       `json:"packs"`
	Blobs     int       `json:"blobs"`
	Segments  int       `json:"log_segments"`
	Workloads int       `json:"workloads"`
	BytesRead int64     `json:"bytes_read"`
	Problems  []Problem `json:"problems"`
}

// OK reports whether verify found nothing wrong.
func (v *VerifyReport) OK() bool { return len(v.Problems) == 0 }

func (v *VerifyReport) add(object string, err error) {
	var ce *CorruptError
	if errors.As(err, &ce) {
		object = ce.Object
	}
	v.Problems = append(v.Problems, Problem{Object: object, Error: err.Error()})
}

// Verify checks the repository and reports every problem it finds, naming
// the object. The error is for failures to run at all (storage unreachable).
func (r *Repository) Verify(ctx context.Context, opts VerifyOptions) (*VerifyReport, error) {
	rep := &VerifyReport{}
	// Key slots.
	slots, err := listNames(ctx, r.be, keysDir)
	if err != nil {
		return nil, err
	}
	for _, s := range slots {
		if _, err := loadSlot(ctx, r.be, s); err != nil {
			rep.add(s, err)
		}
	}
	// Workloads (kept beside backups by amber-controller): each must
	// authenticate.
	if opts.Backup == "" {
		wl, err := listNames(ctx, r.be, workloadsDir)
		if err != nil {
			return nil, err
		}
		for _, n := range wl {
			if r.cache != nil {
				r.cache.drop(n)
			}
			if _, err := r.loadWorkload(ctx, n); err != nil {
				rep.add(n, err)
			}
		}
		rep.Workloads = len(wl)
	}
	// Index files, read afresh from storage.
	idx := newIndex()
	indexNames, err := r.indexFiles(ctx)
	if err != nil {
		return nil, err
	}
	packSize := make(map[ID]int64)
	for _, n := range indexNames {
		f, err := r.loadIndexFileFresh(ctx, n)
		if err != nil {
			rep.add(n, err)
			continue
		}
		for _, p := range f.Packs {
			idx.addPack(p)
			if p.Size > 0 {
				packSize[p.ID] = p.Size
			}
		}
	}
	r.idxMu.Lock()
	r.idx = idx
	r.idxMu.Unlock()

	// Backups.
	var backups []*Manifest
	names, err := listNames(ctx, r.be, backupsDir)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if r.cache != nil {
			r.cache.drop(n)
		}
		m, err := r.loadManifest(ctx, n)
		if err != nil {
			rep.add(n, err)
			continue
		}
		backups = append(backups, m)
	}
	if opts.Backup != "" {
		m, err := r.FindBackup(ctx, opts.Backup, "")
		if err != nil {
			return nil, err
		}
		backups = []*Manifest{m}
	}
	rep.Backups = len(backups)

	// Every blob a backup uses must be indexed.
	used := make(map[ID]bool)
	wantPacks := make(map[ID]bool)
	for _, m := range backups {
		for _, e := range m.Entries {
			for _, lid := range e.allLists() {
				items, err := r.loadList(ctx, lid)
				if err != nil {
					rep.add(backupsDir+m.ID.String(), fmt.Errorf("entry %s: %w", e.Name, err))
					continue
				}
				ids := make([]ID, 0, len(items)+1)
				ids = append(ids, lid)
				for _, it := range items {
					ids = append(ids, it.id)
				}
				for _, id := range ids {
					if used[id] {
						continue
					}
					used[id] = true
					l, ok := idx.Lookup(id)
					if !ok {
						rep.add(backupsDir+m.ID.String(), fmt.Errorf("entry %s uses blob %s, which no index names", e.Name, id.Short()))
						continue
					}
					wantPacks[l.Pack] = true
				}
			}
		}
	}
	rep.Blobs = len(used)

	// File indexes must be readable and fit their entries' chunks.
	for _, m := range backups {
		if !m.hasFiles() {
			continue
		}
		if _, err := r.FileRecords(ctx, m); err != nil {
			rep.add(backupsDir+m.ID.String(), err)
		}
	}

	// Packs must exist with the size the index recorded.
	stored := make(map[string]int64)
	if err := r.be.List(ctx, dataDir, func(fi storage.FileInfo) error {
		stored[fi.Name] = fi.Size
		return nil
	}); err != nil {
		return nil, err
	}
	var toRead []ID
	for pid := range idx.Packs() {
		if opts.Backup != "" && !wantPacks[pid] {
			continue
		}
		name := packName(pid)
		size, ok := stored[name]
		switch {
		case !ok:
			if wantPacks[pid] {
				rep.add(name, fmt.Errorf("pack is missing; backups that use it cannot be restored"))
			} else {
				rep.add(name, fmt.Errorf("pack is missing; an index file names it (no backup uses it; the next prune drops it)"))
			}
			continue
		case packSize[pid] > 0 && size != packSize[pid]:
			rep.add(name, fmt.Errorf("pack is %d bytes, the index says %d", size, packSize[pid]))
		}
		toRead = append(toRead, pid)
	}
	// Packs no index names (an interrupted backup's, or those of a lost
	// index file) are read too, so damage there is found before a repair
	// indexes them.
	if opts.Backup == "" && opts.ReadData {
		indexed := idx.Packs()
		for name := range stored {
			id, err := ParseID(name[strings.LastIndex(name, "/")+1:])
			if err != nil || name != packName(id) {
				continue
			}
			if _, ok := indexed[id]; !ok {
				toRead = append(toRead, id)
			}
		}
	}
	rep.Packs = len(toRead)
	sort.Slice(toRead, func(i, j int) bool { return toRead[i].String() < toRead[j].String() })

	if opts.ReadData {
		r.readPacks(ctx, toRead, rep, opts.Progress)
		r.readSegments(ctx, rep)
	}
	sort.Slice(rep.Problems, func(i, j int) bool { return rep.Problems[i].Object < rep.Problems[j].Object })
	return rep, ctx.Err()
}

// loadIndexFileFresh bypasses the cache.
func (r *Repository) loadIndexFileFresh(ctx context.Context, name string) (*indexFile, error) {
	if r.cache != nil {
		r.cache.drop(name)
	}
	return r.loadIndexFile(ctx, name)
}

func (r *Repository) readPacks(ctx context.Context, packs []ID, rep *VerifyReport, progress func(int64)) {
	var mu sync.Mutex
	var read atomic.Int64
	work := make(chan ID)
	var wg sync.WaitGroup
	for range max(runtime.GOMAXPROCS(0), 2) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pid := range work {
				n, err := r.checkPack(ctx, pid)
				total := read.Add(n)
				if progress != nil {
					progress(total)
				}
				if err != nil {
					mu.Lock()
					rep.add(packName(pid), err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, p := range packs {
		if ctx.Err() != nil {
			break
		}
		work <- p
	}
	close(work)
	wg.Wait()
	rep.BytesRead += read.Load()
}

// checkPack reads a whole pack and checks its name, header and every blob.
func (r *Repository) checkPack(ctx context.Context, pid ID) (int64, error) {
	name := packName(pid)
	buf, err := readCapped(ctx, r.be, name, r.maxPackObject())
	if err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	if hashID(buf) != pid {
		return int64(len(buf)), &CorruptError{Object: name, Err: errors.New("content does not match its name")}
	}
	blobs, err := parsePackHeader(r.seal, buf)
	if err != nil {
		return int64(len(buf)), &CorruptError{Object: name, Err: err}
	}
	for _, b := range blobs {
		l := Location{Pack: pid, BlobInfo: b}
		if _, err := r.openBlob(l, buf[int64(b.Offset):int64(b.Offset)+int64(b.Length)], nil); err != nil {
			return int64(len(buf)), err
		}
	}
	return int64(len(buf)), nil
}

func (r *Repository) readSegments(ctx context.Context, rep *VerifyReport) {
	_ = r.be.List(ctx, logDir, func(fi storage.FileInfo) error {
		if strings.HasSuffix(fi.Name, "/") {
			return nil
		}
		rep.Segments++
		n, err := r.checkSegment(ctx, fi.Name)
		rep.BytesRead += n
		if err != nil {
			rep.add(fi.Name, err)
		}
		return nil
	})
}
