package app_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/app"
	"github.com/amber-backup/amber/controller/certs"
	"github.com/amber-backup/amber/controller/controllers"
	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/controller/internal/k8stest"
	"github.com/amber-backup/amber/controller/kubectl"
	"github.com/amber-backup/amber/controller/sidecarapi"
	"github.com/amber-backup/amber/controller/sidecarapi/sidecardouble"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/file"
)

// One apiserver and one controller serve every test here; each test works
// in its own namespace.
var (
	skipReason string
	cfg        *rest.Config
	k8s        client.Client
	fake       = clock.NewFake(time.Now().Truncate(time.Second))
	// sidecars is the TEST DOUBLE of the sidecar API (see sidecardouble).
	sidecars    = sidecardouble.New()
	webhookPort int
	stopCtrl    func() error
	baseOpts    app.Options
)

const controllerNS = "amber-system"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	assets, why := k8stest.AssetsDir()
	if assets == "" {
		skipReason = why
		return m.Run()
	}
	port, err := freePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	webhookPort = port
	url := func(path string) admissionregistrationv1.WebhookClientConfig {
		u := fmt.Sprintf("https://127.0.0.1:%d%s", port, path)
		return admissionregistrationv1.WebhookClientConfig{URL: &u}
	}
	env, c, err := k8stest.Start(assets, envtest.WebhookInstallOptions{
		LocalServingHost:   "127.0.0.1",
		LocalServingPort:   port,
		MutatingWebhooks:   []*admissionregistrationv1.MutatingWebhookConfiguration{inject.MutatingWebhookConfiguration(url(inject.Path))},
		ValidatingWebhooks: []*admissionregistrationv1.ValidatingWebhookConfiguration{inject.ValidatingWebhookConfiguration(url(inject.ValidatePolicyPath))},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		return 1
	}
	defer env.Stop()
	cfg = c
	if k8s, err = client.New(cfg, client.Options{Scheme: app.Scheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controllerNS}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	certDir, err := os.MkdirTemp("", "amber-controller-certs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(certDir)
	baseOpts = app.Options{
		Namespace:        controllerNS,
		CASecret:         "amber-ca",
		Sidecar:          inject.Config{Image: "amber:test"},
		WebhookHost:      "127.0.0.1",
		WebhookPort:      port,
		CertDir:          certDir,
		ServingNames:     []string{"127.0.0.1"},
		MutatingConfig:   inject.MutatingConfigName,
		ValidatingConfig: inject.ValidatingConfigName,
		LeaderElection:   true,
		LeaderElectionID: "amber-controller-test",
		Dialer:           sidecars,
		Clock:            fake,
		ArchiveInterval:  time.Minute,
		Restartable:      true,
		Logger:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if err := startController(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if err := stopCtrl(); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
	}
	return code
}

// startController runs app.Run and waits until its webhook answers.
func startController() error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, baseOpts) }()
	stopCtrl = func() error {
		cancel()
		select {
		case err := <-done:
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		case <-time.After(30 * time.Second):
			return errors.New("controller did not stop within 30s")
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			stopCtrl = func() error { return nil }
			return fmt.Errorf("controller exited: %w", err)
		default:
		}
		// A full handshake (not a bare connect), so the server logs no
		// handshake error; the server's certificate is not checked here.
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: &tls.Config{InsecureSkipVerify: true}}
		if c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", webhookPort)); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("webhook server did not listen within 30s")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func needEnv(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		testbed.Skip(t, "%s", skipReason)
	}
}

// namespace creates a namespace for t (with the default ServiceAccount
// pods need, as no controller-manager runs here).
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-")
	ctx := context.Background()
	must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}))
	must(t, k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}}))
	return name
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// eventually polls f for up to 30s of real time (the API server's and the
// controller's work, not the schedule's clock).
func eventually(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := f()
		if ok {
			return
		}
		last = state
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last: %s", what, last)
}

func policy(ns, name string, mutate func(*amberv1.BackupPolicy)) *amberv1.BackupPolicy {
	p := &amberv1.BackupPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: amberv1.BackupPolicySpec{
			Engine:     amberv1.EnginePostgres,
			Repository: amberv1.RepositorySpec{URL: "s3://bucket/pg", CredentialsSecret: amberv1.SecretRef{Name: "repo-creds"}},
		},
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

func dbPod(ns, name string, labels, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](999)},
			Containers: []corev1.Container{{Name: "postgres", Image: "postgres:15",
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/postgresql/data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-" + name}}}},
		},
	}
}

var optIn = map[string]string{inject.LabelInject: "true"}

