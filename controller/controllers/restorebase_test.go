package controllers_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/repo"
)

// archiveLog stores archived WAL of bed's database (stream postgres-7301,
// timeline 1) from 0 to end, its newest commit at last.
func (bed *snapshotBed) archiveLog(t *testing.T, end uint64, last time.Time) {
	t.Helper()
	ctx := context.Background()
	rp := bed.openRepo(t)
	defer rp.Close()
	pos := func(off uint64) api.Position { return api.Position{Epoch: 1, Offset: off, Token: []byte{1}} }
	sink := archive.NewSink(rp, "postgres-7301", slog.New(slog.DiscardHandler), nil)
	w, err := sink.Begin(ctx, api.SegmentHeader{Name: "wal", Start: pos(0)})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 16))
	if err := w.Finish(api.SegmentTrailer{End: pos(end), LastCommit: last}); err != nil {
		t.Fatal(err)
	}
}

// physicalBackup records a physical backup of shop/pg consistent at
// offset consistent and time at (its data does not matter here).
func (bed *snapshotBed) physicalBackup(t *testing.T, consistent uint64, at time.Time) string {
	t.Helper()
	ctx := context.Background()
	rp := bed.openRepo(t)
	defer rp.Close()
	w, err := rp.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	p := repo.LogPosition{Epoch: 1, Offset: consistent, Text: fmt.Sprintf("1/0/%X", consistent)}
	id, err := w.Commit(ctx, &repo.Manifest{Name: "shop/pg", Engine: "postgres", Mode: "physical", Start: at, End: at, Entries: []repo.Entry{},
		Position: p.Text, ConsistentTime: at, Record: &repo.EngineRecord{SystemID: "7301", Start: p, Consistent: p, ConsistentTime: at}})
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// TestRestoreChoosesSnapshotBase: a PostgreSQL Restore that gives a point
// in time or a position and no backupID starts from the newest backup
// consistent before the target whose archived log reaches it, snapshot
// backups included: the clone's claims come from the snapshot backup's
// VolumeSnapshots. A snapshot backup whose VolumeSnapshot is not ready, or
// whose log does not reach the target, is passed over for an earlier
// physical backup (amber restore in the clone then chooses it), and the
// condition says so.
func TestRestoreChoosesSnapshotBase(t *testing.T) {
	bed := newSnapshotBed(t, time.Minute, 10*time.Second)
	t0 := time.Date(2026, 11, 28, 21, 0, 0, 0, time.UTC)
	bed.physicalBackup(t, 0x20, t0) // before the snapshot backup (22:00, 1/0/C8, start 1/0/64)
	b := bed.snapshotBackup(t)
	bed.archiveLog(t, 0x1000, t0.Add(100*time.Minute)) // to 22:40
	ctx := context.Background()

	clone := func(rs *amberv1.Restore) *appsv1.StatefulSet {
		t.Helper()
		if rs.Status.Phase != amberv1.PhaseRunning {
			t.Fatalf("Restore %s: %+v", rs.Name, rs.Status)
		}
		var sts appsv1.StatefulSet
		if err := bed.c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: rs.Status.CloneName}, &sts); err != nil {
			t.Fatal(err)
		}
		return &sts
	}
	fromSnapshot := func(rs *amberv1.Restore, wantArgs string) {
		t.Helper()
		sts := clone(rs)
		if rs.Status.BackupID != b.Status.BackupID {
			t.Errorf("Restore %s: backup %q; want snapshot backup %s", rs.Name, rs.Status.BackupID, b.Status.BackupID)
		}
		for _, tpl := range sts.Spec.VolumeClaimTemplates {
			if ds := tpl.Spec.DataSource; ds == nil || ds.Kind != "VolumeSnapshot" || ds.Name != "b1-"+tpl.Name {
				t.Errorf("Restore %s: claim template %s: dataSource %+v; want VolumeSnapshot b1-%s", rs.Name, tpl.Name, ds, tpl.Name)
			}
		}
		args := strings.Join(sts.Spec.Template.Spec.InitContainers[0].Args, " ")
		if !strings.Contains(args, "--snapshot-data") || !strings.Contains(args, "--backup "+b.Status.BackupID+" "+wantArgs) {
			t.Errorf("Restore %s: init container args %s; want --snapshot-data --backup %s %s", rs.Name, args, b.Status.BackupID, wantArgs)
		}
	}
	fromPhysical := func(rs *amberv1.Restore, wantArgs, passedOver string) {
		t.Helper()
		sts := clone(rs)
		if rs.Status.BackupID != "" {
			t.Errorf("Restore %s: backup %q; want none chosen (amber restore chooses the physical one)", rs.Name, rs.Status.BackupID)
		}
		for _, tpl := range sts.Spec.VolumeClaimTemplates {
			if tpl.Spec.DataSource != nil {
				t.Errorf("Restore %s: claim template %s has dataSource %+v", rs.Name, tpl.Name, tpl.Spec.DataSource)
			}
		}
		ic := sts.Spec.Template.Spec.InitContainers[0]
		if args := strings.Join(ic.Args, " "); slices.Contains(ic.Args, "--snapshot-data") || slices.Contains(ic.Args, "--backup") || !strings.Contains(args, wantArgs) {
			t.Errorf("Restore %s: init container args %s; want %s without --backup", rs.Name, args, wantArgs)
		}
		c := meta.FindStatusCondition(rs.Status.Conditions, "Ready")
		if passedOver != "" && (c == nil || !strings.Contains(c.Message, "passed over snapshot backup "+b.Status.BackupID[:12]) || !strings.Contains(c.Message, passedOver)) {
			t.Errorf("Restore %s: condition %+v; want it to say the snapshot backup was passed over (%s)", rs.Name, c, passedOver)
		}
	}
	spec := func(at *time.Time, pos string) amberv1.RestoreSpec {
		s := amberv1.RestoreSpec{PolicyRef: &amberv1.LocalRef{Name: "snap"}, SourceStatefulSet: "pg", Position: pos}
		if at != nil {
			s.PointInTime = &metav1.Time{Time: *at}
		}
		return s
	}
	at := func(m int) *time.Time { x := t0.Add(time.Duration(m) * time.Minute); return &x }

	// A time after the snapshot backup, inside the log: the snapshot.
	fromSnapshot(bed.restore(t, "pit", spec(at(90), "")), "--to-time 2026-11-28T22:30:00Z")
	// A position after it (1/0/C8): the snapshot; before it: the physical one.
	fromSnapshot(bed.restore(t, "pos", spec(nil, "0/D0")), "--to-position 0/D0")
	fromPhysical(bed.restore(t, "pos-early", spec(nil, "1/0/B0")), "--to-position 1/0/B0", "")
	// A time before it: the physical backup.
	fromPhysical(bed.restore(t, "pit-early", spec(at(30), "")), "--to-time 2026-11-28T21:30:00Z", "")
	// Past the archived log (22:40): nothing reaches; amber restore says why.
	fromPhysical(bed.restore(t, "pit-late", spec(at(110), "")), "--to-time 2026-11-28T22:50:00Z", "ends at 2026-11-28T22:40:00Z")

	// One of its VolumeSnapshots not ready: passed over, not a failure.
	vs := bed.volumeSnapshot(t, "b1-wal")
	vs.Object["status"] = map[string]any{"readyToUse": false}
	if err := bed.c.Update(ctx, vs); err != nil {
		t.Fatal(err)
	}
	fromPhysical(bed.restore(t, "not-ready", spec(at(90), "")), "--to-time 2026-11-28T22:30:00Z", "not readyToUse")
	// Gone: the same.
	if err := bed.c.Delete(ctx, vs); err != nil {
		t.Fatal(err)
	}
	fromPhysical(bed.restore(t, "gone", spec(at(90), "")), "--to-time 2026-11-28T22:30:00Z", "is gone")
}
