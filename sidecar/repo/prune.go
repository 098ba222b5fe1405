package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
)

// Lock objects (docs/repository-format.md, "Locks"). Only prune (and
// repair) lock; writers leave a marker under writers/ instead.
const (
	pruneLockPrefix = locksDir + "prune-"  // held while a prune runs, refreshed
	prunedPrefix    = locksDir + "pruned-" // left by the last finished prune
	tsLayout        = "20060102T150405.000000000Z"
)

type lockInfo = markerInfo

// ErrLocked means another prune holds the repository's exclusive lock.
var ErrLocked = errors.New("another prune is running")

// ErrLostIndex means a kept backup uses a blob that no index file names.
var ErrLostIndex = errors.New("an index file is lost or damaged")

// acquirePruneLock writes a prune lock and keeps it fresh. It returns the
// lock and the storage server's time when it was taken. Of two prunes
// that see each other's live locks, the one whose lock the server stored
// later backs off (both do when the times are equal). Locks not refreshed
// for StaleAfter are removed.
func (r *Repository) acquirePruneLock(ctx context.Context) (*lease, time.Time, error) {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := pruneLockPrefix + r.now().UTC().Format(tsLayout) + "-" + hex.EncodeToString(rnd[:])
	l, err := r.takeLease(ctx, name)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("write prune lock: %w", err)
	}
	ref := l.serverNow()
	locks, _, err := r.pruneLocks(ctx)
	if err != nil {
		l.release(ctx)
		return nil, time.Time{}, err
	}
	for _, fi := range locks {
		if fi.Name == name {
			continue
		}
		if age := ref.Sub(fi.ModTime); age > r.opts.staleAfter() || holderGone(r.readMarker(ctx, fi.Name)) {
			r.opts.logger().Warn("taking over a stale prune lock: that prune stopped refreshing it and is taken for dead",
				"lock", fi.Name, "age", age.Round(time.Second))
			if err := r.be.Remove(ctx, fi.Name); err != nil && !errors.Is(err, storage.ErrNotFound) {
				l.release(ctx)
				return nil, time.Time{}, fmt.Errorf("remove stale lock %s: %w", fi.Name, err)
			}
			continue
		}
		if !fi.ModTime.After(ref) {
			l.release(ctx)
			return nil, time.Time{}, fmt.Errorf("%w (lock %s of %s); wait for it to finish (a prune that died leaves a lock that goes stale %s after its last refresh), or if you are sure it is not running, remove the lock with `amber unlock --force`",
				ErrLocked, fi.Name, describeHolder(r.readMarker(ctx, fi.Name)), r.opts.staleAfter())
		}
	}
	return l, ref, nil
}

// changedSince names a backup writer or manifest that was not there when
// prune listed them (live writers and every manifest it read or could
// not read); "" if there is none.
func (r *Repository) changedSince(ctx context.Context, ref time.Time, live []writerMarker, all []*Manifest, problems []Problem) (string, error) {
	known := map[string]bool{}
	for _, wm := range live {
		known[wm.name] = true
	}
	for _, m := range all {
		known[backupsDir+m.ID.String()] = true
	}
	for _, p := range problems {
		known[p.Object] = true
	}
	nowLive, _, err := r.listWriters(ctx, ref)
	if err != nil {
		return "", err
	}
	for _, wm := range nowLive {
		if !known[wm.name] {
			return fmt.Sprintf("a backup started while this prune ran (writer %s on %s; was the prune lock removed?)",
				strings.TrimPrefix(wm.name, writersDir), describeHolder(wm.info)), nil
		}
	}
	names, err := listNames(ctx, r.be, backupsDir)
	if err != nil {
		return "", fmt.Errorf("list backups: %w", err)
	}
	for _, n := range names {
		if !known[n] {
			return fmt.Sprintf("backup %s was committed while this prune ran (was the prune lock removed?)", strings.TrimPrefix(n, backupsDir)), nil
		}
	}
	return "", nil
}

// UnlockResult says what Unlock removed and which locks it left alone.
type UnlockResult struct {
	Removed []string       `json:"removed"`
	Live    []LiveLockInfo `json:"live,omitempty"`
}

