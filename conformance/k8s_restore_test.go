package conformance_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/minio/minio-go/v7"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/app"
	"github.com/amber-backup/amber/controller/controllers"
	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/controller/workload"
)

// TestKubernetesRestoreClone restores on the test bed's real kubelet: the
// example PostgreSQL StatefulSet (one replica, in namespace shop) archives
// WAL and is backed up through a Backup, which also stores the workload
// (`amber k8s ls --repo` lists it from the bucket alone). A Restore to a
// point in time creates a clone StatefulSet whose init container restores
// the data directory; the clone's database holds exactly the markers
// committed before the target, the original is untouched and keeps its
// archiver. Then the original StatefulSet, its PVCs and its namespace are
// deleted, and a Restore in a new namespace, naming only the repository
// and a Secret with its keys, brings the database back from the captured
// workload to a later point.
//
// Its subtests MariaDB and MongoDB restore a MariaDB StatefulSet's logical
// backup and archived binlog, and a FerretDB StatefulSet's logical backup
// and archived oplog, into clones on the same cluster
// (k8s_mysql_restore_test.go, k8s_mongo_restore_test.go). Its subtest
// Snapshot takes a snapshot-mode backup of PostgreSQL on a CSI volume and
// restores it, by hand and with a Restore, to a point in time
// (k8s_snapshot_test.go). Run one alone with -run
// 'TestKubernetesRestoreClone/MariaDB'.
func TestKubernetesRestoreClone(t *testing.T) {
	bed := startRestoreBed(t)
	t.Run("PostgreSQL", func(t *testing.T) { restorePostgresClone(t, bed) })
	var maria *mariaState
	t.Run("MariaDB", func(t *testing.T) { maria = restoreMariaDBClone(t, bed) })
	t.Run("MariaDBDataDir", func(t *testing.T) {
		if maria == nil {
			t.Fatal("the MariaDB subtest left no database to continue on")
		}
		restoreMariaDBDataDir(t, bed, maria)
	})
	t.Run("MongoDB", func(t *testing.T) { restoreMongoClone(t, bed) })
	t.Run("Snapshot", func(t *testing.T) { snapshotPostgres(t, bed) })
}

// restoreBed is what the clone-restore tests share: one cluster with the
// sidecar image loaded, its controller, a client, and MinIO on the node's
// address with the object store's keys in the environment. The sidecar
// image is amber's with mariadb-backup added (testbed.AmberMariaDBImageRef),
// as a user taking the sidecar's physical MySQL/MariaDB backups builds it
// (docs/controller.md, "Images"): MariaDBDataDir/Physical needs it; the
// other subtests use only what amber's own image holds.
type restoreBed struct {
	t0     time.Time
	snaps  sync.Once
	c      *testbed.Cluster
	k      client.Client
	ctl    *controller
	m      *testbed.MinIO
	images string
}

