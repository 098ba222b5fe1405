package controllers_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/controllers"
	"github.com/amber-backup/amber/controller/workload"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/file"
)

// pgWorkload is StatefulSet pg as captured with a backup: claim templates
// data and wal (the volumes the snapshot backup snapshotted), PGDATA in
// the data volume.
const pgWorkload = `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"pg","namespace":"shop"},
 "spec":{"serviceName":"pg","selector":{"matchLabels":{"app":"pg"}},"template":{"metadata":{"labels":{"app":"pg"},
 "annotations":{"amber.dev/policy":"snap"}},"spec":{"containers":[{"name":"postgres","image":"postgres:15",
 "env":[{"name":"PGDATA","value":"/data/pgdata"}],"volumeMounts":[{"name":"data","mountPath":"/data"},{"name":"wal","mountPath":"/wal"}]}]}},
 "volumeClaimTemplates":[{"metadata":{"name":"data"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"512Mi"}}}},
 {"metadata":{"name":"wal"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"2Gi"}}}}]}}`

// snapshotBackup takes snapshot backup b1 on bed (VolumeSnapshots b1-data
// and b1-wal, ready) and stores StatefulSet pg's workload with it, as the
// controller captures it.
func (bed *snapshotBed) snapshotBackup(t *testing.T) *amberv1.Backup {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	wg := bed.playSnapshotController(ctx, t, "")
	b := bed.reconcile(t)
	stop()
	wg.Wait()
	if b.Status.Phase != amberv1.PhaseSucceeded {
		t.Fatalf("snapshot backup: phase %s: %s", b.Status.Phase, b.Status.Error)
	}
	rp := bed.openRepo(t)
	defer rp.Close()
	id, _ := repo.ParseID(b.Status.BackupID)
	if _, err := rp.SaveWorkload(context.Background(), &repo.Workload{Backup: id, Kind: workload.KindKubernetes, Namespace: "shop", Name: "pg",
		Engine: "postgres", Policy: "snap", Objects: []json.RawMessage{json.RawMessage(pgWorkload)}}); err != nil {
		t.Fatal(err)
	}
	return b
}

func (bed *snapshotBed) openRepo(t *testing.T) *repo.Repository {
	t.Helper()
	be, err := file.Open(bed.repoDir, false)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := repo.Open(context.Background(), be, []byte("pw"), repo.Options{CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

// restore creates Restore name with spec and reconciles it once.
func (bed *snapshotBed) restore(t *testing.T, name string, spec amberv1.RestoreSpec) *amberv1.Restore {
	t.Helper()
	ctx := context.Background()
	rs := &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Spec: spec}
	if err := bed.c.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	rr := &controllers.RestoreReconciler{Client: bed.c, Reader: bed.c, Recorder: bed.rec, Workloads: &workload.Capturer{Client: bed.c}, Image: "amber"}
	if _, err := rr.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(rs)}); err != nil {
		t.Fatal(err)
	}
	if err := bed.c.Get(ctx, client.ObjectKeyFromObject(rs), rs); err != nil {
		t.Fatal(err)
	}
	return rs
}

