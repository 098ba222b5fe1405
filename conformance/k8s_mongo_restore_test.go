package conformance_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

// ferretdbManifests is a one-replica StatefulSet of the test bed's MongoDB
// wire-protocol server (FerretDB, SQLite; no mongod can be installed
// here) that opts in to Amber with a BackupPolicy of logical backups and
// archived oplog.
const ferretdbManifests = `
apiVersion: amber.dev/v1alpha1
kind: BackupPolicy
metadata: {name: mg, namespace: ${NS}}
spec:
  engine: mongodb
  repository:
    url: ${REPO}
    credentialsSecret: {name: mg-backup}
  schedule: "@daily"
  suspend: true
  mode: logical
  archive: true
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: mg, namespace: ${NS}}
spec:
  serviceName: mg
  replicas: 1
  selector:
    matchLabels: {app: mg}
  template:
    metadata:
      labels: {app: mg, amber.dev/inject: "true"}
      annotations: {amber.dev/policy: mg}
    spec:
      terminationGracePeriodSeconds: 10
      securityContext: {runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}
      containers:
        - name: ferretdb
          image: ${IMAGE}
          imagePullPolicy: IfNotPresent
          command: [/usr/local/bin/ferretdb-testbed, -listen, "0.0.0.0:27017", -dir, /data/db]
          ports:
            - {name: mongodb, containerPort: 27017}
          volumeMounts:
            - {name: data, mountPath: /data}
          readinessProbe:
            tcpSocket: {port: 27017}
            periodSeconds: 2
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: amber-local
        resources: {requests: {storage: 1Gi}}
`

// restoreMongoClone: the same as restoreMariaDBClone for MongoDB: logical
// backup and archived oplog, a Restore to a point in time, and the
// clone's restore container (amber's image: the plugin needs no client
// programs) loading and replaying into the clone's running server.
func restoreMongoClone(t *testing.T, bed *restoreBed) {
	t0 := time.Now()
	c, k, ctl, m := bed.c, bed.k, bed.ctl, bed.m
	image, tarball := testbed.BuildFerretDBImage(t, bed.images)
	c.LoadImage(t, tarball)
	bucket := m.CreateBucket(t, "amber-restore-mongodb")
	repoURL := fmt.Sprintf("s3://%s/mg?endpoint=http://%s", bucket, m.Endpoint)
	cli := &amberEnv{t: t, bin: bins(t), repo: repoURL}
	cli.run("repo", "init")
	ctx := context.Background()

	const ns = "mgshop"
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := k.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mg-backup", Namespace: ns}, StringData: map[string]string{
		"password":              "conformance",
		"dsn":                   "mongodb://127.0.0.1:27017/app",
		"AWS_ACCESS_KEY_ID":     m.AccessKey,
		"AWS_SECRET_ACCESS_KEY": m.SecretKey,
	}}); err != nil {
		t.Fatal(err)
	}
	manifests := strings.NewReplacer("${NS}", ns, "${REPO}", repoURL, "${IMAGE}", image).Replace(ferretdbManifests)
	if err := c.Apply(ctx, []byte(manifests)); err != nil {
		t.Fatalf("apply the FerretDB StatefulSet: %v\ncontroller log:\n%s", err, ctl.log())
	}
	mg0 := waitReady(t, c, ctl, ns, "mg-0", 3*time.Minute)
	uriOf := func(ip string) string { return "mongodb://" + ip + ":27017/" }
	orig := mongoClient(t, uriOf(mg0.Status.PodIP))
	// FerretDB writes its oplog emulation once local.oplog.rs exists.
	if err := orig.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(16<<20)); err != nil {
		t.Fatal(err)
	}
	markers := orig.Database("app").Collection("markers")
	if _, err := markers.InsertOne(ctx, bson.D{{Key: "_id", Value: 0}}); err != nil {
		t.Fatal(err)
	}
	waitArchiverOf(t, k, ctl, ns, "mg", "mg", "mg-0")
	t.Logf("FerretDB StatefulSet up and archiving: %s", time.Since(t0).Round(100*time.Millisecond))
	mark := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := markers.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
				t.Fatalf("marker %d: %v", i, err)
			}
		}
	}
	mark(1, 50)
	runBackup(t, k, ctl, ns, "mg", "first", ctl.logDiag)
	mark(51, 100)
	target := quietSecond()
	mark(101, 150)
	waitArchived()

	r := &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Name: "r1", Namespace: ns}, Spec: amberv1.RestoreSpec{
		PolicyRef: &amberv1.LocalRef{Name: "mg"}, SourceStatefulSet: "mg", PointInTime: &metav1.Time{Time: target}}}
	if err := k.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	r = waitRestore(t, c, k, ctl, r, 4*time.Minute)
	logRestore(t, r)
	var pod corev1.Pod
	if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Status.CloneName + "-0"}, &pod); err != nil {
		t.Fatal(err)
	}
	clone := mongoClient(t, uriOf(pod.Status.PodIP)).Database("app").Collection("markers")
	if n, max := mongoMarkers(t, clone); n != 101 || max != 100 {
		t.Fatalf("the clone holds %d markers, highest %d; want exactly 0..100", n, max)
	}
	t.Log("the clone holds exactly markers 0..100")
	if n, max := mongoMarkers(t, markers); n != 151 || max != 150 {
		t.Fatalf("the original holds %d markers (highest %d) after the restore; want 0..150", n, max)
	}
	checkClone(t, k, ns, r.Status.CloneName, "mg")
	if p := r.Status.PointReached; p == nil || p.Time == nil || !p.Time.Equal(&metav1.Time{Time: target}) {
		t.Errorf("Restore r1: point reached %+v; want %s", p, target)
	}
	t.Logf("MongoDB part: %s", time.Since(t0).Round(100*time.Millisecond))
}

func mongoMarkers(t *testing.T, c *mongo.Collection) (n, max int) {
	t.Helper()
	ctx := context.Background()
	cur, err := c.Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		var d struct {
			ID int `bson:"_id"`
		}
		if err := cur.Decode(&d); err != nil {
			t.Fatal(err)
		}
		n++
		if d.ID > max {
			max = d.ID
		}
	}
	if err := cur.Err(); err != nil {
		t.Fatal(err)
	}
	return n, max
}
