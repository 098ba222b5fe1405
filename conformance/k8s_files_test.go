package conformance_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/controller/app"
	"github.com/amber-backup/amber/controller/inject"
)

// TestKubernetesFileBackups runs the example PostgreSQL StatefulSet (one
// replica) on the test bed's real kubelet with the pod annotation
// amber.dev/data-dir: the webhook mounts the data volume into the sidecar
// and hands it the data directory, the sidecar (running as postgres's uid)
// reads the files itself, and the second of two Backups of the policy reuses
// the files unchanged since the first: the sidecar's metrics report the
// files reused, and the Backup reads fewer bytes.
func TestKubernetesFileBackups(t *testing.T) {
	t0 := time.Now()
	c := testbed.StartCluster(t, testbed.ClusterOptions{})
	images := t.TempDir()
	_, pgImage := testbed.BuildPostgresImage(t, images)
	_, amberImage := testbed.BuildAmberImage(t, images)
	c.LoadImage(t, pgImage)
	c.LoadImage(t, amberImage)
	t.Logf("cluster up, images loaded: %s", time.Since(t0).Round(100*time.Millisecond))

	m := testbed.StartMinIOWith(t, testbed.MinIOOptions{Host: c.NodeIP.String()})
	bucket := m.CreateBucket(t, "amber-files")
	repoURL := fmt.Sprintf("s3://%s/pg?endpoint=http://%s", bucket, m.Endpoint)
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
	manifests := bytes.ReplaceAll(example, []byte("${AMBER_REPOSITORY}"), []byte(repoURL))
	for _, r := range []struct{ old, new string }{
		{`schedule: "0 */6 * * *"`, "schedule: \"0 */6 * * *\"\n  suspend: true"}, // Backups made by the test only
		{"replicas: 3", "replicas: 1"},
		{"        amber.dev/policy: pg ", "        amber.dev/data-dir: /data/pgdata\n        amber.dev/policy: pg "},
	} {
		if !bytes.Contains(manifests, []byte(r.old)) {
			t.Fatalf("docs/examples/postgres-statefulset.yaml no longer holds %q", r.old)
		}
		manifests = bytes.Replace(manifests, []byte(r.old), []byte(r.new), 1)
	}
	if err := c.Apply(ctx, manifests); err != nil {
		t.Fatalf("apply the example: %v\ncontroller log:\n%s", err, ctl.log())
	}
	pod := waitReady(t, c, ctl, ns, "pg-0", 3*time.Minute)
	setPrimary(t, k, ns, "pg-0", pod.Status.PodIP)
	checkInjected(t, pod)
	var sc *corev1.Container
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == inject.SidecarName {
			sc = &pod.Spec.InitContainers[i]
		}
	}
	dataDir := ""
	for _, e := range sc.Env {
		if e.Name == "AMBER_DATA_DIR" {
			dataDir = e.Value
		}
	}
	if dataDir != "/data/pgdata" || sc.SecurityContext.RunAsUser == nil || *sc.SecurityContext.RunAsUser != 70 {
		t.Fatalf("sidecar: AMBER_DATA_DIR %q, runAsUser %v; want /data/pgdata as uid 70 (postgres)", dataDir, sc.SecurityContext.RunAsUser)
	}

	pgd := &pgDriver{}
	dsn := fmt.Sprintf("postgres://postgres@%s:5432/postgres?sslmode=disable", pod.Status.PodIP)
	psqlValue(t, pgd, dsn, `SELECT 1`)
	if _, err := pgd.db(t, dsn).Exec(`CREATE TABLE kept AS SELECT g, repeat('k', 200) AS pad FROM generate_series(1, 20000) g;
		CREATE TABLE changed AS SELECT g FROM generate_series(1, 1000) g`); err != nil {
		t.Fatal(err)
	}
	// Files written within 2 s of a backup's start are read again by the
	// next one.
	time.Sleep(3 * time.Second)

	metricsAddr := net.JoinHostPort(pod.Status.PodIP, "9090")
	first := runBackup(t, k, ctl, ns, "pg", "first", ctl.logDiag)
	read1, reused1 := backupFiles(t, metricsAddr)
	if read1 < 100 || reused1 != 0 {
		t.Fatalf("first backup: %v files read, %v reused; want a file-level backup reading every file", read1, reused1)
	}
	if _, err := pgd.db(t, dsn).Exec(`UPDATE changed SET g = -g WHERE g <= 10`); err != nil {
		t.Fatal(err)
	}
	second := runBackup(t, k, ctl, ns, "pg", "second", ctl.logDiag)
	read2, reused2 := backupFiles(t, metricsAddr)
	t.Logf("Backup first: %d bytes read, %d added, %v files; Backup second: %d bytes read, %d added, %v files read, %v reused",
		first.Status.Bytes, first.Status.BytesAdded, read1, second.Status.Bytes, second.Status.BytesAdded, read2, reused2)
	// New data, compressed: something was added, less than was read.
	if first.Status.BytesAdded <= 0 || first.Status.BytesAdded >= first.Status.Bytes {
		t.Fatalf("Backup first: %d bytes added to the repository for %d read; want fewer, and some", first.Status.BytesAdded, first.Status.Bytes)
	}
	if second.Status.FilesRead != int64(read2) || second.Status.FilesReused != int64(reused2) || second.Status.BytesReused == 0 {
		t.Fatalf("Backup second's status: %d files read, %d reused (%d bytes); the sidecar's metrics say %v and %v",
			second.Status.FilesRead, second.Status.FilesReused, second.Status.BytesReused, read2, reused2)
	}
	if reused2 < read1/2 || read2 >= read1/2 || second.Status.Bytes >= first.Status.Bytes {
		t.Fatalf("second backup read %v files (%d bytes) and reused %v; want most of the first's %v files reused", read2,
			second.Status.Bytes, reused2, read1)
	}
	cli.run("verify")
	t.Logf("whole test: %s", time.Since(t0).Round(100*time.Millisecond))
}

// backupFiles reads amber_backup_files from a sidecar's metrics.
func backupFiles(t *testing.T, addr string) (read, reused float64) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	found := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case `amber_backup_files{kind="read"}`:
			dst = &read
		case `amber_backup_files{kind="reused"}`:
			dst = &reused
		default:
			continue
		}
		if *dst, err = strconv.ParseFloat(v, 64); err != nil {
			t.Fatalf("metrics line %q: %v", sc.Text(), err)
		}
		found++
	}
	if found != 2 {
		t.Fatalf("the sidecar's metrics at %s report no amber_backup_files: no file-level backup", addr)
	}
	return read, reused
}
