package conformance_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/controllers"
)

// snapshotPostgres is TestKubernetesRestoreClone/Snapshot: on the same
// cluster, with volume snapshots (external-snapshotter's CRDs,
// snapshot-controller and csi-snapshotter, and the test CSI driver
// amber-csi-hostpath), the example PostgreSQL StatefulSet on a CSI volume
// and a BackupPolicy with mode: snapshot. A Backup freezes the database
// through the sidecar, takes a VolumeSnapshot of its claim, thaws it, and
// records the snapshot in the repository with the freeze and thaw
// positions; `amber ls` lists it. Then csi-snapshotter is paused so the next
// snapshot is never cut, and the controller is killed while the database is
// frozen: once the lease runs out the database has left backup mode and
// takes writes, and the restarted controller fails that Backup and deletes
// its VolumeSnapshot. Last, a claim with the first VolumeSnapshot as its
// dataSource is provisioned with the snapshot's data, and its data
// directory, with `amber restore --snapshot-data` and the WAL the pod's
// sidecar archived, recovers to a point in time after the snapshot; and a
// Restore naming the snapshot backup and that time does the same into a
// clone StatefulSet whose claim is provisioned from the VolumeSnapshot,
// leaving the original untouched.
func snapshotPostgres(t *testing.T, bed *restoreBed) {
	t0 := time.Now()
	c, k, ctl, m := bed.c, bed.k, bed.ctl, bed.m
	bed.startSnapshots(t)
	_, pgImage := testbed.BuildPostgresImage(t, bed.images)
	c.LoadImage(t, pgImage)
	bucket := m.CreateBucket(t, "amber-snapshot")
	repoURL := fmt.Sprintf("s3://%s/pg?endpoint=http://%s", bucket, m.Endpoint)
	cli := &amberEnv{t: t, bin: bins(t), repo: repoURL}
	cli.run("repo", "init")
	ctx := context.Background()

	const ns = "snap"
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := k.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pg-backup", Namespace: ns}, StringData: map[string]string{
		"password":              "conformance",
		"dsn":                   "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable",
		"AWS_ACCESS_KEY_ID":     m.AccessKey,
		"AWS_SECRET_ACCESS_KEY": m.SecretKey,
	}}); err != nil {
		t.Fatal(err)
	}
	root, err := testbed.Root()
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join(root, "docs", "examples", "postgres-statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const lease = 15 * time.Second
	var target time.Time // set between markers 115 and 116
	manifests := bytes.ReplaceAll(example, []byte("${AMBER_REPOSITORY}"), []byte(repoURL))
	manifests = bytes.Replace(manifests, []byte(`schedule: "0 */6 * * *"`), []byte("schedule: \"@daily\"\n  suspend: true"), 1)
	manifests = bytes.Replace(manifests, []byte("replicas: 3"), []byte("replicas: 1"), 1)
	manifests = bytes.Replace(manifests, []byte("  mode: physical"), []byte(fmt.Sprintf(
		"  mode: snapshot\n  snapshot: {volumeSnapshotClassName: %s, lease: %s, timeout: 2m}", testbed.CSISnapshotClass, lease)), 1)
	manifests = bytes.Replace(manifests, []byte("storageClassName: amber-local"), []byte("storageClassName: "+testbed.CSIStorageClass), 1)
	manifests = bytes.ReplaceAll(manifests, []byte("\nmetadata:\n  name: "), []byte("\nmetadata:\n  namespace: "+ns+"\n  name: "))
	if err := c.Apply(ctx, manifests); err != nil {
		t.Fatalf("apply the example with mode: snapshot: %v\ncontroller log:\n%s", err, ctl.log())
	}
	pg0 := waitReady(t, c, ctl, ns, "pg-0", 3*time.Minute)
	var pv corev1.PersistentVolume
	var pvc corev1.PersistentVolumeClaim
	if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: "data-pg-0"}, &pvc); err != nil {
		t.Fatal(err)
	}
	if err := k.Get(ctx, types.NamespacedName{Name: pvc.Spec.VolumeName}, &pv); err != nil {
		t.Fatal(err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != testbed.CSIDriverName {
		t.Fatalf("claim data-pg-0 is bound to %s, not a volume of %s: %+v", pv.Name, testbed.CSIDriverName, pv.Spec.PersistentVolumeSource)
	}
	setPrimaryIn(t, k, ns, "pg-0", pg0.Status.PodIP)
	pgd := &pgDriver{}
	dsn := fmt.Sprintf("postgres://postgres@%s:5432/postgres?sslmode=disable", pg0.Status.PodIP)
	pgd.MarkerSetup(t, dsn)
	waitArchiverIn(t, k, ctl, ns, "pg-0")
	for i := 1; i <= 20; i++ {
		pgd.Mark(t, dsn, i)
	}
	patchPolicy := func(patch string) {
		t.Helper()
		pol := &amberv1.BackupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "pg", Namespace: ns}}
		if err := k.Patch(ctx, pol, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatalf("patch BackupPolicy pg with %s: %v", patch, err)
		}
		// The controller reads policies from its cache: let the change
		// reach it before the next Backup.
		time.Sleep(2 * time.Second)
	}
	// A physical backup first, by the same policy switched to mode:
	// physical for it: the snapshot backup after it is the newer base.
	patchPolicy(`{"spec":{"mode":"physical"}}`)
	file1 := runBackup(t, k, ctl, ns, "pg", "file1", c.CSILogs)
	patchPolicy(`{"spec":{"mode":"snapshot"}}`)
	lsnBefore := psqlValue(t, pgd, dsn, `SELECT pg_current_wal_lsn()::text`)

	// Freeze, snapshot, thaw, record.
	t1 := time.Now()
	b := runBackup(t, k, ctl, ns, "pg", "snap1", c.CSILogs)
	lsnAfter := psqlValue(t, pgd, dsn, `SELECT pg_current_wal_lsn()::text`)
	t.Logf("snapshot Backup snap1 took %s: %s", time.Since(t1).Round(100*time.Millisecond), findCondition(b.Status.Conditions, controllers.CondComplete).Message)
	if tc := findCondition(b.Status.Conditions, controllers.CondThawed); tc == nil || tc.Status != metav1.ConditionTrue {
		t.Errorf("Backup snap1: Thawed condition %+v", tc)
	}
	if len(b.Status.Snapshots) != 1 || b.Status.Snapshots[0].PersistentVolumeClaim != "data-pg-0" || !b.Status.Snapshots[0].ReadyToUse {
		t.Fatalf("Backup snap1: snapshots %+v", b.Status.Snapshots)
	}
	vsName := b.Status.Snapshots[0].VolumeSnapshot
	vs := volumeSnapshot(t, k, ns, vsName)
	if ready, _, _ := unstructured.NestedBool(vs.Object, "status", "readyToUse"); !ready {
		t.Fatalf("VolumeSnapshot %s is not readyToUse: %v", vsName, vs.Object["status"])
	}
	// The database left backup mode with the thaw.
	if n := psqlValue(t, pgd, dsn, frozenSessions); n != "0" {
		t.Errorf("%s sessions still hold pg_backup_start after the thaw", n)
	}

	// The repository records it, from the bucket alone.
	var ls struct {
		Backups []struct {
			ID, Mode, Position string
			ConsistentTime     *time.Time `json:"consistent_time"`
			Snapshots          []struct {
				Claim, Namespace, Name, Content, Driver, Handle string
			}
		}
	}
	out := cli.run("ls", "--json")
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("amber ls --json: %v\n%s", err, out)
	}
	if len(ls.Backups) != 2 || ls.Backups[0].ID != file1.Status.BackupID || ls.Backups[0].Mode != "physical" {
		t.Fatalf("amber ls: %s; want physical backup %s and the snapshot backup", out, file1.Status.BackupID)
	}
	got := ls.Backups[1]
	if got.ID != b.Status.BackupID || got.Mode != "snapshot" || got.ConsistentTime == nil || len(got.Snapshots) != 1 {
		t.Fatalf("amber ls: %s", out)
	}
	s := got.Snapshots[0]
	if s.Claim != "data-pg-0" || s.Namespace != ns || s.Name != vsName || s.Content == "" || s.Driver != testbed.CSIDriverName || s.Handle == "" {
		t.Fatalf("amber ls: snapshot %+v", s)
	}
	// Its position (timeline/LSN) lies between the LSNs before and after.
	parts := strings.Split(got.Position, "/")
	if len(parts) != 3 {
		t.Fatalf("position %q is not timeline/hi/lo", got.Position)
	}
	lsn := parts[1] + "/" + parts[2]
	if in := psqlValue(t, pgd, dsn, fmt.Sprintf(`SELECT '%s'::pg_lsn BETWEEN '%s'::pg_lsn AND '%s'::pg_lsn`, lsn, lsnBefore, lsnAfter)); in != "true" {
		t.Errorf("the recorded position %s is not between %s and %s", lsn, lsnBefore, lsnAfter)
	}
	text := cli.run("ls")
	if !strings.Contains(text, "snapshot backups") || !strings.Contains(text, vsName) {
		t.Errorf("amber ls does not show the snapshot backup:\n%s", text)
	}
	t.Logf("amber ls: snapshot backup %s consistent at %s, VolumeSnapshot %s (content %s, handle %s)", got.ID[:12], got.Position, s.Name, s.Content, s.Handle)

	// Markers after the snapshot, for a point-in-time restore from it; the
	// target sits on a second boundary between 115 and 116, as a Restore's
	// pointInTime has whole seconds (metav1.Time).
	for i := 101; i <= 130; i++ {
		if i == 116 {
			target = secondBoundary()
		}
		pgd.Mark(t, dsn, i)
		time.Sleep(10 * time.Millisecond)
	}
	lsn130 := psqlValue(t, pgd, dsn, `SELECT pg_current_wal_lsn()::text`)
	waitFor(t, time.Minute, "WAL through marker 130 archived", func() bool {
		return psqlValue(t, pgd, dsn, fmt.Sprintf(`SELECT coalesce(bool_and(restart_lsn >= '%s'::pg_lsn), false) FROM pg_replication_slots`, lsn130)) == "true"
	})

	// The controller killed between freeze and thaw: snapshots are never cut
	// while csi-snapshotter is paused.
	resume, err := c.PauseSnapshotter()
	if err != nil {
		t.Fatal(err)
	}
	defer resume()
	if err := k.Create(ctx, &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Name: "crash", Namespace: ns},
		Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: "pg"}}}); err != nil {
		t.Fatal(err)
	}
	frozen := waitBackup(t, k, ctl, ns, func(b *amberv1.Backup) bool {
		return b.Name == "crash" && (len(b.Status.Snapshots) > 0 || b.Status.Phase == amberv1.PhaseFailed)
	}, time.Minute)
	if frozen.Status.Phase != amberv1.PhaseRunning {
		t.Fatalf("Backup crash: %s %q", frozen.Status.Phase, frozen.Status.Error)
	}
	if n := psqlValue(t, pgd, dsn, frozenSessions); n != "1" {
		t.Fatalf("while Backup crash waits for its snapshot, %s sessions hold pg_backup_start; want 1", n)
	}
	ctl.Kill()
	killed := time.Now()
	t.Logf("controller killed while the database was frozen for VolumeSnapshot %s", frozen.Status.Snapshots[0].VolumeSnapshot)
	waitFor(t, lease+30*time.Second, "the freeze to end by its lease", func() bool {
		return psqlValue(t, pgd, dsn, frozenSessions) == "0"
	})
	t.Logf("the freeze ended %s after the controller was killed (lease %s)", time.Since(killed).Round(100*time.Millisecond), lease)
	pgd.Mark(t, dsn, 21) // writable
	// A new backup can start and stop: nothing of the old one is left.
	func() {
		conn, err := pgd.db(t, dsn).Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, `SELECT pg_backup_start('probe', true)`); err != nil {
			t.Fatalf("pg_backup_start after the lease expired: %v", err)
		}
		if _, err := conn.ExecContext(ctx, `SELECT pg_backup_stop()`); err != nil {
			t.Fatalf("pg_backup_stop: %v", err)
		}
	}()
	resume()
	ctl.start(t)
	done := waitBackup(t, k, ctl, ns, func(b *amberv1.Backup) bool {
		return b.Name == "crash" && (b.Status.Phase == amberv1.PhaseSucceeded || b.Status.Phase == amberv1.PhaseFailed)
	}, 2*time.Minute)
	if done.Status.Phase != amberv1.PhaseFailed || !strings.Contains(done.Status.Error, "frozen") {
		t.Fatalf("after the restart Backup crash is %s: %q", done.Status.Phase, done.Status.Error)
	}
	waitFor(t, time.Minute, "VolumeSnapshot "+frozen.Status.Snapshots[0].VolumeSnapshot+" deleted", func() bool {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(controllers.GVKVolumeSnapshot)
		return apierrors.IsNotFound(k.Get(ctx, types.NamespacedName{Namespace: ns, Name: frozen.Status.Snapshots[0].VolumeSnapshot}, u))
	})
	t.Logf("after the restart: %s", done.Status.Error)

	// A claim restored from the first snapshot holds the data directory as
	// the snapshot cut it.
	class := testbed.CSIStorageClass
	apiGroup := "snapshot.storage.k8s.io"
	clone := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "from-snap1", Namespace: ns}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: &class,
		Resources:  corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		DataSource: &corev1.TypedLocalObjectReference{APIGroup: &apiGroup, Kind: "VolumeSnapshot", Name: vsName}}}
	if err := k.Create(ctx, clone); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "claim from-snap1 bound", func() bool {
		_ = k.Get(ctx, types.NamespacedName{Namespace: ns, Name: "from-snap1"}, clone)
		return clone.Status.Phase == corev1.ClaimBound
	})
	dataDir := filepath.Join(c.Dir, "volumes", clone.Spec.VolumeName, "pgdata")
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		t.Fatalf("the claim restored from VolumeSnapshot %s has no data directory: %v", vsName, err)
	}
	t.Logf("claim from-snap1 restored from VolumeSnapshot %s: %s", vsName, dataDir)

	// That volume, restored to a point in time with the archived WAL: on
	// the host, a copy of the claim's data directory gets the record's
	// backup_label and recovery (amber restore --snapshot-data); the
	// recovered server holds markers 1..20 and 101..115, none later.
	pitr := filepath.Join(testbed.PostgresDir(t), "pitr")
	if out, err := exec.Command("cp", "-a", dataDir, pitr).CombinedOutput(); err != nil {
		t.Fatalf("copy the restored claim's data directory: %v\n%s", err, out)
	}
	if err := testbed.ChownPostgres(pitr); err != nil {
		t.Fatal(err)
	}
	cli.run("restore", "--engine", "postgres", "--data-dir", pitr, "--snapshot-data", "--backup", b.Status.BackupID,
		"--to-time", target.UTC().Format(time.RFC3339Nano))
	srv := testbed.StartPostgresDataDir(t, pitr, testbed.PostgresOptions{})
	pdsn := srv.DSNFor("postgres", "", "postgres")
	waitFor(t, 60*time.Second, "the server restored from the snapshot to finish recovery", func() bool {
		db, err := sql.Open("pgx", pdsn)
		if err != nil {
			return false
		}
		defer db.Close()
		var rec bool
		return db.QueryRow(`SELECT pg_is_in_recovery()`).Scan(&rec) == nil && !rec
	})
	n, maxID := pgd.Markers(t, pdsn)
	srv.Stop()
	if n != 35 || maxID != 115 {
		t.Fatalf("restored from the snapshot to %s: %d markers, highest %d; want markers 1..20 and 101..115", target.Format(time.RFC3339Nano), n, maxID)
	}
	t.Logf("snapshot %s plus archived WAL restored to %s: exactly markers 1..20 and 101..115", vsName, target.Format(time.RFC3339Nano))

	// The same restore by the controller: a Restore giving only the time
	// starts from the newest backup before it, the snapshot backup (the
	// physical one file1 is older): a clone whose claim is provisioned
	// from the VolumeSnapshot and whose init container runs amber restore
	// --snapshot-data; the clone recovers with the archived WAL to the
	// target, and the original is untouched.
	rs := &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Name: "from-snap1", Namespace: ns}, Spec: amberv1.RestoreSpec{
		PolicyRef: &amberv1.LocalRef{Name: "pg"}, SourceStatefulSet: "pg", PointInTime: &metav1.Time{Time: target}}}
	if err := k.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	rs = waitRestore(t, c, k, ctl, rs, 4*time.Minute)
	logRestore(t, rs)
	var claim corev1.PersistentVolumeClaim
	if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: "data-" + rs.Status.CloneName + "-0"}, &claim); err != nil {
		t.Fatal(err)
	}
	if ds := claim.Spec.DataSource; ds == nil || ds.Kind != "VolumeSnapshot" || ds.Name != vsName {
		t.Fatalf("the clone's claim %s: dataSource %+v; want VolumeSnapshot %s", claim.Name, claim.Spec.DataSource, vsName)
	}
	if rs.Status.BackupID != b.Status.BackupID || rs.Status.PointReached == nil || rs.Status.PointReached.Time == nil ||
		!rs.Status.PointReached.Time.Equal(&metav1.Time{Time: target}) {
		t.Errorf("Restore %s: backup %s, point reached %+v; want backup %s at %s", rs.Name, rs.Status.BackupID, rs.Status.PointReached, b.Status.BackupID, target)
	}
	cdsn := cloneDSN(t, c, k, ns, rs.Status.CloneName+"-0", func(ip string) string {
		return fmt.Sprintf("postgres://postgres@%s:5432/postgres?sslmode=disable", ip)
	})
	if n, maxID := pgd.Markers(t, cdsn); n != 35 || maxID != 115 {
		t.Fatalf("the clone restored from the snapshot to %s holds %d markers, highest %d; want markers 1..20 and 101..115", target.Format(time.RFC3339Nano), n, maxID)
	}
	if n, maxID := pgd.Markers(t, dsn); n != 51 || maxID != 130 {
		t.Fatalf("the original holds %d markers (highest %d) after the restore; want 1..21 and 101..130", n, maxID)
	}
	checkClone(t, k, ns, rs.Status.CloneName, "pg")
	t.Logf("the clone's server log, recovery:\n%s", recoveryLines(containerLog(ctx, c, ns, rs.Status.CloneName+"-0", "postgres", 200)))
	t.Logf("Restore %s to %s (no backupID) chose snapshot backup %s over physical backup %s: clone %s holds exactly markers 1..20 and 101..115, claim %s from VolumeSnapshot %s",
		rs.Name, target.Format(time.RFC3339Nano), shortID12(b.Status.BackupID), shortID12(file1.Status.BackupID), rs.Status.CloneName, claim.Name, vsName)

	snapshotRetention(t, bed, ns, b, patchPolicy)
	t.Logf("Snapshot part: %s", time.Since(t0).Round(100*time.Millisecond))
}

