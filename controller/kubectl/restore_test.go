package kubectl_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

type restoreDoc struct {
	Namespace string                `json:"namespace"`
	Name      string                `json:"name"`
	Spec      amberv1.RestoreSpec   `json:"spec"`
	Status    amberv1.RestoreStatus `json:"status"`
}

func listRestores(t *testing.T, ns string) []amberv1.Restore {
	t.Helper()
	var list amberv1.RestoreList
	must(t, k8s.List(context.Background(), &list, client.InNamespace(ns)))
	return list.Items
}

// waitRestore waits until Restore ns/name exists and returns it.
func waitRestore(t *testing.T, ns, name string) *amberv1.Restore {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var rs amberv1.Restore
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &rs); err == nil {
			return &rs
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("Restore %s/%s did not appear", ns, name)
	return nil
}

// setRestoreStatus plays the restore controller: it writes rs's status.
func setRestoreStatus(t *testing.T, rs *amberv1.Restore, mutate func(*amberv1.RestoreStatus)) {
	t.Helper()
	ctx := context.Background()
	must(t, k8s.Get(ctx, client.ObjectKeyFromObject(rs), rs))
	mutate(&rs.Status)
	must(t, k8s.Status().Update(ctx, rs))
}

func readyCond(status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: "Ready", Status: status, Reason: reason, Message: msg, LastTransitionTime: metav1.Now()}
}

// restoreFixture: BackupPolicy pg with a Backup of StatefulSet db, and a
// StatefulSet orders whose pod template carries policy pg (no
// controller-manager runs: it stays an object).
func restoreFixture(t *testing.T) string {
	t.Helper()
	ns := namespace(t, "")
	createPolicy(t, newPolicy(ns, "pg", nil), nil)
	createBackup(t, ns, "pg-1", "pg", "", &amberv1.BackupStatus{Phase: amberv1.PhaseSucceeded, StatefulSet: "db", BackupID: "0123456789abcdef"})
	labels := map[string]string{"app": "orders"}
	must(t, k8s.Create(context.Background(), &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "orders"},
		Spec: appsv1.StatefulSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"amber.dev/policy": "pg"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "pg", Image: "postgres"}}},
			},
		},
	}))
	return ns
}

