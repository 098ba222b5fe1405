package charttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/app"
	"github.com/amber-backup/amber/controller/inject"
)

var (
	policiesGVR = schema.GroupVersionResource{Group: "amber.dev", Version: "v1alpha1", Resource: "backuppolicies"}
	crdGVR      = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// TestInstallIntoCluster installs the chart with the real helm CLI into the
// test bed's one-node cluster (real kubelet, no kube-proxy, no DNS: the
// controller reaches the API server by the node's address through
// controller.apiServer) with one database declared in values: a PostgreSQL
// StatefulSet like docs/examples/postgres-statefulset.yaml (one replica),
// backed up every 20 s with continuous archiving to a MinIO repository on
// the node, initialised first with the amber CLI. It checks: the first
// install creates the BackupPolicy (its webhook fails open, so no
// controller needs to answer yet) and the controller reports it Ready; both
// controller replicas Ready and the webhook configurations carry the
// controller's CA; the webhook refuses a bad schedule once it answers; the
// database pod gets its sidecar, which becomes the archiver, and a
// scheduled Backup succeeds; `helm upgrade` with a changed value (the
// policy's retention, and a controller pod annotation, which rolls the
// controller) keeps the BackupPolicy (same UID) and the running archiver
// (same pod, same since) and scheduled backups go on; `helm uninstall`
// removes the controller and the policy but leaves the CRDs, the Secrets,
// the repository (which still lists the backup) and the database's
// StatefulSet and pod untouched.
func TestInstallIntoCluster(t *testing.T) {
	root, chart := paths(t)
	testbed.Tool(t, "helm")
	c := testbed.StartCluster(t, testbed.ClusterOptions{})
	images := t.TempDir()
	_, amberImage := testbed.BuildAmberImage(t, images)
	_, pgImage := testbed.BuildPostgresImage(t, images)
	c.LoadImage(t, amberImage)
	c.LoadImage(t, pgImage)
	ref := strings.SplitN(testbed.AmberImageRef, ":", 2)

	// The repository: MinIO on the node's address, which pods reach,
	// initialised with the CLI outside the cluster.
	m := testbed.StartMinIOWith(t, testbed.MinIOOptions{Host: c.NodeIP.String()})
	bucket := m.CreateBucket(t, "amber-chart")
	repoURL := fmt.Sprintf("s3://%s/pg?endpoint=http://%s", bucket, m.Endpoint)
	const repoPassword = "chart-test-password"
	cliDir := t.TempDir()
	testbed.BuildAmber(t, cliDir)
	cliBin := filepath.Join(cliDir, "amber")
	amber := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(cliBin, args...)
		cmd.Env = append(os.Environ(), "AMBER_REPO="+repoURL, "AMBER_PASSWORD="+repoPassword, "AMBER_CACHE_DIR=-",
			"AWS_ACCESS_KEY_ID="+m.AccessKey, "AWS_SECRET_ACCESS_KEY="+m.SecretKey)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("amber %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		return out.String()
	}
	amber("repo", "init")

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	k, err := client.New(c.Config, client.Options{Scheme: app.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// The database's namespace and its credentials Secret (the application
	// team's, not the chart's).
	const ns = "shop"
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pg-backup"},
		StringData: map[string]string{
			"password":              repoPassword,
			"dsn":                   "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable",
			"AWS_ACCESS_KEY_ID":     m.AccessKey,
			"AWS_SECRET_ACCESS_KEY": m.SecretKey,
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	server, err := url.Parse(c.Server)
	if err != nil {
		t.Fatal(err)
	}
	values := filepath.Join(t.TempDir(), "values.yaml")
	writeValues := func(keepLast int, podAnnotations string) {
		t.Helper()
		v := `image: {repository: ` + ref[0] + `, tag: ` + ref[1] + `, pullPolicy: Never}
sidecar: {pullPolicy: Never}
controller:
  apiServer: {host: "` + server.Hostname() + `", port: "` + server.Port() + `"}
  podAnnotations: {` + podAnnotations + `}
databases:
  pg:
    engine: postgres
    namespace: ` + ns + `
    repository: "` + repoURL + `"
    credentialsSecret: pg-backup
    schedule: "@every 20s"
    retention: {keepLast: ` + fmt.Sprint(keepLast) + `}
    mode: physical
    archive: true
    replica: {preference: standby, maxLag: 30s}
`
		if err := os.WriteFile(values, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kube := []string{"--kubeconfig", c.Kubeconfig, "--namespace", "amber"}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller pods:\n%s", controllerLogs(c))
			t.Logf("database pod:\n%s", c.DescribePod(context.Background(), ns, "pg-0"))
		}
	})
	run := func(args ...string) string {
		t.Helper()
		start := time.Now()
		out, stderr, err := helm(t, append(args, kube...)...)
		if err != nil {
			t.Fatalf("helm %s: %v\n%s%s\n%s", strings.Join(args, " "), err, out, stderr, c.ProcessLog("kube-apiserver", 20))
		}
		t.Logf("helm %s: %s", args[0], time.Since(start).Round(100*time.Millisecond))
		return out
	}
	getPolicy := func() *amberv1.BackupPolicy {
		t.Helper()
		var p amberv1.BackupPolicy
		if err := k.Get(ctx, types.NamespacedName{Namespace: ns, Name: "pg"}, &p); err != nil {
			t.Fatalf("BackupPolicy %s/pg: %v", ns, err)
		}
		return &p
	}

	// One command: the policy is created in the same pass as the
	// controller that will answer for it.
	writeValues(7, "")
	notes := run("install", "amber", chart, "--create-namespace", "--wait", "--timeout", "5m", "-f", values)
	if !strings.Contains(notes, "BackupPolicies: "+ns+"/pg") || strings.Contains(notes, "NOT created") {
		t.Errorf("helm install's notes do not name the created policy:\n%s", notes)
	}
	policy := getPolicy()
	if policy.Spec.Schedule != "@every 20s" || policy.Spec.Repository.URL != repoURL || !policy.Spec.Archive || policy.Spec.Retention.KeepLast != 7 {
		t.Errorf("policy from values: %+v", policy.Spec)
	}
	policyUID := policy.UID

	pods, err := c.Client.CoreV1().Pods("amber").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
	if err != nil {
		t.Fatal(err)
	}
	ready := 0
	for _, p := range pods.Items {
		if testbed.PodReady(&p) {
			ready++
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount > 0 {
				// Logged, not failed: a controller that starts before Helm has
				// created the webhook configurations it patches exits, and
				// the kubelet restarts it (seen once; the logs say why).
				t.Logf("controller pod %s restarted %d times before Ready:\n%s", p.Name, cs.RestartCount, controllerLogs(c))
			}
		}
	}
	if ready != 2 {
		t.Fatalf("%d of %d controller pods Ready after helm install --wait, want 2", ready, len(pods.Items))
	}
	mwc, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "amber-sidecar-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vwc, err := c.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "amber-validation", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 || len(vwc.Webhooks[0].ClientConfig.CABundle) == 0 {
		t.Fatalf("the controller did not patch its CA into the webhook configurations")
	}

	// The controller reconciles it: Ready once it sees the credentials Secret.
	waitFor(t, ctx, 2*time.Minute, "BackupPolicy shop/pg Ready", func() (bool, string) {
		p := getPolicy()
		cd := meta.FindStatusCondition(p.Status.Conditions, "Ready")
		if cd == nil {
			return false, "no Ready condition"
		}
		return cd.Status == metav1.ConditionTrue, cd.Reason + ": " + cd.Message
	})

	// The validating webhook answers through the chart's Service now.
	bad := &amberv1.BackupPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad"}, Spec: *policy.Spec.DeepCopy()}
	bad.Spec.Schedule = "61 * * * *"
	if err := k.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "backuppolicy.amber.dev") {
		t.Errorf("a policy with schedule 61 * * * * was not refused by the controller's webhook: %v", err)
		_ = k.Delete(ctx, bad)
	}

	// The application team's database: the example StatefulSet without its
	// BackupPolicy (the chart made it), one replica, in namespace shop.
	example, err := os.ReadFile(filepath.Join(root, "docs", "examples", "postgres-statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var manifests []string
	for _, doc := range strings.Split(string(example), "\n---\n") {
		if strings.Contains(doc, "kind: BackupPolicy") || !strings.Contains(doc, "kind: ") {
			continue
		}
		doc = strings.Replace(doc, "\nmetadata:\n  name: ", "\nmetadata:\n  namespace: "+ns+"\n  name: ", 1)
		doc = strings.Replace(doc, "replicas: 3", "replicas: 1", 1)
		manifests = append(manifests, doc)
	}
	if len(manifests) != 2 {
		t.Fatalf("docs/examples/postgres-statefulset.yaml: %d objects besides the BackupPolicy, want the ConfigMap and the StatefulSet", len(manifests))
	}
	if err := c.Apply(ctx, []byte(strings.Join(manifests, "\n---\n"))); err != nil {
		t.Fatalf("apply the example StatefulSet: %v", err)
	}
	pg0, err := c.WaitPod(ctx, ns, "pg-0", 3*time.Minute, testbed.PodReady)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, c.DescribePod(ctx, ns, "pg-0"), c.StorageReport(ctx))
	}
	sidecarRunning := false
	for _, ctr := range pg0.Spec.InitContainers {
		if ctr.Name == inject.SidecarName && (ctr.Image != testbed.AmberImageRef || ctr.ImagePullPolicy != corev1.PullNever) {
			t.Errorf("sidecar image %s (%s), want %s from values", ctr.Image, ctr.ImagePullPolicy, testbed.AmberImageRef)
		}
	}
	for _, cs := range pg0.Status.InitContainerStatuses {
		if cs.Name == inject.SidecarName && cs.State.Running != nil {
			sidecarRunning = true
		}
	}
	if !sidecarRunning {
		t.Fatalf("pod %s/pg-0 has no running %s: %+v", ns, inject.SidecarName, pg0.Status.InitContainerStatuses)
	}

	// The primary's sidecar archives, and a scheduled Backup succeeds.
	var archiver amberv1.ArchiverStatus
	waitFor(t, ctx, 2*time.Minute, "pg-0 placed as the archiver", func() (bool, string) {
		p := getPolicy()
		for _, a := range p.Status.Archivers {
			if a.StatefulSet == "pg" && a.Pod == "pg-0" {
				archiver = a
				return true, ""
			}
		}
		return false, fmt.Sprintf("archivers %+v", p.Status.Archivers)
	})
	first := waitScheduledBackup(t, ctx, k, ns, time.Time{})
	t.Logf("scheduled Backup %s: backup %s on %s, %d bytes", first.Name, first.Status.BackupID, first.Status.TargetPod, first.Status.Bytes)

	// An upgrade with changed values: the policy's retention, and a pod
	// annotation that rolls the controller's pods.
	oldControllers := map[types.UID]bool{}
	for _, p := range pods.Items {
		oldControllers[p.UID] = true
	}
	writeValues(9, `example.com/rollout: "2"`)
	upgraded := time.Now()
	run("upgrade", "amber", chart, "--wait", "--timeout", "5m", "-f", values)
	waitFor(t, ctx, 2*time.Minute, "the controller rolled to new pods", func() (bool, string) {
		pods, err := c.Client.CoreV1().Pods("amber").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
		if err != nil {
			return false, err.Error()
		}
		fresh := 0
		for _, p := range pods.Items {
			if oldControllers[p.UID] {
				return false, "pod " + p.Name + " from before the upgrade still there"
			}
			if testbed.PodReady(&p) {
				fresh++
			}
		}
		return fresh == 2, fmt.Sprintf("%d new controller pods Ready", fresh)
	})
	policy = getPolicy()
	if policy.UID != policyUID {
		t.Errorf("helm upgrade replaced the BackupPolicy: UID %s, was %s", policy.UID, policyUID)
	}
	if policy.Spec.Retention.KeepLast != 9 {
		t.Errorf("after helm upgrade keepLast is %d, want 9", policy.Spec.Retention.KeepLast)
	}
	// The new controller pods take over; backups go on, and the archiver
	// is the same one.
	second := waitScheduledBackup(t, ctx, k, ns, upgraded)
	t.Logf("scheduled Backup %s after the upgrade: backup %s", second.Name, second.Status.BackupID)
	policy = getPolicy()
	var after *amberv1.ArchiverStatus
	for i, a := range policy.Status.Archivers {
		if a.StatefulSet == "pg" {
			after = &policy.Status.Archivers[i]
		}
	}
	if after == nil || after.Pod != archiver.Pod || !after.Since.Equal(&archiver.Since) {
		t.Errorf("archiver after helm upgrade %+v, want pod %s since %s", after, archiver.Pod, archiver.Since)
	}
	pgAfter, err := c.Client.CoreV1().Pods(ns).Get(ctx, "pg-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pgAfter.UID != pg0.UID || restarts(pgAfter) != restarts(pg0) {
		t.Errorf("the database pod changed across helm upgrade: UID %s (was %s), restarts %d (were %d)", pgAfter.UID, pg0.UID, restarts(pgAfter), restarts(pg0))
	}
	// Upgrades leave the caBundle the controller patched in (the chart has none).
	vwc, err = c.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "amber-validation", metav1.GetOptions{})
	if err != nil || len(vwc.Webhooks[0].ClientConfig.CABundle) == 0 {
		t.Errorf("after helm upgrade the validating webhook has no caBundle (%v)", err)
	}
	if !strings.Contains(run("get", "manifest", "amber"), "kind: BackupPolicy") {
		t.Errorf("after helm upgrade the release does not hold the BackupPolicy")
	}
	sts, err := c.Client.AppsV1().StatefulSets(ns).Get(ctx, "pg", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	run("uninstall", "amber", "--wait", "--timeout", "2m")
	if _, err := c.Client.AppsV1().Deployments("amber").Get(ctx, "amber-controller", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("controller Deployment after helm uninstall: %v", err)
	}
	if _, err := c.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "amber-validation", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ValidatingWebhookConfiguration after helm uninstall: %v", err)
	}
	for _, crd := range []string{"backuppolicies.amber.dev", "backups.amber.dev", "restores.amber.dev"} {
		if _, err := dyn.Resource(crdGVR).Get(ctx, crd, metav1.GetOptions{}); err != nil {
			t.Errorf("CRD %s after helm uninstall: %v", crd, err)
		}
	}
	if _, err := dyn.Resource(policiesGVR).Namespace(ns).Get(ctx, "pg", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("BackupPolicy shop/pg after helm uninstall: %v, want it removed with the release", err)
	}
	for _, s := range [][2]string{{ns, "pg-backup"}, {"amber", "amber-ca"}} {
		if _, err := c.Client.CoreV1().Secrets(s[0]).Get(ctx, s[1], metav1.GetOptions{}); err != nil {
			t.Errorf("Secret %s/%s after helm uninstall: %v", s[0], s[1], err)
		}
	}
	// The repository keeps the backups.
	var ls struct {
		Backups []struct {
			ID string `json:"id"`
		} `json:"backups"`
	}
	if err := json.Unmarshal([]byte(amber("ls", "--json")), &ls); err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, b := range ls.Backups {
		listed[b.ID] = true
	}
	for _, b := range []*amberv1.Backup{first, second} {
		if !listed[b.Status.BackupID] {
			t.Errorf("after helm uninstall `amber ls` does not list backup %s (Backup %s); it lists %v", b.Status.BackupID, b.Name, ls.Backups)
		}
	}
	// The database is untouched: the same StatefulSet, the same pod, Ready,
	// never restarted, its volume claim bound.
	stsAfter, err := c.Client.AppsV1().StatefulSets(ns).Get(ctx, "pg", metav1.GetOptions{})
	if err != nil || stsAfter.UID != sts.UID || stsAfter.Generation != sts.Generation {
		t.Errorf("StatefulSet shop/pg after helm uninstall: %v (UID %s generation %d, was %s %d)", err, stsAfter.UID, stsAfter.Generation, sts.UID, sts.Generation)
	}
	pgAfter, err = c.Client.CoreV1().Pods(ns).Get(ctx, "pg-0", metav1.GetOptions{})
	if err != nil || pgAfter.UID != pg0.UID || !testbed.PodReady(pgAfter) || restarts(pgAfter) != restarts(pg0) {
		t.Errorf("pod shop/pg-0 after helm uninstall: %v (UID %s, was %s; ready %v; restarts %d, were %d)", err, pgAfter.UID, pg0.UID,
			testbed.PodReady(pgAfter), restarts(pgAfter), restarts(pg0))
	}
	if pvc, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-pg-0", metav1.GetOptions{}); err != nil || pvc.Status.Phase != corev1.ClaimBound {
		t.Errorf("PVC shop/data-pg-0 after helm uninstall: %v", err)
	}
}

