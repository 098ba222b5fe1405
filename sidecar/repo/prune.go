package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
)

// Lock objects (docs/repository-format.md, "Locks"). Only prune locks;
// writers never do, they only look.
const (
	pruneLockPrefix = locksDir + "prune-"  // held while a prune runs
	prunedPrefix    = locksDir + "pruned-" // left by the last finished prune
	tsLayout        = "20060102T150405.000000000Z"
)

type lockInfo struct {
	Host string    `json:"host"`
	PID  int       `json:"pid"`
	Time time.Time `json:"time"`
}

// ErrLocked means another prune holds the repository's exclusive lock.
var ErrLocked = errors.New("another prune is running")

func (r *Repository) acquirePruneLock(ctx context.Context) (string, error) {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	now := r.now().UTC()
	name := pruneLockPrefix + now.Format(tsLayout) + "-" + hex.EncodeToString(rnd[:])
	host, _ := os.Hostname()
	b, _ := json.Marshal(lockInfo{Host: host, PID: os.Getpid(), Time: now})
	if err := r.be.Save(ctx, name, bytes.NewReader(b), int64(len(b))); err != nil {
		return "", fmt.Errorf("write prune lock: %w", err)
	}
	locks, err := listNames(ctx, r.be, pruneLockPrefix)
	if err != nil {
		_ = r.be.Remove(ctx, name)
		return "", fmt.Errorf("list locks: %w", err)
	}
	sort.Strings(locks)
	if locks[0] != name { // the oldest lock wins
		_ = r.be.Remove(ctx, name)
		return "", fmt.Errorf("%w (lock %s); wait for it, or if it died, remove that object with `amber unlock`", ErrLocked, locks[0])
	}
	return name, nil
}

// Unlock removes stale prune locks left by a prune that died.
func (r *Repository) Unlock(ctx context.Context) (int, error) {
	locks, err := listNames(ctx, r.be, pruneLockPrefix)
	if err != nil {
		return 0, err
	}
	for _, l := range locks {
		if err := r.be.Remove(ctx, l); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return 0, err
		}
	}
	return len(locks), nil
}

// checkConcurrentPrune runs before a writer's manifest is written. Writers
// take no lock, so a prune may have run meanwhile: wait for a running one,
// and if one finished since the writer started, make sure every pack the
// writer deduplicated against is still there.
func (r *Repository) checkConcurrentPrune(ctx context.Context, w *Writer) error {
	for {
		locks, err := listNames(ctx, r.be, locksDir)
		if err != nil {
			return fmt.Errorf("check locks: %w", err)
		}
		running, lastPrune := false, ""
		for _, l := range locks {
			if strings.HasPrefix(l, pruneLockPrefix) {
				running = true
			}
			if strings.HasPrefix(l, prunedPrefix) && l > lastPrune {
				lastPrune = l
			}
		}
		if running {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Second):
				continue
			}
		}
		if lastPrune == "" || strings.TrimPrefix(lastPrune, prunedPrefix) < w.started.Format(tsLayout) {
			return nil
		}
		return w.checkDedupPacks(ctx)
	}
}

// PrunePolicy says which backups to keep. A backup is kept when any rule
// keeps it; rules apply to each backup name separately. With no rule set,
// every backup is kept and prune only removes unreferenced data.
type PrunePolicy struct {
	KeepLast   int
	KeepWithin time.Duration
	// Grace protects packs younger than this that no index names yet:
	// they may belong to a backup still running.
	Grace  time.Duration
	DryRun bool
}

// PruneResult reports what prune removed (or would remove).
type PruneResult struct {
	Forgotten    []string `json:"forgotten"` // backup ids
	Kept         int      `json:"kept"`
	PacksRemoved int      `json:"packs_removed"`
	BytesFreed   int64    `json:"bytes_freed"`
	Orphans      int      `json:"orphan_packs"`
	Incomplete   int      `json:"incomplete_uploads"` // left by crashed writers, swept

	DryRun bool `json:"dry_run"`
}