// TestRestoreCreates: `amber k8s restore` creates a Restore whose spec is
// what the flags say, finding the policy or the StatefulSet from the
// argument, and prints it (as one JSON document with --json).
func TestRestoreCreates(t *testing.T) {
	needEnv(t)
	ns := restoreFixture(t)
	kc := adminKubeconfig(t, ns)
	at := time.Date(2026, 11, 27, 18, 0, 0, 0, time.UTC)

	for _, tc := range []struct {
		name      string
		bin       string
		args      []string
		clone     string
		policy    string
		sts       string
		backupID  string
		position  string
		at        *time.Time
		wantPrint string
	}{
		{name: "PolicyToTime", bin: amberBin, args: []string{"k8s", "restore", "pg", "--name", "pg-copy", "--to-time", "2026-11-27T19:00:00+01:00"},
			clone: "pg-copy", policy: "pg", sts: "db", at: &at,
			wantPrint: fmt.Sprintf("Restore %s/pg-copy created: StatefulSet db of BackupPolicy pg into clone StatefulSet pg-copy, to time 2026-11-27T18:00:00Z", ns)},
		{name: "StatefulSetFromBackups", bin: pluginBin, args: []string{"restore", "db", "--name", "db-b", "--backup", "0123456789ab"},
			clone: "db-b", policy: "pg", sts: "db", backupID: "0123456789ab", wantPrint: "into clone StatefulSet db-b, to backup 0123456789ab"},
		{name: "StatefulSetAnnotated", bin: amberBin, args: []string{"k8s", "restore", "orders", "--name", "orders-latest"},
			clone: "orders-latest", policy: "pg", sts: "orders", wantPrint: "to the latest point the archived log reaches"},
		{name: "PolicyAndStatefulSetToPosition", bin: pluginBin, args: []string{"restore", "pg", "--statefulset", "orders", "--name", "orders-lsn", "--to-position", "0/3000060"},
			clone: "orders-lsn", policy: "pg", sts: "orders", position: "0/3000060", wantPrint: "to position 0/3000060"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runBin(t, tc.bin, kc, tc.args...)
			if r.code != 0 {
				t.Fatalf("restore: %s", r)
			}
			if !strings.Contains(r.stdout, tc.wantPrint) {
				t.Errorf("stdout lacks %q: %s", tc.wantPrint, r)
			}
			var rs amberv1.Restore
			must(t, k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: tc.clone}, &rs))
			s := rs.Spec
			if s.PolicyRef == nil || s.PolicyRef.Name != tc.policy || s.Repository != nil || s.SourceStatefulSet != tc.sts ||
				s.SourceNamespace != "" || s.CloneName != tc.clone || s.BackupID != tc.backupID || s.Position != tc.position || s.Image != "" {
				t.Errorf("spec = %+v", s)
			}
			if (tc.at == nil) != (s.PointInTime == nil) || (tc.at != nil && !s.PointInTime.Time.Equal(*tc.at)) {
				t.Errorf("pointInTime = %v, want %v", s.PointInTime, tc.at)
			}
		})
	}

	t.Run("RepositoryOnly", func(t *testing.T) {
		r := runBin(t, amberBin, kc, "k8s", "restore", "gone", "--source-namespace", "shop", "--repository", "s3://bucket/prod",
			"--credentials-secret", "repo-creds", "--engine", "mysql", "--name", "gone-copy")
		if r.code != 0 || !strings.Contains(r.stdout, "StatefulSet shop/gone (mysql) from repository s3://bucket/prod into clone StatefulSet gone-copy") {
			t.Fatalf("restore from a repository alone: %s", r)
		}
		var rs amberv1.Restore
		must(t, k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "gone-copy"}, &rs))
		s := rs.Spec
		if s.PolicyRef != nil || s.Repository == nil || s.Repository.URL != "s3://bucket/prod" || s.Repository.CredentialsSecret.Name != "repo-creds" ||
			s.Engine != amberv1.EngineMySQL || s.SourceStatefulSet != "gone" || s.SourceNamespace != "shop" || s.CloneName != "gone-copy" {
			t.Errorf("spec = %+v", s)
		}
	})

	t.Run("JSON", func(t *testing.T) {
		r := runBin(t, amberBin, kc, "k8s", "restore", "pg", "--statefulset", "db", "--name", "pg-json", "--to-time", "2026-11-27T18:00:00Z", "--json")
		if r.code != 0 {
			t.Fatalf("restore --json: %s", r)
		}
		var doc restoreDoc
		decodeOne(t, r.stdout, &doc)
		if doc.Namespace != ns || doc.Name != "pg-json" || doc.Spec.CloneName != "pg-json" || doc.Spec.SourceStatefulSet != "db" ||
			doc.Spec.PointInTime == nil || !doc.Spec.PointInTime.Time.Equal(at) {
			t.Errorf("--json printed %+v", doc)
		}
	})

	t.Run("SourceNamespace", func(t *testing.T) {
		// The original namespace is gone: the Restore in another namespace
		// names it, with that namespace's policy.
		rescue := namespace(t, "-rescue")
		createPolicy(t, newPolicy(rescue, "pg", nil), nil)
		r := runBin(t, amberBin, kc, "k8s", "restore", "pg", "-n", rescue, "--source-namespace", "gone", "--statefulset", "db", "--name", "db")
		if r.code != 0 {
			t.Fatalf("restore --source-namespace: %s", r)
		}
		l := listRestores(t, rescue)
		if len(l) != 1 || l[0].Spec.SourceNamespace != "gone" || l[0].Spec.SourceStatefulSet != "db" || l[0].Spec.PolicyRef.Name != "pg" {
			t.Errorf("Restores in %s: %+v", rescue, l)
		}
		if !strings.Contains(r.stdout, "StatefulSet gone/db of BackupPolicy pg") {
			t.Errorf("stdout: %s", r)
		}
	})
}

