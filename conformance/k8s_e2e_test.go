package conformance_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/app"
	"github.com/amber-backup/amber/controller/inject"
)

// TestKubernetesEndToEnd runs the Kubernetes half on the test bed's real
// kubelet: amber-controller (its webhook registered with the API server),
// the example 3-replica PostgreSQL StatefulSet of docs/examples (a primary
// and two streaming standbys) and a MinIO repository on the node. It checks
// that the sidecar is injected and refuses callers without a client
// certificate, that a pod without the annotation is untouched, that a
// scheduled backup runs on a standby while the primary's sidecar archives,
// that after a promotion (and the old primary's pod deleted) the archiver
// role moves with no gap in `amber ls`, that point-in-time restores of that
// repository with the CLI outside the cluster give exactly the markers
// committed before each target, and that a controller killed mid-backup
// leaves the database out of backup mode, pods still admitted while it is
// down, and the Backup finished cleanly once it is back.
func TestKubernetesEndToEnd(t *testing.T) {
	t0 := time.Now()
	c := testbed.StartCluster(t, testbed.ClusterOptions{})
	images := t.TempDir()
	_, pgImage := testbed.BuildPostgresImage(t, images)
	_, amberImage := testbed.BuildAmberImage(t, images)
	c.LoadImage(t, pgImage)
	c.LoadImage(t, amberImage)
	t.Logf("cluster up, images loaded: %s", time.Since(t0).Round(100*time.Millisecond))

	// The repository: MinIO on the node's address, which pods reach.
	m := testbed.StartMinIOWith(t, testbed.MinIOOptions{Host: c.NodeIP.String()})
	bucket := m.CreateBucket(t, "amber-e2e")
	repoURL := fmt.Sprintf("s3://%s/pg?endpoint=http://%s", bucket, m.Endpoint)
	// The CLI here, and the restored servers' restore_command, read the
	// storage keys from the environment.
	t.Setenv("AWS_ACCESS_KEY_ID", m.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", m.SecretKey)
	cli := &amberEnv{t: t, bin: bins(t), repo: repoURL}
	cli.run("repo", "init")

	ctx := context.Background()
	k, err := client.New(c.Config, client.Options{Scheme: app.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctl := startController(t, c)

	const ns = "default"
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pg-backup", Namespace: ns}, StringData: map[string]string{
		"password":              "conformance",
		"dsn":                   "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable",
		"AWS_ACCESS_KEY_ID":     m.AccessKey,
		"AWS_SECRET_ACCESS_KEY": m.SecretKey,
	}}
	if err := k.Create(ctx, secret); err != nil {
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
	manifests := bytes.ReplaceAll(example, []byte("${AMBER_REPOSITORY}"), []byte(repoURL))
	// Scheduled backups every 20 s instead of the example's six hours,
	// suspended until the standbys run.
	manifests = bytes.Replace(manifests, []byte(`schedule: "0 */6 * * *"`), []byte("schedule: \"@every 20s\"\n  suspend: true"), 1)
	if err := c.Apply(ctx, manifests); err != nil {
		t.Fatalf("apply docs/examples/postgres-statefulset.yaml: %v\ncontroller log:\n%s", err, ctl.log())
	}

	// A pod without the annotation (and without the label) is untouched.
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: ns, Labels: map[string]string{"app": "plain"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: testbed.PostgresImageRef,
			ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "3600"}}}}}
	if err := k.Create(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if err := k.Get(ctx, client.ObjectKeyFromObject(plain), plain); err != nil {
		t.Fatal(err)
	}
	if len(plain.Spec.Containers) != 1 || len(plain.Spec.InitContainers) != 0 || len(plain.Spec.Volumes) > 1 || plain.Annotations[inject.AnnotationInjected] != "" {
		t.Errorf("a pod without the annotation was changed: %d containers, %d init containers, %d volumes, annotations %v",
			len(plain.Spec.Containers), len(plain.Spec.InitContainers), len(plain.Spec.Volumes), plain.Annotations)
	}

	pods := []string{"pg-0", "pg-1", "pg-2"}
	t1 := time.Now()
	pg0 := waitReady(t, c, ctl, ns, "pg-0", 3*time.Minute)
	setPrimary(t, k, ns, "pg-0", pg0.Status.PodIP)
	for _, name := range pods[1:] {
		waitReady(t, c, ctl, ns, name, 3*time.Minute)
	}
	t.Logf("3 PostgreSQL pods Ready in %s", time.Since(t1).Round(100*time.Millisecond))
	ips := map[string]string{}
	for _, name := range pods {
		var p corev1.Pod
		if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
			t.Fatal(err)
		}
		checkInjected(t, &p)
		ips[name] = p.Status.PodIP
	}

	// The sidecar's API refuses a caller without a client certificate
	// during the handshake.
	checkRefusesAnonymous(t, net.JoinHostPort(ips["pg-1"], fmt.Sprint(inject.DefaultAPIPort)))

	pgd := &pgDriver{}
	// A pod's address is read when used: a deleted pod comes back with a
	// new one.
	dsn := func(pod string) string {
		var p corev1.Pod
		if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: pod}, &p); err == nil && p.Status.PodIP != "" {
			ips[pod] = p.Status.PodIP
		}
		return fmt.Sprintf("postgres://postgres@%s:5432/postgres?sslmode=disable", ips[pod])
	}
	pgd.MarkerSetup(t, dsn("pg-0"))

	// The primary's sidecar archives.
	waitArchiver(t, k, ctl, ns, "pg-0")
	t.Log("pg-0 (the primary) archives")

	// A scheduled backup runs on a standby.
	const beforeBackup, beforeFailover = 50, 150
	mark := func(pod string, from, to int) {
		for i := from; i <= to; i++ {
			pgd.Mark(t, dsn(pod), i)
			time.Sleep(10 * time.Millisecond)
		}
	}
	mark("pg-0", 1, beforeBackup)
	patchPolicy(t, k, ns, func(p *amberv1.BackupPolicy) { p.Spec.Suspend = false })
	scheduled := waitBackup(t, k, ctl, ns, func(b *amberv1.Backup) bool { return b.Labels["amber.dev/scheduled"] != "" }, 3*time.Minute)
	if scheduled.Status.Phase != amberv1.PhaseSucceeded || scheduled.Status.BackupID == "" {
		t.Fatalf("scheduled Backup %s: phase %s, error %q", scheduled.Name, scheduled.Status.Phase, scheduled.Status.Error)
	}
	if tp := scheduled.Status.TargetPod; tp != "pg-1" && tp != "pg-2" {
		t.Fatalf("scheduled Backup %s ran on %q, want a standby (pg-1 or pg-2)", scheduled.Name, tp)
	}
	t.Logf("scheduled Backup %s ran on standby %s: backup %s, %d bytes", scheduled.Name, scheduled.Status.TargetPod,
		scheduled.Status.BackupID, scheduled.Status.Bytes)
	// No more scheduled backups from here: the rest of the test wants one
	// backup at a time.
	patchPolicy(t, k, ns, func(p *amberv1.BackupPolicy) { p.Spec.Suspend = true })
	mark("pg-0", beforeBackup+1, beforeFailover)

	// Fail over: pg-1 has everything pg-0 wrote, is promoted, pg-2 follows
	// it, and pg-0's pod is deleted (it comes back as a standby of pg-1).
	lsn := psqlValue(t, pgd, dsn("pg-0"), `SELECT pg_current_wal_lsn()::text`)
	waitFor(t, 30*time.Second, "pg-1 replays up to "+lsn, func() bool {
		return psqlValue(t, pgd, dsn("pg-1"), `SELECT pg_last_wal_replay_lsn() >= '`+lsn+`'::pg_lsn`) == "true"
	})
	setPrimary(t, k, ns, "pg-1", ips["pg-1"])
	psqlValue(t, pgd, dsn("pg-1"), `SELECT pg_promote()`)
	waitFor(t, 30*time.Second, "pg-1 promoted", func() bool {
		return psqlValue(t, pgd, dsn("pg-1"), `SELECT pg_is_in_recovery()`) == "false"
	})
	if _, err := pgd.db(t, dsn("pg-2")).Exec(`ALTER SYSTEM SET primary_conninfo = 'host=` + ips["pg-1"] + ` user=postgres'`); err != nil {
		t.Fatal(err)
	}
	psqlValue(t, pgd, dsn("pg-2"), `SELECT pg_reload_conf()`)
	tf := time.Now()
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "pg-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	const total = 300
	mark("pg-1", beforeFailover+1, total)
	waitArchiver(t, k, ctl, ns, "pg-1")
	t.Logf("the archiver moved to pg-1 %s after pg-0's pod was deleted", time.Since(tf).Round(100*time.Millisecond))
	ts := pgd.MarkerTimes(t, dsn("pg-1"))
	if len(ts) != total {
		t.Fatalf("pg-1 holds %d markers, want %d", len(ts), total)
	}
	w := waitWindow(t, cli, ts[total], ctl)
	if len(w.Gaps) != 0 {
		t.Fatalf("recoverable window %+v: want no gap across the failover", w)
	}
	t.Logf("recoverable window %s .. %s, no gap", w.EarliestTime.Format(time.RFC3339Nano), w.LatestTime.Format(time.RFC3339Nano))

	// Point-in-time restores with the CLI, outside the cluster: exactly the
	// markers committed before each target, on both sides of the failover.
	for _, k := range []int{100, total - 50} {
		restorePointInTime(t, cli, pgd, ts, k)
	}

	// The controller killed mid-backup: 20 MB of new, incompressible rows
	// and the policy's throttle at 1 MiB/s make the backup last.
	if _, err := pgd.db(t, dsn("pg-1")).Exec(`CREATE TABLE big AS SELECT g, (SELECT string_agg(md5(random()::text || g || s), '')
		FROM generate_series(1, 64) s) AS v FROM generate_series(1, 10000) g`); err != nil {
		t.Fatal(err)
	}
	limit := resource.MustParse("1Mi")
	patchPolicy(t, k, ns, func(p *amberv1.BackupPolicy) { p.Spec.Throttle.UploadBytesPerSecond = &limit })
	if err := k.Create(ctx, &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Name: "manual", Namespace: ns},
		Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: "pg"}}}); err != nil {
		t.Fatal(err)
	}
	running := waitBackup(t, k, ctl, ns, func(b *amberv1.Backup) bool {
		return b.Name == "manual" && b.Status.Phase == amberv1.PhaseRunning
	}, time.Minute)
	// Killed once the backup has been uploading for a while.
	time.Sleep(3 * time.Second)
	ctl.Kill()
	t.Logf("controller killed while Backup manual ran on %s", running.Status.TargetPod)

	// With the webhook down, an opted-in pod is still admitted, unchanged.
	down := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "while-down", Namespace: ns,
		Labels:      map[string]string{inject.LabelInject: "true"},
		Annotations: map[string]string{inject.AnnotationPolicy: "pg"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: testbed.PostgresImageRef,
			ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "3600"}}}}}
	if err := k.Create(ctx, down); err != nil {
		t.Fatalf("with the webhook down, an opted-in pod was refused: %v", err)
	}
	if inject.Injected(down) {
		t.Errorf("the pod created while the controller was down has a sidecar")
	}

	// The database leaves backup mode: the sidecar's backup was cancelled
	// with the controller's call.
	waitFor(t, 30*time.Second, "no base backup running on "+running.Status.TargetPod, func() bool {
		return psqlValue(t, pgd, dsn(running.Status.TargetPod), `SELECT count(*) FROM pg_stat_progress_basebackup`) == "0"
	})
	ctl.start(t)
	done := waitBackup(t, k, ctl, ns, func(b *amberv1.Backup) bool {
		return b.Name == "manual" && (b.Status.Phase == amberv1.PhaseSucceeded || b.Status.Phase == amberv1.PhaseFailed)
	}, 2*time.Minute)
	t.Logf("after the restart Backup manual is %s: %s", done.Status.Phase, done.Status.Error)
	if done.Status.Phase == amberv1.PhaseFailed && done.Status.Error == "" {
		t.Errorf("Backup manual failed without saying why")
	}
	var ls lsJSONBackups
	if err := json.Unmarshal([]byte(cli.run("ls", "--json")), &ls); err != nil {
		t.Fatal(err)
	}
	want := 1
	if done.Status.Phase == amberv1.PhaseSucceeded {
		want = 2
	}
	if len(ls.Backups) != want {
		t.Errorf("amber ls lists %d backups; want %d (the scheduled one and a Succeeded manual one)", len(ls.Backups), want)
	}
	cli.run("verify")
	t.Logf("whole test: %s", time.Since(t0).Round(100*time.Millisecond))
}