// Prune forgets backups outside the policy and removes data no backup uses.
// It holds the repository's only lock while it runs.
func (r *Repository) Prune(ctx context.Context, p PrunePolicy) (*PruneResult, error) {
	lock, err := r.acquirePruneLock(ctx)
	if err != nil {
		return nil, err
	}
	defer r.be.Remove(context.WithoutCancel(ctx), lock)

	res := &PruneResult{DryRun: p.DryRun}
	all, err := r.Backups(ctx)
	if err != nil {
		return nil, err
	}
	keep := selectKeep(all, p, r.now())
	var kept []*Manifest
	for _, m := range all {
		if keep[m.ID] {
			kept = append(kept, m)
			continue
		}
		res.Forgotten = append(res.Forgotten, m.ID.String())
	}
	res.Kept = len(kept)

	// Fresh index: every index file, whatever was loaded before.
	r.resetIndex()
	idx, err := r.Index(ctx)
	if err != nil {
		return nil, err
	}
	used, err := r.referenced(ctx, kept)
	if err != nil {
		return nil, err
	}
	packs := idx.Packs()
	var removePacks []string
	keepPacks := make(map[ID]bool)
	for pid, blobs := range packs {
		inUse := false
		for _, b := range blobs {
			if used[b.ID] {
				inUse = true
				break
			}
		}
		if inUse {
			keepPacks[pid] = true
		} else {
			removePacks = append(removePacks, packName(pid))
		}
	}
	// Orphans: packs in storage that no index names (a writer died).
	cutoff := r.now().Add(-p.Grace)
	sizes := make(map[string]int64)
	err = r.be.List(ctx, dataDir, func(fi storage.FileInfo) error {
		sizes[fi.Name] = fi.Size
		id, err := ParseID(fi.Name[strings.LastIndex(fi.Name, "/")+1:])
		if err != nil {
			return nil // not ours
		}
		if _, indexed := packs[id]; !indexed && fi.ModTime.Before(cutoff) {
			removePacks = append(removePacks, fi.Name)
			res.Orphans++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	for _, n := range removePacks {
		res.BytesFreed += sizes[n]
	}
	res.PacksRemoved = len(removePacks)
	if p.DryRun {
		return res, nil
	}

	// Order matters for a crash at any point: manifests first (a backup
	// disappears whole), then a new index of what stays, then the old index
	// files, and only then the packs nothing refers to any more.
	for _, m := range all {
		if !keep[m.ID] {
			if err := r.forget(ctx, m.ID); err != nil {
				return nil, err
			}
		}
	}
	var newIdx []indexPack
	for pid := range keepPacks {
		newIdx = append(newIdx, indexPack{ID: pid, Blobs: packs[pid]})
	}
	sort.Slice(newIdx, func(i, j int) bool { return newIdx[i].ID.String() < newIdx[j].ID.String() })
	if len(newIdx) > 0 {
		if _, err := r.saveIndex(ctx, nil, newIdx); err != nil {
			return nil, err
		}
	}
	// Remove exactly the index files merged above: one a writer added since
	// then names packs the new index does not, and must stay.
	for _, n := range idx.loadedNames() {
		if err := r.be.Remove(ctx, n); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("remove %s: %w", n, err)
		}
	}
	marker := prunedPrefix + r.now().UTC().Format(tsLayout)
	if err := r.be.Save(ctx, marker, bytes.NewReader(nil), 0); err != nil {
		return nil, fmt.Errorf("write prune marker: %w", err)
	}
	for _, n := range removePacks {
		if err := r.be.Remove(ctx, n); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("remove %s: %w", n, err)
		}
	}
	if sw, ok := storage.AsSweeper(r.be); ok {
		n, err := sw.Sweep(ctx, cutoff)
		if err != nil {
			return nil, fmt.Errorf("remove incomplete uploads: %w", err)
		}
		res.Incomplete = n
	}
	olderMarkers, _ := listNames(ctx, r.be, prunedPrefix)
	for _, n := range olderMarkers {
		if n < marker {
			_ = r.be.Remove(ctx, n)
		}
	}
	r.resetIndex()
	return res, nil
}

func selectKeep(all []*Manifest, p PrunePolicy, now time.Time) map[ID]bool {
	keep := make(map[ID]bool)
	if p.KeepLast == 0 && p.KeepWithin == 0 {
		for _, m := range all {
			keep[m.ID] = true
		}
		return keep
	}
	byName := make(map[string][]*Manifest)
	for _, m := range all { // all is oldest first
		byName[m.Name] = append(byName[m.Name], m)
	}
	for _, list := range byName {
		for i, m := range list {
			if p.KeepLast > 0 && i >= len(list)-p.KeepLast {
				keep[m.ID] = true
			}
			if p.KeepWithin > 0 && m.Start.After(now.Add(-p.KeepWithin)) {
				keep[m.ID] = true
			}
		}
	}
	return keep
}

// referenced returns every blob id the given backups use (lists and data).
func (r *Repository) referenced(ctx context.Context, ms []*Manifest) (map[ID]bool, error) {
	used := make(map[ID]bool)
	for _, m := range ms {
		for _, e := range m.Entries {
			for _, lid := range e.Lists {
				if used[lid] {
					continue
				}
				items, err := r.loadList(ctx, lid)
				if err != nil {
					return nil, fmt.Errorf("backup %s: %w", m.ID.Short(), err)
				}
				used[lid] = true
				for _, it := range items {
					used[it.id] = true
				}
			}
		}
	}
	return used, nil
}