// TestRestoreWait: --wait follows the Restore while the controller (the
// test) moves it on, exits 0 when the clone is Ready printing the point
// reached, and non-zero with the controller's message when it failed.
func TestRestoreWait(t *testing.T) {
	needEnv(t)
	reached := time.Date(2026, 11, 27, 17, 59, 58, 0, time.UTC)

	ready := func(t *testing.T, rs *amberv1.Restore) {
		setRestoreStatus(t, rs, func(s *amberv1.RestoreStatus) {
			s.Phase, s.CloneName, s.Progress = amberv1.PhaseRunning, rs.Name, "restoring the data directory from the repository"
			s.Conditions = []metav1.Condition{readyCond(metav1.ConditionFalse, "Restoring", "restoring")}
		})
		time.Sleep(700 * time.Millisecond)
		setRestoreStatus(t, rs, func(s *amberv1.RestoreStatus) {
			s.Phase, s.Progress, s.BackupID = amberv1.PhaseSucceeded, "the clone's database is ready", "feedfacefeedface00"
			s.PointReached = &amberv1.RecoveryPoint{Time: mtime(reached), Position: "0/3000060"}
			s.RTO = &metav1.Duration{Duration: 83 * time.Second}
			s.Timings = &amberv1.RestoreTimings{Scheduling: &metav1.Duration{Duration: 20 * time.Second},
				DataTransfer: &metav1.Duration{Duration: 50 * time.Second}, Recovery: &metav1.Duration{Duration: 13 * time.Second}}
			meta.SetStatusCondition(&s.Conditions, readyCond(metav1.ConditionTrue, "Ready", "ready"))
		})
	}
	const wantReady = "restore pg-copy ready: StatefulSet pg-copy reached time 2026-11-27T17:59:58Z, position 0/3000060 from backup feedfacefeed; RTO 1m23s (scheduling 20s, data transfer 50s, recovery 13s)"

	t.Run("Ready", func(t *testing.T) {
		ns := restoreFixture(t)
		p := startBin(t, pluginBin, adminKubeconfig(t, ns), "restore", "pg", "--name", "pg-copy", "--wait")
		rs := waitRestore(t, ns, "pg-copy")
		time.Sleep(500 * time.Millisecond)
		if !p.running() {
			t.Fatalf("restore --wait returned while the Restore was Pending: %s", p.wait())
		}
		ready(t, rs)
		r := p.wait()
		if r.code != 0 {
			t.Fatalf("restore --wait on a Ready Restore: %s", r)
		}
		if !strings.Contains(r.stdout, wantReady) || !strings.Contains(r.stdout, "Restore "+ns+"/pg-copy created") {
			t.Errorf("stdout lacks the request and %q: %s", wantReady, r)
		}
		if strings.Contains(r.stderr, "restoring the data directory") {
			t.Errorf("progress lines on a stderr that is no terminal: %s", r)
		}
	})

	t.Run("ProgressOnATerminal", func(t *testing.T) {
		script, err := exec.LookPath("script")
		if err != nil {
			testbed.Skip(t, "script (util-linux) not found: it gives the command a terminal")
		}
		ns := restoreFixture(t)
		p := startBin(t, script, adminKubeconfig(t, ns), "-q", "-e", "-c", amberBin+" k8s restore pg --name pg-copy --wait", "/dev/null")
		rs := waitRestore(t, ns, "pg-copy")
		time.Sleep(300 * time.Millisecond)
		ready(t, rs)
		r := p.wait()
		for _, want := range []string{"Running: restoring the data directory from the repository", "Succeeded: the clone's database is ready", wantReady} {
			if r.code != 0 || !strings.Contains(r.stdout, want) {
				t.Errorf("restore --wait on a terminal lacks %q: %s", want, r)
			}
		}
	})

	t.Run("Failed", func(t *testing.T) {
		ns := restoreFixture(t)
		const problem = "the amber-restore init container of pod pg-copy-0 failed (exit 1): repository password is wrong"
		for _, jsonOut := range []bool{false, true} {
			args := []string{"k8s", "restore", "pg", "--name", "pg-copy", "--to-time", "2026-11-27T18:00:00Z", "--wait"}
			if jsonOut {
				args = append(args, "--json")
			}
			p := startBin(t, amberBin, adminKubeconfig(t, ns), args...)
			rs := waitRestore(t, ns, "pg-copy")
			setRestoreStatus(t, rs, func(s *amberv1.RestoreStatus) {
				s.Phase, s.Error = amberv1.PhaseFailed, problem
				s.Conditions = []metav1.Condition{readyCond(metav1.ConditionFalse, "RestoreFailed", problem)}
			})
			r := p.wait()
			if r.code != 1 {
				t.Fatalf("restore --wait on a Failed Restore: %s; want exit 1", r)
			}
			want := "amber: restore pg-copy failed: RestoreFailed: " + problem
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q: %s", want, r)
			}
			if jsonOut {
				var doc restoreDoc
				decodeOne(t, r.stdout, &doc)
				if doc.Name != "pg-copy" || doc.Status.Phase != amberv1.PhaseFailed || doc.Status.Error != problem {
					t.Errorf("--json printed %+v, want the Failed status", doc)
				}
			}
			must(t, k8s.Delete(context.Background(), rs))
			for len(listRestores(t, ns)) != 0 {
				time.Sleep(50 * time.Millisecond)
			}
		}
	})

	t.Run("ReadyJSON", func(t *testing.T) {
		ns := restoreFixture(t)
		p := startBin(t, amberBin, adminKubeconfig(t, ns), "k8s", "restore", "pg", "--name", "pg-copy", "--wait", "--json", "--timeout", "1m")
		ready(t, waitRestore(t, ns, "pg-copy"))
		r := p.wait()
		if r.code != 0 {
			t.Fatalf("restore --wait --json: %s", r)
		}
		var doc restoreDoc
		decodeOne(t, r.stdout, &doc)
		if doc.Status.Phase != amberv1.PhaseSucceeded || doc.Status.PointReached == nil || doc.Status.PointReached.Position != "0/3000060" {
			t.Errorf("--json printed %+v, want the Ready status", doc)
		}
	})

	t.Run("Timeout", func(t *testing.T) {
		ns := restoreFixture(t)
		r := runBin(t, amberBin, adminKubeconfig(t, ns), "k8s", "restore", "pg", "--name", "pg-copy", "--wait", "--timeout", "1s")
		if r.code != 1 || !strings.Contains(r.stderr, "restore pg-copy is still Pending after 1s; it goes on") {
			t.Fatalf("--wait --timeout 1s with no controller: %s", r)
		}
	})
}

