package inject

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/certs"
)

func envOf(c *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}

func TestMutateDataDir(t *testing.T) {
	tests := []struct {
		name    string
		dir     string
		mounts  []corev1.VolumeMount // the database container's; default dbPod's
		wantDir string
		want    corev1.VolumeMount // the sidecar's mount of the data volume
	}{
		{name: "a directory inside the volume", dir: "/var/lib/postgresql/data/pgdata", wantDir: "/var/lib/postgresql/data/pgdata",
			want: corev1.VolumeMount{Name: "data", MountPath: "/var/lib/postgresql/data", ReadOnly: true}},
		{name: "the mount itself, cleaned", dir: "/var/lib/postgresql/data/", wantDir: "/var/lib/postgresql/data",
			want: corev1.VolumeMount{Name: "data", MountPath: "/var/lib/postgresql/data", ReadOnly: true}},
		{name: "the deepest mount wins", dir: "/var/lib/postgresql/data/pgdata",
			mounts:  []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/postgresql"}, {Name: "other", MountPath: "/var/lib/postgresql/data"}},
			wantDir: "/var/lib/postgresql/data/pgdata", want: corev1.VolumeMount{Name: "other", MountPath: "/var/lib/postgresql/data", ReadOnly: true}},
		{name: "a subPath mount is copied", dir: "/pg/15/main",
			mounts:  []corev1.VolumeMount{{Name: "data", MountPath: "/pg", SubPath: "cluster-a", ReadOnly: false}},
			wantDir: "/pg/15/main", want: corev1.VolumeMount{Name: "data", MountPath: "/pg", SubPath: "cluster-a", ReadOnly: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := dbPod(map[string]string{AnnotationPolicy: "nightly", AnnotationDataDir: tt.dir})
			if tt.mounts != nil {
				pod.Spec.Containers[0].VolumeMounts = tt.mounts
			}
			if p := Mutate(pod, "db", testPolicy(), "s", Config{Image: "amber:1", NativeSidecar: true}); p != nil {
				t.Fatal(p)
			}
			c := sidecarOf(t, pod)
			if got := envOf(c)["AMBER_DATA_DIR"]; got != tt.wantDir {
				t.Fatalf("AMBER_DATA_DIR = %q, want %q", got, tt.wantDir)
			}
			var data []corev1.VolumeMount
			for _, m := range c.VolumeMounts {
				if m.Name == "data" || m.Name == "other" {
					data = append(data, m)
				}
			}
			if len(data) != 1 || data[0] != tt.want {
				t.Fatalf("data mounts %+v, want only %+v", data, tt.want)
			}
			if sc := c.SecurityContext; sc.RunAsUser == nil || *sc.RunAsUser != 999 {
				t.Fatalf("sidecar runs as %v, want the database's uid 999 to read the data directory", sc.RunAsUser)
			}
			if w := Warnings(pod); len(w) != 0 {
				t.Fatalf("warnings %v for a database with a known user", w)
			}
		})
	}
}

func TestMutateDataDirProblems(t *testing.T) {
	tests := []struct {
		name, dir, want string
		ann             map[string]string
		mounts          []corev1.VolumeMount
	}{
		{name: "relative", dir: "pgdata", want: "not an absolute path"},
		{name: "empty", dir: "", want: "not an absolute path"},
		{name: "dot-dot", dir: "/var/lib/postgresql/data/../../../etc", want: "not an absolute path"},
		{name: "newline", dir: "/var/lib/postgresql/data\n", want: "not an absolute path"},
		{name: "on no volume", dir: "/srv/pgdata", want: "on none of the volumes container postgres mounts"},
		{name: "beside the mount", dir: "/var/lib/postgresql/database", want: "on none of the volumes"},
		{name: "another volume than amber.dev/data-volume", dir: "/var/lib/postgresql/data/pgdata",
			ann: map[string]string{AnnotationDataVolume: "other"}, want: `names volume "other"`},
		{name: "a volume where the sidecar mounts its own", dir: "/tmp/pgdata",
			mounts: []corev1.VolumeMount{{Name: "data", MountPath: "/tmp"}}, want: "where the sidecar mounts its own"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ann := map[string]string{AnnotationPolicy: "nightly", AnnotationDataDir: tt.dir}
			for k, v := range tt.ann {
				ann[k] = v
			}
			pod := dbPod(ann)
			if tt.mounts != nil {
				pod.Spec.Containers[0].VolumeMounts = tt.mounts
			}
			before, _ := json.Marshal(pod)
			p := Mutate(pod, "db", testPolicy(), "s", Config{Image: "i"})
			if p == nil || p.Reason != "MalformedAnnotation" || !strings.Contains(p.Message, AnnotationDataDir) || !strings.Contains(p.Message, tt.want) {
				t.Fatalf("problem %+v, want MalformedAnnotation naming %s and saying %q", p, AnnotationDataDir, tt.want)
			}
			after, _ := json.Marshal(pod)
			if string(before) != string(after) {
				t.Fatal("pod changed despite the problem")
			}
			t.Logf("%s", p.Message)
		})
	}
}