func startRestoreBed(t *testing.T) *restoreBed {
	t.Helper()
	b := &restoreBed{t0: time.Now()}
	b.c = testbed.StartCluster(t, testbed.ClusterOptions{})
	b.images = t.TempDir()
	sidecarImage, amberImage := testbed.BuildAmberMariaDBImage(t, b.images)
	b.c.LoadImage(t, amberImage)
	t.Logf("cluster up, sidecar image %s loaded: %s", sidecarImage, time.Since(b.t0).Round(100*time.Millisecond))
	b.m = testbed.StartMinIOWith(t, testbed.MinIOOptions{Host: b.c.NodeIP.String()})
	t.Setenv("AWS_ACCESS_KEY_ID", b.m.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", b.m.SecretKey)
	var err error
	if b.k, err = client.New(b.c.Config, client.Options{Scheme: app.Scheme()}); err != nil {
		t.Fatal(err)
	}
	b.ctl = startControllerWith(t, b.c, sidecarImage)
	return b
}

// startSnapshots gives the cluster volume snapshots (once: the MariaDB
// and Snapshot subtests both need them).
func (b *restoreBed) startSnapshots(t *testing.T) {
	t.Helper()
	b.snaps.Do(func() { testbed.StartClusterSnapshots(t, b.c) })
}

func restorePostgresClone(t *testing.T, bed *restoreBed) {
	t0 := time.Now()
	c, k, ctl, m := bed.c, bed.k, bed.ctl, bed.m
	_, pgImage := testbed.BuildPostgresImage(t, bed.images)
	c.LoadImage(t, pgImage)
	bucket := m.CreateBucket(t, "amber-restore")
	repoURL := fmt.Sprintf("s3://%s/pg?endpoint=http://%s", bucket, m.Endpoint)
	cli := &amberEnv{t: t, bin: bins(t), repo: repoURL}
	cli.run("repo", "init")
	ctx := context.Background()

	const ns = "shop"
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	credentials := func(ns string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pg-backup", Namespace: ns}, StringData: map[string]string{
			"password":              "conformance",
			"dsn":                   "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable",
			"AWS_ACCESS_KEY_ID":     m.AccessKey,
			"AWS_SECRET_ACCESS_KEY": m.SecretKey,
		}}
	}
	if err := k.Create(ctx, credentials(ns)); err != nil {
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
	manifests = bytes.Replace(manifests, []byte(`schedule: "0 */6 * * *"`), []byte("schedule: \"@daily\"\n  suspend: true"), 1)
	manifests = bytes.Replace(manifests, []byte("replicas: 3"), []byte("replicas: 1"), 1)
	manifests = bytes.ReplaceAll(manifests, []byte("\nmetadata:\n  name: "), []byte("\nmetadata:\n  namespace: "+ns+"\n  name: "))
	if err := c.Apply(ctx, manifests); err != nil {
		t.Fatalf("apply docs/examples/postgres-statefulset.yaml: %v\ncontroller log:\n%s", err, ctl.log())
	}
	pg0 := waitReady(t, c, ctl, ns, "pg-0", 3*time.Minute)
	setPrimaryIn(t, k, ns, "pg-0", pg0.Status.PodIP)
	pgd := &pgDriver{}
	dsnOf := func(ip string) string { return fmt.Sprintf("postgres://postgres@%s:5432/postgres?sslmode=disable", ip) }
	orig := dsnOf(pg0.Status.PodIP)
	pgd.MarkerSetup(t, orig)
	waitArchiverIn(t, k, ctl, ns, "pg-0")
	mark := func(from, to int) {
		for i := from; i <= to; i++ {
			pgd.Mark(t, orig, i)
			time.Sleep(10 * time.Millisecond)
		}
	}
	mark(1, 50)

	// A Backup stores the data and, beside it, the workload.
	b := runBackup(t, k, ctl, ns, "pg", "first", nil)
	wc := findCondition(b.Status.Conditions, controllers.CondWorkload)
	if wc == nil || wc.Status != metav1.ConditionTrue {
		t.Fatalf("Backup first: workload condition %+v", wc)
	}
	t.Logf("Backup first: %s; %s", b.Status.BackupID[:12], wc.Message)
	// A Restore's pointInTime has whole seconds (metav1.Time): targets sit
	// on a second boundary between two runs of markers.
	mark(51, 100)
	target := secondBoundary()
	mark(101, 150)
	ts := pgd.MarkerTimes(t, orig)
	waitWindowAny(t, cli, ts[150], ctl)

	// The workload, listed from the bucket alone.
	var ls struct {
		Workloads []struct {
			Backup, Namespace, Name string
			Objects                 []string
		} `json:"workloads"`
	}
	out := cli.run("k8s", "ls", "--repo", repoURL, "--json")
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("amber k8s ls --repo: %v\n%s", err, out)
	}
	if len(ls.Workloads) != 1 || ls.Workloads[0].Backup != b.Status.BackupID || ls.Workloads[0].Namespace != ns || ls.Workloads[0].Name != "pg" ||
		!contains(ls.Workloads[0].Objects, "StatefulSet/pg") || !contains(ls.Workloads[0].Objects, "ConfigMap/pg-topology") {
		t.Fatalf("amber k8s ls --repo: %s", out)
	}
	if strings.Contains(out, m.SecretKey) || strings.Contains(out, "conformance") {
		t.Fatalf("amber k8s ls --repo shows a secret: %s", out)
	}
	t.Logf("amber k8s ls --repo: %s/%s with %v", ns, "pg", ls.Workloads[0].Objects)

	// Restore to a point in time into a clone next to the original.
	r1 := &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Name: "r1", Namespace: ns}, Spec: amberv1.RestoreSpec{
		PolicyRef: &amberv1.LocalRef{Name: "pg"}, SourceStatefulSet: "pg", PointInTime: &metav1.Time{Time: target}}}
	if err := k.Create(ctx, r1); err != nil {
		t.Fatal(err)
	}
	r1 = waitRestore(t, c, k, ctl, r1, 4*time.Minute)
	logRestore(t, r1)
	clone := cloneDSN(t, c, k, ns, r1.Status.CloneName+"-0", dsnOf)
	checkMarkers(t, pgd, clone, 100)
	if n, max := pgd.Markers(t, orig); n != 150 || max != 150 {
		t.Fatalf("the original holds %d markers (highest %d) after the restore; want 150", n, max)
	}
	checkClone(t, k, ns, r1.Status.CloneName, "pg")
	// The same restore with the CLI on the host, for docs/benchmarks.md:
	// data transfer only (the server is not started).
	cliDir := filepath.Join(testbed.PostgresDir(t), "data")
	tc := time.Now()
	cli.run("restore", "--engine", "postgres", "--data-dir", cliDir, "--backup", r1.Status.BackupID,
		"--to-time", target.UTC().Format(time.RFC3339Nano))
	rep := &restoreBench{load0: loadAvg(), backupAdded: b.Status.BytesAdded, cli: time.Since(tc), r1: r1.DeepCopy()}
	t.Logf("the same backup with amber restore on the host: %s (backup %d bytes read, %d stored)", rep.cli.Round(10*time.Millisecond), b.Status.Bytes, b.Status.BytesAdded)
	waitArchiverIn(t, k, ctl, ns, "pg-0")
	if r1.Status.PointReached == nil || r1.Status.PointReached.Time == nil || !r1.Status.PointReached.Time.Equal(&metav1.Time{Time: target}) {
		t.Errorf("Restore r1: point reached %+v; want %s", r1.Status.PointReached, target)
	}
	drills(t, c, k, ctl, m, bucket, ns)

	mark(151, 155)
	target2 := secondBoundary()
	mark(156, 160)
	ts = pgd.MarkerTimes(t, orig)
	waitWindowAny(t, cli, ts[160], ctl)

	// Disaster: the StatefulSet, its PVCs and the namespace go.
	fg := metav1.DeletePropagationForeground
	if err := k.Delete(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "pg", Namespace: ns}},
		&client.DeleteOptions{PropagationPolicy: &fg}); err != nil {
		t.Fatal(err)
	}
	if err := k.DeleteAllOf(ctx, &corev1.PersistentVolumeClaim{}, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if err := k.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "namespace "+ns+" deleted", func() bool {
		err := k.Get(ctx, types.NamespacedName{Name: ns}, &corev1.Namespace{})
		return apierrors.IsNotFound(err)
	})
	t.Logf("StatefulSet pg, its PVCs and namespace %s deleted", ns)

	const dr = "recovered"
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: dr}}); err != nil {
		t.Fatal(err)
	}
	if err := k.Create(ctx, credentials(dr)); err != nil {
		t.Fatal(err)
	}
	target = target2
	r2 := &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Name: "r2", Namespace: dr}, Spec: amberv1.RestoreSpec{
		Repository: &amberv1.RepositorySpec{URL: repoURL, CredentialsSecret: amberv1.SecretRef{Name: "pg-backup"}},
		Engine:     amberv1.EnginePostgres, SourceNamespace: ns, SourceStatefulSet: "pg", CloneName: "pg",
		PointInTime: &metav1.Time{Time: target}}}
	waitFor(t, time.Minute, "the ServiceAccount of namespace "+dr, func() bool {
		return k.Get(ctx, types.NamespacedName{Namespace: dr, Name: "default"}, &corev1.ServiceAccount{}) == nil
	})
	if err := k.Create(ctx, r2); err != nil {
		t.Fatal(err)
	}
	r2 = waitRestore(t, c, k, ctl, r2, 4*time.Minute)
	logRestore(t, r2)
	checkMarkers(t, pgd, cloneDSN(t, c, k, dr, "pg-0", dsnOf), 155)
	var cm corev1.ConfigMap
	if err := k.Get(ctx, types.NamespacedName{Namespace: dr, Name: "pg-topology"}, &cm); err != nil {
		t.Errorf("the captured ConfigMap pg-topology was not recreated in %s: %v", dr, err)
	}
	rep.r2 = r2.DeepCopy()
	if out := os.Getenv("AMBER_RESTORE_REPORT"); out != "" {
		rep.write(t, out)
	}
	t.Logf("PostgreSQL part: %s (%s since the test bed started)", time.Since(t0).Round(100*time.Millisecond), time.Since(bed.t0).Round(100*time.Millisecond))
}

