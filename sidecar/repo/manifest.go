package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
)

// Manifest describes one complete backup. It is written last: a backup
// exists exactly when its manifest does.
type Manifest struct {
	Version int               `json:"version"`
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags,omitempty"`
	Host    string            `json:"host,omitempty"`
	Engine  string            `json:"engine,omitempty"` // "" for a plain stream
	Mode    string            `json:"mode,omitempty"`   // stream, logical, physical
	Start   time.Time         `json:"start"`
	End     time.Time         `json:"end"`
	Entries []Entry           `json:"entries"`

	BytesIn    int64 `json:"bytes_in"`
	BytesAdded int64 `json:"bytes_added"`
	// BytesReused counts the bytes of file records reused from an earlier
	// backup without being read (not in BytesIn).
	BytesReused int64 `json:"bytes_reused,omitempty"`

	// Where and when the backup is consistent, in the engine's terms.
	Position       string    `json:"position,omitempty"`
	ConsistentTime time.Time `json:"consistent_time,omitzero"`
	// Record is set for engine backups (Engine != "").
	Record *EngineRecord `json:"engine_record,omitempty"`
	// Snapshots are the volume snapshots of a snapshot backup (Mode
	// "snapshot"), which has no entries: its data stays in the snapshots.
	Snapshots []VolumeSnapshot `json:"snapshots,omitempty"`

	// ID is the manifest's object id; set on load, never stored.
	ID ID `json:"-"`
}

// ErrBackupNotFound means no backup matches an id, prefix or "latest".
var ErrBackupNotFound = errors.New("no such backup; list them with `amber ls`")

// Commit stores everything written, then the manifest, and returns the
// backup's id. Only after Commit returns is the backup visible. Before the
// manifest is written, Commit checks that the writer's marker is still
// there and fresh, and that every pack the backup references exists; if
// not, it fails and writes no manifest.
func (w *Writer) Commit(ctx context.Context, m *Manifest) (ID, error) {
	if w.committed != (ID{}) {
		return ID{}, errors.New("this backup is already committed")
	}
	if err := w.flushPacks(ctx); err != nil {
		return ID{}, err
	}
	if err := w.checkMarker(ctx); err != nil {
		return ID{}, err
	}
	if err := w.checkPacks(ctx); err != nil {
		return ID{}, err
	}
	if err := w.saveWrittenIndex(ctx); err != nil {
		return ID{}, err
	}
	m.Version = Version
	for _, e := range m.Entries {
		if e.Files != nil {
			m.Version = ManifestVersionFiles
		}
	}
	if m.Host == "" {
		m.Host, _ = os.Hostname()
	}
	if m.End.IsZero() {
		m.End = w.r.now().UTC()
	}
	m.BytesIn = w.BytesIn.Load()
	m.BytesReused = w.BytesReused.Load()
	m.BytesAdded = w.BytesAdded.Load() // all but the manifest itself
	for _, e := range m.Entries {
		if len(e.Lists) == 0 {
			return ID{}, fmt.Errorf("entry %q has no content", e.Name)
		}
	}
	plain, err := json.Marshal(m)
	if err != nil {
		return ID{}, err
	}
	// The manifest must be durable while the marker still protects the
	// packs: bound the save by what is left of the marker's lease.
	left := w.marker.remaining()
	if left <= 0 {
		return ID{}, w.markerLost(w.marker.valid())
	}
	mctx, cancel := context.WithTimeout(ctx, left)
	defer cancel()
	sealed := w.r.seal.seal(nil, zenc.EncodeAll(plain, nil), []byte(adBackup))
	id := hashID(sealed)
	name := backupsDir + id.String()
	err = w.r.be.Save(mctx, name, bytes.NewReader(sealed), int64(len(sealed)))
	if err == nil {
		err = w.marker.valid()
	}
	if err != nil {
		// The save may have landed after the lease ran out: take it back.
		if rmErr := w.r.be.Remove(context.WithoutCancel(ctx), name); rmErr != nil && !errors.Is(rmErr, storage.ErrNotFound) {
			w.r.opts.logger().Error("could not remove a manifest saved too late; remove it by hand", "object", name, "error", rmErr)
		}
		if w.marker.valid() != nil {
			return ID{}, w.markerLost(w.marker.valid())
		}
		return ID{}, fmt.Errorf("save %s: %w", name, err)
	}
	if w.r.cache != nil {
		w.r.cache.put(name, sealed)
	}
	// BytesAdded includes the manifest itself.
	w.BytesAdded.Add(int64(len(sealed)))
	m.ID = id
	w.committed = id
	w.marker.release(ctx)
	return id, nil
}