func sidecarIn(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == inject.SidecarName {
			return &pod.Spec.InitContainers[i]
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == inject.SidecarName {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

func warningEvent(t *testing.T, ns, object, reason string) func() (bool, string) {
	return func() (bool, string) {
		var evs corev1.EventList
		if err := k8s.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == object && e.Reason == reason && e.Type == corev1.EventTypeWarning {
				return true, ""
			}
			seen = append(seen, e.InvolvedObject.Name+":"+e.Reason)
		}
		return false, fmt.Sprintf("events %v", seen)
	}
}

func TestCRDValidation(t *testing.T) {
	needEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	tests := []struct {
		name  string
		obj   client.Object
		inMsg string
	}{
		{"unknown engine", policy(ns, "bad-engine", func(p *amberv1.BackupPolicy) { p.Spec.Engine = "oracle" }), "spec.engine"},
		{"URL without a scheme", policy(ns, "bad-url", func(p *amberv1.BackupPolicy) { p.Spec.Repository.URL = "bucket/prefix" }), "spec.repository.url"},
		{"unknown URL scheme", policy(ns, "bad-url2", func(p *amberv1.BackupPolicy) { p.Spec.Repository.URL = "ftp://host/x" }), "spec.repository.url"},
		{"schedule not cron-shaped (apiserver)", policy(ns, "bad-cron", func(p *amberv1.BackupPolicy) { p.Spec.Schedule = "every night" }), "spec.schedule"},
		{"schedule out of range (webhook)", policy(ns, "bad-cron2", func(p *amberv1.BackupPolicy) { p.Spec.Schedule = "61 * * * *" }), "use five cron fields"},
		{"bad replica preference", policy(ns, "bad-pref", func(p *amberv1.BackupPolicy) { p.Spec.Replica.Preference = "fastest" }), "spec.replica.preference"},
		{"restore with time and position", &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "both"},
			Spec: amberv1.RestoreSpec{PolicyRef: &amberv1.LocalRef{Name: "p"}, SourceStatefulSet: "db", Position: "0/3000060", PointInTime: &metav1.Time{Time: time.Now()}}},
			"at most one of pointInTime and position"},
		{"drill with a bad target", policy(ns, "bad-drill", func(p *amberv1.BackupPolicy) {
			p.Spec.Drills = &amberv1.DrillSpec{Schedule: "@daily", Target: "someday"}
		}), "spec.drills.target"},
		{"unknown compression", policy(ns, "bad-compression", func(p *amberv1.BackupPolicy) { p.Spec.Compression = "lz4" }), "spec.compression"},
		{"relative dataDir (apiserver)", policy(ns, "bad-datadir", func(p *amberv1.BackupPolicy) { p.Spec.DataDir = "pgdata" }), "spec.dataDir"},
		{"dataDir not clean (apiserver)", policy(ns, "bad-datadir2", func(p *amberv1.BackupPolicy) { p.Spec.DataDir = "/var/lib/pg/../other" }), "clean absolute path"},
		{"restore without a repository", &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "norepo"},
			Spec: amberv1.RestoreSpec{SourceStatefulSet: "db", BackupID: "x"}}, "exactly one of policyRef and repository"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := k8s.Create(ctx, tt.obj)
			if err == nil {
				t.Fatal("accepted")
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) && !strings.Contains(err.Error(), "denied") {
				t.Fatalf("refused for another reason: %v", err)
			}
			if !strings.Contains(err.Error(), tt.inMsg) {
				t.Fatalf("error %q does not mention %q", err, tt.inMsg)
			}
		})
	}
	good := policy(ns, "good", func(p *amberv1.BackupPolicy) { p.Spec.Schedule = "30 2 * * *" })
	must(t, k8s.Create(ctx, good))
	if good.Spec.Mode != amberv1.ModePhysical || good.Spec.Replica.Preference != amberv1.PreferStandby ||
		good.Spec.Repository.CredentialsSecret.PasswordKey != "password" {
		t.Fatalf("defaults not applied: %+v", good.Spec)
	}
	must(t, k8s.Create(ctx, policy(ns, "descriptor", func(p *amberv1.BackupPolicy) { p.Spec.Schedule = "@every 6h" })))
	// A backup to start from and a target to recover to.
	must(t, k8s.Create(ctx, &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backup-and-time"},
		Spec: amberv1.RestoreSpec{PolicyRef: &amberv1.LocalRef{Name: "p"}, SourceStatefulSet: "db", BackupID: "x", PointInTime: &metav1.Time{Time: time.Now()}}}))
}