// LiveLockInfo describes a prune lock that its holder still refreshes.
type LiveLockInfo struct {
	Name      string        `json:"name"`
	Holder    string        `json:"holder"`
	Refreshed time.Duration `json:"refreshed_ago_ns"` // by the storage server's clock
}

// Unlock removes prune locks left by a prune that died: locks not
// refreshed for StaleAfter by the storage server's clock, or whose holder
// is a process of this host that no longer runs. A lock still being
// refreshed belongs to a prune that runs (perhaps on another host) and is
// kept unless force is set. Removing a live lock never loses data: that
// prune finds the backups that started meanwhile and refuses to delete
// (docs/repository-format.md), but it fails.
func (r *Repository) Unlock(ctx context.Context, force bool) (UnlockResult, error) {
	var res UnlockResult
	locks, _, err := r.pruneLocks(ctx)
	if err != nil {
		return res, err
	}
	if len(locks) == 0 {
		return res, nil
	}
	now, err := r.serverTime(ctx)
	if err != nil {
		return res, err
	}
	for _, fi := range locks {
		mi := r.readMarker(ctx, fi.Name)
		age := max(now.Sub(fi.ModTime), 0)
		if !force && age <= r.opts.staleAfter() && !holderGone(mi) {
			res.Live = append(res.Live, LiveLockInfo{Name: fi.Name, Holder: describeHolder(mi), Refreshed: age})
			continue
		}
		if err := r.be.Remove(ctx, fi.Name); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return res, err
		}
		res.Removed = append(res.Removed, fi.Name)
	}
	return res, nil
}

// serverTime reads the storage server's clock: the modification time of a
// small object it writes and removes again.
func (r *Repository) serverTime(ctx context.Context) (time.Time, error) {
	name := newMarkerName(locksDir + "clock-")
	began := r.now()
	if err := r.be.Save(ctx, name, bytes.NewReader(nil), 0); err != nil {
		return time.Time{}, fmt.Errorf("read the storage server's clock: save %s: %w", name, err)
	}
	fi, err := r.be.Stat(ctx, name)
	if rerr := r.be.Remove(ctx, name); rerr != nil && !errors.Is(rerr, storage.ErrNotFound) {
		r.opts.logger().Warn("could not remove a clock probe; it is harmless", "object", name, "error", rerr)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read the storage server's clock: stat %s: %w", name, err)
	}
	return fi.ModTime.Add(r.now().Sub(began) / 2), nil
}

// writerMarker is a writer's marker as prune sees it.
type writerMarker struct {
	name string
	info markerInfo
	age  time.Duration
}

// listWriters splits the writer markers into live and stale, by the age
// the server's clock gives them at ref.
func (r *Repository) listWriters(ctx context.Context, ref time.Time) (live, stale []writerMarker, err error) {
	var all []storage.FileInfo
	if err := r.be.List(ctx, writersDir, func(fi storage.FileInfo) error { all = append(all, fi); return nil }); err != nil {
		return nil, nil, fmt.Errorf("list writers: %w", err)
	}
	for _, fi := range all {
		wm := writerMarker{name: fi.Name, age: ref.Sub(fi.ModTime), info: r.readMarker(ctx, fi.Name)}
		if wm.age > r.opts.staleAfter() || holderGone(wm.info) {
			stale = append(stale, wm)
		} else {
			live = append(live, wm)
		}
	}
	return live, stale, nil
}

// PrunePolicy says which backups to keep. A backup is kept when any rule
// keeps it; rules apply to each backup name separately. With no rule set,
// every backup is kept and prune only removes unreferenced data.
type PrunePolicy struct {
	KeepLast   int
	KeepWithin time.Duration
	// Grace protects packs younger than this that no index names yet:
	// they may belong to a backup still running.
	// Its age is judged by the storage server's clock. While any backup
	// is running (a live writer marker), no pack is deleted at all.
	Grace  time.Duration
	DryRun bool
}