type lsJSONBackups struct {
	Backups []struct {
		ID string `json:"id"`
	} `json:"backups"`
	Windows []lsWindow `json:"windows"`
}

type lsWindow struct {
	EarliestTime time.Time `json:"earliest_time"`
	LatestTime   time.Time `json:"latest_time"`
	Gaps         []struct {
		FromPosition string `json:"from_position"`
		ToPosition   string `json:"to_position"`
		Reason       string `json:"reason"`
	} `json:"gaps"`
}

// controller is amber-controller on the node (testbed.AmberController),
// for the test.
type controller struct {
	*testbed.AmberController
}

// startController installs Amber's CRDs, webhook Service and webhook
// configurations and starts amber-controller.
func startController(t *testing.T, c *testbed.Cluster) *controller {
	t.Helper()
	return startControllerWith(t, c, testbed.AmberImageRef)
}

// startControllerWith is startController injecting the sidecar image
// sidecarImage (loaded, never pulled).
func startControllerWith(t *testing.T, c *testbed.Cluster, sidecarImage string) *controller {
	t.Helper()
	dir := t.TempDir()
	bin, err := testbed.BuildController(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.InstallAmber(context.Background(), bin, dir)
	if err != nil {
		t.Fatal(err)
	}
	a.SetSidecarImage(sidecarImage)
	ctl := &controller{a}
	ctl.start(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("amber-controller's log (last 30 KiB):\n%s", ctl.log())
		}
		ctl.Kill()
	})
	return ctl
}