func TestWebhookInjects(t *testing.T) {
	needEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, policy(ns, "nightly", nil)))

	pod := dbPod(ns, "pg-0", optIn, map[string]string{inject.AnnotationPolicy: "nightly"})
	must(t, k8s.Create(ctx, pod))
	sc := sidecarIn(pod)
	if sc == nil {
		t.Fatal("annotated pod was not injected")
	}
	// The apiserver is 1.29+, so the sidecar is native.
	if len(pod.Spec.InitContainers) != 1 || sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("want a native sidecar (init container, restartPolicy Always); init containers %d", len(pod.Spec.InitContainers))
	}
	if sc.Image != "amber:test" || strings.Join(sc.Command, " ") != "amber sidecar" {
		t.Fatalf("image %q command %v", sc.Image, sc.Command)
	}
	if s := sc.SecurityContext; !*s.RunAsNonRoot || !*s.ReadOnlyRootFilesystem || *s.AllowPrivilegeEscalation || s.Capabilities.Drop[0] != "ALL" {
		t.Fatalf("security context %+v", s)
	}
	dataMounted := false
	for _, m := range sc.VolumeMounts {
		if m.Name == "data" && m.MountPath == "/var/lib/postgresql/data" {
			dataMounted = true
		}
	}
	if !dataMounted {
		t.Fatalf("data volume not mounted where the database has it: %+v", sc.VolumeMounts)
	}
	// The pod's certificate Secret exists, issued by the controller's CA
	// for the pod's identity, and the CA is the one in the webhook config.
	var tlsSecret corev1.Secret
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: certs.SidecarSecretName("pg-0")}, &tlsSecret))
	var ca corev1.Secret
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: controllerNS, Name: "amber-ca"}, &ca))
	if string(tlsSecret.Data[certs.KeyCA]) != string(ca.Data[certs.KeyCert]) || len(tlsSecret.Data[certs.KeyKey]) == 0 {
		t.Fatal("sidecar Secret does not carry the controller's CA and a key")
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	must(t, k8s.Get(ctx, types.NamespacedName{Name: inject.MutatingConfigName}, &mwc))
	if string(mwc.Webhooks[0].ClientConfig.CABundle) != string(ca.Data[certs.KeyCert]) {
		t.Fatal("caBundle in the MutatingWebhookConfiguration is not the controller's CA")
	}
	if pod.Annotations[inject.AnnotationIdentity] != certs.SidecarIdentity(ns, "pg-0") {
		t.Fatalf("identity annotation %q", pod.Annotations[inject.AnnotationIdentity])
	}

	t.Run("idempotent", func(t *testing.T) {
		again := dbPod(ns, "pg-0-again", optIn, pod.Annotations)
		again.Spec = *pod.Spec.DeepCopy()
		again.Spec.NodeName = ""
		must(t, k8s.Create(ctx, again))
		if len(again.Spec.InitContainers) != len(pod.Spec.InitContainers) || len(again.Spec.Containers) != len(pod.Spec.Containers) ||
			len(again.Spec.Volumes) != len(pod.Spec.Volumes) {
			t.Fatalf("an injected pod was changed: %d/%d init containers, %d/%d volumes",
				len(again.Spec.InitContainers), len(pod.Spec.InitContainers), len(again.Spec.Volumes), len(pod.Spec.Volumes))
		}
		if again.Annotations[inject.AnnotationIdentity] != certs.SidecarIdentity(ns, "pg-0") {
			t.Fatal("annotations of an injected pod were rewritten")
		}
	})
	// A policy's spec.dataDir is the data directory of its pods without
	// the amber.dev/data-dir annotation; the annotation wins.
	must(t, k8s.Create(ctx, policy(ns, "files", func(p *amberv1.BackupPolicy) { p.Spec.DataDir = "/var/lib/postgresql/data/pgdata" })))
	for _, tt := range []struct{ pod, ann, want string }{
		{"policy-datadir", "", "/var/lib/postgresql/data/pgdata"},
		{"annotation-datadir", "/var/lib/postgresql/data/main", "/var/lib/postgresql/data/main"},
	} {
		t.Run(tt.pod, func(t *testing.T) {
			ann := map[string]string{inject.AnnotationPolicy: "files"}
			if tt.ann != "" {
				ann[inject.AnnotationDataDir] = tt.ann
			}
			p := dbPod(ns, tt.pod, optIn, ann)
			must(t, k8s.Create(ctx, p))
			sc := sidecarIn(p)
			if sc == nil {
				t.Fatal("not injected")
			}
			got := ""
			for _, e := range sc.Env {
				if e.Name == "AMBER_DATA_DIR" {
					got = e.Value
				}
			}
			if got != tt.want {
				t.Fatalf("AMBER_DATA_DIR = %q, want %q", got, tt.want)
			}
		})
	}
	// A policy's spec.compression reaches its sidecars as amber's
	// AMBER_COMPRESSION, through the API server and the webhook.
	must(t, k8s.Create(ctx, policy(ns, "fast", func(p *amberv1.BackupPolicy) { p.Spec.Compression = amberv1.CompressionS2 })))
	t.Run("policy-compression", func(t *testing.T) {
		p := dbPod(ns, "s2-0", optIn, map[string]string{inject.AnnotationPolicy: "fast"})
		must(t, k8s.Create(ctx, p))
		sc := sidecarIn(p)
		if sc == nil {
			t.Fatal("not injected")
		}
		var got []string
		for _, e := range sc.Env {
			if e.Name == "AMBER_COMPRESSION" {
				got = append(got, e.Value)
			}
		}
		if len(got) != 1 || got[0] != "s2" {
			t.Fatalf("AMBER_COMPRESSION %v, want exactly s2", got)
		}
	})
	t.Run("no annotation", func(t *testing.T) {
		p := dbPod(ns, "plain", optIn, nil)
		must(t, k8s.Create(ctx, p))
		if sidecarIn(p) != nil || len(p.Spec.Volumes) != 1 {
			t.Fatal("a pod without the policy annotation was changed")
		}
	})
	t.Run("annotation without the opt-in label", func(t *testing.T) {
		p := dbPod(ns, "unlabelled", nil, map[string]string{inject.AnnotationPolicy: "nightly"})
		must(t, k8s.Create(ctx, p))
		if sidecarIn(p) != nil {
			t.Fatal("a pod without the amber.dev/inject label reached the webhook")
		}
	})
	for _, tt := range []struct {
		pod, reason string
		ann         map[string]string
	}{
		{"malformed", "MalformedAnnotation", map[string]string{inject.AnnotationPolicy: "Not A Name!"}},
		{"unknown-policy", "UnknownPolicy", map[string]string{inject.AnnotationPolicy: "nope"}},
		{"bad-volume", "MalformedAnnotation", map[string]string{inject.AnnotationPolicy: "nightly", inject.AnnotationDataVolume: "nope"}},
	} {
		t.Run(tt.pod, func(t *testing.T) {
			p := dbPod(ns, tt.pod, optIn, tt.ann)
			must(t, k8s.Create(ctx, p))
			if sidecarIn(p) != nil || len(p.Spec.Volumes) != 1 {
				t.Fatal("pod with a bad annotation was changed")
			}
			eventually(t, "a Warning event "+tt.reason+" on pod "+tt.pod, warningEvent(t, ns, tt.pod, tt.reason))
		})
	}
}