// PruneResult reports what prune removed (or would remove).
type PruneResult struct {
	Forgotten    []string `json:"forgotten"`         // backup ids
	Workloads    int      `json:"workloads_removed"` // workloads captured with forgotten backups
	Kept         int      `json:"kept"`
	PacksRemoved int      `json:"packs_removed"`
	BytesFreed   int64    `json:"bytes_freed"`
	Orphans      int      `json:"orphan_packs"`
	Incomplete   int      `json:"incomplete_uploads"` // left by crashed writers, swept
	// PacksKept says why no pack was deleted, if so: a backup running, a
	// manifest or index file that could not be read.
	PacksKept string `json:"packs_kept,omitempty"`
	// Log segments no kept backup can use (before every kept backup of
	// their stream, or partial objects a complete segment covers).
	LogSegmentsRemoved int   `json:"log_segments_removed"`
	LogBytesFreed      int64 `json:"log_bytes_freed"`
	// LogKept says why no log segment was deleted, if so.
	LogKept      string    `json:"log_kept,omitempty"`
	StaleWriters int       `json:"stale_writers_removed"`
	KeysExpired  int       `json:"expired_keys_removed"`
	Problems     []Problem `json:"problems,omitempty"`

	DryRun bool `json:"dry_run"`
}

// Prune forgets backups outside the policy and removes data no backup uses.
// It holds the repository's only lock while it runs. A manifest or index
// file it cannot read is reported in the result (and logged); prune goes on
// but deletes no pack, as it cannot know what that object references. It
// refuses to run, deleting nothing, when a kept backup uses a blob no
// index names (ErrLostIndex).
func (r *Repository) Prune(ctx context.Context, p PrunePolicy) (*PruneResult, error) {
	lock, ref, err := r.acquirePruneLock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.release(ctx)
	log := r.opts.logger()
	res := &PruneResult{DryRun: p.DryRun}
	var hold []string

	// Writers: any live marker holds every pack; stale ones are removed.
	live, stale, err := r.listWriters(ctx, ref)
	if err != nil {
		return nil, err
	}
	for _, wm := range live {
		hold = append(hold, fmt.Sprintf("backup running (writer %s on %s)", strings.TrimPrefix(wm.name, writersDir), describeHolder(wm.info)))
	}

	// Manifests first, then the index: a manifest is written after its
	// index, so every blob of a manifest listed here is in the index
	// loaded after.
	all, problems, err := r.loadManifestsTolerant(ctx)
	if err != nil {
		return nil, err
	}
	unreadManifests := len(problems)
	if unreadManifests > 0 {
		hold = append(hold, fmt.Sprintf("%d manifest(s) could not be read", unreadManifests))
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
	res.Kept = len(kept) + len(problems)

	idx, idxProblems, err := r.loadIndexTolerant(ctx)
	if err != nil {
		return nil, err
	}
	if len(idxProblems) > 0 {
		hold = append(hold, fmt.Sprintf("%d index file(s) could not be read", len(idxProblems)))
		problems = append(problems, idxProblems...)
	}
	used, err := r.referenced(ctx, kept, idx)
	if err != nil {
		return nil, err
	}

	stored := make(map[ID]storage.FileInfo)
	err = r.be.List(ctx, dataDir, func(fi storage.FileInfo) error {
		if id, err := ParseID(fi.Name[strings.LastIndex(fi.Name, "/")+1:]); err == nil && fi.Name == packName(id) {
			stored[id] = fi
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	packs := idx.Packs()
	var removePacks []ID
	var newIdx []indexPack
	for pid, blobs := range packs {
		inUse := false
		for _, b := range blobs {
			if used[b.ID] {
				inUse = true
				break
			}
		}
		fi, exists := stored[pid]
		size := idx.PackSize(pid)
		if exists {
			size = fi.Size
		}
		switch {
		case inUse || (exists && len(hold) > 0):
			newIdx = append(newIdx, indexPack{ID: pid, Size: size, Blobs: blobs})
		case exists:
			removePacks = append(removePacks, pid)
		}
	}
	// Orphans: packs no index names (a writer died), older than the grace
	// period by the server's clock.
	for pid, fi := range stored {
		if _, indexed := packs[pid]; !indexed && ref.Sub(fi.ModTime) > p.Grace {
			removePacks = append(removePacks, pid)
			res.Orphans++
		}
	}
	if len(hold) > 0 {
		res.PacksKept = strings.Join(hold, "; ")
		removePacks, res.Orphans = nil, 0
		log.Warn("prune deletes no pack this time", "reason", res.PacksKept)
	}
	for _, pid := range removePacks {
		res.BytesFreed += stored[pid].Size
	}
	res.PacksRemoved = len(removePacks)
	for _, pr := range problems {
		log.Warn("prune could not read an object; its data is kept", "object", pr.Object, "error", pr.Error)
	}
	res.Problems = problems

	// Log: what no kept backup can replay. Not while a backup runs (it
	// may need log from before the newest kept backup's start) or while a
	// manifest cannot be read (its backup may need any of it).
	var removeLog []logObject
	switch {
	case len(live) > 0:
		res.LogKept = hold[0] // the first running backup
	case unreadManifests > 0:
		res.LogKept = fmt.Sprintf("%d manifest(s) could not be read", unreadManifests)
	default:
		if removeLog, err = r.unneededLog(ctx, kept); err != nil {
			return nil, err
		}
	}
	if res.LogKept != "" {
		log.Warn("prune deletes no log segment this time", "reason", res.LogKept)
	}
	for _, s := range removeLog {
		res.LogBytesFreed += s.stored
	}
	res.LogSegmentsRemoved = len(removeLog)
	if p.DryRun {
		res.StaleWriters = len(stale)
		return res, nil
	}

	// Order matters for a crash at any point: manifests first (a backup
	// disappears whole), then a new index of what stays, then the old index
	// files, and only then the packs nothing refers to any more. Each step
	// that deletes runs only while the lock is provably ours.
	for _, wm := range stale {
		log.Warn("removing a stale writer marker: that backup stopped and cannot commit any more", "marker", wm.name,
			"writer", describeHolder(wm.info), "age", wm.age.Round(time.Second))
		if err := r.be.Remove(ctx, wm.name); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("remove %s: %w", wm.name, err)
		}
		res.StaleWriters++
	}
	if err := lock.valid(); err != nil {
		return nil, pruneStalled(err)
	}
	for _, m := range all {
		if !keep[m.ID] {
			if err := r.forget(ctx, m.ID); err != nil {
				return nil, err
			}
		}
	}
	forgotten := make(map[ID]bool)
	for _, m := range all {
		if !keep[m.ID] {
			forgotten[m.ID] = true
		}
	}
	if res.Workloads, err = r.forgetWorkloads(ctx, forgotten); err != nil {
		return nil, err
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
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	marker := prunedPrefix + r.now().UTC().Format(tsLayout) + "-" + hex.EncodeToString(rnd[:])
	if err := r.be.Save(ctx, marker, bytes.NewReader(nil), 0); err != nil {
		return nil, fmt.Errorf("write prune marker: %w", err)
	}
	// A backup that started or committed since the listings above found no
	// prune lock: someone removed it (`amber unlock`) while this prune ran.
	// It may use packs that looked unused; name them in an index again and
	// delete none this time.
	if len(removePacks) > 0 || len(removeLog) > 0 {
		why, err := r.changedSince(ctx, lock.serverNow(), live, all, problems)
		if err != nil {
			return nil, err
		}
		if why != "" && len(removeLog) > 0 {
			log.Warn("prune deletes no log segment this time", "reason", why)
			res.LogKept, removeLog = why, nil
			res.LogSegmentsRemoved, res.LogBytesFreed = 0, 0
		}
		if why != "" && len(removePacks) > 0 {
			var back []indexPack
			for _, pid := range removePacks {
				if blobs, ok := packs[pid]; ok {
					back = append(back, indexPack{ID: pid, Size: stored[pid].Size, Blobs: blobs})
				}
			}
			sort.Slice(back, func(i, j int) bool { return back[i].ID.String() < back[j].ID.String() })
			if len(back) > 0 {
				if _, err := r.saveIndex(ctx, nil, back); err != nil {
					return nil, err
				}
			}
			log.Warn("prune deletes no pack this time", "reason", why)
			res.PacksKept, removePacks = why, nil
			res.PacksRemoved, res.Orphans, res.BytesFreed = 0, 0, 0
		}
	}
	for _, pid := range removePacks {
		if err := lock.valid(); err != nil {
			return nil, pruneStalled(err)
		}
		if err := r.be.Remove(ctx, packName(pid)); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("remove %s: %w", packName(pid), err)
		}
	}
	for _, s := range removeLog {
		if err := lock.valid(); err != nil {
			return nil, pruneStalled(err)
		}
		if err := r.be.Remove(ctx, s.ObjectName()); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("remove %s: %w", s.ObjectName(), err)
		}
	}
	if sw, ok := storage.AsSweeper(r.be); ok && len(live) == 0 && lock.valid() == nil {
		n, err := sw.Sweep(ctx, ref.Add(-p.Grace))
		if err != nil {
			return nil, fmt.Errorf("remove incomplete uploads: %w", err)
		}
		res.Incomplete = n
	}
	if res.KeysExpired, err = r.removeExpiredKeys(ctx, lock.serverNow()); err != nil {
		return nil, err
	}
	olderMarkers, _ := listNames(ctx, r.be, prunedPrefix)
	for _, n := range olderMarkers {
		if n != marker {
			_ = r.be.Remove(ctx, n)
		}
	}
	r.resetIndex()
	return res, nil
}

func pruneStalled(err error) error {
	return fmt.Errorf("prune stopped: its lock %v; run prune again", err)
}

// loadManifestsTolerant loads every manifest it can, oldest first, and
// reports the others.
func (r *Repository) loadManifestsTolerant(ctx context.Context) ([]*Manifest, []Problem, error) {
	names, err := listNames(ctx, r.be, backupsDir)
	if err != nil {
		return nil, nil, fmt.Errorf("list backups: %w", err)
	}
	var out []*Manifest
	var problems []Problem
	for _, name := range names {
		m, err := r.loadManifest(ctx, name)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			problems = append(problems, problemFor(name, err))
			continue
		}
		out = append(out, m)
	}
	sortManifests(out)
	return out, problems, nil
}

// loadIndexTolerant reads every index file afresh, reporting those it cannot.
func (r *Repository) loadIndexTolerant(ctx context.Context) (*Index, []Problem, error) {
	names, err := r.indexFiles(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list index: %w", err)
	}
	idx := newIndex()
	var problems []Problem
	for _, n := range names {
		f, err := r.loadIndexFile(ctx, n)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			problems = append(problems, problemFor(n, err))
			continue
		}
		for _, p := range f.Packs {
			idx.addPack(p)
		}
		idx.markLoaded(n)
	}
	return idx, problems, nil
}

