package controllers

import (
	"context"
	"fmt"
	"strings"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/workload"
	"github.com/amber-backup/amber/sidecar/repo"
)

// BaseLister lists the backups a restore to a target may start from; the
// WorkloadStore implements it when it can (workload.Capturer does).
type BaseLister interface {
	Bases(ctx context.Context, ns string, spec amberv1.RepositorySpec, sourceNS, sts, engine string, target workload.BaseTarget) ([]workload.Base, error)
}

// snapshotBase chooses the base of a PostgreSQL Restore that gives
// pointInTime or position and no backupID: the newest backup, physical or
// snapshot, consistent at or before the target with archived log reaching
// it from there. A snapshot backup whose VolumeSnapshots are gone or not
// ready is passed over for the next one. It returns that backup when it is
// a snapshot backup; nil when it is a physical one (amber restore in the
// clone chooses it the same way) or when none qualifies (amber restore then
// says why). skipped names the snapshot backups passed over, and why.
func (r *RestoreReconciler) snapshotBase(ctx context.Context, rs *amberv1.Restore, spec amberv1.RepositorySpec, srcNS string) (*repo.Manifest, []string, error) {
	lister, ok := r.Workloads.(BaseLister)
	if !ok {
		return nil, nil, nil
	}
	target := workload.BaseTarget{Position: rs.Spec.Position}
	if rs.Spec.PointInTime != nil {
		target = workload.BaseTarget{Time: rs.Spec.PointInTime.Time}
	}
	bases, err := lister.Bases(ctx, rs.Namespace, spec, srcNS, rs.Spec.SourceStatefulSet, string(amberv1.EnginePostgres), target)
	if err != nil {
		return nil, nil, err
	}
	var skipped []string
	for _, b := range bases {
		m := b.Backup
		what := "backup " + m.ID.Short()
		if m.Mode == repo.ModeSnapshot {
			what = "snapshot " + what
		}
		if b.Problem != "" {
			if m.Mode == repo.ModeSnapshot {
				skipped = append(skipped, what+": "+b.Problem)
			}
			continue
		}
		if m.Mode != repo.ModeSnapshot {
			return nil, skipped, nil
		}
		_, reason, msg, err := r.snapshotSources(ctx, rs, m, amberv1.EnginePostgres)
		if err != nil {
			return nil, nil, err
		}
		if reason == "" {
			return m, skipped, nil
		}
		skipped = append(skipped, what+": "+withoutAdvice(msg))
	}
	return nil, skipped, nil
}

// withoutAdvice is msg up to its first ": ", the problem without the
// advice, which is for a Restore that names the backup.
func withoutAdvice(msg string) string {
	if i := strings.Index(msg, ": "); i > 0 {
		return msg[:i]
	}
	return msg
}

// skippedNote is the line the Restore's condition and Event carry about
// snapshot backups passed over.
func skippedNote(skipped []string) string {
	if len(skipped) == 0 {
		return ""
	}
	return fmt.Sprintf(" (passed over %s)", strings.Join(skipped, "; "))
}