// TestWarningOnOwner: a StatefulSet's pod admitted without a sidecar also
// gets its Warning on the StatefulSet, whose UID tools can match.
func TestWarningOnOwner(t *testing.T) {
	needEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pg"},
		Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "pg"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "pg"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "postgres", Image: "postgres:15"}}}}},
	}
	must(t, k8s.Create(ctx, sts))
	p := dbPod(ns, "pg-0", optIn, map[string]string{inject.AnnotationPolicy: "missing"})
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "pg", UID: sts.UID, Controller: ptr.To(true)}}
	must(t, k8s.Create(ctx, p))
	eventually(t, "a Warning on the StatefulSet", func() (bool, string) {
		var evs corev1.EventList
		must(t, k8s.List(ctx, &evs, client.InNamespace(ns)))
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "StatefulSet" && e.InvolvedObject.UID == sts.UID && e.Reason == "UnknownPolicy" &&
				strings.Contains(e.Message, "pod pg-0") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(evs.Items))
	})
}

// TestWebhookDown: with the controller (and its webhook server) stopped,
// opted-in pods are still created, without a sidecar; BackupPolicies are
// still created (the policy webhook fails open), the API server's own CRD
// validation still refuses a malformed one, and a policy with an
// out-of-range schedule admitted meanwhile is marked Ready=False
// (BadSchedule) by the controller once it is back, and never scheduled.
func TestWebhookDown(t *testing.T) {
	needEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, policy(ns, "nightly", nil)))
	must(t, stopCtrl())
	restarted := false
	defer func() {
		if !restarted {
			must(t, startController())
		}
	}()
	p := dbPod(ns, "pg-0", optIn, map[string]string{inject.AnnotationPolicy: "nightly"})
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := k8s.Create(cctx, p); err != nil {
		t.Fatalf("pod refused while the webhook is down: %v", err)
	}
	if sidecarIn(p) != nil {
		t.Fatal("injected with the webhook down?")
	}

	// Fails open for policies: created with no controller to answer.
	bad := policy(ns, "out-of-range", func(p *amberv1.BackupPolicy) { p.Spec.Schedule = "61 * * * *" })
	if err := k8s.Create(cctx, bad); err != nil {
		t.Fatalf("BackupPolicy refused while the webhook is down: %v", err)
	}
	// The CRD's own validation does not depend on the webhook.
	malformed := policy(ns, "malformed", func(p *amberv1.BackupPolicy) { p.Spec.Schedule = "every 6 hours" })
	if err := k8s.Create(cctx, malformed); err == nil || !apierrors.IsInvalid(err) {
		t.Errorf("a policy with schedule %q while the webhook is down: %v, want refused by the CRD's schema", malformed.Spec.Schedule, err)
	}

	restarted = true
	must(t, startController())
	eventually(t, "Ready=False BadSchedule on the out-of-range policy", func() (bool, string) {
		var got amberv1.BackupPolicy
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(bad), &got); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(got.Status.Conditions, controllers.CondReady)
		if c == nil {
			return false, "no Ready condition"
		}
		return c.Status == metav1.ConditionFalse && c.Reason == "BadSchedule" && got.Status.NextScheduleTime == nil,
			fmt.Sprintf("%s %s: %s, next %v", c.Status, c.Reason, c.Message, got.Status.NextScheduleTime)
	})
	// Never scheduled (no next time above), and no Backup for it.
	var backups amberv1.BackupList
	must(t, k8s.List(ctx, &backups, client.InNamespace(ns)))
	if len(backups.Items) != 0 {
		t.Errorf("%d Backups for a policy with a bad schedule, want none", len(backups.Items))
	}
}

// statefulSet creates a StatefulSet object and its pods by hand (no
// controller-manager runs here), injected by the webhook, with pod IPs.
func statefulSet(t *testing.T, ns, name, policyName string, replicas int) []*corev1.Pod {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": name}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(int32(replicas)), ServiceName: name,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "postgres", Image: "postgres:15"}}}},
		},
	}
	must(t, k8s.Create(ctx, sts))
	var pods []*corev1.Pod
	for i := 0; i < replicas; i++ {
		podName := fmt.Sprintf("%s-%d", name, i)
		l := map[string]string{"app": name, inject.LabelInject: "true"}
		p := dbPod(ns, podName, l, map[string]string{inject.AnnotationPolicy: policyName})
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: name, UID: sts.UID, Controller: ptr.To(true)}}
		must(t, k8s.Create(ctx, p))
		if sidecarIn(p) == nil {
			t.Fatalf("pod %s not injected", podName)
		}
		p.Status.Phase = corev1.PodRunning
		p.Status.PodIP = fmt.Sprintf("127.0.20.%d", i+1)
		p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
		must(t, k8s.Status().Update(ctx, p))
		pods = append(pods, p)
	}
	return pods
}

