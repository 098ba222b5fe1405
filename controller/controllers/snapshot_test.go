package controllers_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/controllers"
	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/controller/sidecarapi"
	"github.com/amber-backup/amber/controller/sidecarapi/sidecardouble"
	"github.com/amber-backup/amber/controller/workload"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/repo/repotest"
)

// snapshotBed is a Backup of a snapshot-mode policy on a fake API server,
// the sidecar a test double, the repository a real file repository, and a
// goroutine playing snapshot-controller: it cuts each VolumeSnapshot and
// makes it ready (or fails it) as the test says.
type snapshotBed struct {
	c        client.Client
	sidecars *sidecardouble.Dialer
	r        *controllers.BackupReconciler
	repoDir  string
	rec      *record.FakeRecorder
}

func newSnapshotBed(t *testing.T, lease, timeout time.Duration) *snapshotBed {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := amberv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	for _, gvk := range []struct{ kind string }{{"VolumeSnapshot"}, {"VolumeSnapshotContent"}} {
		gv := controllers.GVKVolumeSnapshot.GroupVersion()
		scheme.AddKnownTypeWithName(gv.WithKind(gvk.kind), &unstructured.Unstructured{})
		scheme.AddKnownTypeWithName(gv.WithKind(gvk.kind+"List"), &unstructured.UnstructuredList{})
	}

	dir := t.TempDir()
	repotest.NewIn(t, dir).Close()

	pol := &amberv1.BackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "snap", Namespace: "shop"},
		Spec: amberv1.BackupPolicySpec{Engine: amberv1.EnginePostgres, Mode: amberv1.ModeSnapshot,
			Repository: amberv1.RepositorySpec{URL: "file://" + dir, CredentialsSecret: amberv1.SecretRef{Name: "creds"}},
			Snapshot: &amberv1.SnapshotSpec{VolumeSnapshotClassName: "hostpath", Lease: &metav1.Duration{Duration: lease},
				Timeout: &metav1.Duration{Duration: timeout}}}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: "shop"}, Data: map[string][]byte{"password": []byte(repotest.Password)}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pg-0", Namespace: "shop",
		Annotations:     map[string]string{inject.AnnotationPolicy: "snap", inject.AnnotationInjected: "true"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "pg", UID: "u1", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "postgres"}}, Volumes: []corev1.Volume{
			{Name: "run", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-pg-0"}}},
			{Name: "wal", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "wal-pg-0"}}},
		}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"}}
	b := &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Name: "b1", Namespace: "shop"}, Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: "snap"}}}

	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(pol, secret, pod, b).
		WithStatusSubresource(&amberv1.Backup{}, &amberv1.BackupPolicy{}, &amberv1.Restore{}).
		WithIndex(&corev1.Pod{}, "amber.dev/policy-annotation", func(o client.Object) []string {
			return []string{o.GetAnnotations()[inject.AnnotationPolicy]}
		}).Build()
	sc := sidecardouble.New()
	sc.Set("shop/pg-0", sidecardouble.Pod{
		Probe: sidecarapi.ProbeResult{Healthy: true, Role: sidecarapi.RolePrimary, SystemID: "7301", ServerVersion: "PostgreSQL 15"},
		Thawed: sidecarapi.Thawed{Consistent: sidecarapi.Position{Epoch: 1, Offset: 200, Text: "1/0/C8"},
			ConsistentTime: time.Date(2026, 11, 28, 22, 0, 0, 0, time.UTC),
			Files:          []sidecarapi.File{{Name: "backup_label", Content: []byte("START WAL LOCATION: 0/64"), Mode: 0o600}}}})
	rec := record.NewFakeRecorder(100)
	capt := &workload.Capturer{Client: c}
	r := &controllers.BackupReconciler{Client: c, Reader: c, Recorder: rec, Dialer: sc, Snapshots: capt, SnapshotPoll: 20 * time.Millisecond}
	return &snapshotBed{c: c, sidecars: sc, r: r, repoDir: dir, rec: rec}
}

