package conformance_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/workload"
)

// restoreMariaDBDataDir is TestKubernetesRestoreClone/MariaDBDataDir: on the
// MariaDB StatefulSet the MariaDB subtest left running (archiving binlog,
// its claim a CSI volume), two Restores that build the clone's data
// directory before its server starts:
//
//   - Physical: the policy switched to mode: physical for one Backup, which
//     the sidecar takes with mariadb-backup (its image is amber's with the
//     tool added, testbed.AmberMariaDBImageRef) reading the server's
//     @@datadir on the data volume, mounted read-only where the server
//     mounts it; a Restore naming it and a point in time creates a clone
//     whose init container, in the MariaDB image with amber copied in,
//     unpacks and prepares it into the recorded data directory and replays
//     archived binlog to the target through a private server before
//     mariadbd starts.
//   - Snapshot: the policy switched to mode: snapshot for one Backup
//     (BACKUP STAGE BLOCK_COMMIT, a VolumeSnapshot of the claim, thaw); a
//     Restore naming it and a point in time creates a clone whose claim is
//     provisioned from the VolumeSnapshot, and whose init container starts
//     a private server on the snapshot's files (InnoDB recovers them) and
//     replays archived binlog from the frozen position to the target.
//
// Each clone holds exactly the markers committed before its target, and
// the original all of them.
func restoreMariaDBDataDir(t *testing.T, bed *restoreBed, st *mariaState) {
	t0 := time.Now()
	c, k, ctl := bed.c, bed.k, bed.ctl
	ctx := context.Background()
	ns := st.ns
	// The MariaDB subtest's connection was closed with it: a new one.
	var pod0 corev1.Pod
	if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: "db-0"}, &pod0); err != nil {
		t.Fatal(err)
	}
	st.orig = openMy(t, st.dsnOf(pod0.Status.PodIP))
	cli := &amberEnv{t: t, bin: bins(t), repo: st.repoURL}
	mark := func(t *testing.T, to int) {
		for i := st.markers + 1; i <= to; i++ {
			if _, err := st.orig.Exec(`INSERT INTO markers (id) VALUES (?)`, i); err != nil {
				t.Fatalf("marker %d: %v", i, err)
			}
		}
		st.markers = to
	}
	restore := func(t *testing.T, name, backupID string, target time.Time, want int) {
		t.Helper()
		r := &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: amberv1.RestoreSpec{
			PolicyRef: &amberv1.LocalRef{Name: "db"}, SourceStatefulSet: "db", BackupID: backupID, PointInTime: &metav1.Time{Time: target}}}
		if err := k.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		r = waitRestore(t, c, k, ctl, r, 5*time.Minute)
		logRestore(t, r)
		var pod corev1.Pod
		if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Status.CloneName + "-0"}, &pod); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, ic := range pod.Spec.InitContainers {
			names = append(names, ic.Name)
		}
		if !slices.Equal(names, []string{workload.InstallContainer, workload.RestoreContainer}) || pod.Spec.InitContainers[1].Image != testbed.MariaDBImageRef {
			t.Errorf("Restore %s: clone init containers %v (restore in image %s); want amber-install, then amber-restore in the MariaDB image", name, names, pod.Spec.InitContainers[1].Image)
		}
		clone := openMy(t, st.dsnOf(pod.Status.PodIP))
		if n, max := myMarkers(t, clone); n != want || max != want {
			t.Fatalf("Restore %s: the clone holds %d markers, highest %d; want exactly 1..%d", name, n, max, want)
		}
		if n, max := myMarkers(t, st.orig); n != st.markers || max != st.markers {
			t.Fatalf("the original holds %d markers (highest %d) after Restore %s; want %d", n, max, name, st.markers)
		}
		checkClone(t, k, ns, r.Status.CloneName, "db")
		if r.Status.BackupID != backupID {
			t.Errorf("Restore %s restored backup %s; want %s", name, shortID12(r.Status.BackupID), shortID12(backupID))
		}
		if p := r.Status.PointReached; p == nil || p.Time == nil || !p.Time.Equal(&metav1.Time{Time: target}) {
			t.Errorf("Restore %s: point reached %+v; want %s", name, p, target)
		}
		t.Logf("Restore %s: the clone holds exactly markers 1..%d, the original 1..%d", name, want, st.markers)
	}

	// backup takes one Backup name with the policy switched to mode for it.
	backup := func(t *testing.T, name string, mode amberv1.Mode, snapshot *amberv1.SnapshotSpec) *amberv1.Backup {
		t.Helper()
		setPolicyMode(t, k, ns, "db", mode, snapshot)
		if err := k.Create(ctx, &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: "db"}}}); err != nil {
			t.Fatal(err)
		}
		b := waitBackup(t, k, ctl, ns, func(b *amberv1.Backup) bool {
			return b.Name == name && (b.Status.Phase == amberv1.PhaseSucceeded || b.Status.Phase == amberv1.PhaseFailed)
		}, 3*time.Minute)
		setPolicyMode(t, k, ns, "db", amberv1.ModeLogical, nil)
		if b.Status.Phase != amberv1.PhaseSucceeded {
			t.Fatalf("%s Backup %s: %s %q\ncontroller log:\n%s\n%s", mode, name, b.Status.Phase, b.Status.Error, ctl.log(), c.CSILogs())
		}
		// The repository says which mode it was taken in (a controller
		// that read the policy before the switch would take another).
		var ls struct {
			Backups []struct{ ID, Mode, Position string }
		}
		out := cli.run("ls", "--json")
		if err := json.Unmarshal([]byte(out), &ls); err != nil {
			t.Fatalf("amber ls --json: %v\n%s", err, out)
		}
		i := slices.IndexFunc(ls.Backups, func(e struct{ ID, Mode, Position string }) bool { return e.ID == b.Status.BackupID })
		if i < 0 || ls.Backups[i].Mode != string(mode) {
			t.Fatalf("Backup %s: backup %s in the repository is not a %s backup: %s", name, shortID12(b.Status.BackupID), mode, out)
		}
		t.Logf("Backup %s: %s backup %s at %s", name, mode, shortID12(b.Status.BackupID), ls.Backups[i].Position)
		return b
	}

	t.Run("Physical", func(t *testing.T) {
		t1 := time.Now()
		mark(t, st.markers+50)
		// The sidecar runs mariadb-backup (its image is amber's with the
		// tool added) on the data volume, which it mounts read-only where
		// the server does: mariadb-backup reads the server's @@datadir.
		b := backup(t, "phys1", amberv1.ModePhysical, nil)
		t.Logf("physical backup %s taken by the sidecar in %s (markers 1..%d before it)", shortID12(b.Status.BackupID), time.Since(t1).Round(100*time.Millisecond), st.markers)
		base := st.markers
		mark(t, base+50)
		target := quietSecond()
		mark(t, base+100)
		waitArchived()
		restore(t, "phys", b.Status.BackupID, target, base+50)
		t.Logf("physical clone part: %s", time.Since(t1).Round(100*time.Millisecond))
	})

	t.Run("Snapshot", func(t *testing.T) {
		t1 := time.Now()
		mark(t, st.markers+20)
		b := backup(t, "snap1", amberv1.ModeSnapshot, &amberv1.SnapshotSpec{VolumeSnapshotClassName: testbed.CSISnapshotClass})
		t.Logf("snapshot backup %s: VolumeSnapshots %+v", shortID12(b.Status.BackupID), b.Status.Snapshots)
		base := st.markers
		mark(t, base+30)
		target := quietSecond()
		mark(t, base+60)
		waitArchived()
		restore(t, "snap", b.Status.BackupID, target, base+30)
		t.Logf("snapshot clone part: %s", time.Since(t1).Round(100*time.Millisecond))
	})
	t.Logf("MariaDB data directory clones: %s", time.Since(t0).Round(100*time.Millisecond))
}

// setPolicyMode switches BackupPolicy ns/name to mode (with snapshot, for
// mode snapshot) and waits until the controller has seen the change (its
// status.observedGeneration, written from the cache the Backup reconciler
// reads too): a Backup created sooner may be taken in the old mode.
func setPolicyMode(t *testing.T, k client.Client, ns, name string, mode amberv1.Mode, snapshot *amberv1.SnapshotSpec) {
	t.Helper()
	patchPolicyNamed(t, k, ns, name, func(p *amberv1.BackupPolicy) { p.Spec.Mode, p.Spec.Snapshot = mode, snapshot })
	deadline := time.Now().Add(time.Minute)
	for {
		var p amberv1.BackupPolicy
		if err := k.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
			t.Fatal(err)
		}
		if p.Spec.Mode == mode && p.Status.ObservedGeneration >= p.Generation {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("BackupPolicy %s: the controller has not seen mode %s after a minute (generation %d, observed %d)", name, mode, p.Generation, p.Status.ObservedGeneration)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
