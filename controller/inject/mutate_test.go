package inject

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/utils/ptr"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

func testPolicy() *amberv1.BackupPolicy {
	return &amberv1.BackupPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: "db"},
		Spec: amberv1.BackupPolicySpec{Engine: amberv1.EnginePostgres,
			Repository: amberv1.RepositorySpec{URL: "s3://bucket/pg", CredentialsSecret: amberv1.SecretRef{Name: "repo-creds"}}},
	}
}

func dbPod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pg-0", Namespace: "db", Annotations: annotations},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](999)},
			Containers: []corev1.Container{{Name: "postgres", Image: "postgres:15",
				VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/pg"}, {Name: "data", MountPath: "/var/lib/postgresql/data"}}}},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
				{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-pg-0"}}},
				{Name: "other", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "x"}}},
			},
		},
	}
}

func sidecarOf(t *testing.T, pod *corev1.Pod) *corev1.Container {
	t.Helper()
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == SidecarName {
			return &pod.Spec.InitContainers[i]
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == SidecarName {
			return &pod.Spec.Containers[i]
		}
	}
	t.Fatal("no sidecar injected")
	return nil
}

func mountOf(c *corev1.Container, volume string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volume {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func TestMutateNativeSidecar(t *testing.T) {
	pod := dbPod(map[string]string{AnnotationPolicy: "nightly"})
	if p := Mutate(pod, "db", testPolicy(), "amber-sidecar-pg-0", Config{Image: "amber:1", NativeSidecar: true}); p != nil {
		t.Fatal(p)
	}
	if len(pod.Spec.Containers) != 1 || len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("native sidecar must be an init container: %d containers, %d init containers", len(pod.Spec.Containers), len(pod.Spec.InitContainers))
	}
	c := sidecarOf(t, pod)
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatal("native sidecar without restartPolicy Always")
	}
	if !reflect.DeepEqual(c.Command, []string{"amber", "sidecar"}) || c.Image != "amber:1" {
		t.Fatalf("command %v image %s", c.Command, c.Image)
	}
	sc := c.SecurityContext
	if !*sc.RunAsNonRoot || *sc.RunAsUser != 999 || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
		!reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("security context %+v", sc)
	}
	m := mountOf(c, "data")
	if m == nil || m.MountPath != "/var/lib/postgresql/data" || !m.ReadOnly {
		t.Fatalf("data volume mount %+v: want the first PVC volume at the database's path, read-only", m)
	}
	if mountOf(c, "other") != nil {
		t.Fatal("mounted a second PVC volume")
	}
	if pod.Annotations[AnnotationIdentity] != "pg-0.db.sidecar.amber.dev" {
		t.Fatalf("identity annotation %q", pod.Annotations[AnnotationIdentity])
	}
	// Secrets reach the sidecar as mounted files only.
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Fatalf("env %s reads a Secret", e.Name)
		}
	}
	var secrets []string
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil {
			secrets = append(secrets, v.Secret.SecretName)
		}
	}
	if !reflect.DeepEqual(secrets, []string{"repo-creds", "amber-sidecar-pg-0"}) {
		t.Fatalf("secret volumes %v", secrets)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["AMBER_PASSWORD_FILE"] != PathRepository+"/password" || env["AMBER_ENGINE"] != "postgres" {
		t.Fatalf("env %v", env)
	}
	// Without amber.dev/data-dir, physical backups go over the network.
	if _, ok := env["AMBER_DATA_DIR"]; ok {
		t.Fatalf("AMBER_DATA_DIR set without %s: %v", AnnotationDataDir, env)
	}
}

func TestMutateRegularContainerBefore129(t *testing.T) {
	pod := dbPod(map[string]string{AnnotationPolicy: "nightly"})
	if p := Mutate(pod, "db", testPolicy(), "s", Config{Image: "amber:1"}); p != nil {
		t.Fatal(p)
	}
	if len(pod.Spec.Containers) != 2 || len(pod.Spec.InitContainers) != 0 || sidecarOf(t, pod).RestartPolicy != nil {
		t.Fatal("without native sidecars the sidecar must be a regular container")
	}
}

func TestMutateIdempotent(t *testing.T) {
	pod := dbPod(map[string]string{AnnotationPolicy: "nightly"})
	cfg := Config{Image: "amber:1", NativeSidecar: true}
	Mutate(pod, "db", testPolicy(), "s", cfg)
	once, _ := json.Marshal(pod)
	if p := Mutate(pod, "db", testPolicy(), "s", cfg); p != nil {
		t.Fatal(p)
	}
	twice, _ := json.Marshal(pod)
	if string(once) != string(twice) {
		t.Fatal("a second injection changed the pod")
	}
}

