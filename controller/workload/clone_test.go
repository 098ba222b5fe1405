package workload

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/sidecar/repo"
)

// exampleWorkload is docs/examples/postgres-statefulset.yaml's StatefulSet
// and ConfigMap as a captured workload, with a Service selecting its pods.
func exampleWorkload(t *testing.T) *repo.Workload {
	t.Helper()
	b, err := os.ReadFile("../../docs/examples/postgres-statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w := &repo.Workload{Kind: KindKubernetes, Namespace: "shop", Name: "pg", Engine: "postgres"}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			break
		}
		if len(raw) == 0 || strings.Contains(string(raw), `"BackupPolicy"`) {
			continue
		}
		w.Objects = append(w.Objects, raw)
	}
	svc := `{"apiVersion":"v1","kind":"Service","metadata":{"name":"pg-rw","namespace":"shop"},
		"spec":{"clusterIP":"10.0.0.7","clusterIPs":["10.0.0.7"],"selector":{"app":"pg"},"ports":[{"port":5432,"nodePort":30001}]}}`
	w.Objects = append(w.Objects, json.RawMessage(svc))
	return w
}

func TestBuildClone(t *testing.T) {
	w := exampleWorkload(t)
	c, err := BuildClone(w, CloneOptions{Name: "pg-copy", Namespace: "dr", Restore: "r1", Image: "amber:test", Engine: "postgres",
		RepoURL: "s3://b/pg", CredentialsSecret: "pg-backup", TargetArgs: []string{"--to-time", "2026-11-28T10:00:00Z"}, Description: "time x"})
	if err != nil {
		t.Fatal(err)
	}
	s := c.StatefulSet
	if s.Name != "pg-copy" || s.Namespace != "dr" || *s.Spec.Replicas != 1 || s.Spec.ServiceName != "pg-copy" ||
		s.Labels[LabelCloneOf] != "pg" || s.Labels[LabelRestore] != "r1" || s.Annotations[AnnotationTarget] != "time x" {
		t.Fatalf("clone StatefulSet meta/spec: %+v %+v", s.ObjectMeta, s.Spec)
	}
	tl := s.Spec.Template.Labels
	if tl["app"] != "pg-copy" || tl[inject.LabelInject] != "" || s.Spec.Template.Annotations[inject.AnnotationPolicy] != "" {
		t.Fatalf("clone pod labels %v annotations %v: want its own app label and no Amber opt-in", tl, s.Spec.Template.Annotations)
	}
	for k, v := range s.Spec.Selector.MatchLabels {
		if tl[k] != v {
			t.Fatalf("selector %v does not match the pod labels %v", s.Spec.Selector.MatchLabels, tl)
		}
	}
	if c.DataDir != "/data/pgdata" {
		t.Fatalf("data dir %q, want PGDATA /data/pgdata", c.DataDir)
	}
	ic := s.Spec.Template.Spec.InitContainers[0]
	if ic.Name != RestoreContainer || ic.Image != "amber:test" || !slices.Contains(ic.Args, "--to-time") ||
		!slices.Contains(ic.Args, "shop/pg") || !slices.Contains(ic.Args, "/data/pgdata") {
		t.Fatalf("restore init container: %+v", ic)
	}
	for _, e := range ic.Env {
		if strings.Contains(e.Value, "conformance") || e.ValueFrom != nil {
			t.Fatalf("init container env %+v carries a secret", e)
		}
	}
	db := s.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range db.Env {
		env[e.Name] = e.Value
	}
	if env[EnvCloneOf] != "pg" || env["AMBER_CREDENTIALS_DIR"] != pathStorageKeys {
		t.Fatalf("database container env %v", env)
	}
	for _, m := range db.VolumeMounts {
		if m.Name == inject.VolumeRepository {
			t.Fatal("the database container mounts the whole credentials Secret (with the password)")
		}
	}
	for _, v := range s.Spec.Template.Spec.Volumes {
		if v.Name == volStorageKeys {
			for _, it := range v.Secret.Items {
				if it.Key == "password" {
					t.Fatal("the storage keys volume holds the password")
				}
			}
		}
	}
	names := map[string]*corev1.Service{}
	for _, svc := range c.Services {
		names[svc.Name] = svc
	}
	rw := names["pg-copy-rw"]
	if rw == nil || names["pg-copy"] == nil || rw.Spec.Selector["app"] != "pg-copy" || rw.Spec.ClusterIP != "" || rw.Spec.Ports[0].NodePort != 0 {
		t.Fatalf("clone Services: %+v", c.Services)
	}
	if len(c.ConfigMaps) != 1 || c.ConfigMaps[0].Name != "pg-topology" || c.ConfigMaps[0].Namespace != "dr" {
		t.Fatalf("ConfigMaps to recreate: %+v", c.ConfigMaps)
	}
}