func (bed *snapshotBed) volumeSnapshot(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	vs := &unstructured.Unstructured{}
	vs.SetGroupVersionKind(controllers.GVKVolumeSnapshot)
	if err := bed.c.Get(context.Background(), types.NamespacedName{Namespace: "shop", Name: name}, vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestRestoreFromSnapshotBackup: a Restore naming a PostgreSQL snapshot
// backup and a time after it creates a clone whose claim templates have
// the backup's VolumeSnapshots as dataSource (volume data to template
// data, wal to wal, at least the snapshot's restore size), and whose init
// container runs amber restore --snapshot-data with the backup and the
// target; once the clone's database is ready, the status has the point
// reached and the RTO.
func TestRestoreFromSnapshotBackup(t *testing.T) {
	bed := newSnapshotBed(t, time.Minute, 10*time.Second)
	b := bed.snapshotBackup(t)
	target := metav1.NewTime(time.Date(2026, 11, 28, 22, 30, 0, 0, time.UTC)) // after the thaw at 22:00
	rs := bed.restore(t, "r1", amberv1.RestoreSpec{PolicyRef: &amberv1.LocalRef{Name: "snap"}, SourceStatefulSet: "pg",
		BackupID: b.Status.BackupID[:12], PointInTime: &target})
	if rs.Status.Phase != amberv1.PhaseRunning || rs.Status.BackupID != b.Status.BackupID {
		t.Fatalf("Restore r1: %+v", rs.Status)
	}
	if c := meta.FindStatusCondition(rs.Status.Conditions, "Ready"); c == nil || !strings.Contains(c.Message, "from VolumeSnapshots b1-data, b1-wal") {
		t.Fatalf("Restore r1 condition %+v", c)
	}
	var sts appsv1.StatefulSet
	if err := bed.c.Get(context.Background(), types.NamespacedName{Namespace: "shop", Name: rs.Status.CloneName}, &sts); err != nil {
		t.Fatal(err)
	}
	for _, tpl := range sts.Spec.VolumeClaimTemplates {
		ds := tpl.Spec.DataSource
		if ds == nil || ds.Kind != "VolumeSnapshot" || ds.Name != "b1-"+tpl.Name {
			t.Errorf("claim template %s: dataSource %+v; want VolumeSnapshot b1-%s", tpl.Name, ds, tpl.Name)
		}
	}
	data := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]
	wal := sts.Spec.VolumeClaimTemplates[1].Spec.Resources.Requests[corev1.ResourceStorage]
	if data.String() != "1Gi" || wal.String() != "2Gi" {
		t.Errorf("claims ask for %s and %s; want 1Gi (the snapshot's restore size, above the template's 512Mi) and 2Gi", data.String(), wal.String())
	}
	ic := sts.Spec.Template.Spec.InitContainers[0]
	args := strings.Join(ic.Args, " ")
	if ic.Name != workload.RestoreContainer || !strings.Contains(args, "--data-dir /data/pgdata") || !slices.Contains(ic.Args, "--snapshot-data") ||
		!strings.Contains(args, "--backup "+b.Status.BackupID+" --to-time 2026-11-28T22:30:00Z") || !slices.Contains(ic.Args, "--skip-restored") {
		t.Fatalf("restore init container args: %s", args)
	}

	// The clone's pod: the init container wrote its report and exited, the
	// database recovered and is ready.
	req := rs.CreationTimestamp.Time
	at := func(s int) metav1.Time { return metav1.Time{Time: req.Add(time.Duration(s) * time.Second)} }
	report := `{"backup":"` + b.Status.BackupID + `","position":"1/0/C8","consistent_time":"2026-11-28T22:00:00Z",` +
		`"target":"time 2026-11-28T22:30:00Z","log_reaches":"0/5000000","log_reaches_time":"2026-11-28T22:40:00Z"}`
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: rs.Status.CloneName + "-0", Namespace: "shop"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "postgres"}}, InitContainers: []corev1.Container{ic}},
		Status: corev1.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []corev1.ContainerStatus{{Name: workload.RestoreContainer, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: at(3)}}}}}}
	if err := bed.c.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	rr := &controllers.RestoreReconciler{Client: bed.c, Reader: bed.c, Recorder: bed.rec, Workloads: &workload.Capturer{Client: bed.c}, Image: "amber"}
	follow := func() {
		t.Helper()
		if _, err := rr.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(rs)}); err != nil {
			t.Fatal(err)
		}
		if err := bed.c.Get(context.Background(), client.ObjectKeyFromObject(rs), rs); err != nil {
			t.Fatal(err)
		}
	}
	follow()
	if rs.Status.Phase != amberv1.PhaseRunning || !strings.Contains(rs.Status.Progress, "restored from its VolumeSnapshots") {
		t.Fatalf("while the init container runs: %+v", rs.Status)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: workload.RestoreContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 0, StartedAt: at(3), FinishedAt: at(4), Message: report}}}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: at(9)}}}
	if err := bed.c.Status().Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	follow()
	s := rs.Status
	if s.Phase != amberv1.PhaseSucceeded || s.RTO == nil || s.RTO.Duration != 9*time.Second || s.Timings == nil ||
		s.Timings.DataTransfer.Duration != time.Second || s.PointReached == nil || s.PointReached.Time == nil || !s.PointReached.Time.Equal(&target) ||
		s.BackupID != b.Status.BackupID {
		t.Fatalf("Restore r1 done: %+v (point %+v)", s, s.PointReached)
	}
}

