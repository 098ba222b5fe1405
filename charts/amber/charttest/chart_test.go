// Package charttest checks the amber Helm chart (charts/amber) with the real
// helm CLI that `make deps` builds (conformance/tools/helm): lint, template
// with default and example values, the schema's refusals, and that what the
// chart renders agrees with what the controller's generators wrote (CRDs,
// ClusterRole, webhook configurations) and with amber-controller's flags.
package charttest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
)

// root is the module root; chartDir the chart.
func paths(t *testing.T) (root, chartDir string) {
	t.Helper()
	root, err := testbed.Root()
	if err != nil {
		t.Fatal(err)
	}
	return root, filepath.Join(root, "charts", "amber")
}

// helm runs the helm CLI and returns stdout, stderr and its error. Helm's
// HOME-side state goes to a temporary directory.
func helm(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	bin := testbed.Tool(t, "helm")
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// render runs `helm template` in namespace amber (the namespace the
// generated webhook manifests name) and returns the objects by kind.
func render(t *testing.T, args ...string) map[string][]*unstructured.Unstructured {
	t.Helper()
	_, chart := paths(t)
	out, stderr, err := helm(t, append([]string{"template", "amber", chart, "--namespace", "amber"}, args...)...)
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return parse(t, out)
}

func parse(t *testing.T, manifests string) map[string][]*unstructured.Unstructured {
	t.Helper()
	objs := map[string][]*unstructured.Unstructured{}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(manifests, -1) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			t.Fatalf("rendered object without kind, apiVersion or name:\n%s", doc)
		}
		objs[u.GetKind()] = append(objs[u.GetKind()], u)
	}
	return objs
}

// typed converts an object into a typed one, refusing unknown fields.
func typed(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	b, err := yaml.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s %s does not decode strictly: %v", u.GetKind(), u.GetName(), err)
	}
}

func one(t *testing.T, objs map[string][]*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	if n := len(objs[kind]); n != 1 {
		t.Fatalf("%d %s rendered, want 1", n, kind)
	}
	return objs[kind][0]
}

func kinds(objs map[string][]*unstructured.Unstructured) []string {
	var ks []string
	for k := range objs {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func exampleValues(t *testing.T) string {
	_, chart := paths(t)
	return filepath.Join(chart, "examples", "values-example.yaml")
}

func TestLint(t *testing.T) {
	_, chart := paths(t)
	for _, args := range [][]string{nil, {"-f", exampleValues(t)}} {
		out, stderr, err := helm(t, append([]string{"lint", "--strict", chart}, args...)...)
		if err != nil || !strings.Contains(out, "0 chart(s) failed") {
			t.Errorf("helm lint --strict %v: %v\n%s%s", args, err, out, stderr)
		}
	}
}

func TestDefaultValuesRenderTheController(t *testing.T) {
	objs := render(t)
	want := []string{"ClusterRole", "ClusterRoleBinding", "Deployment", "MutatingWebhookConfiguration",
		"PodDisruptionBudget", "Service", "ServiceAccount", "ValidatingWebhookConfiguration"}
	if got := kinds(objs); !reflect.DeepEqual(got, want) {
		t.Fatalf("kinds rendered with default values: %v, want %v", got, want)
	}
	var d appsv1.Deployment
	typed(t, one(t, objs, "Deployment"), &d)
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *d.Spec.Replicas)
	}
	c := d.Spec.Template.Spec.Containers[0]
	args := flags(c.Args)
	for k, v := range map[string]string{
		"leader-elect": "true", "sidecar-image": "ghcr.io/amber-backup/amber:0.1.0", "sidecar-api-port": "7443",
		"native-sidecar": "auto", "mutating-webhook-config": "amber-sidecar-injector",
		"validating-webhook-config": "amber-validation", "webhook-names": "amber-controller.amber.svc",
		"sidecar-memory-limit": "512Mi", "sidecar-cpu-limit": "",
	} {
		if got, ok := args[k]; !ok || got != v {
			t.Errorf("--%s=%q (set: %t), want %q", k, got, ok, v)
		}
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("controller container's root filesystem is not read-only")
	}
	// The Service's selector picks the Deployment's pods and maps 443 to the webhook port.
	var svc corev1.Service
	typed(t, one(t, objs, "Service"), &svc)
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Service selects %s=%s, the pods have %q", k, v, d.Spec.Template.Labels[k])
		}
	}
	if svc.Name != "amber-controller" || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.String() != "webhook" {
		t.Errorf("webhook Service %s ports %+v, want amber-controller 443 -> webhook", svc.Name, svc.Spec.Ports)
	}
}