func (ctl *controller) start(t *testing.T) {
	t.Helper()
	if err := ctl.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (ctl *controller) log() string { return ctl.Log(30 << 10) }

// logDiag is the controller's log under a heading, for a failure message.
func (ctl *controller) logDiag() string { return "controller log:\n" + ctl.log() }

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitReady(t *testing.T, c *testbed.Cluster, ctl *controller, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	pod, err := c.WaitPod(context.Background(), ns, name, timeout, testbed.PodReady)
	if err != nil {
		t.Fatalf("%v\n%s\n%s\nkube-controller-manager log:\n%s\ncontroller log:\n%s", err, c.DescribePod(context.Background(), ns, name),
			c.StorageReport(context.Background()), c.ProcessLog("kube-controller-manager", 3000), ctl.log())
	}
	return pod
}

// setPrimary writes which pod is the primary into the example's ConfigMap.
func setPrimary(t *testing.T, k client.Client, ns, pod, ip string) {
	t.Helper()
	var cm corev1.ConfigMap
	if err := k.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "pg-topology"}, &cm); err != nil {
		t.Fatal(err)
	}
	cm.Data = map[string]string{"primary": pod, "primary_ip": ip}
	if err := k.Update(context.Background(), &cm); err != nil {
		t.Fatal(err)
	}
}

