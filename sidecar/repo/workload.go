package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
)

const (
	workloadsDir = "workloads/"
	adWorkload   = "amber/workload"
)

// Workload is the description of the workload a backup was taken of — on
// Kubernetes, the StatefulSet and the objects it needs — stored beside the
// backup so that a cluster with only the repository can recreate it. The
// objects are opaque to the repository: JSON as the API server returns
// them (Secrets included: the object is encrypted like every other).
type Workload struct {
	Version int `json:"version"`
	// Backup is the id of the backup this workload was captured with.
	Backup ID `json:"backup"`
	// Kind of workload: "kubernetes".
	Kind string `json:"kind"`
	// Namespace and Name of the StatefulSet.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Engine    string `json:"engine,omitempty"`
	// Policy is the BackupPolicy that took the backup.
	Policy   string    `json:"policy,omitempty"`
	Captured time.Time `json:"captured"`
	// Objects are the workload's objects, each whole (apiVersion, kind,
	// metadata, spec or data).
	Objects []json.RawMessage `json:"objects"`

	// ID is the workload object's id (not stored in it).
	ID ID `json:"-"`
}

// SaveWorkload stores w (for a backup that exists) as workloads/<id>.
func (r *Repository) SaveWorkload(ctx context.Context, w *Workload) (ID, error) {
	if w.Backup == (ID{}) {
		return ID{}, errors.New("a workload needs the id of its backup")
	}
	if _, err := r.be.Stat(ctx, backupsDir+w.Backup.String()); err != nil {
		return ID{}, fmt.Errorf("backup %s: %w", w.Backup.Short(), err)
	}
	w.Version = Version
	if w.Captured.IsZero() {
		w.Captured = r.now().UTC()
	}
	plain, err := json.Marshal(w)
	if err != nil {
		return ID{}, err
	}
	id, _, err := r.saveObject(ctx, workloadsDir, plain, adWorkload)
	if err != nil {
		return ID{}, err
	}
	w.ID = id
	return id, nil
}

// Workloads returns every stored workload, oldest capture first.
func (r *Repository) Workloads(ctx context.Context) ([]*Workload, error) {
	names, err := listNames(ctx, r.be, workloadsDir)
	if err != nil {
		return nil, fmt.Errorf("list workloads: %w", err)
	}
	var out []*Workload
	for _, name := range names {
		w, err := r.loadWorkload(ctx, name)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Captured.Equal(out[j].Captured) {
			return out[i].Captured.Before(out[j].Captured)
		}
		return out[i].ID.String() < out[j].ID.String()
	})
	return out, nil
}

func (r *Repository) loadWorkload(ctx context.Context, name string) (*Workload, error) {
	id, err := ParseID(strings.TrimPrefix(name, workloadsDir))
	if err != nil {
		return nil, &CorruptError{Object: name, Err: err}
	}
	plain, err := r.loadObject(ctx, name, adWorkload)
	if err != nil {
		return nil, fmt.Errorf("load workload: %w", err)
	}
	var w Workload
	if err := json.Unmarshal(plain, &w); err != nil {
		return nil, &CorruptError{Object: name, Err: err}
	}
	if w.Version != Version {
		return nil, versionError("workload", name, w.Version)
	}
	w.ID = id
	return &w, nil
}

// forgetWorkloads removes the workloads captured with the given backups.
func (r *Repository) forgetWorkloads(ctx context.Context, backups map[ID]bool) (int, error) {
	if len(backups) == 0 {
		return 0, nil
	}
	names, err := listNames(ctx, r.be, workloadsDir)
	if err != nil {
		return 0, fmt.Errorf("list workloads: %w", err)
	}
	n := 0
	for _, name := range names {
		w, err := r.loadWorkload(ctx, name)
		if err != nil {
			// Unreadable: kept, and reported by verify.
			continue
		}
		if !backups[w.Backup] {
			continue
		}
		if err := r.be.Remove(ctx, name); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return n, fmt.Errorf("remove %s: %w", name, err)
		}
		n++
	}
	return n, nil
}