// flags maps --name=value arguments.
func flags(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		m[k] = v
	}
	return m
}

// TestControllerFlagsExist builds amber-controller and checks that every flag
// the chart passes is one it defines (its -h output).
func TestControllerFlagsExist(t *testing.T) {
	root, _ := paths(t)
	bin := filepath.Join(t.TempDir(), "amber-controller")
	build := exec.Command("go", "build", "-o", bin, "./controller/cmd/amber-controller")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build amber-controller: %v\n%s", err, out)
	}
	help, _ := exec.Command(bin, "-h").CombinedOutput()
	defined := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`).FindAllStringSubmatch(string(help), -1) {
		defined[m[1]] = true
	}
	if !defined["sidecar-image"] {
		t.Fatalf("amber-controller -h lists no --sidecar-image:\n%s", help)
	}
	objs := render(t, "-f", exampleValues(t), "--set", "certManager.enabled=true",
		"--set", "controller.apiServer.host=198.19.0.1", "--set", "controller.apiServer.port=6443")
	var d appsv1.Deployment
	typed(t, one(t, objs, "Deployment"), &d)
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !defined[name] {
			t.Errorf("the chart passes %q, which amber-controller does not define", a)
		}
	}
}

func TestValuesReachTheController(t *testing.T) {
	objs := render(t, "--set", "sidecar.image=reg.example/amber-sidecar:1", "--set", "sidecar.pullPolicy=Always",
		"--set", "sidecar.resources.requests.cpu=250m", "--set", "sidecar.resources.limits.memory=1Gi",
		"--set", "sidecar.resources.limits.cpu=2", "--set", "sidecar.apiPort=8443",
		"--set", "sidecar.nativeSidecar=false", "--set", "webhook.mutatingName=acme-injector",
		"--set", "webhook.validatingName=acme-validation", "--set", "controller.replicas=3",
		"--set", "controller.apiServer.host=198.19.0.1", "--set", "controller.apiServer.port=6443")
	var d appsv1.Deployment
	typed(t, one(t, objs, "Deployment"), &d)
	c := d.Spec.Template.Spec.Containers[0]
	args := flags(c.Args)
	for k, v := range map[string]string{
		"sidecar-image": "reg.example/amber-sidecar:1", "sidecar-pull-policy": "Always", "sidecar-cpu": "250m",
		"sidecar-memory-limit": "1Gi", "sidecar-cpu-limit": "2", "sidecar-api-port": "8443", "native-sidecar": "false",
		"mutating-webhook-config": "acme-injector", "validating-webhook-config": "acme-validation",
	} {
		if args[k] != v {
			t.Errorf("--%s=%q, want %q", k, args[k], v)
		}
	}
	if *d.Spec.Replicas != 3 {
		t.Errorf("replicas %d, want 3", *d.Spec.Replicas)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["KUBERNETES_SERVICE_HOST"] != "198.19.0.1" || env["KUBERNETES_SERVICE_PORT"] != "6443" {
		t.Errorf("controller env %v, want KUBERNETES_SERVICE_HOST/PORT from controller.apiServer", env)
	}
	// The configurations carry the names the controller is told.
	if n := one(t, objs, "MutatingWebhookConfiguration").GetName(); n != "acme-injector" {
		t.Errorf("MutatingWebhookConfiguration %q, want acme-injector", n)
	}
	if n := one(t, objs, "ValidatingWebhookConfiguration").GetName(); n != "acme-validation" {
		t.Errorf("ValidatingWebhookConfiguration %q, want acme-validation", n)
	}
}

// TestCRDsAreTheGeneratedOnes: `helm template --include-crds` gives exactly
// the files controller-gen wrote to controller/config/crd.
func TestCRDsAreTheGeneratedOnes(t *testing.T) {
	root, _ := paths(t)
	objs := render(t, "--include-crds")
	files, err := filepath.Glob(filepath.Join(root, "controller", "config", "crd", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no generated CRDs: %v", err)
	}
	got := map[string]map[string]any{}
	for _, u := range objs["CustomResourceDefinition"] {
		got[u.GetName()] = u.Object
	}
	if len(got) != len(files) {
		t.Errorf("%d CRDs rendered, %d generated", len(got), len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var want map[string]any
		if err := yaml.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		name := want["metadata"].(map[string]any)["name"].(string)
		if !reflect.DeepEqual(got[name], want) {
			t.Errorf("CRD %s in the chart differs from %s", name, f)
		}
	}
}

// TestRBACIsTheGeneratedRole: the ClusterRole's rules are exactly
// controller/config/rbac/role.yaml's, bound to the controller's account.
func TestRBACIsTheGeneratedRole(t *testing.T) {
	root, _ := paths(t)
	b, err := os.ReadFile(filepath.Join(root, "controller", "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(b, &want); err != nil {
		t.Fatal(err)
	}
	objs := render(t, "-f", exampleValues(t))
	if len(objs["Role"]) != 0 || len(objs["RoleBinding"]) != 0 {
		t.Errorf("the chart renders Roles the generated RBAC does not have")
	}
	var got rbacv1.ClusterRole
	typed(t, one(t, objs, "ClusterRole"), &got)
	if !reflect.DeepEqual(got.Rules, want.Rules) || len(want.Rules) == 0 {
		t.Errorf("ClusterRole rules differ from role.yaml:\n got %+v\nwant %+v", got.Rules, want.Rules)
	}
	var binding rbacv1.ClusterRoleBinding
	typed(t, one(t, objs, "ClusterRoleBinding"), &binding)
	var d appsv1.Deployment
	typed(t, one(t, objs, "Deployment"), &d)
	sa := d.Spec.Template.Spec.ServiceAccountName
	if binding.RoleRef.Name != got.Name || len(binding.Subjects) != 1 || binding.Subjects[0].Name != sa ||
		binding.Subjects[0].Namespace != "amber" || one(t, objs, "ServiceAccount").GetName() != sa {
		t.Errorf("binding %+v does not bind ClusterRole %s to the controller's ServiceAccount %s/amber", binding, got.Name, sa)
	}
}

// TestWebhooksAreTheGeneratedOnes: both configurations equal
// controller/config/webhook/manifests.yaml (rendered into namespace amber,
// which that file names), and the Deployment names them in its flags.
func TestWebhooksAreTheGeneratedOnes(t *testing.T) {
	root, _ := paths(t)
	b, err := os.ReadFile(filepath.Join(root, "controller", "config", "webhook", "manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	gen := parse(t, string(b))
	for _, certManager := range []string{"false", "true"} {
		objs := render(t, "--set", "certManager.enabled="+certManager)
		var wantM, gotM admissionregistrationv1.MutatingWebhookConfiguration
		typed(t, one(t, gen, "MutatingWebhookConfiguration"), &wantM)
		typed(t, one(t, objs, "MutatingWebhookConfiguration"), &gotM)
		if !reflect.DeepEqual(gotM.Webhooks, wantM.Webhooks) || gotM.Name != wantM.Name {
			t.Errorf("MutatingWebhookConfiguration differs from the generated one:\n got %s %+v\nwant %s %+v", gotM.Name, gotM.Webhooks, wantM.Name, wantM.Webhooks)
		}
		var wantV, gotV admissionregistrationv1.ValidatingWebhookConfiguration
		typed(t, one(t, gen, "ValidatingWebhookConfiguration"), &wantV)
		typed(t, one(t, objs, "ValidatingWebhookConfiguration"), &gotV)
		if !reflect.DeepEqual(gotV.Webhooks, wantV.Webhooks) || gotV.Name != wantV.Name {
			t.Errorf("ValidatingWebhookConfiguration differs from the generated one:\n got %s %+v\nwant %s %+v", gotV.Name, gotV.Webhooks, wantV.Name, wantV.Webhooks)
		}
		// The fields that matter, spelled out.
		if w := gotM.Webhooks[0]; *w.FailurePolicy != admissionregistrationv1.Ignore || w.ObjectSelector.MatchLabels["amber.dev/inject"] != "true" {
			t.Errorf("pod webhook: failurePolicy %s, objectSelector %v; want Ignore and amber.dev/inject=true", *w.FailurePolicy, w.ObjectSelector)
		}
		if w := gotV.Webhooks[0]; *w.FailurePolicy != admissionregistrationv1.Ignore {
			t.Errorf("policy webhook: failurePolicy %s, want Ignore", *w.FailurePolicy)
		}
		var d appsv1.Deployment
		typed(t, one(t, objs, "Deployment"), &d)
		args := flags(d.Spec.Template.Spec.Containers[0].Args)
		if args["mutating-webhook-config"] != gotM.Name || args["validating-webhook-config"] != gotV.Name {
			t.Errorf("controller patches %q and %q, the chart installs %q and %q", args["mutating-webhook-config"], args["validating-webhook-config"], gotM.Name, gotV.Name)
		}
		var svc corev1.Service
		typed(t, one(t, objs, "Service"), &svc)
		if s := gotM.Webhooks[0].ClientConfig.Service; s.Name != svc.Name || s.Namespace != "amber" {
			t.Errorf("webhook calls %s/%s, the chart's Service is %s/amber", s.Namespace, s.Name, svc.Name)
		}
		ann := gotM.Annotations["cert-manager.io/inject-ca-from"]
		if certManager == "true" {
			if ann != "amber/amber-ca" || len(objs["Certificate"]) != 1 || len(objs["Issuer"]) != 1 {
				t.Errorf("cert-manager: inject-ca-from %q, %d Certificates, %d Issuers", ann, len(objs["Certificate"]), len(objs["Issuer"]))
			}
			if s := objs["Certificate"][0].Object["spec"].(map[string]any)["secretName"]; s != args["ca-secret"] {
				t.Errorf("cert-manager writes %v, the controller reads --ca-secret=%s", s, args["ca-secret"])
			}
			// The pod waits for cert-manager's Secret before the controller starts.
			gated := false
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Secret != nil && v.Secret.SecretName == args["ca-secret"] && (v.Secret.Optional == nil || !*v.Secret.Optional) {
					gated = true
				}
			}
			if !gated {
				t.Errorf("with cert-manager the controller pod does not wait for the CA Secret %s", args["ca-secret"])
			}
		} else if ann != "" || len(objs["Certificate"]) != 0 {
			t.Errorf("cert-manager objects rendered while certManager.enabled=false")
		}
	}
}

// TestDatabasesRenderBackupPolicies: each entry of `databases` is one
// BackupPolicy with the spec the values say (decoded strictly into the
// controller's own type).
func TestDatabasesRenderBackupPolicies(t *testing.T) {
	objs := render(t, "-f", exampleValues(t))
	got := map[string]amberv1.BackupPolicy{}
	for _, u := range objs["BackupPolicy"] {
		if u.GetAPIVersion() != "amber.dev/v1alpha1" {
			t.Errorf("BackupPolicy %s has apiVersion %s", u.GetName(), u.GetAPIVersion())
		}
		var p amberv1.BackupPolicy
		typed(t, u, &p)
		got[p.Namespace+"/"+p.Name] = p
		if len(p.Annotations) != 0 {
			t.Errorf("BackupPolicy %s has annotations %v (hooks or resource policies), want an ordinary release object", p.Name, p.Annotations)
		}
	}
	if len(got) != 3 {
		t.Fatalf("BackupPolicies %v, want shop/orders, shop/catalog, sessions/sessions", keys(got))
	}
	o := got["shop/orders"]
	s := o.Spec
	if s.Engine != amberv1.EnginePostgres || s.Repository.URL != "b2://acme-backups/orders" ||
		s.Repository.CredentialsSecret.Name != "orders-backup" || s.Schedule != "0 */6 * * *" ||
		s.Retention.KeepLast != 14 || s.Retention.KeepWithin == nil || s.Retention.KeepWithin.Duration.Hours() != 168 ||
		!s.Archive || s.Replica.Preference != amberv1.PreferStandby || s.Replica.MaxLag == nil ||
		s.Replica.MaxLag.Duration.Seconds() != 30 || s.Throttle.UploadBytesPerSecond == nil ||
		s.Throttle.UploadBytesPerSecond.Value() != 50<<20 || s.Mode != "" {
		t.Errorf("shop/orders spec %+v does not say what the values say", s)
	}
	if d := s.Drills; d == nil || d.Schedule != "0 4 * * 0" || d.Target != amberv1.DrillRandom || d.Probe != "SELECT 1 FROM orders LIMIT 1" {
		t.Errorf("shop/orders drills %+v, want the values' schedule, target and probe", d)
	}
	if c := got["shop/catalog"].Spec; c.Drills != nil {
		t.Errorf("shop/catalog has drills %+v, none in the values", c.Drills)
	}
	if c := got["shop/catalog"].Spec; c.Engine != amberv1.EngineMySQL || c.Mode != amberv1.ModeLogical || c.Archive || c.Schedule != "30 2 * * *" {
		t.Errorf("shop/catalog spec %+v", c)
	}
	if m := got["sessions/sessions"].Spec; m.Engine != amberv1.EngineMongoDB || m.Replica.Preference != amberv1.PreferAny ||
		m.Repository.URL != "s3://acme-backups/sessions?region=eu-central-1" {
		t.Errorf("sessions/sessions spec %+v", m)
	}
	// A database with no namespace goes to the release's.
	objs = render(t, "--set", "databases.pg.engine=postgres", "--set", "databases.pg.repository=file:///backups/pg",
		"--set", "databases.pg.credentialsSecret=pg-backup")
	if p := one(t, objs, "BackupPolicy"); p.GetNamespace() != "amber" {
		t.Errorf("BackupPolicy without a namespace went to %q, want the release's (amber)", p.GetNamespace())
	}
	// Snapshot mode and its settings.
	objs = render(t, "--set", "databases.pg.engine=postgres", "--set", "databases.pg.repository=file:///backups/pg",
		"--set", "databases.pg.credentialsSecret=pg-backup", "--set", "databases.pg.mode=snapshot",
		"--set", "databases.pg.snapshot.volumeSnapshotClassName=csi-snapclass", "--set", "databases.pg.snapshot.lease=30s",
		"--set", "databases.pg.snapshot.timeout=5m")
	var sp amberv1.BackupPolicy
	typed(t, one(t, objs, "BackupPolicy"), &sp)
	if sn := sp.Spec.Snapshot; sp.Spec.Mode != amberv1.ModeSnapshot || sn == nil || sn.VolumeSnapshotClassName != "csi-snapclass" ||
		sn.Lease == nil || sn.Lease.Duration.Seconds() != 30 || sn.Timeout == nil || sn.Timeout.Duration.Minutes() != 5 {
		t.Errorf("snapshot policy spec %+v (snapshot %+v)", sp.Spec, sp.Spec.Snapshot)
	}
	// File-level physical backups: the data directory reaches the policy.
	objs = render(t, "--set", "databases.pg.engine=postgres", "--set", "databases.pg.repository=file:///backups/pg",
		"--set", "databases.pg.credentialsSecret=pg-backup", "--set", "databases.pg.dataDir=/var/lib/postgresql/data/pgdata")
	var dp amberv1.BackupPolicy
	typed(t, one(t, objs, "BackupPolicy"), &dp)
	if dp.Spec.DataDir != "/var/lib/postgresql/data/pgdata" {
		t.Errorf("policy dataDir %q, want /var/lib/postgresql/data/pgdata", dp.Spec.DataDir)
	}
	// The compression reaches the policy; without it the policy has none
	// (amber's own default).
	if c := dp.Spec.Compression; c != "" {
		t.Errorf("policy compression %q without one in the values", c)
	}
	objs = render(t, "--set", "databases.pg.engine=postgres", "--set", "databases.pg.repository=file:///backups/pg",
		"--set", "databases.pg.credentialsSecret=pg-backup", "--set", "databases.pg.compression=s2")
	var cp amberv1.BackupPolicy
	typed(t, one(t, objs, "BackupPolicy"), &cp)
	if cp.Spec.Compression != amberv1.CompressionS2 {
		t.Errorf("policy compression %q, want s2", cp.Spec.Compression)
	}
}

// TestNoJobsOrHooks: the chart runs nothing but the controller: no Job, no
// Pod, no hook, so installing, upgrading or uninstalling it never opens a
// repository or touches a database.
func TestNoJobsOrHooks(t *testing.T) {
	for _, args := range [][]string{nil, {"-f", exampleValues(t), "--set", "certManager.enabled=true"}} {
		objs := render(t, args...)
		for _, k := range []string{"Job", "CronJob", "Pod", "DaemonSet", "StatefulSet"} {
			if len(objs[k]) != 0 {
				t.Errorf("the chart renders a %s", k)
			}
		}
		for _, list := range objs {
			for _, u := range list {
				for a := range u.GetAnnotations() {
					if strings.HasPrefix(a, "helm.sh/") {
						t.Errorf("%s %s has annotation %s", u.GetKind(), u.GetName(), a)
					}
				}
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestNetworkPolicy: in each namespace with a database, opted-in pods'
// API port admits only the controller's pods; other ports stay open.
func TestNetworkPolicy(t *testing.T) {
	objs := render(t, "-f", exampleValues(t), "--set", "networkPolicy.extraNamespaces={legacy}")
	var nss []string
	var d appsv1.Deployment
	typed(t, one(t, objs, "Deployment"), &d)
	for _, u := range objs["NetworkPolicy"] {
		var np networkingv1.NetworkPolicy
		typed(t, u, &np)
		nss = append(nss, np.Namespace)
		if np.Spec.PodSelector.MatchLabels["amber.dev/inject"] != "true" {
			t.Errorf("%s: selects %v, want amber.dev/inject=true", np.Namespace, np.Spec.PodSelector)
		}
		var toAPI []networkingv1.NetworkPolicyIngressRule
		for _, r := range np.Spec.Ingress {
			for _, p := range r.Ports {
				lo, hi := p.Port.IntValue(), p.Port.IntValue()
				if p.EndPort != nil {
					hi = int(*p.EndPort)
				}
				if (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) && lo <= 7443 && 7443 <= hi {
					toAPI = append(toAPI, r)
				}
			}
		}
		if len(toAPI) != 1 || len(toAPI[0].From) != 1 {
			t.Fatalf("%s: rules reaching 7443/TCP: %+v, want one, from the controller", np.Namespace, toAPI)
		}
		from := toAPI[0].From[0]
		if from.NamespaceSelector == nil || from.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "amber" || from.PodSelector == nil {
			t.Fatalf("%s: 7443 reachable from %+v", np.Namespace, from)
		}
		for k, v := range from.PodSelector.MatchLabels {
			if d.Spec.Template.Labels[k] != v {
				t.Errorf("%s: 7443 admits pods with %s=%s, which the controller's pods lack", np.Namespace, k, v)
			}
		}
		// Everything else (the database's own port, the sidecar's metrics) is open.
		open := false
		for _, r := range np.Spec.Ingress {
			for _, p := range r.Ports {
				if len(r.From) == 0 && p.Port.IntValue() <= 5432 && p.EndPort != nil && *p.EndPort >= 9090 {
					open = true
				}
			}
		}
		if !open {
			t.Errorf("%s: ports 5432 and 9090 are not open to all", np.Namespace)
		}
	}
	if want := []string{"legacy", "sessions", "shop"}; !slices.Equal(nss, want) {
		t.Errorf("NetworkPolicies in %v, want %v", nss, want)
	}
	// allowOtherPorts=false: the controller's rule only.
	objs = render(t, "-f", exampleValues(t), "--set", "networkPolicy.allowOtherPorts=false")
	for _, u := range objs["NetworkPolicy"] {
		var np networkingv1.NetworkPolicy
		typed(t, u, &np)
		if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 {
			t.Errorf("%s with allowOtherPorts=false: ingress %+v, want the controller's rule only", np.Namespace, np.Spec.Ingress)
		}
	}
	if objs := render(t, "-f", exampleValues(t), "--set", "networkPolicy.enabled=false"); len(objs["NetworkPolicy"]) != 0 {
		t.Errorf("NetworkPolicies rendered with networkPolicy.enabled=false")
	}
}

// TestMonitoring: ServiceMonitor, PodMonitor and PrometheusRule render when
// enabled, and every metric the alerts use is one the sidecar exports.
func TestMonitoring(t *testing.T) {
	root, _ := paths(t)
	var src []byte
	for _, f := range []string{filepath.Join(root, "sidecar", "agent", "metrics.go"), filepath.Join(root, "controller", "controllers", "metrics.go")} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, b...)
	}
	objs := render(t, "-f", exampleValues(t))
	one(t, objs, "ServiceMonitor")
	one(t, objs, "PodMonitor")
	rule := one(t, objs, "PrometheusRule")
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	alerts := map[string]string{}
	for _, g := range groups {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			r := r.(map[string]any)
			expr := r["expr"].(string)
			for _, m := range regexp.MustCompile(`amber_[a-z_]+`).FindAllString(expr, -1) {
				if !bytes.Contains(src, []byte(`"`+m+`"`)) {
					t.Errorf("alert %s uses %s, which neither metrics.go exports", r["alert"], m)
				}
			}
			if strings.Contains(expr, `policy="orders"`) || strings.Contains(expr, `policy="catalog"`) {
				alerts[r["alert"].(string)+"/"+regexp.MustCompile(`policy="([a-z]+)"`).FindStringSubmatch(expr)[1]] = expr
			}
		}
	}
	// orders archives (RPO 5m from the example's defaults) and runs every 6 h
	// (+2 h slack); catalog runs daily (+3 h) and does not archive.
	for name, want := range map[string]string{
		"AmberArchiveLagOverRPO/orders": "> 300", "AmberNoRecentBackup/orders": "> 28800",
		"AmberRecoverableWindowGap/orders": "> 0", "AmberNoRecentBackup/catalog": "> 97200",
		"AmberRestoreDrillFailed/orders": "amber_drill_success",
	} {
		if !strings.Contains(alerts[name], want) {
			t.Errorf("alert %s: %q, want %q", name, alerts[name], want)
		}
	}
	if _, ok := alerts["AmberArchiveLagOverRPO/catalog"]; ok {
		t.Errorf("RPO alert for catalog, which does not archive")
	}
	if _, ok := alerts["AmberRestoreDrillFailed/catalog"]; ok {
		t.Errorf("drill alert for catalog, which has no drills")
	}
	if d := render(t, "--set", "metrics.prometheusRule.enabled=true"); len(d["PrometheusRule"]) != 0 {
		t.Errorf("a PrometheusRule without rules rendered (no databases declared)")
	}
	if d := render(t); len(d["ServiceMonitor"])+len(d["PodMonitor"])+len(d["PrometheusRule"]) != 0 {
		t.Errorf("monitoring objects rendered by default (they need the Prometheus Operator's CRDs)")
	}
}

// TestSchemaRefuses: values the controller or API server would refuse are
// refused by values.schema.json, with a message naming the field and the rule.
func TestSchemaRefuses(t *testing.T) {
	_, chart := paths(t)
	base := []string{"--set", "databases.orders.engine=postgres", "--set", "databases.orders.repository=b2://acme-backups/orders",
		"--set", "databases.orders.credentialsSecret=orders-backup", "--set", "databases.orders.schedule=0 */6 * * *"}
	if _, stderr, err := helm(t, append([]string{"template", "amber", chart}, base...)...); err != nil {
		t.Fatalf("the valid base values are refused: %v\n%s", err, stderr)
	}
	for _, c := range []struct{ name, set, want string }{
		{"unknown engine", "databases.orders.engine=oracle", `at '/databases/orders/engine': value must be one of 'postgres', 'mysql', 'mongodb'`},
		{"malformed schedule", "databases.orders.schedule=every 6 hours", `at '/databases/orders/schedule': 'every 6 hours' does not match pattern`},
		{"repository without a scheme", "databases.orders.repository=acme-backups/orders", `at '/databases/orders/repository': 'acme-backups/orders' does not match pattern '^(file|s3|b2)://`},
		{"unknown repository scheme", "databases.orders.repository=gs://acme/orders", `at '/databases/orders/repository': 'gs://acme/orders' does not match pattern`},
		{"unknown mode", "databases.orders.mode=incremental", `at '/databases/orders/mode': value must be one of 'physical', 'logical', 'snapshot'`},
		{"unknown compression", "databases.orders.compression=lz4", `at '/databases/orders/compression': value must be one of 'fastest', 'default', 'better', 's2'`},
		{"relative data directory", "databases.orders.dataDir=pgdata", `at '/databases/orders/dataDir'`},
		{"unknown replica preference", "databases.orders.replica.preference=leader", `at '/databases/orders/replica/preference': value must be one of 'standby', 'primary', 'any'`},
		{"misspelt key", "databases.orders.schedul=@daily", `at '/databases/orders': additional properties 'schedul' not allowed`},
		{"bad retention", "databases.orders.retention.keepWithin=7 days", `at '/databases/orders/retention/keepWithin'`},
		{"unknown drill target", "databases.orders.drills.schedule=@weekly,databases.orders.drills.target=yesterday", `at '/databases/orders/drills/target': value must be one of 'latest', 'random'`},
		{"drills without a schedule", "databases.orders.drills.probe=SELECT 1", `at '/databases/orders/drills': missing propert`},
		{"policy name not a DNS label", "databases.Orders_DB.engine=postgres", `Orders_DB`},
		{"no credentials", "databases.pg.engine=postgres", `at '/databases/pg': missing propert`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, err := helm(t, append(append([]string{"template", "amber", chart}, base...), "--set", c.set)...)
			if err == nil {
				t.Fatalf("--set %s was accepted", c.set)
			}
			if !strings.Contains(stderr, "values don't meet the specifications of the schema") || !strings.Contains(stderr, c.want) {
				t.Fatalf("--set %s: stderr\n%s\nwant the schema's message %q", c.set, stderr, c.want)
			}
		})
	}
}