// checkInjected asserts the webhook added the sidecar as a native sidecar
// (an init container that keeps running), locked down, and that it runs.
func checkInjected(t *testing.T, p *corev1.Pod) {
	t.Helper()
	var sc *corev1.Container
	for i := range p.Spec.InitContainers {
		if p.Spec.InitContainers[i].Name == inject.SidecarName {
			sc = &p.Spec.InitContainers[i]
		}
	}
	if sc == nil {
		t.Fatalf("pod %s has no %s init container; containers %d, init containers %d", p.Name, inject.SidecarName, len(p.Spec.Containers), len(p.Spec.InitContainers))
	}
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("pod %s: the sidecar is not a native sidecar (restartPolicy Always)", p.Name)
	}
	s := sc.SecurityContext
	if s == nil || s.RunAsNonRoot == nil || !*s.RunAsNonRoot || s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem ||
		s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation {
		t.Errorf("pod %s: sidecar security context %+v", p.Name, s)
	}
	// It shares postgres's data volume, read-only, at the same path.
	shared := false
	for _, m := range sc.VolumeMounts {
		if m.Name == "data" && m.MountPath == "/data" && m.ReadOnly {
			shared = true
		}
	}
	if !shared {
		t.Errorf("pod %s: the sidecar does not mount the data volume read-only at /data: %+v", p.Name, sc.VolumeMounts)
	}
	for _, e := range sc.Env {
		if strings.Contains(strings.ToLower(e.Name), "password") && e.Value != "" && !strings.HasPrefix(e.Value, "/") {
			t.Errorf("pod %s: the sidecar's environment holds %s", p.Name, e.Name)
		}
	}
	running := false
	for _, cs := range p.Status.InitContainerStatuses {
		if cs.Name == inject.SidecarName && cs.State.Running != nil {
			running = true
		}
	}
	if !running {
		t.Errorf("pod %s: the sidecar is not running: %+v", p.Name, p.Status.InitContainerStatuses)
	}
}