// TestRestoreValidation: a bad command line is refused with one error
// saying what to do, before anything is created.
func TestRestoreValidation(t *testing.T) {
	needEnv(t)
	ns := restoreFixture(t)
	kc := adminKubeconfig(t, ns)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"pg"}, 2, "--name is missing: name the clone StatefulSet"},
		{[]string{}, 2, "takes the name of one BackupPolicy or StatefulSet"},
		{[]string{"pg", "--name", "Bad_Name"}, 2, `--name "Bad_Name" is not a valid StatefulSet name`},
		{[]string{"pg", "--name", strings.Repeat("a", 53)}, 2, "must have at most 52"},
		{[]string{"pg", "--name", "c", "--to-time", "yesterday"}, 2, `--to-time "yesterday" is not an RFC 3339 time: write it like 2026-11-27T18:00:00Z`},
		{[]string{"pg", "--name", "c", "--to-time", "2026-11-27T18:00:00.250Z"}, 2, "has a fraction of a second"},
		{[]string{"pg", "--name", "c", "--to-time", "2026-11-27T18:00:00Z", "--to-position", "0/1"}, 2, "--to-time and --to-position cannot be combined: give one target"},
		{[]string{"pg", "--name", "c", "--timeout", "1m"}, 2, "--timeout bounds --wait; add --wait"},
		{[]string{"nothing", "--name", "c"}, 1, `"nothing" is neither a BackupPolicy of namespace ` + ns},
		{[]string{"pg", "--name", "orders"}, 1, "StatefulSet orders exists in namespace " + ns + " and is no clone of a Restore named orders: choose another --name"},
		{[]string{"db", "--statefulset", "db", "--name", "c"}, 2, `"db" is no BackupPolicy in namespace ` + ns + "; --statefulset goes with a BackupPolicy"},
		{[]string{"db", "--name", "c", "--repository", "s3://b/p", "--engine", "mysql"}, 2, "needs --repository, --credentials-secret and --engine together"},
		{[]string{"db", "--name", "c", "--repository", "ftp://b", "--credentials-secret", "s", "--engine", "mysql"}, 2, `--repository "ftp://b" is not a repository URL`},
		{[]string{"db", "--name", "c", "--repository", "s3://b/p", "--credentials-secret", "s", "--engine", "oracle"}, 2, `--engine "oracle": want postgres, mysql or mongodb`},
		{[]string{"db", "--name", "c", "--engine", "mysql"}, 2, "--engine goes with --repository"},
		{[]string{"pg", "--statefulset", "db", "--name", "c", "--repository", "s3://b/p", "--credentials-secret", "s", "--engine", "mysql"}, 2, "drop --statefulset"},
	} {
		r := runBin(t, amberBin, kc, append([]string{"k8s", "restore"}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("restore %q: %s; want exit %d and %q", tc.args, r, tc.code, tc.want)
		}
		if n := strings.Count(r.stderr, "amber: "); n != 1 {
			t.Errorf("restore %q: %d errors, want one: %s", tc.args, n, r.stderr)
		}
	}
	// A policy that covers several StatefulSets needs --statefulset.
	createBackup(t, ns, "pg-2", "pg", "orders", nil)
	r := runBin(t, amberBin, kc, "k8s", "restore", "pg", "--name", "c")
	if r.code != 2 || !strings.Contains(r.stderr, "BackupPolicy pg covers several StatefulSets (db, orders): choose one with --statefulset") {
		t.Errorf("restore of a policy with two StatefulSets: %s", r)
	}
	if l := listRestores(t, ns); len(l) != 0 {
		t.Fatalf("refused command lines created %d Restores", len(l))
	}
	// A name already taken says so.
	if r := runBin(t, amberBin, kc, "k8s", "restore", "db", "--name", "c"); r.code != 0 {
		t.Fatalf("restore: %s", r)
	}
	r = runBin(t, amberBin, kc, "k8s", "restore", "db", "--name", "c")
	if r.code != 1 || !strings.Contains(r.stderr, "a Restore named c exists in namespace "+ns+" already: choose another --name") {
		t.Errorf("second restore --name c: %s", r)
	}
}
