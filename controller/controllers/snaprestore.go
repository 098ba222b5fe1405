package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/workload"
	"github.com/amber-backup/amber/sidecar/repo"
)

// Reasons a Restore of a snapshot backup is refused with.
const (
	// ReasonSnapshotBackup: the snapshot backup is of an engine whose
	// snapshot backups a Restore does not restore (MongoDB), or not of
	// the Restore's engine.
	ReasonSnapshotBackup = "SnapshotBackup"
	// ReasonSnapshotGone: a VolumeSnapshot the backup names no longer
	// exists (or is in another namespace than the Restore).
	ReasonSnapshotGone = "SnapshotGone"
	// ReasonSnapshotNotReady: a VolumeSnapshot is not readyToUse.
	ReasonSnapshotNotReady = "SnapshotNotReady"
)

// snapshotSources checks that snapshot backup m can be restored into rs's
// clone and returns the clone's claim templates' VolumeSnapshots (by the
// pod volume each was taken of, which is the claim template's name). A
// refusal comes back as a reason and a message naming the fix; err is
// for API errors worth a retry.
func (r *RestoreReconciler) snapshotSources(ctx context.Context, rs *amberv1.Restore, m *repo.Manifest, engine amberv1.Engine) (map[string]workload.SnapshotSource, string, string, error) {
	if m.Engine != string(engine) || !snapshotRestorable(engine) {
		return nil, ReasonSnapshotBackup, fmt.Sprintf("backup %s is a volume snapshot backup of %s: a Restore of %s restores snapshot backups of PostgreSQL and MySQL/MariaDB only "+
			"(MongoDB's are recorded but not restored yet); name a logical backup in spec.backupID, or give pointInTime or position without backupID", m.ID.Short(), m.Engine, engine), nil
	}
	if len(m.Snapshots) == 0 {
		return nil, ReasonSnapshotGone, fmt.Sprintf("snapshot backup %s names no VolumeSnapshot; name another backup in spec.backupID", m.ID.Short()), nil
	}
	out := map[string]workload.SnapshotSource{}
	for _, s := range m.Snapshots {
		ns := s.Namespace
		if ns == "" {
			ns = m.Tags["namespace"]
		}
		if ns != rs.Namespace {
			return nil, ReasonSnapshotGone, fmt.Sprintf("VolumeSnapshot %s of backup %s is in namespace %s, and a claim is restored only from a VolumeSnapshot of its own namespace: "+
				"create the Restore in namespace %s, or name another backup in spec.backupID", s.Name, m.ID.Short(), ns, ns), nil
		}
		vs := &unstructured.Unstructured{}
		vs.SetGroupVersionKind(GVKVolumeSnapshot)
		err := r.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: s.Name}, vs)
		switch {
		case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
			return nil, ReasonSnapshotGone, fmt.Sprintf("VolumeSnapshot %s/%s of snapshot backup %s is gone (deleted, or the VolumeSnapshot API is not installed): "+
				"name another backup in spec.backupID, or give pointInTime or position without backupID to restore from a physical backup", ns, s.Name, m.ID.Short()), nil
		case err != nil:
			return nil, "", "", fmt.Errorf("read VolumeSnapshot %s/%s: %w", ns, s.Name, err)
		}
		if s.Content != "" {
			if content, _, _ := unstructured.NestedString(vs.Object, "status", "boundVolumeSnapshotContentName"); content != "" && content != s.Content {
				return nil, ReasonSnapshotGone, fmt.Sprintf("VolumeSnapshot %s/%s is bound to content %s, not to %s that backup %s recorded: it is another snapshot of the same name; "+
					"name another backup in spec.backupID", ns, s.Name, content, s.Content, m.ID.Short()), nil
			}
		}
		if ready, _, _ := unstructured.NestedBool(vs.Object, "status", "readyToUse"); !ready {
			why := "not readyToUse"
			if msg, _, _ := unstructured.NestedString(vs.Object, "status", "error", "message"); msg != "" {
				why += " (" + msg + ")"
			}
			return nil, ReasonSnapshotNotReady, fmt.Sprintf("VolumeSnapshot %s/%s of snapshot backup %s is %s: create the Restore again once it is readyToUse, "+
				"or name another backup in spec.backupID", ns, s.Name, m.ID.Short(), why), nil
		}
		src := workload.SnapshotSource{Name: s.Name, RestoreSize: s.RestoreSize}
		if q, _, _ := unstructured.NestedString(vs.Object, "status", "restoreSize"); q != "" {
			if v, err := resource.ParseQuantity(q); err == nil && v.Value() > src.RestoreSize {
				src.RestoreSize = v.Value()
			}
		}
		vol := s.Volume
		if vol == "" && m.Host != "" {
			// <template>-<pod>: the claim a StatefulSet made for the pod.
			vol = strings.TrimSuffix(s.Claim, "-"+m.Host)
		}
		out[vol] = src
	}
	return out, "", "", nil
}

// snapshotRestorable reports whether a Restore restores engine's snapshot
// backups: PostgreSQL (backup_label, then WAL recovery) and MySQL/MariaDB
// (InnoDB recovery, then binlog replay; mysqlclone.go).
func snapshotRestorable(engine amberv1.Engine) bool {
	return engine == amberv1.EnginePostgres || engine == amberv1.EngineMySQL
}

func snapshotSourceList(snaps map[string]workload.SnapshotSource) string {
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