func waitRestore(t *testing.T, c *testbed.Cluster, k client.Client, ctl *controller, rs *amberv1.Restore, timeout time.Duration) *amberv1.Restore {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		if err := k.Get(context.Background(), client.ObjectKeyFromObject(rs), rs); err != nil {
			t.Fatal(err)
		}
		if rs.Status.Progress != last {
			last = rs.Status.Progress
			t.Logf("Restore %s: %s", rs.Name, last)
		}
		switch rs.Status.Phase {
		case amberv1.PhaseSucceeded:
			return rs
		case amberv1.PhaseFailed:
			t.Fatalf("Restore %s failed: %s\n%s\ncontroller log:\n%s", rs.Name, rs.Status.Error,
				c.DescribePod(context.Background(), rs.Namespace, rs.Status.CloneName+"-0"), ctl.log())
		}
		if time.Now().After(deadline) {
			t.Fatalf("Restore %s not done after %s: %+v\n%s\n%s%s\ncontroller log:\n%s", rs.Name, timeout, rs.Status,
				c.DescribePod(context.Background(), rs.Namespace, rs.Status.CloneName+"-0"),
				c.StorageReport(context.Background()), c.CSILogs(), ctl.log())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func logRestore(t *testing.T, rs *amberv1.Restore) {
	t.Helper()
	s := rs.Status
	if s.RTO == nil || s.Timings == nil || s.Timings.Scheduling == nil || s.Timings.DataTransfer == nil || s.Timings.Recovery == nil || s.ReadyTime == nil {
		t.Fatalf("Restore %s: status without RTO or timings: %+v", rs.Name, s)
	}
	t.Logf("Restore %s: clone %s ready; RTO %s = scheduling %s + data transfer %s + recovery %s; backup %s; point %+v",
		rs.Name, s.CloneName, s.RTO.Duration.Round(10*time.Millisecond), s.Timings.Scheduling.Duration.Round(10*time.Millisecond),
		s.Timings.DataTransfer.Duration.Round(10*time.Millisecond), s.Timings.Recovery.Duration.Round(10*time.Millisecond),
		shortID12(s.BackupID), s.PointReached)
}

func shortID12(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// cloneDSN waits for the clone's database to leave recovery and returns
// its connection string. When it does not, the failure shows the pod and
// the end of its server's log: what recovery was doing.
func cloneDSN(t *testing.T, c *testbed.Cluster, k client.Client, ns, pod string, dsnOf func(string) string) string {
	t.Helper()
	ctx := context.Background()
	var p corev1.Pod
	if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: pod}, &p); err != nil {
		t.Fatal(err)
	}
	dsn := dsnOf(p.Status.PodIP)
	pgd := &pgDriver{}
	const timeout = 2 * time.Minute
	deadline := time.Now().Add(timeout)
	for {
		var rec bool
		err := pgd.db(t, dsn).QueryRowContext(ctx, `SELECT pg_is_in_recovery()`).Scan(&rec)
		if err == nil && !rec {
			return dsn
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not out of recovery after %s (in recovery %v, error %v)\n%s\nits postgres log:\n%s", pod, timeout, rec, err,
				c.DescribePod(ctx, ns, pod), containerLog(ctx, c, ns, pod, "postgres", 80))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// containerLog is the last lines of a container's log, or why not.
func containerLog(ctx context.Context, c *testbed.Cluster, ns, pod, container string, lines int64) string {
	b, err := c.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, TailLines: &lines}).DoRaw(ctx)
	if err != nil {
		return fmt.Sprintf("log of %s/%s container %s: %v", ns, pod, container, err)
	}
	return string(b)
}

func checkMarkers(t *testing.T, d *pgDriver, dsn string, want int) {
	t.Helper()
	if n, max := d.Markers(t, dsn); n != want || max != want {
		t.Fatalf("the clone holds %d markers, highest %d; want exactly 1..%d", n, max, want)
	}
	t.Logf("the clone holds exactly markers 1..%d", want)
}

// checkClone checks the clone's labels, that its pod has no sidecar (so it
// never archives into the original's stream) and that the original's
// Service does not select it.
func checkClone(t *testing.T, k client.Client, ns, name, source string) {
	t.Helper()
	ctx := context.Background()
	var sts appsv1.StatefulSet
	if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &sts); err != nil {
		t.Fatal(err)
	}
	if sts.Labels[workload.LabelCloneOf] != source || sts.Annotations[workload.AnnotationTarget] == "" {
		t.Errorf("clone %s: labels %v annotations %v", name, sts.Labels, sts.Annotations)
	}
	var p corev1.Pod
	if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: name + "-0"}, &p); err != nil {
		t.Fatal(err)
	}
	if inject.Injected(&p) || p.Labels[inject.LabelInject] != "" || p.Annotations[inject.AnnotationPolicy] != "" {
		t.Errorf("clone pod %s is opted in to Amber: labels %v annotations %v", p.Name, p.Labels, p.Annotations)
	}
	if p.Labels["app"] == source {
		t.Errorf("clone pod %s carries the original's label app=%s", p.Name, source)
	}
	var svc corev1.Service
	if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &svc); err != nil {
		t.Errorf("clone %s has no Service of its own: %v", name, err)
	}
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func setPrimaryIn(t *testing.T, k client.Client, ns, pod, ip string) {
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

func waitArchiverIn(t *testing.T, k client.Client, ctl *controller, ns, pod string) {
	t.Helper()
	waitArchiverOf(t, k, ctl, ns, "pg", "pg", pod)
}

// waitArchiverOf waits until policy's status names pod of StatefulSet sts
// as its archiver.
func waitArchiverOf(t *testing.T, k client.Client, ctl *controller, ns, policy, sts, pod string) {
	t.Helper()
	var last amberv1.BackupPolicy
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := k.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: policy}, &last); err != nil {
			t.Fatal(err)
		}
		for _, a := range last.Status.Archivers {
			if a.StatefulSet == sts && a.Pod == pod {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy status %+v: %s is not the archiver after 2 min\ncontroller log:\n%s", last.Status, pod, ctl.log())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitWindowAny waits until the archive reaches until.
func waitWindowAny(t *testing.T, cli *amberEnv, until time.Time, ctl *controller) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var ls lsJSONBackups
		if err := json.Unmarshal([]byte(cli.run("ls", "--json")), &ls); err != nil {
			t.Fatal(err)
		}
		for _, w := range ls.Windows {
			if !w.LatestTime.Before(until) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("recoverable windows %+v did not reach %s within 60 s\ncontroller log:\n%s", ls.Windows, until.Format(time.RFC3339Nano), ctl.log())
		}
		time.Sleep(time.Second)
	}
}