func probe(role sidecarapi.Role, lag time.Duration) sidecardouble.Pod {
	return sidecardouble.Pod{Probe: sidecarapi.ProbeResult{Healthy: true, Role: role, Lag: lag}, BackupBytes: 4096, BackupBytesAdded: 1024}
}

func getBackup(t *testing.T, ns, name string) func() (bool, string) {
	return func() (bool, string) {
		var b amberv1.Backup
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &b); err != nil {
			return false, err.Error()
		}
		return b.Status.Phase == amberv1.PhaseSucceeded || b.Status.Phase == amberv1.PhaseFailed, fmt.Sprintf("phase %q", b.Status.Phase)
	}
}

// initRepo makes a local repository and the credentials Secret for it.
func initRepo(t *testing.T, ns string) string {
	t.Helper()
	dir := t.TempDir()
	be, err := file.Open(dir, true)
	must(t, err)
	r, err := repo.Init(context.Background(), be, []byte("s3cret-pw"), repo.Options{CacheDir: "-"})
	must(t, err)
	_ = r
	must(t, k8s.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "repo-creds"},
		Data: map[string][]byte{"password": []byte("s3cret-pw\n")}}))
	return "file://" + dir
}

// TestScheduleAndReplicaChoice: a BackupPolicy's schedule creates a Backup
// when the (fake) clock reaches it; the Backup is taken on the standby with
// the least lag within the policy's bound, then retention runs against
// the real repository; the policy records its last good backup.
func TestScheduleAndReplicaChoice(t *testing.T) {
	needEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	url := initRepo(t, ns)
	p := policy(ns, "hourly", func(p *amberv1.BackupPolicy) {
		p.Spec.Schedule = "@every 1h"
		p.Spec.Repository.URL = url
		p.Spec.Replica.MaxLag = &metav1.Duration{Duration: 3 * time.Second}
		p.Spec.Retention.KeepLast = 3
		limit := resource.MustParse("50Mi")
		p.Spec.Throttle.UploadBytesPerSecond = &limit
	})
	must(t, k8s.Create(ctx, p))
	statefulSet(t, ns, "pg", "hourly", 3)
	sidecars.Set(ns+"/pg-0", probe(sidecarapi.RolePrimary, 0))
	sidecars.Set(ns+"/pg-1", probe(sidecarapi.RoleStandby, 5*time.Second)) // over the bound
	sidecars.Set(ns+"/pg-2", probe(sidecarapi.RoleStandby, time.Second))

	var next time.Time
	eventually(t, "the policy's next schedule time", func() (bool, string) {
		must(t, k8s.Get(ctx, client.ObjectKeyFromObject(p), p))
		if p.Status.NextScheduleTime == nil {
			return false, fmt.Sprintf("conditions %+v", p.Status.Conditions)
		}
		next = p.Status.NextScheduleTime.Time
		return true, ""
	})
	if want := p.CreationTimestamp.Add(time.Hour); !next.Equal(want) {
		t.Fatalf("next schedule %s, want creation + 1h = %s", next, want)
	}
	var list amberv1.BackupList
	must(t, k8s.List(ctx, &list, client.InNamespace(ns)))
	if len(list.Items) != 0 {
		t.Fatalf("%d Backups before the schedule time", len(list.Items))
	}

	fake.Set(next.Add(time.Second))
	name := controllers.ScheduledBackupName("hourly", "pg", next)
	eventually(t, "Backup "+name+" to finish", getBackup(t, ns, name))
	var b amberv1.Backup
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &b))
	if b.Status.Phase != amberv1.PhaseSucceeded || b.Status.TargetPod != "pg-2" || b.Status.StatefulSet != "pg" {
		t.Fatalf("backup %s on %q (%s), want Succeeded on pg-2", b.Status.Phase, b.Status.TargetPod, b.Status.Error)
	}
	if b.Status.BackupID == "" || b.Status.Bytes != 4096 || b.Status.BytesAdded != 1024 || b.Status.StartedAt == nil || b.Status.FinishedAt == nil {
		t.Fatalf("result not recorded: %+v", b.Status)
	}
	pruned := meta.FindStatusCondition(b.Status.Conditions, controllers.CondPruned)
	if pruned == nil || pruned.Status != metav1.ConditionTrue || !strings.Contains(pruned.Message, "kept 0 backup(s)") {
		t.Fatalf("retention did not run against the repository: %+v", pruned)
	}
	calls := sidecars.Calls("Backup")
	if len(calls) == 0 || calls[len(calls)-1].Pod != ns+"/pg-2" {
		t.Fatalf("backup calls %+v", calls)
	}
	// One name per database, so that keep-last counts its backups; the
	// Backup object is a tag. The policy's throttle reaches the sidecar.
	if req := calls[len(calls)-1].Backup; req.Name != ns+"/pg" || req.Tags["backup"] != name || req.UploadBytesPerSecond != 50<<20 {
		t.Fatalf("backup request %+v: want name %s/pg, tag backup=%s, 50 MiB/s", req, ns, name)
	}
	eventually(t, "the policy's last good backup", func() (bool, string) {
		must(t, k8s.Get(ctx, client.ObjectKeyFromObject(p), p))
		return p.Status.LastSuccessfulBackup == name && p.Status.LastSuccessfulTime != nil, p.Status.LastSuccessfulBackup
	})

	// The best standby falls behind too: now only the primary qualifies.
	sidecars.Set(ns+"/pg-2", probe(sidecarapi.RoleStandby, 10*time.Second))
	manual := &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "manual"},
		Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: "hourly"}}}
	must(t, k8s.Create(ctx, manual))
	eventually(t, "Backup manual to finish", getBackup(t, ns, "manual"))
	must(t, k8s.Get(ctx, client.ObjectKeyFromObject(manual), manual))
	if manual.Status.TargetPod != "pg-0" {
		t.Fatalf("with every standby over the bound the backup ran on %q (%s), want the primary pg-0", manual.Status.TargetPod, manual.Status.Error)
	}

	// A sidecar that fails: the Backup fails saying why, with a Warning.
	sidecars.Set(ns+"/pg-0", sidecardouble.Pod{Probe: sidecarapi.ProbeResult{Healthy: true, Role: sidecarapi.RolePrimary},
		BackupErr: errors.New("plugin crashed")})
	failing := &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "failing"},
		Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: "hourly"}, StatefulSet: "pg"}}
	must(t, k8s.Create(ctx, failing))
	eventually(t, "Backup failing to finish", getBackup(t, ns, "failing"))
	must(t, k8s.Get(ctx, client.ObjectKeyFromObject(failing), failing))
	if failing.Status.Phase != amberv1.PhaseFailed || !strings.Contains(failing.Status.Error, "plugin crashed") {
		t.Fatalf("phase %s error %q", failing.Status.Phase, failing.Status.Error)
	}
	eventually(t, "a Warning on the failed Backup", warningEvent(t, ns, "failing", "BackupFailed"))
}

