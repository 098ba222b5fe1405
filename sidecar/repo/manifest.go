package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
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

	// Where and when the backup is consistent, in the engine's terms.
	Position       string            `json:"position,omitempty"`
	ConsistentTime time.Time         `json:"consistent_time,omitzero"`
	Meta           map[string]string `json:"meta,omitempty"`
	// Record is set for engine backups (Engine != "").
	Record *EngineRecord `json:"engine_record,omitempty"`

	// ID is the manifest's object id; set on load, never stored.
	ID ID `json:"-"`
}

// ErrBackupNotFound means no backup matches an id, prefix or "latest".
var ErrBackupNotFound = errors.New("no such backup; list them with `amber ls`")

// Commit stores everything written, then the manifest, and returns the
// backup's id. Only after Commit returns is the backup visible.
func (w *Writer) Commit(ctx context.Context, m *Manifest) (ID, error) {
	if err := w.flush(ctx); err != nil {
		return ID{}, err
	}
	if err := w.r.checkConcurrentPrune(ctx, w); err != nil {
		return ID{}, err
	}
	m.Version = Version
	if m.Host == "" {
		m.Host, _ = os.Hostname()
	}
	if m.End.IsZero() {
		m.End = w.r.now().UTC()
	}
	m.BytesIn = w.BytesIn.Load()
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
	// BytesAdded includes the manifest itself; measure it first.
	id, n, err := w.r.saveObject(ctx, backupsDir, plain, adBackup)
	if err != nil {
		return ID{}, err
	}
	w.BytesAdded.Add(n)
	m.ID = id
	w.committed = id
	return id, nil
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
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.Before(out[j].Start)
		}
		return out[i].ID.String() < out[j].ID.String()
	})
	return out, nil
}

func (r *Repository) loadManifest(ctx context.Context, name string) (*Manifest, error) {
	plain, err := r.loadObject(ctx, name, adBackup)
	if err != nil {
		return nil, fmt.Errorf("load backup: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(plain, &m); err != nil {
		return nil, &CorruptError{Object: name, Err: err}
	}
	id, err := ParseID(strings.TrimPrefix(name, backupsDir))
	if err != nil {
		return nil, &CorruptError{Object: name, Err: err}
	}
	m.ID = id
	return &m, nil
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
