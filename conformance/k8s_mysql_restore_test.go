package conformance_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/controllers"
	"github.com/amber-backup/amber/controller/workload"
)

// mariadbManifests is a one-replica MariaDB StatefulSet that opts in to
// Amber with a BackupPolicy of logical backups and archived binlog. Its
// start script initialises an empty data directory (a database app and
// the account amber that the sidecar and the restore use), as the
// official image's entrypoint does from its environment; a clone starts
// the same way on its new, empty volume.
const mariadbManifests = `
apiVersion: amber.dev/v1alpha1
kind: BackupPolicy
metadata: {name: db, namespace: ${NS}}
spec:
  engine: mysql
  repository:
    url: ${REPO}
    credentialsSecret: {name: db-backup}
  schedule: "@daily"
  suspend: true
  mode: logical
  archive: true
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: ${NS}}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: mysql, port: 3306}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: ${NS}}
spec:
  serviceName: db
  replicas: 1
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db, amber.dev/inject: "true"}
      annotations: {amber.dev/policy: db}
    spec:
      terminationGracePeriodSeconds: 10
      securityContext: {runAsUser: 999, runAsGroup: 999, runAsNonRoot: true}
      containers:
        - name: mariadb
          image: ${IMAGE}
          imagePullPolicy: IfNotPresent
          env:
            - {name: MARIADB_PASSWORD, valueFrom: {secretKeyRef: {name: db-backup, key: mariadb-password}}}
          command:
            - /bin/sh
            - -c
            - |
              set -e
              D=/data/mysql
              INIT=
              if [ ! -d "$D/mysql" ]; then
                mariadb-install-db --no-defaults --datadir=$D --auth-root-authentication-method=normal \
                  --skip-test-db --skip-name-resolve > /tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
                printf "CREATE DATABASE app;\nCREATE USER 'amber'@'%%' IDENTIFIED BY '%s';\nGRANT ALL ON *.* TO 'amber'@'%%';\n" \
                  "$MARIADB_PASSWORD" > /tmp/init.sql
                INIT=--init-file=/tmp/init.sql
              fi
              exec mariadbd --no-defaults --datadir=$D --socket=/tmp/mysqld.sock --port=3306 --bind-address=0.0.0.0 \
                --skip-name-resolve --log-bin=mysql-bin --binlog-format=ROW --server-id=1 --tmpdir=/tmp $INIT
          ports:
            - {name: mysql, containerPort: 3306}
          volumeMounts:
            - {name: data, mountPath: /data}
          readinessProbe:
            exec:
              command: [mariadb-admin, --no-defaults, --socket=/tmp/mysqld.sock, -uroot, status]
            periodSeconds: 2
            timeoutSeconds: 5
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: ${CLASS}
        resources: {requests: {storage: 1Gi}}
`