// TestBackupWaitsForReplica: a Backup created while no replica qualifies
// (here the only sidecar reports unhealthy, as while its database starts)
// stays Pending with Scheduled=False saying why, runs once one does, and
// fails only when none has for two minutes of the controller's clock.
func TestBackupWaitsForReplica(t *testing.T) {
	needEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	url := initRepo(t, ns)
	must(t, k8s.Create(ctx, policy(ns, "p", func(p *amberv1.BackupPolicy) { p.Spec.Repository.URL = url })))
	statefulSet(t, ns, "pg", "p", 1)
	sidecars.Set(ns+"/pg-0", sidecardouble.Pod{Probe: sidecarapi.ProbeResult{Healthy: false, Role: sidecarapi.RolePrimary}})

	waiting := func(name string) func() (bool, string) {
		return func() (bool, string) {
			var b amberv1.Backup
			must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &b))
			c := meta.FindStatusCondition(b.Status.Conditions, controllers.CondScheduled)
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "WaitingForReplica" || !strings.Contains(c.Message, "pg-0: unhealthy") {
				return false, fmt.Sprintf("phase %q conditions %+v", b.Status.Phase, b.Status.Conditions)
			}
			if b.Status.Phase != amberv1.PhasePending {
				t.Fatalf("Backup %s is %q while it waits: %s", name, b.Status.Phase, b.Status.Error)
			}
			return true, ""
		}
	}
	early := &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "early"}, Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: "p"}}}
	must(t, k8s.Create(ctx, early))
	eventually(t, "Backup early to wait for a replica", waiting("early"))
	eventually(t, "a Warning on the waiting Backup", warningEvent(t, ns, "early", "WaitingForReplica"))
	time.Sleep(3 * time.Second) // a requeue or more, still waiting
	eventually(t, "Backup early still waiting", waiting("early"))

	sidecars.Set(ns+"/pg-0", probe(sidecarapi.RolePrimary, 0))
	eventually(t, "Backup early to finish", getBackup(t, ns, "early"))
	must(t, k8s.Get(ctx, client.ObjectKeyFromObject(early), early))
	if early.Status.Phase != amberv1.PhaseSucceeded || early.Status.TargetPod != "pg-0" {
		t.Fatalf("Backup early %s on %q: %s", early.Status.Phase, early.Status.TargetPod, early.Status.Error)
	}
	if c := meta.FindStatusCondition(early.Status.Conditions, controllers.CondScheduled); c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "pg-0") {
		t.Fatalf("Scheduled condition after the backup ran: %+v", c)
	}

	// No replica for two minutes: the Backup fails saying why and how long it waited.
	sidecars.Set(ns+"/pg-0", sidecardouble.Pod{Probe: sidecarapi.ProbeResult{Healthy: false, Role: sidecarapi.RolePrimary}})
	late := &amberv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "late"}, Spec: amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: "p"}}}
	must(t, k8s.Create(ctx, late))
	eventually(t, "Backup late to wait for a replica", waiting("late"))
	fake.Advance(2*time.Minute + time.Second)
	eventually(t, "Backup late to fail", getBackup(t, ns, "late"))
	must(t, k8s.Get(ctx, client.ObjectKeyFromObject(late), late))
	if late.Status.Phase != amberv1.PhaseFailed || !strings.Contains(late.Status.Error, "pg-0: unhealthy") || !strings.Contains(late.Status.Error, "waited 2m0s") {
		t.Fatalf("Backup late %s: %q", late.Status.Phase, late.Status.Error)
	}
	if c := meta.FindStatusCondition(late.Status.Conditions, controllers.CondComplete); c == nil || c.Reason != "NoEligibleReplica" {
		t.Fatalf("Complete condition %+v", c)
	}
	n := 0
	for _, c := range sidecars.Calls("Backup") {
		if c.Pod == ns+"/pg-0" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d backups ran on pg-0, want 1 (early's)", n)
	}
}