// drills turns on the policy's restore drills, to a random point of the
// recoverable window: one runs on schedule, restores to a whole second
// inside the archiver's window, probes its clone (marker 50 is in every
// point of the window: the first backup followed it), reports RTO and RPO,
// which the controller's /metrics exports for the policy, and deletes the
// clone; with the repository's packs damaged the next one fails loudly and
// amber_drill_success drops to 0. The packs are put back and drills turned
// off at the end.
func drills(t *testing.T, c *testbed.Cluster, k client.Client, ctl *controller, m *testbed.MinIO, bucket, ns string) {
	t.Helper()
	ctx := context.Background()
	patchPolicy(t, k, ns, func(p *amberv1.BackupPolicy) {
		p.Spec.Drills = &amberv1.DrillSpec{Schedule: "@every 1m", Target: amberv1.DrillRandom, Probe: "SELECT id FROM markers WHERE id = 50"}
	})
	p := waitDrill(t, k, ctl, ns, amberv1.PhaseSucceeded, 4*time.Minute)
	d := p.Status.Drill
	if d.RTO == nil || d.RTO.Duration <= 0 || d.RPO == nil || d.LastSuccessfulTime == nil {
		t.Fatalf("drill status without RTO/RPO: %+v", d)
	}
	t.Logf("drill %s succeeded: target %s, RTO %s, RPO %s (%s)", d.Restore, d.Target, d.RTO.Duration.Round(10*time.Millisecond), d.RPO.Duration.Round(10*time.Millisecond), d.Message)
	at, err := time.Parse(time.RFC3339Nano, d.Target)
	if err != nil || at.Nanosecond() != 0 {
		t.Fatalf("random drill target %q is not a whole-second time (%v)", d.Target, err)
	}
	if len(p.Status.Archivers) == 0 || p.Status.Archivers[0].RecoverableFrom == nil || p.Status.Archivers[0].RecoverableTo == nil {
		t.Fatalf("policy has no recoverable window: %+v", p.Status.Archivers)
	}
	// The window only grows (nothing is pruned here): the target lies
	// between its start and its end now.
	if w := p.Status.Archivers[0]; at.Before(w.RecoverableFrom.Time.Truncate(time.Second)) || at.After(w.RecoverableTo.Time) {
		t.Errorf("random drill target %s outside the recoverable window %s .. %s", at, w.RecoverableFrom, w.RecoverableTo)
	}
	metric := func(name string) string { return fmt.Sprintf(`%s{namespace=%q,policy="pg"}`, name, ns) }
	mv := controllerMetrics(t, ctl.Metrics)
	if v, ok := mv[metric("amber_drill_success")]; !ok || v != 1 {
		t.Errorf("controller /metrics: %s = %v (present %v); want 1", metric("amber_drill_success"), v, ok)
	}
	for name, want := range map[string]time.Duration{"amber_drill_rto_seconds": d.RTO.Duration, "amber_drill_rpo_seconds": d.RPO.Duration} {
		// The status keeps whole milliseconds or less; the gauge the exact value.
		if v, ok := mv[metric(name)]; !ok || math.Abs(v-want.Seconds()) > 0.01 {
			t.Errorf("controller /metrics: %s = %v (present %v); want %.3f as in status.drill", metric(name), v, ok, want.Seconds())
		}
	}
	t.Logf("controller /metrics: success %v, rto %.2f s, rpo %.2f s", mv[metric("amber_drill_success")], mv[metric("amber_drill_rto_seconds")], mv[metric("amber_drill_rpo_seconds")])
	waitFor(t, 2*time.Minute, "the drill's clone deleted", func() bool {
		var list appsv1.StatefulSetList
		if err := k.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{workload.LabelRestore: d.Restore}); err != nil {
			return false
		}
		err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: d.Restore}, &amberv1.Restore{})
		return len(list.Items) == 0 && apierrors.IsNotFound(err)
	})
	waitFor(t, 30*time.Second, "condition DrillSucceeded=True", func() bool {
		if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: "pg"}, p); err != nil {
			return false
		}
		cond := findCondition(p.Status.Conditions, controllers.CondDrill)
		return cond != nil && cond.Status == metav1.ConditionTrue
	})

	// Hold drills while the packs are damaged: one in flight could have
	// read the packs before the damage and then fail otherwise (its
	// recovery fetching WAL from damaged packs), which is not the failure
	// this checks. The hold is in force once the drill controller has
	// scheduled the next drill a day ahead with none running (it reads
	// policies from its cache: before that it could still start one). The
	// last drill, whatever its end, is not the one to wait for.
	patchPolicy(t, k, ns, func(p *amberv1.BackupPolicy) { p.Spec.Drills.Schedule = "@every 24h" })
	last := d.Restore
	waitFor(t, 6*time.Minute, "no drill running and the next one a day ahead", func() bool {
		if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: "pg"}, p); err != nil || p.Status.Drill == nil {
			return false
		}
		ds := p.Status.Drill
		last = ds.Restore
		return ds.Phase != amberv1.PhaseRunning && ds.NextScheduleTime != nil && time.Until(ds.NextScheduleTime.Time) > time.Hour
	})
	t.Logf("drills held after drill %s (%s); next at %s", last, p.Status.Drill.Phase, p.Status.Drill.NextScheduleTime)

	// Damage every pack; the next drill must fail loudly.
	mc := m.Client(t)
	saved := map[string][]byte{}
	for o := range mc.ListObjects(ctx, bucket, minioListOptions("pg/data/")) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		obj, err := mc.GetObject(ctx, bucket, o.Key, minioGetOptions())
		if err != nil {
			t.Fatal(err)
		}
		b, err := readAllClose(obj)
		if err != nil {
			t.Fatal(err)
		}
		saved[o.Key] = b
		bad := append([]byte(nil), b...)
		for i := len(bad) / 3; i < len(bad) && i < len(bad)/3+64; i++ {
			bad[i] ^= 0xff
		}
		putObject(t, mc, bucket, o.Key, bad)
	}
	if len(saved) == 0 {
		t.Fatal("no pack found under pg/data/ to damage")
	}
	t.Logf("damaged %d pack(s)", len(saved))
	patchPolicy(t, k, ns, func(p *amberv1.BackupPolicy) { p.Spec.Drills.Schedule = "@every 1m" })
	p = waitDrillAfter(t, k, ctl, ns, last, amberv1.PhaseFailed, 4*time.Minute)
	t.Logf("drill %s against the damaged repository: %s: %s", p.Status.Drill.Restore, p.Status.Drill.Phase, p.Status.Drill.Message)
	if !strings.Contains(p.Status.Drill.Message, "restore failed") {
		t.Errorf("failed drill message %q does not say the restore failed", p.Status.Drill.Message)
	}
	waitFor(t, 30*time.Second, "condition DrillSucceeded=False and a DrillFailed Warning", func() bool {
		if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: "pg"}, p); err != nil {
			return false
		}
		cond := findCondition(p.Status.Conditions, controllers.CondDrill)
		var evs corev1.EventList
		if err := k.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return false
		}
		warned := false
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == "DrillFailed" && e.InvolvedObject.Name == "pg" {
				warned = true
			}
		}
		return cond != nil && cond.Status == metav1.ConditionFalse && warned
	})
	if v := controllerMetrics(t, ctl.Metrics)[fmt.Sprintf(`amber_drill_success{namespace=%q,policy="pg"}`, ns)]; v != 0 {
		t.Errorf("controller /metrics: amber_drill_success = %v after the failed drill; want 0", v)
	}
	patchPolicy(t, k, ns, func(p *amberv1.BackupPolicy) { p.Spec.Drills = nil })
	for key, b := range saved {
		putObject(t, mc, bucket, key, b)
	}
	_ = c
}