// checkMarker makes sure the writer's marker still protects its packs.
func (w *Writer) checkMarker(ctx context.Context) error {
	if err := w.marker.valid(); err != nil {
		return w.markerLost(err)
	}
	if _, err := w.r.be.Stat(ctx, w.marker.name); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return w.markerLost(fmt.Errorf("%s was removed by a prune that took it for abandoned", w.marker.name))
		}
		return fmt.Errorf("check writer marker: %w", err)
	}
	return nil
}

func (w *Writer) markerLost(err error) error {
	return fmt.Errorf("backup not committed: its writer marker %v; a prune may have deleted its data; run the backup again", err)
}

// Committed returns the id of the committed backup (zero before Commit).
func (w *Writer) Committed() ID { return w.committed }

// Backups loads every manifest, oldest first.
func (r *Repository) Backups(ctx context.Context) ([]*Manifest, error) {
	names, err := listNames(ctx, r.be, backupsDir)
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	var out []*Manifest
	for _, name := range names {
		m, err := r.loadManifest(ctx, name)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if r.cache != nil {
		r.cache.prune(backupsDir, names)
	}
	sortManifests(out)
	return out, nil
}

// sortManifests orders backups oldest first.
func sortManifests(out []*Manifest) {
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.Before(out[j].Start)
		}
		return out[i].ID.String() < out[j].ID.String()
	})
}

func (r *Repository) loadManifest(ctx context.Context, name string) (*Manifest, error) {
	plain, err := r.loadObject(ctx, name, adBackup)
	if err != nil {
		return nil, fmt.Errorf("load backup: %w", err)
	}
	m, err := parseManifest(name, plain)
	if err != nil {
		return nil, err
	}
	id, err := ParseID(strings.TrimPrefix(name, backupsDir))
	if err != nil {
		return nil, &CorruptError{Object: name, Err: err}
	}
	m.ID = id
	return m, nil
}

// FindBackup resolves "latest", a full id or a unique id prefix. With
// "latest" and a non-empty name, the newest backup of that name.
func (r *Repository) FindBackup(ctx context.Context, ref, name string) (*Manifest, error) {
	all, err := r.Backups(ctx)
	if err != nil {
		return nil, err
	}
	var match []*Manifest
	for _, m := range all {
		if name != "" && m.Name != name {
			continue
		}
		if ref == "latest" || strings.HasPrefix(m.ID.String(), ref) {
			match = append(match, m)
		}
	}
	switch {
	case len(match) == 0:
		return nil, fmt.Errorf("backup %q: %w", ref, ErrBackupNotFound)
	case ref == "latest":
		return match[len(match)-1], nil
	case len(match) > 1:
		return nil, fmt.Errorf("backup id %q is ambiguous (%d backups); give more digits", ref, len(match))
	}
	return match[0], nil
}

// forget removes a backup's manifest. Its data stays until prune.
func (r *Repository) forget(ctx context.Context, id ID) error {
	if err := r.be.Remove(ctx, backupsDir+id.String()); err != nil {
		return fmt.Errorf("remove backup %s: %w", id.Short(), err)
	}
	if r.cache != nil {
		r.cache.drop(backupsDir + id.String())
	}
	return nil
}