func checkRefusesAnonymous(t *testing.T, addr string) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		// TLS 1.3: the server's verdict on the client's (absent)
		// certificate arrives with the first read.
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("a caller without a client certificate at %s: %v; want the handshake refused (certificate required)", addr, err)
	}
}

func waitArchiver(t *testing.T, k client.Client, ctl *controller, ns, pod string) {
	t.Helper()
	var last amberv1.BackupPolicy
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := k.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "pg"}, &last); err != nil {
			t.Fatal(err)
		}
		for _, a := range last.Status.Archivers {
			if a.StatefulSet == "pg" && a.Pod == pod {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy status %+v: %s is not the archiver after 2 min\ncontroller log:\n%s", last.Status, pod, ctl.log())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// patchPolicy applies f to the BackupPolicy ns/pg, retrying on conflicts.
func patchPolicy(t *testing.T, k client.Client, ns string, f func(*amberv1.BackupPolicy)) {
	t.Helper()
	patchPolicyNamed(t, k, ns, "pg", f)
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

// waitBackup waits for a Backup that match accepts; a scheduled one must
// also have finished.
func waitBackup(t *testing.T, k client.Client, ctl *controller, ns string, match func(*amberv1.Backup) bool, timeout time.Duration) *amberv1.Backup {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var list amberv1.BackupList
		if err := k.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			b := &list.Items[i]
			if !match(b) {
				continue
			}
			if b.Labels["amber.dev/scheduled"] == "" || b.Status.Phase == amberv1.PhaseSucceeded || b.Status.Phase == amberv1.PhaseFailed {
				return b
			}
		}
		if time.Now().After(deadline) {
			var got []string
			for _, b := range list.Items {
				got = append(got, fmt.Sprintf("%s %s %q", b.Name, b.Status.Phase, b.Status.Error))
			}
			t.Fatalf("no matching Backup after %s; have %v\ncontroller log:\n%s", timeout, got, ctl.log())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// runBackup creates Backup name of policy in ns and waits up to 3 minutes
// for it to finish; unless it succeeded, the test fails with its phase and
// error, then diag's output if diag is not nil.
func runBackup(t *testing.T, k client.Client, ctl *controller, ns, policy, name string, diag func() string) *amberv1.Backup {
	t.Helper()
	if err := k.Create(context.Background(), &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: policy}}}); err != nil {
		t.Fatal(err)
	}
	b := waitBackup(t, k, ctl, ns, func(b *amberv1.Backup) bool {
		return b.Name == name && (b.Status.Phase == amberv1.PhaseSucceeded || b.Status.Phase == amberv1.PhaseFailed)
	}, 3*time.Minute)
	if b.Status.Phase != amberv1.PhaseSucceeded {
		if diag == nil {
			t.Fatalf("Backup %s: %s %q", name, b.Status.Phase, b.Status.Error)
		}
		t.Fatalf("Backup %s: %s %q\n%s", name, b.Status.Phase, b.Status.Error, diag())
	}
	return b
}

func psqlValue(t *testing.T, d *pgDriver, dsn, query string) string {
	t.Helper()
	var v sql.NullString
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		if err = d.db(t, dsn).QueryRow(query).Scan(&v); err == nil {
			return v.String
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s on %s: %v", query, dsn, err)
	return ""
}

func waitWindow(t *testing.T, cli *amberEnv, until time.Time, ctl *controller) lsWindow {
	t.Helper()
	// Two minutes: on 2 shared cores at a load of 30 the new archiver's
	// start (plugin, slot, stream) alone has taken tens of seconds.
	start := time.Now()
	deadline := start.Add(2 * time.Minute)
	for {
		var ls lsJSONBackups
		if err := json.Unmarshal([]byte(cli.run("ls", "--json")), &ls); err != nil {
			t.Fatal(err)
		}
		if len(ls.Windows) == 1 && !ls.Windows[0].LatestTime.Before(until) {
			t.Logf("the recoverable window reached %s after %s", until.Format(time.RFC3339Nano), time.Since(start).Round(100*time.Millisecond))
			return ls.Windows[0]
		}
		if time.Now().After(deadline) {
			t.Logf("controller log:\n%s", ctl.log())
			t.Fatalf("recoverable windows %+v did not reach %s within 2 min", ls.Windows, until.Format(time.RFC3339Nano))
		}
		time.Sleep(time.Second)
	}
}

// restorePointInTime restores to the instant marker k+1's transaction began
// and requires exactly markers 1..k.
func restorePointInTime(t *testing.T, cli *amberEnv, d *pgDriver, ts map[int]time.Time, k int) {
	t.Helper()
	target := ts[k+1]
	dir := filepath.Join(testbed.PostgresDir(t), "data")
	start := time.Now()
	cli.run("restore", "--engine", "postgres", "--data-dir", dir, "--to-time", target.UTC().Format(time.RFC3339Nano))
	restored := time.Since(start)
	// The pods' cluster has the role postgres (trust), not the test
	// bed's roles.
	srv := testbed.StartPostgresDataDir(t, dir, testbed.PostgresOptions{})
	dsn := srv.DSNFor("postgres", "", "postgres")
	waitFor(t, 2*time.Minute, "the restored server to finish recovery", func() bool {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return false
		}
		defer db.Close()
		var rec bool
		return db.QueryRow(`SELECT pg_is_in_recovery()`).Scan(&rec) == nil && !rec
	})
	c, m := d.Markers(t, dsn)
	srv.Stop()
	if c != k || m != k {
		t.Fatalf("restored to %s: %d markers, highest %d; want exactly markers 1..%d", target.Format(time.RFC3339Nano), c, m, k)
	}
	t.Logf("restored to %s: exactly markers 1..%d (restore %s, recovery until ready %s)", target.Format(time.RFC3339Nano), k,
		restored.Round(100*time.Millisecond), (time.Since(start) - restored).Round(100*time.Millisecond))
}