// TestRestoreRefusesSnapshot: a Restore of a snapshot backup is refused,
// with one condition and one Warning naming the fix, when a VolumeSnapshot
// is not ready, when it is gone, when the backup is not PostgreSQL's, and
// when the target is before the backup; no clone is created.
func TestRestoreRefusesSnapshot(t *testing.T) {
	bed := newSnapshotBed(t, time.Minute, 10*time.Second)
	b := bed.snapshotBackup(t)
	ctx := context.Background()
	drain(bed)
	check := func(rs *amberv1.Restore, reason, inMsg string) {
		t.Helper()
		c := meta.FindStatusCondition(rs.Status.Conditions, "Ready")
		if rs.Status.Phase != amberv1.PhaseFailed || c == nil || c.Reason != reason || !strings.Contains(c.Message, inMsg) {
			t.Fatalf("Restore %s: phase %s, condition %+v; want Failed, %s, %q", rs.Name, rs.Status.Phase, c, reason, inMsg)
		}
		if !events(bed.rec, reason) {
			t.Errorf("Restore %s: no %s event", rs.Name, reason)
		}
		var l appsv1.StatefulSetList
		if err := bed.c.List(ctx, &l, client.InNamespace("shop")); err != nil || len(l.Items) != 0 {
			t.Fatalf("a clone was created for a refused Restore: %v %d", err, len(l.Items))
		}
	}
	spec := amberv1.RestoreSpec{PolicyRef: &amberv1.LocalRef{Name: "snap"}, SourceStatefulSet: "pg", BackupID: b.Status.BackupID}

	// Not ready.
	vs := bed.volumeSnapshot(t, "b1-wal")
	vs.Object["status"] = map[string]any{"readyToUse": false, "error": map[string]any{"message": "copy failed"}}
	if err := bed.c.Update(ctx, vs); err != nil {
		t.Fatal(err)
	}
	check(bed.restore(t, "not-ready", spec), controllers.ReasonSnapshotNotReady, "VolumeSnapshot shop/b1-wal of snapshot backup")
	// Gone.
	if err := bed.c.Delete(ctx, vs); err != nil {
		t.Fatal(err)
	}
	check(bed.restore(t, "gone", spec), controllers.ReasonSnapshotGone, "name another backup in spec.backupID")
	// A target before the backup.
	early := metav1.NewTime(time.Date(2026, 11, 28, 21, 0, 0, 0, time.UTC))
	sp := spec
	sp.PointInTime = &early
	check(bed.restore(t, "early", sp), "Invalid", "after pointInTime")

	// A MongoDB snapshot backup, recorded as the controller records one,
	// is refused; a MySQL one is restored (TestRestoreMySQLSnapshot).
	sp = spec
	sp.BackupID = bed.recordAs(t, b, amberv1.EngineMongoDB, "")
	check(bed.restore(t, "mongodb", sp), controllers.ReasonSnapshotBackup, "MongoDB's are recorded but not restored yet")
}

// recordAs records a copy of snapshot backup b as one of engine (its
// thaw's datadir set when not empty), with StatefulSet pg's workload, and
// switches policy snap to engine; it returns the copy's id.
func (bed *snapshotBed) recordAs(t *testing.T, b *amberv1.Backup, engine amberv1.Engine, datadir string) string {
	t.Helper()
	ctx := context.Background()
	rp := bed.openRepo(t)
	m, err := rp.FindBackup(ctx, b.Status.BackupID, "")
	rp.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := *m
	c.Engine = string(engine)
	if datadir != "" {
		rec := *m.Record
		rec.Metadata = map[string]string{"datadir": datadir}
		c.Record = &rec
	}
	var pol amberv1.BackupPolicy
	if err := bed.c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "snap"}, &pol); err != nil {
		t.Fatal(err)
	}
	pol.Spec.Engine = engine
	if err := bed.c.Update(ctx, &pol); err != nil {
		t.Fatal(err)
	}
	id, err := (&workload.Capturer{Client: bed.c}).RecordSnapshot(ctx, &pol, &c)
	if err != nil {
		t.Fatal(err)
	}
	rp = bed.openRepo(t)
	defer rp.Close()
	wid, _ := repo.ParseID(id)
	if _, err := rp.SaveWorkload(ctx, &repo.Workload{Backup: wid, Kind: workload.KindKubernetes, Namespace: "shop", Name: "pg",
		Engine: string(engine), Policy: "snap", Objects: []json.RawMessage{json.RawMessage(pgWorkload)}}); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestRestoreMySQLSnapshot: a Restore naming a MySQL snapshot backup and a