// TestArchiverFollowsPrimary: with archive on, the primary's sidecar
// archives; after a failover the new primary starts and the old one stops.
func TestArchiverFollowsPrimary(t *testing.T) {
	needEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	sidecars.Set(ns+"/db-0", probe(sidecarapi.RolePrimary, 0))
	sidecars.Set(ns+"/db-1", probe(sidecarapi.RoleStandby, 0))
	p := policy(ns, "archived", func(p *amberv1.BackupPolicy) { p.Spec.Archive = true })
	must(t, k8s.Create(ctx, p))
	statefulSet(t, ns, "db", "archived", 2)
	archiver := func(want string) func() (bool, string) {
		return func() (bool, string) {
			must(t, k8s.Get(ctx, client.ObjectKeyFromObject(p), p))
			got := ""
			for _, a := range p.Status.Archivers {
				got += a.StatefulSet + "=" + a.Pod
			}
			var mine []string
			for _, a := range sidecars.Archiving() {
				if strings.HasPrefix(a, ns+"/") {
					mine = append(mine, a)
				}
			}
			return got == "db="+want && len(mine) == 1 && mine[0] == ns+"/"+want, fmt.Sprintf("status %q, archiving %v", got, mine)
		}
	}
	eventually(t, "db-0 archiving", archiver("db-0"))

	// Failover: db-1 is promoted, db-0 comes back as a standby.
	sidecars.Set(ns+"/db-1", probe(sidecarapi.RolePrimary, 0))
	old := probe(sidecarapi.RoleStandby, 0)
	old.Probe.Archiving = true
	sidecars.Set(ns+"/db-0", old)
	fake.Advance(2 * time.Minute)
	eventually(t, "the archiver to move to db-1", archiver("db-1"))
	eventually(t, "an ArchiverMoved event", func() (bool, string) {
		var evs corev1.EventList
		must(t, k8s.List(ctx, &evs, client.InNamespace(ns)))
		for _, e := range evs.Items {
			if e.Reason == "ArchiverMoved" && strings.Contains(e.Message, "from pod db-0 to pod db-1") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(evs.Items))
	})
	// Started on the new pod before stopped on the old: no gap.
	var order []string
	for _, c := range sidecars.Calls("") {
		if strings.HasPrefix(c.Pod, ns+"/") && (c.Method == "StartArchiving" || c.Method == "StopArchiving") {
			order = append(order, c.Method+" "+strings.TrimPrefix(c.Pod, ns+"/"))
		}
	}
	if strings.Join(order, ", ") != "StartArchiving db-0, StartArchiving db-1, StopArchiving db-0" {
		t.Fatalf("archiving calls %v", order)
	}

	// The status shows the recoverable window the archiver computed.
	from, to := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	now := probe(sidecarapi.RolePrimary, 0)
	now.Probe.Archiving = true
	now.Status = sidecarapi.Status{WindowStart: from, ArchivedUpTo: to, Gaps: []string{"0/5000000 to 0/6000000: a segment is missing"}}
	sidecars.Set(ns+"/db-1", now)
	fake.Advance(2 * time.Minute)
	eventually(t, "the recoverable window in the status", func() (bool, string) {
		must(t, k8s.Get(ctx, client.ObjectKeyFromObject(p), p))
		if len(p.Status.Archivers) != 1 {
			return false, fmt.Sprintf("%+v", p.Status.Archivers)
		}
		a := p.Status.Archivers[0]
		ok := a.RecoverableFrom != nil && a.RecoverableFrom.Time.Equal(from) && a.RecoverableTo != nil && a.RecoverableTo.Time.Equal(to) &&
			len(a.Gaps) == 1
		return ok, fmt.Sprintf("%+v", a)
	})
	// One connection per pod and round: the archiver's status is read on
	// the probe's connection (only a pod just told to start is dialled
	// again).
	calls := map[string]int{}
	for _, c := range sidecars.Calls("") {
		if c.Pod == ns+"/db-1" {
			calls[c.Method]++
		}
	}
	if calls["Dial"] > calls["Probe"]+2*calls["StartArchiving"] {
		t.Fatalf("calls to db-1's sidecar: %v; want at most one dial per probe, plus two per start (start, then its first status)", calls)
	}
}