// waitScheduledBackup waits for a scheduled Backup of policy pg created
// after since to finish, and requires it Succeeded.
func waitScheduledBackup(t *testing.T, ctx context.Context, k client.Client, ns string, since time.Time) *amberv1.Backup {
	t.Helper()
	var found *amberv1.Backup
	waitFor(t, ctx, 3*time.Minute, "a scheduled Backup", func() (bool, string) {
		var list amberv1.BackupList
		if err := k.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{"amber.dev/policy": "pg"}); err != nil {
			return false, err.Error()
		}
		var got []string
		for i := range list.Items {
			b := &list.Items[i]
			if b.Labels["amber.dev/scheduled"] == "" || b.CreationTimestamp.Time.Before(since.Truncate(time.Second)) {
				continue
			}
			got = append(got, fmt.Sprintf("%s %s %q", b.Name, b.Status.Phase, b.Status.Error))
			if b.Status.Phase == amberv1.PhaseSucceeded || b.Status.Phase == amberv1.PhaseFailed {
				found = b
				return true, ""
			}
		}
		return false, fmt.Sprint(got)
	})
	if found.Status.Phase != amberv1.PhaseSucceeded || found.Status.BackupID == "" {
		t.Fatalf("scheduled Backup %s: phase %s, error %q", found.Name, found.Status.Phase, found.Status.Error)
	}
	return found
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		n += cs.RestartCount
	}
	return n
}

func waitFor(t *testing.T, ctx context.Context, timeout time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := f()
		if ok {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: not within %s: %s", what, timeout, why)
		}
		time.Sleep(time.Second)
	}
}

// controllerLogs describes the controller's pods and the tail of their logs.
func controllerLogs(c *testbed.Cluster) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods, err := c.Client.CoreV1().Pods("amber").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=controller"})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	tail := int64(30)
	for _, p := range pods.Items {
		b.WriteString(c.DescribePod(ctx, "amber", p.Name))
		logs, err := c.Client.CoreV1().Pods("amber").GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
		fmt.Fprintf(&b, "\nlogs of %s (%v):\n%s\n", p.Name, err, logs)
		if len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount > 0 {
			logs, err := c.Client.CoreV1().Pods("amber").GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail, Previous: true}).DoRaw(ctx)
			fmt.Fprintf(&b, "\nlogs of %s before its restart (%v):\n%s\n", p.Name, err, logs)
		}
	}
	return b.String()
}
