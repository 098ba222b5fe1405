// Package retention prunes a BackupPolicy's repository after a backup, per
// the policy's keep-last and keep-within rules. It opens the repository
// directly (sidecar/storage/location and sidecar/repo) with the password
// and storage keys from the policy's credentials Secret, read through the
// Kubernetes API and never written anywhere.
//
// This is the controller's only use of sidecar packages: repository access.
// It must never import a plugin, the plugin host or the agent.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/location"
)

// DefaultGrace protects packs younger than this that no index names yet.
const DefaultGrace = time.Hour

// Pruner prunes repositories; it implements controllers.Pruner.
type Pruner struct {
	// Client reads the credentials Secret.
	Client client.Reader
	Clock  clock.Clock
	Logger *slog.Logger
	// Grace overrides DefaultGrace.
	Grace time.Duration
}

// Prune applies p's retention to its repository. It returns the manifests
// of the snapshot backups it forgot, whose VolumeSnapshots the caller
// deletes.
func (pr *Pruner) Prune(ctx context.Context, p *amberv1.BackupPolicy) (string, []*repo.Manifest, error) {
	ref := p.Spec.Repository.CredentialsSecret
	var s corev1.Secret
	if err := pr.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: ref.Name}, &s); err != nil {
		return "", nil, fmt.Errorf("read credentials Secret %s/%s: %w", p.Namespace, ref.Name, err)
	}
	key := ref.PasswordKey
	if key == "" {
		key = "password"
	}
	password := []byte(strings.TrimRight(string(s.Data[key]), "\r\n"))
	if len(password) == 0 {
		return "", nil, fmt.Errorf("credentials Secret %s/%s has no key %q; put the repository password there", p.Namespace, ref.Name, key)
	}
	log := pr.Logger
	if log == nil {
		log = slog.Default()
	}
	getenv := func(name string) string { return string(s.Data[name]) }
	be, err := location.Open(ctx, p.Spec.Repository.URL, location.Options{Getenv: getenv, Logger: log})
	if err != nil {
		return "", nil, fmt.Errorf("open repository storage: %w", err)
	}
	defer be.Close()
	clk := clock.Or(pr.Clock)
	r, err := repo.Open(ctx, be, password, repo.Options{CacheDir: "-", Clock: clk, Logger: log})
	if err != nil {
		if errors.Is(err, repo.ErrWrongPassword) {
			return "", nil, fmt.Errorf("open repository: the password in Secret %s/%s key %q is wrong", p.Namespace, ref.Name, key)
		}
		return "", nil, fmt.Errorf("open repository: %w", err)
	}
	grace := pr.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	policy := repo.PrunePolicy{KeepLast: int(p.Spec.Retention.KeepLast), Grace: grace}
	if p.Spec.Retention.KeepWithin != nil {
		policy.KeepWithin = p.Spec.Retention.KeepWithin.Duration
	}
	// The snapshot backups before prune, to name the VolumeSnapshots of
	// those it forgets.
	before, err := r.Backups(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("prune: %w", err)
	}
	snaps := map[string]*repo.Manifest{}
	for _, m := range before {
		if m.Mode == repo.ModeSnapshot {
			snaps[m.ID.String()] = m
		}
	}
	res, err := r.Prune(ctx, policy)
	if err != nil {
		return "", nil, fmt.Errorf("prune: %w", err)
	}
	var forgotten []*repo.Manifest
	for _, id := range res.Forgotten {
		if m := snaps[id]; m != nil {
			forgotten = append(forgotten, m)
		}
	}
	summary := fmt.Sprintf("kept %d backup(s), forgot %d, removed %d pack(s) (%d bytes) and %d log segment(s) (%d bytes)",
		res.Kept, len(res.Forgotten), res.PacksRemoved, res.BytesFreed, res.LogSegmentsRemoved, res.LogBytesFreed)
	if res.PacksKept != "" {
		summary += "; no pack removed: " + res.PacksKept
	}
	if res.LogKept != "" {
		summary += "; no log removed: " + res.LogKept
	}
	return summary, forgotten, nil
}