// TestRestoreRefused: Restores (PostgreSQL, and MySQL, whose clones load
// a logical backup) whose repository holds no captured workload fail
// saying why and create nothing.
func TestRestoreRefused(t *testing.T) {
	needEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, policy(ns, "nightly", nil)))
	rs := &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r"},
		Spec: amberv1.RestoreSpec{PolicyRef: &amberv1.LocalRef{Name: "nightly"}, SourceStatefulSet: "db", BackupID: "abc"}}
	must(t, k8s.Create(ctx, rs))
	my := &amberv1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "my"},
		Spec: amberv1.RestoreSpec{PolicyRef: &amberv1.LocalRef{Name: "nightly"}, Engine: amberv1.EngineMySQL, SourceStatefulSet: "db"}}
	must(t, k8s.Create(ctx, my))
	for obj, reason := range map[*amberv1.Restore]string{rs: "WorkloadNotFound", my: "WorkloadNotFound"} {
		eventually(t, "the Restore's condition", func() (bool, string) {
			must(t, k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj))
			c := meta.FindStatusCondition(obj.Status.Conditions, controllers.CondReady)
			if c == nil {
				return false, "no condition"
			}
			return c.Reason == reason && c.Status == metav1.ConditionFalse && obj.Status.Phase == amberv1.PhaseFailed && obj.Status.Error != "",
				c.Reason + ": " + c.Message
		})
	}
	var sts appsv1.StatefulSetList
	must(t, k8s.List(ctx, &sts, client.InNamespace(ns)))
	if len(sts.Items) != 0 {
		t.Fatal("a clone StatefulSet was created")
	}
}

// TestKubectlBackup: `kubectl amber backup --wait` (controller/kubectl,
// in-process) against this controller: the Backup it creates is run on the
// replica the policy prefers, the command returns the result, fails with
// the controller's error when the sidecar fails, and status shows the last
// good backup.
func TestKubectlBackup(t *testing.T) {
	needEnv(t)
	ns := namespace(t)
	ctx := context.Background()
	url := initRepo(t, ns)
	must(t, k8s.Create(ctx, policy(ns, "demand", func(p *amberv1.BackupPolicy) { p.Spec.Repository.URL = url })))
	statefulSet(t, ns, "pg", "demand", 2)
	sidecars.Set(ns+"/pg-0", probe(sidecarapi.RolePrimary, 0))
	sidecars.Set(ns+"/pg-1", probe(sidecarapi.RoleStandby, time.Second))

	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test", Namespace: ns}
	kc.CurrentContext = "test"
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, clientcmd.WriteToFile(*kc, kubeconfig))
	run := func(args ...string) (string, error) {
		cmd := kubectl.Command(kubectl.Options{Plugin: true})
		var stdout, stderr bytes.Buffer
		cmd.SetOut(&stdout)
		cmd.SetErr(&stderr)
		cmd.SetArgs(append(args, "--kubeconfig", kubeconfig))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := cmd.ExecuteContext(ctx)
		return stdout.String(), err
	}

	out, err := run("backup", "demand", "--wait", "--json")
	if err != nil {
		t.Fatalf("backup --wait: %v\n%s", err, out)
	}
	var doc struct {
		Name   string               `json:"name"`
		Status amberv1.BackupStatus `json:"status"`
	}
	must(t, json.Unmarshal([]byte(out), &doc))
	if doc.Status.Phase != amberv1.PhaseSucceeded || doc.Status.TargetPod != "pg-1" || doc.Status.StatefulSet != "pg" ||
		doc.Status.Bytes != 4096 || doc.Status.BackupID == "" {
		t.Fatalf("backup --wait printed %+v, want Succeeded on the standby pg-1", doc)
	}

	sidecars.Set(ns+"/pg-1", sidecardouble.Pod{Probe: sidecarapi.ProbeResult{Healthy: true, Role: sidecarapi.RoleStandby},
		BackupErr: errors.New("plugin crashed")})
	fake.Advance(time.Second) // the controller dates backups by this clock: the next one starts later
	_, err = run("backup", "demand", "--statefulset", "pg", "--wait")
	if err == nil || !strings.Contains(err.Error(), "failed: pod pg-1: ") || !strings.Contains(err.Error(), "plugin crashed") {
		t.Fatalf("backup --wait with a failing sidecar: %v, want the controller's error", err)
	}

	eventually(t, "the policy's last good backup", func() (bool, string) {
		out, err := run("status", "demand")
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(out, "Last good: "+doc.Name+", finished") && strings.Contains(out, "Latest:    demand-manual-") &&
			strings.Contains(out, "plugin crashed"), out
	})
}

// TestWaitsForWebhookConfigurations: a controller that starts before its
// webhook configurations exist (a chart creates both at once) waits for
// them and patches its CA in, instead of exiting.
func TestWaitsForWebhookConfigurations(t *testing.T) {
	needEnv(t)
	port, err := freePort()
	must(t, err)
	o := baseOpts
	o.WebhookPort, o.CertDir = port, t.TempDir()
	o.MutatingConfig, o.ValidatingConfig = "late-sidecar-injector", ""
	// The same lease as the test's controller: this one never leads, so
	// its reconcilers stay idle (the CA is patched before the election).
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, o) }()
	defer func() {
		cancel()
		<-done
	}()
	time.Sleep(3 * time.Second)
	select {
	case err := <-done:
		t.Fatalf("the controller exited while its webhook configuration did not exist yet: %v", err)
	default:
	}
	u := "https://127.0.0.1:1/late"
	none := admissionregistrationv1.SideEffectClassNone
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "late-sidecar-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "late.amber.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &u},
			SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
			ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"amber.dev/never": "true"}}}}}
	must(t, k8s.Create(context.Background(), mwc))
	defer k8s.Delete(context.Background(), mwc)
	eventually(t, "the CA patched into the late configuration", func() (bool, string) {
		must(t, k8s.Get(context.Background(), client.ObjectKeyFromObject(mwc), mwc))
		return len(mwc.Webhooks[0].ClientConfig.CABundle) > 0, "caBundle empty"
	})
}
