package controllers_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/controllers"
	"github.com/amber-backup/amber/sidecar/repo"
)

// fakePruner forgets the snapshot backups a test says.
type fakePruner struct{ forget []*repo.Manifest }

func (f *fakePruner) Prune(context.Context, *amberv1.BackupPolicy) (string, []*repo.Manifest, error) {
	out := f.forget
	f.forget = nil
	return "kept 1 backup(s)", out, nil
}

// TestPruneDeletesSnapshots: when retention forgets snapshot backups, the
// controller deletes the VolumeSnapshots their records name and its
// Backups created (labels checked), leaves one it did not create, and
// keeps, marked, one that a running Restore or a claim not yet bound
// uses; a later prune deletes those once nothing uses them.
func TestPruneDeletesSnapshots(t *testing.T) {
	bed := newSnapshotBed(t, time.Minute, 10*time.Second)
	ctx := context.Background()
	bed.snapshotBackup(t) // b1: VolumeSnapshots b1-data and b1-wal
	rp := bed.openRepo(t)
	all, err := rp.Backups(ctx)
	rp.Close()
	if err != nil || len(all) != 1 {
		t.Fatalf("backups: %v %d", err, len(all))
	}
	m1 := all[0]

	// b0: an older snapshot backup whose VolumeSnapshot a running Restore
	// restores from; and a record naming a VolumeSnapshot made by hand.
	newVS := func(name string, labels map[string]string) {
		vs := &unstructured.Unstructured{}
		vs.SetGroupVersionKind(controllers.GVKVolumeSnapshot)
		vs.SetNamespace("shop")
		vs.SetName(name)
		vs.SetLabels(labels)
		vs.Object["spec"] = map[string]any{"source": map[string]any{"persistentVolumeClaimName": "data-pg-0"}}
		vs.Object["status"] = map[string]any{"readyToUse": true}
		if err := bed.c.Create(ctx, vs); err != nil {
			t.Fatal(err)
		}
	}
	newVS("b0-data", map[string]string{controllers.LabelBackup: "b0", controllers.LabelPolicy: "snap"})
	newVS("by-hand", nil)
	id0, _ := repo.ParseID(strings.Repeat("0a", 32))
	idHand, _ := repo.ParseID(strings.Repeat("0b", 32))
	m0 := &repo.Manifest{ID: id0, Name: "shop/pg", Mode: repo.ModeSnapshot, Tags: map[string]string{"namespace": "shop", "backup": "b0"},
		Snapshots: []repo.VolumeSnapshot{{Volume: "data", Claim: "data-pg-0", Namespace: "shop", Name: "b0-data"}}}
	mHand := &repo.Manifest{ID: idHand, Name: "shop/pg", Mode: repo.ModeSnapshot, Tags: map[string]string{"namespace": "shop", "backup": "b9"},
		Snapshots: []repo.VolumeSnapshot{{Volume: "data", Claim: "data-pg-0", Namespace: "shop", Name: "by-hand"}}}
	busy := &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Name: "busy", Namespace: "shop"}, Spec: amberv1.RestoreSpec{
		PolicyRef: &amberv1.LocalRef{Name: "snap"}, SourceStatefulSet: "pg", BackupID: id0.String()[:12]}}
	if err := bed.c.Create(ctx, busy); err != nil {
		t.Fatal(err)
	}
	busy.Status = amberv1.RestoreStatus{Phase: amberv1.PhaseRunning, BackupID: id0.String(), CloneName: "pg-restore-busy"}
	if err := bed.c.Status().Update(ctx, busy); err != nil {
		t.Fatal(err)
	}
	// A claim being restored from b1-wal, not bound yet.
	group := "snapshot.storage.k8s.io"
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "from-b1-wal", Namespace: "shop"}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		DataSource:  &corev1.TypedLocalObjectReference{APIGroup: &group, Kind: "VolumeSnapshot", Name: "b1-wal"}},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending}}
	if err := bed.c.Create(ctx, claim); err != nil {
		t.Fatal(err)
	}

	var pol amberv1.BackupPolicy
	if err := bed.c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "snap"}, &pol); err != nil {
		t.Fatal(err)
	}
	pol.Spec.Retention.KeepLast = 1
	if err := bed.c.Update(ctx, &pol); err != nil {
		t.Fatal(err)
	}
	pruner := &fakePruner{forget: []*repo.Manifest{m0, m1, mHand}}
	bed.r.Pruner = pruner

	backup := func(name string) *amberv1.Backup {
		t.Helper()
		b := &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: "snap"}}}
		if err := bed.c.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
		pctx, stop := context.WithCancel(ctx)
		wg := bed.playSnapshotController(pctx, t, "")
		defer func() { stop(); wg.Wait() }()
		if _, err := bed.r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: name}}); err != nil {
			t.Fatal(err)
		}
		if err := bed.c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: name}, b); err != nil {
			t.Fatal(err)
		}
		if b.Status.Phase != amberv1.PhaseSucceeded {
			t.Fatalf("Backup %s: %s %s", name, b.Status.Phase, b.Status.Error)
		}
		return b
	}
	exists := func(name string) (bool, map[string]string) {
		vs := &unstructured.Unstructured{}
		vs.SetGroupVersionKind(controllers.GVKVolumeSnapshot)
		err := bed.c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: name}, vs)
		if apierrors.IsNotFound(err) {
			return false, nil
		} else if err != nil {
			t.Fatal(err)
		}
		return true, vs.GetAnnotations()
	}

	b2 := backup("b2")
	c := meta.FindStatusCondition(b2.Status.Conditions, controllers.CondPruned)
	if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "deleted VolumeSnapshots shop/b1-data") ||
		!strings.Contains(c.Message, "shop/b0-data (used by Restore busy)") || !strings.Contains(c.Message, "shop/b1-wal (used by claim from-b1-wal)") ||
		!strings.Contains(c.Message, "left VolumeSnapshots shop/by-hand") {
		t.Fatalf("Pruned condition after b2: %+v", c)
	}
	if ok, _ := exists("b1-data"); ok {
		t.Error("b1-data of the forgotten backup b1 was not deleted")
	}
	if ok, ann := exists("b1-wal"); !ok || ann[controllers.AnnotationForgotten] != m1.ID.String() {
		t.Errorf("b1-wal (a claim is restored from it): exists %v annotations %v", ok, ann)
	}
	if ok, ann := exists("b0-data"); !ok || ann[controllers.AnnotationForgotten] != id0.String() {
		t.Errorf("b0-data (a running Restore uses it): exists %v annotations %v", ok, ann)
	}
	for _, n := range []string{"by-hand", "b2-data", "b2-wal"} {
		if ok, _ := exists(n); !ok {
			t.Errorf("VolumeSnapshot %s was deleted", n)
		}
	}

	// The Restore finished and the claim bound: the next prune deletes them.
	busy.Status.Phase = amberv1.PhaseSucceeded
	if err := bed.c.Status().Update(ctx, busy); err != nil {
		t.Fatal(err)
	}
	claim.Status.Phase = corev1.ClaimBound
	if err := bed.c.Status().Update(ctx, claim); err != nil {
		if err := bed.c.Update(ctx, claim); err != nil {
			t.Fatal(err)
		}
	}
	b3 := backup("b3")
	c = meta.FindStatusCondition(b3.Status.Conditions, controllers.CondPruned)
	if c == nil || !strings.Contains(c.Message, "deleted VolumeSnapshots shop/b0-data, shop/b1-wal") || strings.Contains(c.Message, "kept VolumeSnapshots") {
		t.Fatalf("Pruned condition after b3: %+v", c)
	}
	for _, n := range []string{"b0-data", "b1-wal"} {
		if ok, _ := exists(n); ok {
			t.Errorf("VolumeSnapshot %s was kept after its users finished", n)
		}
	}
	for _, n := range []string{"by-hand", "b2-data", "b3-data"} {
		if ok, _ := exists(n); !ok {
			t.Errorf("VolumeSnapshot %s was deleted", n)
		}
	}
}