func TestReferences(t *testing.T) {
	ps := &corev1.PodSpec{
		Volumes: []corev1.Volume{{Name: "a", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm1"}}}},
			{Name: "b", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s1"}}}},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "pull"}},
		Containers: []corev1.Container{{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm2"}}}},
			Env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s2"}, Key: "k"}}}}}},
	}
	cms, secs := references(ps)
	if strings.Join(cms, ",") != "cm1,cm2" || strings.Join(secs, ",") != "pull,s1,s2" {
		t.Fatalf("references: %v %v", cms, secs)
	}
}

// TestBuildCloneLogical: a MariaDB clone gets an init container that
// installs amber and a container in the database's image that loads the
// backup into the clone's server through the credentials Secret's DSN.
func TestBuildCloneLogical(t *testing.T) {
	sts := `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db","namespace":"shop"},
		"spec":{"serviceName":"db","replicas":1,"selector":{"matchLabels":{"app":"db"}},
		"template":{"metadata":{"labels":{"app":"db","amber.dev/inject":"true"},"annotations":{"amber.dev/policy":"db"}},
		"spec":{"containers":[{"name":"mariadb","image":"mariadb:11","imagePullPolicy":"IfNotPresent",
			"securityContext":{"runAsUser":999},"volumeMounts":[{"name":"data","mountPath":"/var/lib/mysql"}]}]}},
		"volumeClaimTemplates":[{"metadata":{"name":"data"}}]}}`
	w := &repo.Workload{Kind: KindKubernetes, Namespace: "shop", Name: "db", Engine: "mysql", Objects: []json.RawMessage{json.RawMessage(sts)}}
	c, err := BuildClone(w, CloneOptions{Name: "db-copy", Namespace: "shop", Restore: "r1", Image: "amber:test", Engine: "mysql",
		RepoURL: "s3://b/db", CredentialsSecret: "db-backup", TargetArgs: []string{"--to-time", "2026-11-28T10:00:00Z"}, Logical: true, InDatabaseImage: true})
	if err != nil {
		t.Fatal(err)
	}
	ps := c.StatefulSet.Spec.Template.Spec
	if len(ps.InitContainers) != 1 || ps.InitContainers[0].Name != InstallContainer || ps.InitContainers[0].Image != "amber:test" ||
		!slices.Contains(ps.InitContainers[0].Args, "--install-to") {
		t.Fatalf("init containers: %+v", ps.InitContainers)
	}
	if len(ps.Containers) != 2 || ps.Containers[1].Name != RestoreContainer {
		t.Fatalf("containers: %+v", ps.Containers)
	}
	rc := ps.Containers[1]
	if rc.Image != "mariadb:11" || rc.Command[0] != pathBin+"/amber" || !slices.Contains(rc.Args, "--to-time") ||
		!slices.Contains(rc.Args, inject.PathRepository+"/"+inject.DSNKey) || !slices.Contains(rc.Args, "/var/lib/mysql/"+CloneMarker) ||
		*rc.SecurityContext.RunAsUser != 999 {
		t.Fatalf("restore container: %+v", rc)
	}
	for _, e := range rc.Env {
		if e.ValueFrom != nil {
			t.Fatalf("restore container env %+v carries a secret", e)
		}
	}
	db := ps.Containers[0]
	for _, m := range db.VolumeMounts {
		if m.Name == inject.VolumeRepository || m.Name == volBin {
			t.Fatalf("the database container mounts %s", m.Name)
		}
	}
	if len(db.Env) != 1 || db.Env[0].Name != EnvCloneOf {
		t.Fatalf("database container env %+v", db.Env)
	}
}

// TestBuildCloneFromSnapshots: a clone of a snapshot backup gets its claim
// template's VolumeSnapshot as dataSource (asking for at least its restore
// size), and its init container runs amber restore --snapshot-data on the
// data directory, with --skip-restored (a rerun does nothing); a template without a snapshot is
// refused, naming it.
func TestBuildCloneFromSnapshots(t *testing.T) {
	w := exampleWorkload(t)
	o := CloneOptions{Name: "pg-copy", Namespace: "shop", Restore: "r1", Image: "amber:test", Engine: "postgres",
		RepoURL: "s3://b/pg", CredentialsSecret: "pg-backup", TargetArgs: []string{"--backup", "abc", "--to-time", "2026-11-28T10:00:00Z"},
		Snapshots: map[string]SnapshotSource{"data": {Name: "snap1-data", RestoreSize: 5 << 30}}}
	c, err := BuildClone(w, o)
	if err != nil {
		t.Fatal(err)
	}
	tpl := c.StatefulSet.Spec.VolumeClaimTemplates[0]
	ds := tpl.Spec.DataSource
	if ds == nil || ds.Kind != "VolumeSnapshot" || ds.Name != "snap1-data" || ds.APIGroup == nil || *ds.APIGroup != "snapshot.storage.k8s.io" {
		t.Fatalf("claim template %s dataSource %+v", tpl.Name, ds)
	}
	if q := tpl.Spec.Resources.Requests[corev1.ResourceStorage]; q.Value() != 5<<30 {
		t.Fatalf("claim template asks for %s; want the snapshot's restore size 5Gi", q.String())
	}
	ic := c.StatefulSet.Spec.Template.Spec.InitContainers[0]
	if ic.Name != RestoreContainer || !slices.Contains(ic.Args, "--snapshot-data") || !slices.Contains(ic.Args, "--skip-restored") ||
		!slices.Contains(ic.Args, "/data/pgdata") || !slices.Contains(ic.Args, "--to-time") {
		t.Fatalf("restore init container args %v", ic.Args)
	}
	// The original's workload is not changed: a second build from it is
	// a normal physical clone.
	o.Snapshots = nil
	plain, err := BuildClone(w, o)
	if err != nil {
		t.Fatal(err)
	}
	if plain.StatefulSet.Spec.VolumeClaimTemplates[0].Spec.DataSource != nil {
		t.Fatal("a clone without snapshots got a dataSource")
	}

	o.Snapshots = map[string]SnapshotSource{"wal": {Name: "snap1-wal"}}
	if _, err := BuildClone(w, o); err == nil || !strings.Contains(err.Error(), `claim template "data"`) {
		t.Fatalf("a template without a snapshot: %v", err)
	}
}

// mariadbWorkload is a MariaDB StatefulSet as captured: its data
// directory /data/mysql inside the data volume mounted at /data.
const mariadbWorkload = `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db","namespace":"mshop"},
 "spec":{"serviceName":"db","selector":{"matchLabels":{"app":"db"}},"template":{"metadata":{"labels":{"app":"db"},
 "annotations":{"amber.dev/policy":"db"}},"spec":{"securityContext":{"runAsUser":999},"containers":[{"name":"mariadb","image":"mariadb:test",
 "imagePullPolicy":"Never","volumeMounts":[{"name":"data","mountPath":"/data"}]}]}},
 "volumeClaimTemplates":[{"metadata":{"name":"data"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}]}}`

// TestBuildCloneMySQLDataDir: a clone of a MySQL physical (or snapshot)
// backup restores into the source's data directory before the server
// starts: an init container of amber's image copies amber in, and the
// restore init container runs it in the database's image (where
// mariadb-backup and mariadbd are), on the recorded data directory; a
// data directory outside the data volume is refused, naming it.
func TestBuildCloneMySQLDataDir(t *testing.T) {
	w := &repo.Workload{Kind: KindKubernetes, Namespace: "mshop", Name: "db", Engine: "mysql", Objects: []json.RawMessage{json.RawMessage(mariadbWorkload)}}
	o := CloneOptions{Name: "db-copy", Namespace: "mshop", Restore: "r1", Image: "amber:test", Engine: "mysql", RepoURL: "s3://b/db",
		CredentialsSecret: "db-backup", TargetArgs: []string{"--backup", "abc", "--to-time", "2026-11-28T10:00:00Z"},
		InDatabaseImage: true, DataDir: "/data/mysql/"}
	for _, snap := range []bool{false, true} {
		o.Snapshots = nil
		if snap {
			o.Snapshots = map[string]SnapshotSource{"data": {Name: "snap1-data"}}
		}
		c, err := BuildClone(w, o)
		if err != nil {
			t.Fatal(err)
		}
		ps := c.StatefulSet.Spec.Template.Spec
		if len(ps.InitContainers) != 2 || len(ps.Containers) != 1 {
			t.Fatalf("snapshot %v: init containers %d, containers %d; want install and restore before the one database container", snap, len(ps.InitContainers), len(ps.Containers))
		}
		in, rc := ps.InitContainers[0], ps.InitContainers[1]
		if in.Name != InstallContainer || in.Image != "amber:test" || !slices.Contains(in.Args, "--install-to") {
			t.Fatalf("install container %+v", in)
		}
		args := strings.Join(rc.Args, " ")
		if rc.Name != RestoreContainer || rc.Image != "mariadb:test" || rc.ImagePullPolicy != corev1.PullNever || rc.Command[0] != pathBin+"/amber" ||
			!strings.Contains(args, "--data-dir /data/mysql ") || !strings.Contains(args, "--backup abc --to-time 2026-11-28T10:00:00Z") ||
			!slices.Contains(rc.Args, "--skip-restored") || slices.Contains(rc.Args, "--install-to") || slices.Contains(rc.Args, "--snapshot-data") != snap {
			t.Fatalf("snapshot %v: restore init container %s %s %v", snap, rc.Image, rc.Command, rc.Args)
		}
		if c.DataDir != "/data/mysql" {
			t.Fatalf("data dir %q", c.DataDir)
		}
		if ds := c.StatefulSet.Spec.VolumeClaimTemplates[0].Spec.DataSource; (ds != nil) != snap {
			t.Fatalf("snapshot %v: claim dataSource %+v", snap, ds)
		}
	}
	o.DataDir = "/var/lib/mysql"
	if _, err := BuildClone(w, o); err == nil || !strings.Contains(err.Error(), "/var/lib/mysql is not in the data volume") {
		t.Fatalf("a data directory outside the volume: %v", err)
	}
}