// TestHandleDataDirUnknownUser: a data directory with no runAsUser to copy
// still injects, with an admission warning and a Warning Event that say
// what to set.
func TestHandleDataDirUnknownUser(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := amberv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	k8s := fake.NewClientBuilder().WithScheme(scheme).WithObjects(testPolicy()).Build()
	ca, err := certs.NewAuthority(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rec := record.NewFakeRecorder(10)
	in := &Injector{Client: k8s, Recorder: rec, Authority: ca, Config: Config{Image: "amber:1", NativeSidecar: true}}

	for _, tt := range []struct {
		name string
		uid  *int64
		warn bool
	}{{"no runAsUser", nil, true}, {"runAsUser 999", ptr.To[int64](999), false}} {
		t.Run(tt.name, func(t *testing.T) {
			pod := dbPod(map[string]string{AnnotationPolicy: "nightly", AnnotationDataDir: "/var/lib/postgresql/data/pgdata"})
			pod.Spec.SecurityContext.RunAsUser = tt.uid
			raw, _ := json.Marshal(pod)
			resp := in.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Namespace: "db", Object: runtime.RawExtension{Raw: raw}}})
			if !resp.Allowed || len(resp.Patches) == 0 {
				t.Fatalf("response %+v: want the pod injected", resp.Result)
			}
			if !tt.warn {
				if len(resp.Warnings) != 0 {
					t.Fatalf("warnings %v", resp.Warnings)
				}
				return
			}
			if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "runAsUser") || !strings.Contains(resp.Warnings[0], AnnotationDataDir) {
				t.Fatalf("warnings %v, want one naming runAsUser and %s", resp.Warnings, AnnotationDataDir)
			}
			select {
			case ev := <-rec.Events:
				if !strings.HasPrefix(ev, "Warning DataDirUser ") || !strings.Contains(ev, "runAsUser") {
					t.Fatalf("event %q", ev)
				}
			default:
				t.Fatal("no Warning Event")
			}
		})
	}
}

// TestMutatePolicyDataDir: a policy's spec.dataDir is the data directory
// of its pods without the amber.dev/data-dir annotation; the annotation
// wins; a policy's directory on no volume leaves the pod uninjected with a
// problem naming the policy and the annotation that overrides it.
func TestMutatePolicyDataDir(t *testing.T) {
	pol := testPolicy()
	pol.Spec.DataDir = "/var/lib/postgresql/data/pgdata"
	for _, tt := range []struct {
		name, ann, policyDir, want string
	}{
		{"the policy's default", "", "/var/lib/postgresql/data/pgdata", "/var/lib/postgresql/data/pgdata"},
		{"the annotation wins", "/var/lib/postgresql/data/other", "/var/lib/postgresql/data/pgdata", "/var/lib/postgresql/data/other"},
		{"neither", "", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ann := map[string]string{AnnotationPolicy: "nightly"}
			if tt.ann != "" {
				ann[AnnotationDataDir] = tt.ann
			}
			pol := testPolicy()
			pol.Spec.DataDir = tt.policyDir
			pod := dbPod(ann)
			if p := Mutate(pod, "db", pol, "s", Config{Image: "amber:1", NativeSidecar: true}); p != nil {
				t.Fatal(p)
			}
			c := sidecarOf(t, pod)
			got, ok := envOf(c)["AMBER_DATA_DIR"]
			if got != tt.want || ok != (tt.want != "") {
				t.Fatalf("AMBER_DATA_DIR = %q (set %v), want %q", got, ok, tt.want)
			}
			if tt.want != "" && !slices.Contains(c.VolumeMounts, corev1.VolumeMount{Name: "data", MountPath: "/var/lib/postgresql/data", ReadOnly: true}) {
				t.Fatalf("data volume not mounted read-only: %+v", c.VolumeMounts)
			}
		})
	}
	pol.Spec.DataDir = "/srv/pgdata"
	pod := dbPod(map[string]string{AnnotationPolicy: "nightly"})
	p := Mutate(pod, "db", pol, "s", Config{Image: "amber:1"})
	if p == nil || p.Reason != "PolicyDataDir" || !strings.Contains(p.Message, "BackupPolicy nightly's spec.dataDir") ||
		!strings.Contains(p.Message, "on none of the volumes") || !strings.Contains(p.Message, AnnotationDataDir) {
		t.Fatalf("problem %+v; want PolicyDataDir naming the policy, the cause and the annotation", p)
	}
}

// TestValidatePolicyDataDir: the policy webhook refuses a spec.dataDir
// that is relative, not clean or holds control characters, saying what
// to write.
func TestValidatePolicyDataDir(t *testing.T) {
	for _, tt := range []struct{ dir, want string }{
		{"/var/lib/postgresql/data/pgdata", ""},
		{"/", ""},
		{"pgdata", "not an absolute path"},
		{"/var/lib/postgresql/data/", "write /var/lib/postgresql/data"},
		{"/var/lib//pg", "write /var/lib/pg"},
		{"/var/lib/pg/../other", "write /var/lib/other"},
		{"/var/lib/pg\n", "control characters"},
	} {
		t.Run(tt.dir, func(t *testing.T) {
			pol := testPolicy()
			pol.Spec.DataDir = tt.dir
			_, err := validatePolicy(pol)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "spec.dataDir")):
				t.Fatalf("error %v; want one naming spec.dataDir and saying %q", err, tt.want)
			}
		})
	}
}