// restoreMariaDBClone: a MariaDB StatefulSet's sidecar archives binlog and
// takes a logical backup through a Backup (which stores the workload too);
// a Restore to a point in time creates a clone whose restore container,
// in the MariaDB image with amber copied in by an init container, loads
// the backup into the clone's own server once it answers and replays the
// archived binlog to the target. The clone holds exactly the markers
// committed before the target, the original all of them.
//
// The StatefulSet's claim is a CSI volume, so that the subtest
// MariaDBDataDir (k8s_mysql_clone_test.go) can take a snapshot backup of
// the same pod; it continues on the state returned.
func restoreMariaDBClone(t *testing.T, bed *restoreBed) *mariaState {
	t0 := time.Now()
	bed.startSnapshots(t)
	c, k, ctl, m := bed.c, bed.k, bed.ctl, bed.m
	image, tarball := testbed.BuildMariaDBImage(t, bed.images)
	c.LoadImage(t, tarball)
	bucket := m.CreateBucket(t, "amber-restore-mariadb")
	repoURL := fmt.Sprintf("s3://%s/db?endpoint=http://%s", bucket, m.Endpoint)
	cli := &amberEnv{t: t, bin: bins(t), repo: repoURL}
	cli.run("repo", "init")
	ctx := context.Background()

	const ns, password = "mshop", "conformance-db"
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := k.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-backup", Namespace: ns}, StringData: map[string]string{
		"password":              "conformance",
		"mariadb-password":      password,
		"dsn":                   "mysql://amber:" + password + "@127.0.0.1:3306/app",
		"AWS_ACCESS_KEY_ID":     m.AccessKey,
		"AWS_SECRET_ACCESS_KEY": m.SecretKey,
	}}); err != nil {
		t.Fatal(err)
	}
	manifests := strings.NewReplacer("${NS}", ns, "${REPO}", repoURL, "${IMAGE}", image, "${CLASS}", testbed.CSIStorageClass).Replace(mariadbManifests)
	if err := c.Apply(ctx, []byte(manifests)); err != nil {
		t.Fatalf("apply the MariaDB StatefulSet: %v\ncontroller log:\n%s", err, ctl.log())
	}
	db0 := waitReady(t, c, ctl, ns, "db-0", 3*time.Minute)
	dsnOf := func(ip string) string {
		cfg := mysql.NewConfig()
		cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = "amber", password, "tcp", ip+":3306", "app"
		cfg.ParseTime = true
		return cfg.FormatDSN()
	}
	orig := openMy(t, dsnOf(db0.Status.PodIP))
	if _, err := orig.Exec(`CREATE TABLE markers (id int PRIMARY KEY, ts datetime(6) NOT NULL DEFAULT now(6))`); err != nil {
		t.Fatal(err)
	}
	waitArchiverOf(t, k, ctl, ns, "db", "db", "db-0")
	t.Logf("MariaDB StatefulSet up and archiving: %s", time.Since(t0).Round(100*time.Millisecond))
	mark := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := orig.Exec(`INSERT INTO markers (id) VALUES (?)`, i); err != nil {
				t.Fatalf("marker %d: %v", i, err)
			}
		}
	}
	mark(1, 50)
	b := runBackup(t, k, ctl, ns, "db", "first", ctl.logDiag)
	if wc := findCondition(b.Status.Conditions, controllers.CondWorkload); wc == nil || wc.Status != metav1.ConditionTrue {
		t.Fatalf("Backup first: workload condition %+v", wc)
	}
	mark(51, 100)
	target := quietSecond()
	mark(101, 150)
	waitArchived()

	r := &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Name: "r1", Namespace: ns}, Spec: amberv1.RestoreSpec{
		PolicyRef: &amberv1.LocalRef{Name: "db"}, SourceStatefulSet: "db", PointInTime: &metav1.Time{Time: target}}}
	if err := k.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	r = waitRestore(t, c, k, ctl, r, 4*time.Minute)
	logRestore(t, r)
	var pod corev1.Pod
	if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Status.CloneName + "-0"}, &pod); err != nil {
		t.Fatal(err)
	}
	clone := openMy(t, dsnOf(pod.Status.PodIP))
	if n, max := myMarkers(t, clone); n != 100 || max != 100 {
		t.Fatalf("the clone holds %d markers, highest %d; want exactly 1..100", n, max)
	}
	t.Log("the clone holds exactly markers 1..100")
	if n, max := myMarkers(t, orig); n != 150 || max != 150 {
		t.Fatalf("the original holds %d markers (highest %d) after the restore; want 150", n, max)
	}
	checkClone(t, k, ns, r.Status.CloneName, "db")
	if p := r.Status.PointReached; p == nil || p.Time == nil || !p.Time.Equal(&metav1.Time{Time: target}) {
		t.Errorf("Restore r1: point reached %+v; want %s", p, target)
	}
	if r.Status.BackupID != b.Status.BackupID {
		t.Errorf("Restore r1 restored backup %s; want %s", shortID12(r.Status.BackupID), shortID12(b.Status.BackupID))
	}
	// The restore container stays, only waiting: it does not restore again.
	for _, st := range pod.Status.ContainerStatuses {
		if st.Name == workload.RestoreContainer && (st.State.Running == nil || st.LastTerminationState.Terminated == nil) {
			t.Errorf("restore container after the restore: %+v", st)
		}
	}
	waitArchiverOf(t, k, ctl, ns, "db", "db", "db-0")
	t.Logf("MariaDB part: %s", time.Since(t0).Round(100*time.Millisecond))
	return &mariaState{ns: ns, repoURL: repoURL, orig: orig, dsnOf: dsnOf, markers: 150, password: password}
}

// mariaState is the MariaDB StatefulSet db of namespace ns that
// restoreMariaDBClone leaves running: its database (table markers holds
// 1..markers), and its repository.
type mariaState struct {
	ns, repoURL, password string
	orig                  *sql.DB
	dsnOf                 func(ip string) string
	markers               int
}

// quietSecond returns the start of a whole second in which nothing is
// written (it waits past it): a target there holds everything written
// before the call and nothing after it, whether the engine compares whole
// seconds (binlog event times) or exact times. A Restore's pointInTime has
// whole seconds.
func quietSecond() time.Time {
	target := secondBoundary()
	secondBoundary()
	return target
}

// waitArchived gives the sidecar's archiver time to store what was just
// written: it cuts a segment at most 500 ms after a commit. (`amber ls`
// computes recoverable windows for physical backups only, so there is no
// window to wait for with logical ones; a Restore whose target the
// archive does not reach yet fails, naming the window's end.)
func waitArchived() { time.Sleep(5 * time.Second) }

func openMy(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	waitFor(t, time.Minute, "MariaDB answers", func() bool { return db.Ping() == nil })
	return db
}

func myMarkers(t *testing.T, db *sql.DB) (n, max int) {
	t.Helper()
	if err := db.QueryRow(`SELECT count(*), coalesce(max(id), 0) FROM markers`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	return n, max
}