func waitDrill(t *testing.T, k client.Client, ctl *controller, ns string, phase amberv1.Phase, timeout time.Duration) *amberv1.BackupPolicy {
	t.Helper()
	return waitDrillAfter(t, k, ctl, ns, "", phase, timeout)
}

// waitDrillAfter waits for a drill other than after to end in phase.
func waitDrillAfter(t *testing.T, k client.Client, ctl *controller, ns, after string, phase amberv1.Phase, timeout time.Duration) *amberv1.BackupPolicy {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var p amberv1.BackupPolicy
	seen := ""
	for {
		if err := k.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "pg"}, &p); err != nil {
			t.Fatal(err)
		}
		if d := p.Status.Drill; d != nil && d.Restore != after {
			if s := string(d.Phase) + " " + d.Message; s != seen {
				seen = s
				t.Logf("drill %s: %s", d.Restore, s)
			}
			if d.Phase == phase {
				return &p
			}
			if d.Phase == amberv1.PhaseSucceeded && phase == amberv1.PhaseFailed {
				// It read the packs before they were damaged: the next one.
				after = d.Restore
				continue
			}
			if d.Phase == amberv1.PhaseFailed || d.Phase == amberv1.PhaseSucceeded {
				t.Fatalf("drill %s ended %s, want %s: %s\ncontroller log:\n%s", d.Restore, d.Phase, phase, d.Message, ctl.log())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no drill ended %s within %s: %+v\ncontroller log:\n%s", phase, timeout, p.Status.Drill, ctl.log())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func minioListOptions(prefix string) minio.ListObjectsOptions {
	return minio.ListObjectsOptions{Prefix: prefix, Recursive: true}
}

func minioGetOptions() minio.GetObjectOptions { return minio.GetObjectOptions{} }

func readAllClose(r io.ReadCloser) ([]byte, error) {
	defer r.Close()
	return io.ReadAll(r)
}

func putObject(t *testing.T, mc *minio.Client, bucket, key string, b []byte) {
	t.Helper()
	if _, err := mc.PutObject(context.Background(), bucket, key, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}

// restoreBench is the figures docs/benchmarks.md's clone-restore section
// shows (AMBER_RESTORE_REPORT=docs/benchmarks.md; `make bench` sets it).
type restoreBench struct {
	load0       string
	backupAdded int64 // the Backup's status.bytesAdded
	cli         time.Duration
	r1, r2      *amberv1.Restore
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

const (
	restoreReportBegin = "<!-- clone restore (conformance TestKubernetesRestoreClone): begin -->"
	restoreReportEnd   = "<!-- clone restore (conformance TestKubernetesRestoreClone): end -->"
)

// write replaces (or appends) the section in the report file out.
func (rb *restoreBench) write(t *testing.T, out string) {
	t.Helper()
	sec := func(d *metav1.Duration) string {
		if d == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f s", d.Duration.Seconds())
	}
	row := func(name string, f func(*amberv1.Restore) string) string {
		return fmt.Sprintf("| %s | %s | %s |\n", name, f(rb.r1), f(rb.r2))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n# Restore into a clone StatefulSet: RTO on the real-kubelet test bed\n\n", restoreReportBegin)
	fmt.Fprintf(&b, "Generated on %s by `AMBER_RESTORE_REPORT=docs/benchmarks.md go test ./conformance -run '^TestKubernetesRestoreClone$' -count=1 -v`\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString("(what `make bench` runs). The figures come from the Restores' own status (`status.rto`, `status.timings`).\n\n")
	b.WriteString("## Set-up\n")
	b.WriteString("- **A modest data set, not the standard one**: the example PostgreSQL 15 StatefulSet of docs/examples (one replica\n")
	b.WriteString("  here) after `initdb`, with a table of 150 marker rows; ")
	fmt.Fprintf(&b, "its physical backup stored %.1f MiB (`status.bytesAdded` of the Backup: bytes added to the\n", float64(rb.backupAdded)/(1<<20))
	b.WriteString("  repository after deduplication and compression); WAL archived continuously by the sidecar. The standard data set of\n")
	b.WriteString("  the sections above is not loaded into the cluster: the test bed's pods and the host share 2 cores with other work.\n")
	b.WriteString("- One-node cluster (kube-apiserver, kube-controller-manager, kube-scheduler, a real kubelet with containerd) and MinIO\n")
	b.WriteString("  on the node's address as the repository, all on this machine; amber-controller as a host process; the amber and\n")
	b.WriteString("  PostgreSQL images already loaded (no pull).\n")
	b.WriteString("- Clone 1: a Restore to a point in time (after marker 100) next to the running original. Clone 2: the same StatefulSet\n")
	b.WriteString("  restored to a later point into a new namespace after the original StatefulSet, its PVCs and its namespace were\n")
	b.WriteString("  deleted (its ConfigMap recreated from the captured workload).\n")
	fmt.Fprintf(&b, "- Load average (1, 5, 15 min) %s after the first restore, %s at the end: the machine is shared.\n\n", rb.load0, loadAvg())
	b.WriteString("## Results\n")
	b.WriteString("| | clone 1 (point in time, beside the original) | clone 2 (after the namespace was deleted) |\n|---|---|---|\n")
	b.WriteString(row("RTO: the Restore's creation → the clone's pod Ready", func(r *amberv1.Restore) string { return sec(r.Status.RTO) }))
	b.WriteString(row("scheduling: → the restoring init container starts (objects, PVC provisioned, pod scheduled, sandbox)", func(r *amberv1.Restore) string { return sec(r.Status.Timings.Scheduling) }))
	b.WriteString(row("data transfer: the init container (`amber restore` from MinIO into the new PVC)", func(r *amberv1.Restore) string { return sec(r.Status.Timings.DataTransfer) }))
	b.WriteString(row("recovery: init container end → Ready (PostgreSQL starts, fetches WAL, replays to the target)", func(r *amberv1.Restore) string { return sec(r.Status.Timings.Recovery) }))
	fmt.Fprintf(&b, "\n`amber restore --engine postgres --data-dir ... --backup <the same> --to-time <the same>` on the host, from the same\n")
	fmt.Fprintf(&b, "repository: **%.1f s** (data transfer only: it lays the backup out and configures recovery, as the init container\n", rb.cli.Seconds())
	b.WriteString("does). The init container's data transfer also includes starting the container and copying amber and its plugin\n")
	b.WriteString("into the shared `emptyDir` (`--install-to`). The pod's times have whole seconds.\n\n")
	met := "not met"
	if d := rb.r1.Status.Timings.DataTransfer; d != nil && d.Duration <= rb.cli.Round(time.Second)+time.Second {
		met = "met"
	}
	fmt.Fprintf(&b, "Goal (issue 11): data transfer at least as fast as `amber restore` on the CLI: **%s** in this run for clone 1\n", met)
	b.WriteString("(within the pod's one-second resolution). Both read the same backup from the same MinIO; the load average above says\n")
	b.WriteString("how much else ran.\n\n")
	b.WriteString("## What it does not measure\n")
	b.WriteString("- The standard data set; a larger data directory moves data transfer and recovery, not scheduling.\n")
	b.WriteString("- Image pulls (the images are loaded into containerd beforehand) and cloud volume provisioning (the test bed's\n")
	b.WriteString("  provisioner makes a host directory).\n")
	b.WriteString("- Readiness is the example's `pg_isready` probe: PostgreSQL with `hot_standby` answers once consistent, which can be\n")
	b.WriteString("  before it reaches the target; the test waits for `pg_is_in_recovery()` to be false before it counts rows.\n")
	b.WriteString(restoreReportEnd + "\n")

	if !filepath.IsAbs(out) {
		root, err := testbed.Root()
		if err != nil {
			t.Fatal(err)
		}
		out = filepath.Join(root, out)
	}
	old, err := os.ReadFile(out)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	doc := string(old)
	if i, j := strings.Index(doc, restoreReportBegin), strings.Index(doc, restoreReportEnd); i >= 0 && j > i {
		doc = doc[:i] + b.String() + doc[j+len(restoreReportEnd)+1:]
	} else {
		if doc != "" && !strings.HasSuffix(doc, "\n\n") {
			doc += "\n"
		}
		doc += b.String()
	}
	if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote the clone-restore section of %s", out)
}

// secondBoundary waits past the next whole second and returns it: every
// commit before the call is before it, every one after the call after it.
func secondBoundary() time.Time {
	b := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(b) + 100*time.Millisecond)
	return b
}

// controllerMetrics reads amber-controller's /metrics at addr over HTTP:
// each sample line's name with labels, and its value.
func controllerMetrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("amber-controller's /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("amber-controller's /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("amber-controller's /metrics: %v", err)
	}
	return out
}