// time after it creates a clone whose claims come from the VolumeSnapshots
// and whose restore init container runs in the database's image (amber
// copied in by amber-install first) with --snapshot-data on the data
// directory the thaw recorded, the backup and the target.
func TestRestoreMySQLSnapshot(t *testing.T) {
	bed := newSnapshotBed(t, time.Minute, 10*time.Second)
	b := bed.snapshotBackup(t)
	id := bed.recordAs(t, b, amberv1.EngineMySQL, "/data/mysql/")
	target := metav1.NewTime(time.Date(2026, 11, 28, 22, 30, 0, 0, time.UTC))
	rs := bed.restore(t, "my", amberv1.RestoreSpec{PolicyRef: &amberv1.LocalRef{Name: "snap"}, SourceStatefulSet: "pg", BackupID: id, PointInTime: &target})
	if rs.Status.Phase != amberv1.PhaseRunning || rs.Status.BackupID != id {
		t.Fatalf("Restore my: %+v", rs.Status)
	}
	var sts appsv1.StatefulSet
	if err := bed.c.Get(context.Background(), types.NamespacedName{Namespace: "shop", Name: rs.Status.CloneName}, &sts); err != nil {
		t.Fatal(err)
	}
	for _, tpl := range sts.Spec.VolumeClaimTemplates {
		if ds := tpl.Spec.DataSource; ds == nil || ds.Kind != "VolumeSnapshot" || ds.Name != "b1-"+tpl.Name {
			t.Errorf("claim template %s: dataSource %+v; want VolumeSnapshot b1-%s", tpl.Name, ds, tpl.Name)
		}
	}
	ics := sts.Spec.Template.Spec.InitContainers
	if len(ics) != 2 || ics[0].Name != workload.InstallContainer || ics[1].Name != workload.RestoreContainer || ics[1].Image != "postgres:15" {
		t.Fatalf("init containers %+v; want amber-install, then amber-restore in the database's image", ics)
	}
	args := strings.Join(ics[1].Args, " ")
	if !strings.Contains(args, "--engine mysql --data-dir /data/mysql ") || !slices.Contains(ics[1].Args, "--snapshot-data") ||
		!strings.Contains(args, "--backup "+id+" --to-time 2026-11-28T22:30:00Z") {
		t.Fatalf("restore init container args: %s", args)
	}

	// amber-install fails (say, no room for the binaries): the Restore
	// fails naming it, instead of waiting for amber-restore forever.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: rs.Status.CloneName + "-0", Namespace: "shop"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "postgres"}}, InitContainers: ics},
		Status: corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{
			{Name: workload.InstallContainer, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "no space left on device"}}},
			{Name: workload.RestoreContainer, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}}}}
	if err := bed.c.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	rr := &controllers.RestoreReconciler{Client: bed.c, Reader: bed.c, Recorder: bed.rec, Workloads: &workload.Capturer{Client: bed.c}, Image: "amber"}
	if _, err := rr.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(rs)}); err != nil {
		t.Fatal(err)
	}
	if err := bed.c.Get(context.Background(), client.ObjectKeyFromObject(rs), rs); err != nil {
		t.Fatal(err)
	}
	if rs.Status.Phase != amberv1.PhaseFailed || !strings.Contains(rs.Status.Error, "amber-install") || !strings.Contains(rs.Status.Error, "no space left") {
		t.Fatalf("after amber-install failed: %+v", rs.Status)
	}
}

// drain empties the recorder's events.
func drain(bed *snapshotBed) {
	for {
		select {
		case <-bed.rec.Events:
		default:
			return
		}
	}
}
