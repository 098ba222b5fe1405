package conformance_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
//   - Physical: a physical backup taken with `amber backup --engine mysql
//     --mode physical` (mariadb-backup reading the volume's files on the
//     node); a Restore naming it and a point in time creates a clone whose
//     init container, in the MariaDB image with amber copied in, unpacks
//     and prepares it into the recorded data directory and replays archived
//     binlog to the target through a private server before mariadbd starts.
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
	mark := func(to int) {
		for i := st.markers + 1; i <= to; i++ {
			if _, err := st.orig.Exec(`INSERT INTO markers (id) VALUES (?)`, i); err != nil {
				t.Fatalf("marker %d: %v", i, err)
			}
		}
		st.markers = to
	}
	restore := func(name, backupID string, target time.Time, want int) {
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

	t.Run("Physical", func(t *testing.T) {
		t1 := time.Now()
		// mariadb-backup reads the server's files where the node keeps the
		// volume, as a sidecar with the tool in its image would in the pod.
		var pvc corev1.PersistentVolumeClaim
		if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: "data-db-0"}, &pvc); err != nil {
			t.Fatal(err)
		}
		var pv corev1.PersistentVolume
		if err := k.Get(ctx, types.NamespacedName{Name: pvc.Spec.VolumeName}, &pv); err != nil {
			t.Fatal(err)
		}
		var volume string
		switch {
		case pv.Spec.CSI != nil:
			volume = filepath.Join(c.Dir, "volumes", pv.Spec.CSI.VolumeHandle)
		case pv.Spec.HostPath != nil:
			volume = pv.Spec.HostPath.Path
		default:
			t.Fatalf("volume %s of claim data-db-0 is neither CSI nor hostPath", pv.Name)
		}
		bin := t.TempDir()
		testbed.BuildAmber(t, bin, "mysql")
		if _, err := exec.LookPath("mariadb-backup"); err != nil {
			testbed.Skip(t, "mariadb-backup is not installed (Debian package mariadb-backup)")
		}
		var db0 corev1.Pod
		if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: "db-0"}, &db0); err != nil {
			t.Fatal(err)
		}
		mark(200)
		cmd := exec.Command(filepath.Join(bin, "amber"), "backup", "--engine", "mysql", "--mode", "physical", "--json",
			"--dsn", fmt.Sprintf("mysql://amber:%s@%s:3306/app", st.password, db0.Status.PodIP),
			"--data-dir", filepath.Join(volume, "mysql"), "--name", ns+"/db")
		cmd.Env = append(cmd.Environ(), "AMBER_REPO="+st.repoURL, "AMBER_PASSWORD=conformance", "AMBER_CACHE_DIR=-")
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("amber backup --mode physical: %v\n%s%s", err, out, stderr)
		}
		var rep struct{ ID string }
		if err := json.Unmarshal(out, &rep); err != nil || rep.ID == "" {
			t.Fatalf("amber backup --json: %v: %s", err, out)
		}
		t.Logf("physical backup %s taken from the volume in %s", shortID12(rep.ID), time.Since(t1).Round(100*time.Millisecond))
		mark(250)
		target := quietSecond()
		mark(300)
		waitArchived()
		restore("phys", rep.ID, target, 250)
		t.Logf("physical clone part: %s", time.Since(t1).Round(100*time.Millisecond))
	})

	t.Run("Snapshot", func(t *testing.T) {
		t1 := time.Now()
		patchPolicyNamed(t, k, ns, "db", func(p *amberv1.BackupPolicy) {
			p.Spec.Mode = amberv1.ModeSnapshot
			p.Spec.Snapshot = &amberv1.SnapshotSpec{VolumeSnapshotClassName: testbed.CSISnapshotClass}
		})
		mark(st.markers + 20)
		if err := k.Create(ctx, &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Name: "snap1", Namespace: ns},
			Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: "db"}}}); err != nil {
			t.Fatal(err)
		}
		b := waitBackup(t, k, ctl, ns, func(b *amberv1.Backup) bool {
			return b.Name == "snap1" && (b.Status.Phase == amberv1.PhaseSucceeded || b.Status.Phase == amberv1.PhaseFailed)
		}, 3*time.Minute)
		patchPolicyNamed(t, k, ns, "db", func(p *amberv1.BackupPolicy) { p.Spec.Mode, p.Spec.Snapshot = amberv1.ModeLogical, nil })
		if b.Status.Phase != amberv1.PhaseSucceeded {
			t.Fatalf("snapshot Backup snap1: %s %q\n%s", b.Status.Phase, b.Status.Error, c.CSILogs())
		}
		t.Logf("snapshot backup %s: VolumeSnapshots %+v", shortID12(b.Status.BackupID), b.Status.Snapshots)
		base := st.markers
		mark(base + 30)
		target := quietSecond()
		mark(base + 60)
		waitArchived()
		restore("snap", b.Status.BackupID, target, base+30)
		t.Logf("snapshot clone part: %s", time.Since(t1).Round(100*time.Millisecond))
	})
	t.Logf("MariaDB data directory clones: %s", time.Since(t0).Round(100*time.Millisecond))
}

// patchPolicyNamed applies f to BackupPolicy ns/name, retrying on conflicts.
func patchPolicyNamed(t *testing.T, k client.Client, ns, name string, f func(*amberv1.BackupPolicy)) {
	t.Helper()
	for {
		var p amberv1.BackupPolicy
		if err := k.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
			t.Fatal(err)
		}
		f(&p)
		err := k.Update(context.Background(), &p)
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
}