func problemFor(object string, err error) Problem {
	var ce *CorruptError
	if errors.As(err, &ce) {
		object = ce.Object
	}
	return Problem{Object: object, Error: err.Error()}
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
// A blob that idx does not name means a lost index file: ErrLostIndex.
func (r *Repository) referenced(ctx context.Context, ms []*Manifest, idx *Index) (map[ID]bool, error) {
	used := make(map[ID]bool)
	lost := func(m *Manifest, id ID) error {
		return fmt.Errorf("backup %s uses blob %s, which no index file names: %w; nothing was deleted: run `amber repair index`, then prune again",
			m.ID.Short(), id.Short(), ErrLostIndex)
	}
	for _, m := range ms {
		for _, e := range m.Entries {
			for _, lid := range e.allLists() {
				if used[lid] {
					continue
				}
				l, ok := idx.Lookup(lid)
				if !ok {
					return nil, lost(m, lid)
				}
				items, err := r.loadListAt(ctx, l)
				if err != nil {
					return nil, fmt.Errorf("backup %s: %w", m.ID.Short(), err)
				}
				used[lid] = true
				for _, it := range items {
					if !idx.Has(it.id) {
						return nil, lost(m, it.id)
					}
					used[it.id] = true
				}
			}
		}
	}
	return used, nil
}