func volumeSnapshot(t *testing.T, k client.Client, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(controllers.GVKVolumeSnapshot)
	if err := k.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, u); err != nil {
		t.Fatalf("VolumeSnapshot %s/%s: %v", ns, name, err)
	}
	return u
}

// frozenSessions counts the sessions holding a freeze: the PostgreSQL
// plugin's Freeze runs pg_backup_start, then SELECT clock_timestamp(), in a
// session it keeps until the thaw (or the lease) ends the backup and closes
// it.
const frozenSessions = `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND query = 'SELECT clock_timestamp()' AND pid <> pg_backend_pid()`

// snapshotRetention is the end of TestKubernetesRestoreClone/Snapshot:
// keep-last retention on the snapshot policy. A Restore that cannot finish
// (its init container's image does not exist) restores snapshot backup
// snap1; then snap2, keepLast: 1, and snap3, whose prune forgets snap1 and
// snap2: snap2's VolumeSnapshot is deleted, snap1's is kept for the Restore
// and annotated amber.dev/forgotten-backup, snap3's stays.
func snapshotRetention(t *testing.T, bed *restoreBed, ns string, snap1 *amberv1.Backup, patchPolicy func(string)) {
	t0 := time.Now()
	ctx := context.Background()
	k := bed.k
	hold := &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Name: "hold", Namespace: ns}, Spec: amberv1.RestoreSpec{
		PolicyRef: &amberv1.LocalRef{Name: "pg"}, SourceStatefulSet: "pg", BackupID: snap1.Status.BackupID, Image: "amber.invalid/absent:0"}}
	if err := k.Create(ctx, hold); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := k.Delete(ctx, hold); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete Restore hold: %v", err)
		}
	}()
	waitFor(t, time.Minute, "Restore hold running on snapshot backup "+shortID12(snap1.Status.BackupID), func() bool {
		_ = k.Get(ctx, client.ObjectKeyFromObject(hold), hold)
		return hold.Status.Phase == amberv1.PhaseRunning && hold.Status.BackupID == snap1.Status.BackupID || hold.Status.Phase == amberv1.PhaseFailed
	})
	if hold.Status.Phase != amberv1.PhaseRunning {
		t.Fatalf("Restore hold: %s %q", hold.Status.Phase, hold.Status.Error)
	}
	snap2 := runBackup(t, k, bed.ctl, ns, "pg", "snap2", bed.c.CSILogs)
	patchPolicy(`{"spec":{"retention":{"keepLast":1}}}`)
	snap3 := runBackup(t, k, bed.ctl, ns, "pg", "snap3", bed.c.CSILogs)
	pruned := findCondition(snap3.Status.Conditions, "Pruned")
	if pruned == nil {
		t.Fatalf("Backup snap3 has no Pruned condition: %+v", snap3.Status.Conditions)
	}
	t.Logf("Backup snap3 pruned: %s", pruned.Message)
	vsOf := func(b *amberv1.Backup) string { return b.Status.Snapshots[0].VolumeSnapshot }
	waitFor(t, time.Minute, "VolumeSnapshot "+vsOf(snap2)+" of forgotten backup snap2 deleted", func() bool {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(controllers.GVKVolumeSnapshot)
		return apierrors.IsNotFound(k.Get(ctx, types.NamespacedName{Namespace: ns, Name: vsOf(snap2)}, u))
	})
	kept := volumeSnapshot(t, k, ns, vsOf(snap1))
	if got := kept.GetAnnotations()[controllers.AnnotationForgotten]; got != snap1.Status.BackupID || kept.GetDeletionTimestamp() != nil {
		t.Errorf("VolumeSnapshot %s used by Restore hold: annotation %s=%q, deleting %v; want kept and annotated with %s",
			vsOf(snap1), controllers.AnnotationForgotten, got, kept.GetDeletionTimestamp() != nil, snap1.Status.BackupID)
	}
	if !strings.Contains(pruned.Message, "used by Restore hold") {
		t.Errorf("Pruned condition does not say Restore hold keeps %s: %s", vsOf(snap1), pruned.Message)
	}
	if vs := volumeSnapshot(t, k, ns, vsOf(snap3)); vs.GetDeletionTimestamp() != nil || vs.GetAnnotations()[controllers.AnnotationForgotten] != "" {
		t.Errorf("VolumeSnapshot %s of kept backup snap3 is being deleted or marked forgotten", vsOf(snap3))
	}
	t.Logf("retention keepLast 1: deleted VolumeSnapshot %s, kept %s for Restore hold (annotated), kept %s of snap3 (%s)",
		vsOf(snap2), vsOf(snap1), vsOf(snap3), time.Since(t0).Round(100*time.Millisecond))
}

// recoveryLines keeps the lines of a PostgreSQL log that say how recovery
// went: where it started, the WAL it restored, where it stopped, the
// promotion and the end.
func recoveryLines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		for _, w := range []string{"recovery", "restored log file", "consistent", "timeline", "ready to accept", "FATAL", "PANIC", "could not"} {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	if len(out) == 0 {
		return log // none of those: all of it
	}
	return strings.Join(out, "\n")
}