// TestPackage: `helm package` follows the chart's links to the generated
// files, so the archive carries the CRDs, role and webhook manifests.
func TestPackage(t *testing.T) {
	_, chart := paths(t)
	dir := t.TempDir()
	if out, stderr, err := helm(t, "package", chart, "--destination", dir); err != nil {
		t.Fatalf("helm package: %v\n%s%s", err, out, stderr)
	}
	tgz := filepath.Join(dir, "amber-0.1.0.tgz")
	// Render from the archive: it must hold everything the directory holds.
	fromDir := render(t, "-f", exampleValues(t), "--include-crds")
	out, stderr, err := helm(t, "template", "amber", tgz, "--namespace", "amber", "-f", exampleValues(t), "--include-crds")
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", tgz, err, stderr)
	}
	fromTgz := parse(t, out)
	if !reflect.DeepEqual(kinds(fromDir), kinds(fromTgz)) || len(fromTgz["CustomResourceDefinition"]) != 3 {
		t.Errorf("the packaged chart renders %v, the directory %v", kinds(fromTgz), kinds(fromDir))
	}
	for _, k := range kinds(fromDir) {
		if !reflect.DeepEqual(fromDir[k], fromTgz[k]) {
			t.Errorf("%s differs between the packaged chart and the directory", k)
		}
	}
	list := exec.Command("tar", "-tzf", tgz)
	names, err := list.Output()
	if err != nil {
		t.Fatalf("tar -tzf: %v", err)
	}
	for _, want := range []string{"amber/crds/amber.dev_backuppolicies.yaml", "amber/files/role.yaml", "amber/files/webhooks.yaml"} {
		if !strings.Contains(string(names), want+"\n") {
			t.Errorf("%s not in the package:\n%s", want, names)
		}
	}
	if strings.Contains(string(names), "charttest") {
		t.Errorf("the package carries the chart's tests:\n%s", names)
	}

}