func TestMutateDataVolumeAnnotation(t *testing.T) {
	pod := dbPod(map[string]string{AnnotationPolicy: "nightly", AnnotationDataVolume: "other"})
	if p := Mutate(pod, "db", testPolicy(), "s", Config{Image: "i"}); p != nil {
		t.Fatal(p)
	}
	if m := mountOf(sidecarOf(t, pod), "other"); m == nil || m.MountPath != PathDataDefault {
		t.Fatalf("annotated data volume mount %+v: want it at %s (the database does not mount it)", m, PathDataDefault)
	}
}

func TestMutateProblems(t *testing.T) {
	tests := []struct {
		name   string
		ann    map[string]string
		reason string
	}{
		{"unknown data volume", map[string]string{AnnotationPolicy: "nightly", AnnotationDataVolume: "nope"}, "MalformedAnnotation"},
		{"unknown database container", map[string]string{AnnotationPolicy: "nightly", AnnotationDatabaseContainer: "nope"}, "MalformedAnnotation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := dbPod(tt.ann)
			before, _ := json.Marshal(pod)
			p := Mutate(pod, "db", testPolicy(), "s", Config{Image: "i"})
			if p == nil || p.Reason != tt.reason || !strings.Contains(p.Message, "nope") {
				t.Fatalf("problem %+v, want reason %s naming the value", p, tt.reason)
			}
			after, _ := json.Marshal(pod)
			if string(before) != string(after) {
				t.Fatal("pod changed despite the problem")
			}
		})
	}
	if _, _, p := PolicyName(dbPod(map[string]string{AnnotationPolicy: "Not_A Name"})); p == nil || p.Reason != "MalformedAnnotation" {
		t.Fatalf("malformed policy name: %+v", p)
	}
}

func TestMutateRootDatabase(t *testing.T) {
	pod := dbPod(map[string]string{AnnotationPolicy: "nightly"})
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To[int64](0)}
	Mutate(pod, "db", testPolicy(), "s", Config{Image: "i"})
	sc := sidecarOf(t, pod).SecurityContext
	if *sc.RunAsNonRoot || *sc.RunAsUser != 0 || !*sc.ReadOnlyRootFilesystem {
		t.Fatalf("a root database gets a root sidecar, still read-only: %+v", sc)
	}
}

func TestNativeSidecarSupported(t *testing.T) {
	for _, tt := range []struct {
		major, minor string
		want         bool
	}{{"1", "28", false}, {"1", "29", true}, {"1", "30+", true}, {"1", "34", true}, {"2", "0", true}, {"1", "x", false}} {
		if got := NativeSidecarSupported(&version.Info{Major: tt.major, Minor: tt.minor}); got != tt.want {
			t.Errorf("%s.%s: %v, want %v", tt.major, tt.minor, got, tt.want)
		}
	}
}

func TestParseSchedule(t *testing.T) {
	for _, ok := range []string{"30 2 * * *", "*/15 * * * 1-5", "@daily", "@every 6h"} {
		if _, err := ParseSchedule(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"61 * * * *", "* * * *", "@fortnightly", "0 25 * * *"} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestMutateCompression: a policy's spec.compression reaches the sidecar as
// AMBER_COMPRESSION (amber's --compression), and a policy without it leaves
// the variable unset, so the sidecar keeps amber's own default.
func TestMutateCompression(t *testing.T) {
	for _, tt := range []struct {
		comp   amberv1.Compression
		want   string
		wantOK bool
	}{
		{"", "", false},
		{amberv1.CompressionS2, "s2", true},
		{amberv1.CompressionBetter, "better", true},
	} {
		t.Run(string(tt.comp)+"_", func(t *testing.T) {
			pol := testPolicy()
			pol.Spec.Compression = tt.comp
			pod := dbPod(map[string]string{AnnotationPolicy: "nightly"})
			if p := Mutate(pod, "db", pol, "s", Config{Image: "amber:1", NativeSidecar: true}); p != nil {
				t.Fatal(p)
			}
			var got []string
			for _, e := range sidecarOf(t, pod).Env {
				if e.Name == "AMBER_COMPRESSION" {
					got = append(got, e.Value)
				}
			}
			switch {
			case !tt.wantOK && len(got) != 0:
				t.Fatalf("AMBER_COMPRESSION=%v for a policy without spec.compression", got)
			case tt.wantOK && (len(got) != 1 || got[0] != tt.want):
				t.Fatalf("AMBER_COMPRESSION %v, want exactly %q", got, tt.want)
			}
		})
	}
}