// playSnapshotController cuts and readies every VolumeSnapshot as it
// appears, after checking the database is frozen when it is created;
// fail, when set, fails each with that message instead. It stops with ctx.
func (bed *snapshotBed) playSnapshotController(ctx context.Context, t *testing.T, fail string) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		seen := map[string]bool{}
		failed := false
		for ctx.Err() == nil {
			var l unstructured.UnstructuredList
			l.SetGroupVersionKind(controllers.GVKVolumeSnapshot.GroupVersion().WithKind("VolumeSnapshotList"))
			if err := bed.c.List(ctx, &l, client.InNamespace("shop")); err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			for i := range l.Items {
				vs := &l.Items[i]
				if seen[vs.GetName()] {
					continue
				}
				seen[vs.GetName()] = true
				if _, done := vs.Object["status"]; done {
					continue // cut by an earlier run, or made by the test
				}
				// Once one snapshot has failed, the reconciler may thaw before
				// the next is seen here.
				if !failed && !bed.sidecars.Frozen("shop/pg-0") {
					t.Errorf("VolumeSnapshot %s created while the database was not frozen", vs.GetName())
				}
				content := "snapcontent-" + vs.GetName()
				status := map[string]any{"boundVolumeSnapshotContentName": content, "creationTime": "2026-11-28T22:00:00Z",
					"readyToUse": true, "restoreSize": "1Gi"}
				if fail != "" {
					failed = true
					status = map[string]any{"error": map[string]any{"message": fail}}
				} else {
					vsc := &unstructured.Unstructured{}
					vsc.SetGroupVersionKind(controllers.GVKVolumeSnapshotContent)
					vsc.SetName(content)
					vsc.Object["spec"] = map[string]any{"driver": "hostpath.csi.amber.dev", "volumeSnapshotClassName": "hostpath"}
					vsc.Object["status"] = map[string]any{"snapshotHandle": "handle-" + vs.GetName(), "restoreSize": int64(1 << 30)}
					if err := bed.c.Create(ctx, vsc); err != nil && !apierrors.IsAlreadyExists(err) {
						t.Errorf("create content: %v", err)
					}
				}
				vs.Object["status"] = status
				// The reconciler deletes a failed backup's snapshots; one
				// listed a moment ago may be gone already.
				if err := bed.c.Update(ctx, vs); err != nil && !apierrors.IsNotFound(err) {
					t.Errorf("set VolumeSnapshot status: %v", err)
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return &wg
}

func (bed *snapshotBed) reconcile(t *testing.T) *amberv1.Backup {
	t.Helper()
	key := types.NamespacedName{Namespace: "shop", Name: "b1"}
	if _, err := bed.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	var b amberv1.Backup
	if err := bed.c.Get(context.Background(), key, &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

func (bed *snapshotBed) snapshots(t *testing.T) []string {
	t.Helper()
	var l unstructured.UnstructuredList
	l.SetGroupVersionKind(controllers.GVKVolumeSnapshot.GroupVersion().WithKind("VolumeSnapshotList"))
	if err := bed.c.List(context.Background(), &l, client.InNamespace("shop")); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, vs := range l.Items {
		out = append(out, vs.GetName())
	}
	return out
}

func TestSnapshotBackup(t *testing.T) {
	bed := newSnapshotBed(t, time.Minute, 10*time.Second)
	ctx, stop := context.WithCancel(context.Background())
	wg := bed.playSnapshotController(ctx, t, "")
	b := bed.reconcile(t)
	stop()
	wg.Wait()

	if b.Status.Phase != amberv1.PhaseSucceeded {
		t.Fatalf("phase %s: %s", b.Status.Phase, b.Status.Error)
	}
	if c := meta.FindStatusCondition(b.Status.Conditions, controllers.CondThawed); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Thawed condition: %+v", c)
	}
	if len(b.Status.Snapshots) != 2 || b.Status.Snapshots[0].VolumeSnapshot != "b1-data" || b.Status.Snapshots[1].PersistentVolumeClaim != "wal-pg-0" ||
		!b.Status.Snapshots[0].ReadyToUse || b.Status.Snapshots[0].VolumeSnapshotContent != "snapcontent-b1-data" {
		t.Errorf("status snapshots: %+v", b.Status.Snapshots)
	}
	if bed.sidecars.Frozen("shop/pg-0") {
		t.Error("the database is still frozen after the backup")
	}
	var methods []string
	for _, c := range bed.sidecars.Calls("") {
		if c.Method == "Freeze" || c.Method == "Thaw" {
			methods = append(methods, c.Method)
		}
	}
	if strings.Join(methods, ",") != "Freeze,Thaw" {
		t.Errorf("sidecar calls: %v", methods)
	}
	if f := bed.sidecars.Calls("Freeze"); len(f) != 1 || f[0].Freeze.Lease != time.Minute || !strings.Contains(f[0].Freeze.Label, "shop/b1") {
		t.Errorf("freeze request: %+v", f)
	}

	// The repository holds the record: the snapshots, the positions and
	// the backup label, as `amber ls` reads it.
	rp := bed.openRepo(t)
	defer rp.Close()
	all, err := rp.Backups(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 {
		t.Fatalf("%d backups in the repository, want 1", len(all))
	}
	m := all[0]
	if m.ID.String() != b.Status.BackupID || m.Mode != repo.ModeSnapshot || m.Name != "shop/pg" || m.Engine != "postgres" ||
		m.Position != "1/0/C8" || m.Record == nil || m.Record.SystemID != "7301" || m.Record.Start.Text != "1/0/64" ||
		m.Record.Consistent.Offset != 200 || len(m.Record.Files) != 1 || m.Record.Files[0].Name != "backup_label" {
		t.Fatalf("manifest: %+v record %+v", m, m.Record)
	}
	if len(m.Snapshots) != 2 {
		t.Fatalf("manifest snapshots: %+v", m.Snapshots)
	}
	s0 := m.Snapshots[0]
	if s0.Volume != "data" || s0.Claim != "data-pg-0" || s0.Name != "b1-data" || s0.Content != "snapcontent-b1-data" ||
		s0.Driver != "hostpath.csi.amber.dev" || s0.Handle != "handle-b1-data" || s0.RestoreSize != 1<<30 || s0.Class != "hostpath" ||
		s0.CreationTime.IsZero() {
		t.Errorf("snapshot record: %+v", s0)
	}
	if !events(bed.rec, "Frozen", "SnapshotsCreated", "Thawed", "Succeeded") {
		t.Error("missing events")
	}
}

// A VolumeSnapshot that fails: the database is thawed, the snapshots are
// deleted, nothing is recorded.
func TestSnapshotBackupFailsAndThaws(t *testing.T) {
	bed := newSnapshotBed(t, time.Minute, 10*time.Second)
	ctx, stop := context.WithCancel(context.Background())
	wg := bed.playSnapshotController(ctx, t, "the driver refused")
	b := bed.reconcile(t)
	stop()
	wg.Wait()
	if b.Status.Phase != amberv1.PhaseFailed || !strings.Contains(b.Status.Error, "the driver refused") {
		t.Fatalf("phase %s: %s", b.Status.Phase, b.Status.Error)
	}
	if bed.sidecars.Frozen("shop/pg-0") || len(bed.sidecars.Calls("Thaw")) != 1 {
		t.Errorf("not thawed once: %v", bed.sidecars.Calls("Thaw"))
	}
	if left := bed.snapshots(t); len(left) != 0 {
		t.Errorf("VolumeSnapshots left: %v", left)
	}
	bed.assertNoBackups(t)
}

// Nothing cuts the snapshots: the timeout ends the wait, the database is
// thawed, the lease renewed meanwhile.
func TestSnapshotBackupTimeoutThaws(t *testing.T) {
	bed := newSnapshotBed(t, 300*time.Millisecond, 1500*time.Millisecond)
	start := time.Now()
	b := bed.reconcile(t)
	if b.Status.Phase != amberv1.PhaseFailed || !strings.Contains(b.Status.Error, "not cut within") {
		t.Fatalf("phase %s: %s", b.Status.Phase, b.Status.Error)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s, the timeout is 1.5 s", d)
	}
	if bed.sidecars.Frozen("shop/pg-0") || len(bed.sidecars.Calls("Thaw")) != 1 {
		t.Error("the database was not thawed after the timeout")
	}
	if n := len(bed.sidecars.Calls("RenewLease")); n < 2 {
		t.Errorf("lease renewed %d times in 1.5 s with a 300 ms lease", n)
	}
	if left := bed.snapshots(t); len(left) != 0 {
		t.Errorf("VolumeSnapshots left: %v", left)
	}
	bed.assertNoBackups(t)
}

// The lease ran out before the thaw: the snapshots are discarded.
func TestSnapshotBackupLeaseExpired(t *testing.T) {
	bed := newSnapshotBed(t, time.Minute, 10*time.Second)
	bed.sidecars.Set("shop/pg-0", sidecardouble.Pod{
		Probe:   sidecarapi.ProbeResult{Healthy: true, Role: sidecarapi.RolePrimary, SystemID: "7301"},
		ThawErr: errors.Join(sidecarapi.ErrLeaseExpired)})
	ctx, stop := context.WithCancel(context.Background())
	wg := bed.playSnapshotController(ctx, t, "")
	b := bed.reconcile(t)
	stop()
	wg.Wait()
	if b.Status.Phase != amberv1.PhaseFailed {
		t.Fatalf("phase %s", b.Status.Phase)
	}
	if c := meta.FindStatusCondition(b.Status.Conditions, controllers.CondThawed); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "LeaseExpired" {
		t.Errorf("Thawed condition: %+v", c)
	}
	if left := bed.snapshots(t); len(left) != 0 {
		t.Errorf("VolumeSnapshots left: %v", left)
	}
	bed.assertNoBackups(t)
}

// A controller that restarts finds its snapshot Backup Running: it deletes
// the VolumeSnapshots the status names and fails the Backup.
func TestSnapshotBackupInterrupted(t *testing.T) {
	bed := newSnapshotBed(t, time.Minute, 10*time.Second)
	ctx := context.Background()
	vs := &unstructured.Unstructured{}
	vs.SetGroupVersionKind(controllers.GVKVolumeSnapshot)
	vs.SetNamespace("shop")
	vs.SetName("b1-data")
	if err := bed.c.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	var b amberv1.Backup
	if err := bed.c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "b1"}, &b); err != nil {
		t.Fatal(err)
	}
	b.Status.Phase = amberv1.PhaseRunning
	b.Status.TargetPod = "pg-0"
	b.Status.Snapshots = []amberv1.BackupSnapshot{{PersistentVolumeClaim: "data-pg-0", VolumeSnapshot: "b1-data"}}
	if err := bed.c.Status().Update(ctx, &b); err != nil {
		t.Fatal(err)
	}
	got := bed.reconcile(t)
	if got.Status.Phase != amberv1.PhaseFailed || !strings.Contains(got.Status.Error, "b1-data") {
		t.Fatalf("phase %s: %s", got.Status.Phase, got.Status.Error)
	}
	if left := bed.snapshots(t); len(left) != 0 {
		t.Errorf("VolumeSnapshots left: %v", left)
	}
}

func (bed *snapshotBed) assertNoBackups(t *testing.T) {
	t.Helper()
	rp := bed.openRepo(t)
	defer rp.Close()
	all, err := rp.Backups(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 0 {
		t.Errorf("%d backups recorded, want none", len(all))
	}
}

// events reports whether the recorder saw events with each reason, in order.
func events(rec *record.FakeRecorder, reasons ...string) bool {
	var got []string
	for {
		select {
		case e := <-rec.Events:
			got = append(got, e)
			continue
		default:
		}
		break
	}
	i := 0
	for _, e := range got {
		if i < len(reasons) && strings.Contains(e, " "+reasons[i]+" ") {
			i++
		}
	}
	return i == len(reasons)
}
