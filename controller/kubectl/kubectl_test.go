package kubectl_test

// The tests run `amber k8s` and `kubectl amber` against a real etcd and
// kube-apiserver with the CRDs installed (k8stest). No controller runs:
// where a command waits for a Backup, the test plays the controller and
// writes the Backup's status itself. Most runs go through the built amber
// binary, as amber and as kubectl-amber (its argv[0]); the status table
// runs in-process on a fake clock so that ages are exact.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/controllers"
	"github.com/amber-backup/amber/controller/internal/k8stest"
	"github.com/amber-backup/amber/controller/kubectl"
	"github.com/amber-backup/amber/plugins/api/clock"
)

var (
	skipReason string
	assetsDir  string
	env        *envtest.Environment
	k8s        client.Client
	// amberBin is the amber binary; pluginBin is a link to it named
	// kubectl-amber.
	amberBin, pluginBin string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	assets, why := k8stest.AssetsDir()
	if assets == "" {
		skipReason = why
		return m.Run()
	}
	assetsDir = assets
	e, cfg, err := k8stest.Start(assets, envtest.WebhookInstallOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		return 1
	}
	defer e.Stop()
	env = e
	if k8s, err = client.New(cfg, client.Options{Scheme: testScheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	root, err := testbed.Root()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "amber-k8s-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	amberBin, pluginBin = filepath.Join(dir, "amber"), filepath.Join(dir, kubectl.PluginName)
	build := exec.Command("go", "build", "-o", amberBin, "./sidecar/cmd/amber")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build amber: %v\n%s", err, out)
		return 1
	}
	if err := os.Symlink("amber", pluginBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(amberv1.AddToScheme(s))
	return s
}

func needEnv(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		testbed.Skip(t, "%s", skipReason)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// namespace creates a namespace named for t.
func namespace(t *testing.T, suffix string) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 40 {
		name = name[:40]
	}
	name = strings.Trim(name, "-") + suffix
	must(t, k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}))
	return name
}

// kubeconfig writes a kubeconfig for cfg whose context's namespace is ns.
func kubeconfig(t *testing.T, cfg *rest.Config, ns string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test", Namespace: ns}
	kc.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, clientcmd.WriteToFile(*kc, path))
	return path
}

// adminKubeconfig is a kubeconfig of a cluster administrator for the
// shared API server, with context namespace ns.
func adminKubeconfig(t *testing.T, ns string) string {
	t.Helper()
	return userKubeconfig(t, env, envtest.User{Name: "admin", Groups: []string{"system:masters"}}, ns)
}

func userKubeconfig(t *testing.T, e *envtest.Environment, u envtest.User, ns string) string {
	t.Helper()
	au, err := e.ControlPlane.AddUser(u, nil)
	must(t, err)
	return kubeconfig(t, au.Config(), ns)
}

type result struct {
	stdout, stderr string
	code           int
}

// cliEnv is the environment of a run: the test's, without a kubeconfig or
// in-cluster configuration to fall back on, and with kc as $KUBECONFIG.
func cliEnv(t *testing.T, kc string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KUBECONFIG=") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "KUBERNETES_SERVICE_") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "HOME="+t.TempDir(), "KUBECONFIG="+kc)
}

func command(t *testing.T, bin, kc string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	cmd := exec.Command(bin, args...)
	cmd.Env = cliEnv(t, kc)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// runBin runs bin (amberBin or pluginBin) with $KUBECONFIG=kc.
func runBin(t *testing.T, bin, kc string, args ...string) result {
	t.Helper()
	cmd, stdout, stderr := command(t, bin, kc, args...)
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s %q: %v", bin, args, err)
	}
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// proc is a run of the binary in the background.
type proc struct {
	t              *testing.T
	cmd            *exec.Cmd
	stdout, stderr *bytes.Buffer
	done           chan struct{}
}

// startBin starts bin in the background.
func startBin(t *testing.T, bin, kc string, args ...string) *proc {
	t.Helper()
	cmd, stdout, stderr := command(t, bin, kc, args...)
	must(t, cmd.Start())
	p := &proc{t: t, cmd: cmd, stdout: stdout, stderr: stderr, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.done })
	return p
}

// running reports whether the run goes on.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// wait waits (at most a minute) for the run to end and returns what it did.
func (p *proc) wait() result {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.t.Fatalf("%q did not finish within a minute; stderr: %s", p.cmd.Args, p.stderr.String())
	}
	return result{p.stdout.String(), p.stderr.String(), p.cmd.ProcessState.ExitCode()}
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// inProcess runs the kubectl amber command tree in this process on clk.
func inProcess(t *testing.T, clk clock.Clock, kc string, args ...string) (result, error) {
	t.Helper()
	cmd := kubectl.Command(kubectl.Options{Plugin: true, Clock: clk})
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs(append(args, "--kubeconfig", kc))
	err := cmd.ExecuteContext(context.Background())
	code := 0
	if err != nil {
		code = 1
	}
	return result{stdout.String(), stderr.String(), code}, err
}

func newPolicy(ns, name string, mutate func(*amberv1.BackupPolicy)) *amberv1.BackupPolicy {
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

func createPolicy(t *testing.T, p *amberv1.BackupPolicy, status *amberv1.BackupPolicyStatus) *amberv1.BackupPolicy {
	t.Helper()
	ctx := context.Background()
	must(t, k8s.Create(ctx, p))
	if status != nil {
		p.Status = *status
		must(t, k8s.Status().Update(ctx, p))
	}
	return p
}

func createBackup(t *testing.T, ns, name, policy, sts string, status *amberv1.BackupStatus) *amberv1.Backup {
	t.Helper()
	ctx := context.Background()
	b := &amberv1.Backup{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       amberv1.BackupSpec{PolicyRef: amberv1.LocalRef{Name: policy}, StatefulSet: sts},
	}
	must(t, k8s.Create(ctx, b))
	if status != nil {
		b.Status = *status
		must(t, k8s.Status().Update(ctx, b))
	}
	return b
}

func listBackups(t *testing.T, ns string) []amberv1.Backup {
	t.Helper()
	var list amberv1.BackupList
	must(t, k8s.List(context.Background(), &list, client.InNamespace(ns)))
	return list.Items
}

// oneBackup waits until namespace ns holds exactly one Backup and
// returns it.
func oneBackup(t *testing.T, ns string) *amberv1.Backup {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if l := listBackups(t, ns); len(l) == 1 {
			return &l[0]
		} else if len(l) > 1 {
			t.Fatalf("%d Backups in %s, want 1", len(l), ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no Backup appeared in %s", ns)
	return nil
}

// setStatus plays the controller: it writes b's status.
func setStatus(t *testing.T, b *amberv1.Backup, mutate func(*amberv1.BackupStatus)) {
	t.Helper()
	ctx := context.Background()
	must(t, k8s.Get(ctx, client.ObjectKeyFromObject(b), b))
	mutate(&b.Status)
	must(t, k8s.Status().Update(ctx, b))
}

func mtime(t time.Time) *metav1.Time { return &metav1.Time{Time: t} }

// decodeOne decodes s as exactly one JSON document into v.
func decodeOne(t *testing.T, s string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, s)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err == nil {
		t.Fatalf("stdout holds more than one JSON document:\n%s", s)
	}
}

type backupDoc struct {
	Namespace string               `json:"namespace"`
	Name      string               `json:"name"`
	Scheduled bool                 `json:"scheduled"`
	Spec      amberv1.BackupSpec   `json:"spec"`
	Status    amberv1.BackupStatus `json:"status"`
}

// TestBackupCreates: `amber k8s backup` makes a Backup of the policy with
// the StatefulSet asked for, in the context's namespace or -n's, prints its
// name, and --json prints the object.
func TestBackupCreates(t *testing.T) {
	needEnv(t)
	ns := namespace(t, "")
	other := namespace(t, "-other")
	createPolicy(t, newPolicy(ns, "pg", nil), nil)
	createPolicy(t, newPolicy(other, "pg", nil), nil)
	kc := adminKubeconfig(t, ns)

	r := runBin(t, amberBin, kc, "k8s", "backup", "pg", "--statefulset", "orders-db")
	if r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	name := strings.TrimSpace(r.stdout)
	l := listBackups(t, ns)
	if len(l) != 1 || l[0].Name != name {
		t.Fatalf("printed %q; Backups in %s: %+v", name, ns, l)
	}
	b := l[0]
	if b.Spec.PolicyRef.Name != "pg" || b.Spec.StatefulSet != "orders-db" {
		t.Errorf("spec = %+v, want policyRef pg, statefulSet orders-db", b.Spec)
	}
	if !strings.HasPrefix(b.Name, "pg-manual-") {
		t.Errorf("name %q, want a generated pg-manual-... name", b.Name)
	}
	if b.Labels[controllers.LabelPolicy] != "pg" || b.Labels[controllers.LabelStatefulSet] != "orders-db" || b.Labels[controllers.LabelScheduled] != "" {
		t.Errorf("labels = %v, want the policy and StatefulSet labels a schedule sets, not scheduled", b.Labels)
	}

	// -n wins over the context's namespace; no --statefulset leaves it to
	// the controller. --json prints the object as the API holds it.
	r = runBin(t, amberBin, kc, "k8s", "backup", "pg", "-n", other, "--json")
	if r.code != 0 {
		t.Fatalf("backup -n --json: %s", r)
	}
	var doc backupDoc
	decodeOne(t, r.stdout, &doc)
	l = listBackups(t, other)
	if len(l) != 1 || doc.Name != l[0].Name || doc.Namespace != other || doc.Spec.PolicyRef.Name != "pg" ||
		doc.Spec.StatefulSet != "" || l[0].Spec.StatefulSet != "" || doc.Status.Phase != "" {
		t.Fatalf("--json printed %+v; Backups in %s: %+v", doc, other, l)
	}
	if got := len(listBackups(t, ns)); got != 1 {
		t.Errorf("%d Backups in %s after a backup -n %s, want 1", got, ns, other)
	}
}

// TestBackupWait: --wait follows the Backup while the controller (the
// test) moves it to Running and Succeeded, then exits 0; on Failed it
// exits 1 with the status's error; with --timeout it gives up.
func TestBackupWait(t *testing.T) {
	needEnv(t)
	started := time.Now().Add(-time.Minute).Truncate(time.Second)

	t.Run("Succeeded", func(t *testing.T) {
		ns := namespace(t, "")
		createPolicy(t, newPolicy(ns, "pg", nil), nil)
		p := startBin(t, pluginBin, adminKubeconfig(t, ns), "backup", "pg", "--wait")
		b := oneBackup(t, ns)
		time.Sleep(500 * time.Millisecond)
		if !p.running() {
			t.Fatalf("backup --wait returned while the Backup was Pending: %s", p.wait())
		}
		setStatus(t, b, func(s *amberv1.BackupStatus) {
			s.Phase, s.StatefulSet, s.TargetPod, s.StartedAt = amberv1.PhaseRunning, "db", "db-1", mtime(started)
		})
		time.Sleep(time.Second)
		if !p.running() {
			t.Fatalf("backup --wait returned while the Backup was Running: %s", p.wait())
		}
		setStatus(t, b, func(s *amberv1.BackupStatus) {
			s.Phase, s.FinishedAt, s.BackupID, s.Bytes = amberv1.PhaseSucceeded, mtime(started.Add(42*time.Second)), "0123456789abcdef0123", 3<<20
			s.BytesAdded = 1 << 20
		})
		r := p.wait()
		if r.code != 0 {
			t.Fatalf("backup --wait on a Succeeded Backup: %s", r)
		}
		if strings.TrimSpace(r.stdout) != b.Name {
			t.Errorf("stdout %q, want the Backup's name %q", r.stdout, b.Name)
		}
		want := fmt.Sprintf("backup %s succeeded: id 0123456789abcdef0123, 3.0 MiB read from pod db-1 of StatefulSet db, 1.0 MiB added to the repository in 42s", b.Name)
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, r)
		}
		if strings.Contains(r.stderr, "\r") {
			t.Errorf("a progress line on a stderr that is no terminal: %q", r.stderr)
		}
	})

	t.Run("ProgressOnATerminal", func(t *testing.T) {
		// script(1) runs the command on a pseudo-terminal and copies what
		// it writes there to its stdout.
		script, err := exec.LookPath("script")
		if err != nil {
			testbed.Skip(t, "script (util-linux) not found: it gives the command a terminal")
		}
		ns := namespace(t, "")
		createPolicy(t, newPolicy(ns, "pg", nil), nil)
		p := startBin(t, script, adminKubeconfig(t, ns), "-q", "-e", "-c", amberBin+" k8s backup pg --wait", "/dev/null")
		b := oneBackup(t, ns)
		setStatus(t, b, func(s *amberv1.BackupStatus) {
			s.Phase, s.StatefulSet, s.TargetPod, s.StartedAt = amberv1.PhaseRunning, "db", "db-2", mtime(started)
		})
		time.Sleep(1500 * time.Millisecond)
		setStatus(t, b, func(s *amberv1.BackupStatus) {
			s.Phase, s.FinishedAt, s.BackupID, s.Bytes = amberv1.PhaseSucceeded, mtime(started.Add(time.Second)), "abc", 1
		})
		r := p.wait()
		want := "\r\033[K" + b.Name + ": Running on pod db-2 of StatefulSet db"
		if r.code != 0 || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "succeeded: id abc") {
			t.Errorf("backup --wait on a terminal printed %q; want a progress line %q and the result", r.stdout, want)
		}
	})

	t.Run("StillRunningIsFollowed", func(t *testing.T) {
		ns := namespace(t, "")
		createPolicy(t, newPolicy(ns, "pg", nil), nil)
		p := startBin(t, amberBin, adminKubeconfig(t, ns), "k8s", "backup", "pg", "--wait", "--json")
		b := oneBackup(t, ns)
		setStatus(t, b, func(s *amberv1.BackupStatus) {
			s.Phase, s.StatefulSet, s.TargetPod, s.StartedAt = amberv1.PhaseRunning, "db", "db-0", mtime(started)
		})
		// Several updates while Running: the command keeps waiting.
		for i := range 3 {
			time.Sleep(300 * time.Millisecond)
			setStatus(t, b, func(s *amberv1.BackupStatus) { s.Bytes = int64(i+1) << 20 })
			if !p.running() {
				t.Fatalf("backup --wait returned while the Backup was Running: %s", p.wait())
			}
		}
		setStatus(t, b, func(s *amberv1.BackupStatus) {
			s.Phase, s.FinishedAt, s.BackupID = amberv1.PhaseSucceeded, mtime(started.Add(time.Minute)), "feedfacefeedface"
		})
		r := p.wait()
		if r.code != 0 {
			t.Fatalf("backup --wait --json: %s", r)
		}
		var doc backupDoc
		decodeOne(t, r.stdout, &doc)
		if doc.Name != b.Name || doc.Status.Phase != amberv1.PhaseSucceeded || doc.Status.BackupID != "feedfacefeedface" ||
			doc.Status.TargetPod != "db-0" || doc.Status.Bytes != 3<<20 {
			t.Errorf("--json printed %+v, want the Succeeded status", doc)
		}
	})

	t.Run("Failed", func(t *testing.T) {
		ns := namespace(t, "")
		createPolicy(t, newPolicy(ns, "pg", nil), nil)
		for _, jsonOut := range []bool{false, true} {
			args := []string{"backup", "pg", "--wait", "--statefulset", "db"}
			if jsonOut {
				args = append(args, "--json")
			}
			p := startBin(t, pluginBin, adminKubeconfig(t, ns), args...)
			b := oneBackup(t, ns)
			const problem = "pod db-0: wal_level is minimal; set wal_level=replica and restart"
			setStatus(t, b, func(s *amberv1.BackupStatus) {
				s.Phase, s.StatefulSet, s.TargetPod, s.StartedAt = amberv1.PhaseRunning, "db", "db-0", mtime(started)
			})
			setStatus(t, b, func(s *amberv1.BackupStatus) {
				s.Phase, s.FinishedAt, s.Error = amberv1.PhaseFailed, mtime(started.Add(time.Second)), problem
			})
			r := p.wait()
			if r.code != 1 {
				t.Fatalf("backup --wait on a Failed Backup: %s; want exit 1", r)
			}
			want := fmt.Sprintf("kubectl amber: backup %s failed: %s", b.Name, problem)
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q: %s", want, r)
			}
			if jsonOut {
				// One document, the Backup; not a second {"error": ...}.
				var doc backupDoc
				decodeOne(t, r.stdout, &doc)
				if doc.Status.Phase != amberv1.PhaseFailed || doc.Status.Error != problem {
					t.Errorf("--json printed %+v, want the Failed status", doc)
				}
			} else if strings.TrimSpace(r.stdout) != b.Name {
				t.Errorf("stdout %q, want the Backup's name", r.stdout)
			}
			must(t, k8s.Delete(context.Background(), b))
			for len(listBackups(t, ns)) != 0 {
				time.Sleep(50 * time.Millisecond)
			}
		}
	})

	t.Run("Timeout", func(t *testing.T) {
		ns := namespace(t, "")
		createPolicy(t, newPolicy(ns, "pg", nil), nil)
		begin := time.Now()
		r := runBin(t, amberBin, adminKubeconfig(t, ns), "k8s", "backup", "pg", "--wait", "--timeout", "2s")
		if r.code != 1 || !strings.Contains(r.stderr, "is still Pending after 2s; it goes on") {
			t.Fatalf("--wait --timeout 2s with no controller: %s", r)
		}
		if d := time.Since(begin); d > 20*time.Second {
			t.Errorf("gave up after %s, want about 2s", d)
		}
		if l := listBackups(t, ns); len(l) != 1 {
			t.Errorf("%d Backups after the timeout, want the one created (it goes on)", len(l))
		}
	})
}

// fields splits a table row on runs of two or more spaces.
func fields(line string) []string {
	return regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1)
}

// TestLs: ls lists a namespace's Backups oldest first with their
// columns, filters by policy, spans namespaces with -A, and --json
// prints the objects.
func TestLs(t *testing.T) {
	needEnv(t)
	ns := namespace(t, "")
	other := namespace(t, "-other")
	createPolicy(t, newPolicy(ns, "pg", nil), nil)
	createPolicy(t, newPolicy(ns, "mongo", nil), nil)
	createPolicy(t, newPolicy(other, "pg", nil), nil)
	base := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	// Made newest first, and named so that name order is not time order.
	createBackup(t, ns, "a-pending", "pg", "db", nil)
	createBackup(t, ns, "b-new", "pg", "", &amberv1.BackupStatus{Phase: amberv1.PhaseFailed, StatefulSet: "db", TargetPod: "db-0",
		StartedAt: mtime(base.Add(time.Hour)), FinishedAt: mtime(base.Add(time.Hour + 7*time.Second)), Error: "pod db-0: connection refused"})
	createBackup(t, ns, "c-old", "pg", "db", &amberv1.BackupStatus{Phase: amberv1.PhaseSucceeded, StatefulSet: "db", TargetPod: "db-1",
		StartedAt: mtime(base), FinishedAt: mtime(base.Add(5 * time.Minute)), BackupID: "0123456789abcdef0123456789abcdef", Bytes: 1 << 20})
	createBackup(t, ns, "d-mongo", "mongo", "", &amberv1.BackupStatus{Phase: amberv1.PhaseSucceeded, StatefulSet: "rs", TargetPod: "rs-2",
		StartedAt: mtime(base.Add(30 * time.Minute)), FinishedAt: mtime(base.Add(31 * time.Minute)), BackupID: "aaaabbbbccccdddd", Bytes: 2048})
	createBackup(t, other, "e-elsewhere", "pg", "", &amberv1.BackupStatus{Phase: amberv1.PhaseRunning, StatefulSet: "db", TargetPod: "db-2",
		StartedAt: mtime(base.Add(2 * time.Hour))})
	kc := adminKubeconfig(t, ns)

	r := runBin(t, amberBin, kc, "k8s", "ls")
	if r.code != 0 {
		t.Fatalf("ls: %s", r)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	want := [][]string{
		{"NAME", "POLICY", "STATEFULSET", "POD", "PHASE", "STARTED", "DURATION", "BYTES", "BACKUP ID"},
		{"c-old", "pg", "db", "db-1", "Succeeded", base.Local().Format(time.DateTime), "5m0s", "1.0 MiB", "0123456789ab"},
		{"d-mongo", "mongo", "rs", "rs-2", "Succeeded", base.Add(30 * time.Minute).Local().Format(time.DateTime), "1m0s", "2.0 KiB", "aaaabbbbcccc"},
		{"b-new", "pg", "db", "db-0", "Failed", base.Add(time.Hour).Local().Format(time.DateTime), "7s", "-", "-"},
		{"a-pending", "pg", "db", "-", "Pending", "-", "-", "-", "-"},
	}
	if len(lines) != len(want) {
		t.Fatalf("ls printed %d lines, want %d:\n%s", len(lines), len(want), r.stdout)
	}
	for i, w := range want {
		if got := fields(lines[i]); strings.Join(got, "|") != strings.Join(w, "|") {
			t.Errorf("ls line %d = %q, want %q", i, got, w)
		}
	}

	// A policy's Backups only.
	r = runBin(t, pluginBin, kc, "ls", "pg")
	if r.code != 0 {
		t.Fatalf("ls pg: %s", r)
	}
	if got := firstColumn(r.stdout); got != "c-old b-new a-pending" {
		t.Errorf("ls pg lists %q, want c-old b-new a-pending", got)
	}

	// Every namespace, with a NAMESPACE column.
	r = runBin(t, amberBin, kc, "k8s", "ls", "-A", "pg")
	if r.code != 0 {
		t.Fatalf("ls -A pg: %s", r)
	}
	lines = strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if h := fields(lines[0]); h[0] != "NAMESPACE" || h[1] != "NAME" {
		t.Errorf("ls -A header %q, want NAMESPACE NAME ...", h)
	}
	var got []string
	for _, l := range lines[1:] {
		f := fields(l)
		if f[0] == ns || f[0] == other {
			got = append(got, f[0]+"/"+f[1])
		}
	}
	if w := []string{ns + "/c-old", ns + "/b-new", other + "/e-elsewhere", ns + "/a-pending"}; strings.Join(got, " ") != strings.Join(w, " ") {
		t.Errorf("ls -A pg lists %q, want %q", got, w)
	}

	// --json: the objects, oldest first.
	r = runBin(t, amberBin, kc, "k8s", "ls", "--json")
	if r.code != 0 {
		t.Fatalf("ls --json: %s", r)
	}
	var doc struct {
		Backups []backupDoc `json:"backups"`
	}
	decodeOne(t, r.stdout, &doc)
	var names []string
	for _, b := range doc.Backups {
		names = append(names, b.Name)
	}
	if strings.Join(names, " ") != "c-old d-mongo b-new a-pending" {
		t.Fatalf("ls --json lists %q", names)
	}
	if b := doc.Backups[0]; b.Namespace != ns || b.Spec.PolicyRef.Name != "pg" || b.Status.BackupID != "0123456789abcdef0123456789abcdef" ||
		b.Status.Bytes != 1<<20 || !b.Status.StartedAt.Time.Equal(base) {
		t.Errorf("ls --json first Backup = %+v", b)
	}
	if b := doc.Backups[2]; b.Status.Phase != amberv1.PhaseFailed || b.Status.Error != "pod db-0: connection refused" {
		t.Errorf("ls --json Failed Backup = %+v", b)
	}

	// An empty namespace: nothing on stdout, an empty list in JSON.
	empty := namespace(t, "-empty")
	r = runBin(t, amberBin, kc, "k8s", "ls", "-n", empty)
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "no Backups in namespace "+empty) {
		t.Errorf("ls in an empty namespace: %s", r)
	}
	r = runBin(t, amberBin, kc, "k8s", "ls", "-n", empty, "--json")
	decodeOne(t, r.stdout, &doc)
	if r.code != 0 || doc.Backups == nil || len(doc.Backups) != 0 {
		t.Errorf("ls --json in an empty namespace: %s", r)
	}
}

func firstColumn(table string) string {
	var out []string
	for _, l := range strings.Split(strings.TrimRight(table, "\n"), "\n")[1:] {
		out = append(out, fields(l)[0])
	}
	return strings.Join(out, " ")
}

// TestStatus: status shows each policy's conditions, archivers, last good
// backup and its age, next run and newest Backup, as a table and as JSON.
func TestStatus(t *testing.T) {
	needEnv(t)
	ns := namespace(t, "")
	now := time.Now().Truncate(time.Second)
	clk := clock.NewFake(now)
	cond := func(typ string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, LastTransitionTime: metav1.Time{Time: now.Add(-time.Hour)}}
	}
	createPolicy(t, newPolicy(ns, "pg", func(p *amberv1.BackupPolicy) { p.Spec.Schedule, p.Spec.Archive = "@daily", true }),
		&amberv1.BackupPolicyStatus{
			ObservedGeneration: 1,
			Conditions: []metav1.Condition{
				cond(controllers.CondReady, metav1.ConditionTrue, "Valid", "policy is valid"),
				cond(controllers.CondArchiving, metav1.ConditionFalse, "NoArchiver", "StatefulSet reports: pod reports-0 does not answer"),
			},
			Archivers: []amberv1.ArchiverStatus{{StatefulSet: "orders", Pod: "orders-1", Since: metav1.Time{Time: now.Add(-50 * time.Minute)},
				RecoverableFrom: mtime(now.Add(-48 * time.Hour)), RecoverableTo: mtime(now.Add(-2 * time.Minute)),
				Gaps: []string{"0/5000000 to 0/6000000: a segment is missing"}}},
			LastSuccessfulBackup: "pg-orders-20250101-0000",
			LastSuccessfulTime:   mtime(now.Add(-30 * time.Hour)),
			NextScheduleTime:     mtime(now.Add(20*time.Hour + 30*time.Minute)),
		})
	createPolicy(t, newPolicy(ns, "fresh", func(p *amberv1.BackupPolicy) { p.Spec.Mode = amberv1.ModeLogical }), nil)
	createBackup(t, ns, "pg-older", "pg", "", &amberv1.BackupStatus{Phase: amberv1.PhaseSucceeded, StartedAt: mtime(now.Add(-30 * time.Hour))})
	createBackup(t, ns, "pg-newest", "pg", "", &amberv1.BackupStatus{Phase: amberv1.PhaseFailed, StartedAt: mtime(now.Add(-4 * time.Hour)),
		FinishedAt: mtime(now.Add(-4 * time.Hour)), Error: "pod orders-1: disk full"})
	kc := adminKubeconfig(t, ns)

	r, err := inProcess(t, clk, kc, "status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, r)
	}
	stamp := func(t time.Time) string { return t.Local().Format(time.DateTime) }
	want := fmt.Sprintf(`BackupPolicy %[1]s/fresh (postgres, logical)
  Ready:     unknown: the controller has not reported on this policy (is amber-controller running?)
  Archiving: off (spec.archive is false)
  Last good: none yet
  Next run:  none: no schedule (back up with `+"`kubectl amber backup fresh -n %[1]s`"+`)

BackupPolicy %[1]s/pg (postgres, physical)
  Ready:     True (Valid): policy is valid
  Archiving: False (NoArchiver): StatefulSet reports: pod reports-0 does not answer
  Archivers: StatefulSet orders: pod orders-1, since %[2]s (50m ago)
               recoverable from %[6]s to %[7]s (2m ago)
               GAP: 0/5000000 to 0/6000000: a segment is missing
  Last good: pg-orders-20250101-0000, finished %[3]s (30h ago)
  Next run:  %[4]s (in 20h; schedule "@daily")
  Latest:    pg-newest: Failed, started %[5]s (4h ago): pod orders-1: disk full
`, ns, stamp(now.Add(-50*time.Minute)), stamp(now.Add(-30*time.Hour)), stamp(now.Add(20*time.Hour+30*time.Minute)), stamp(now.Add(-4*time.Hour)),
		stamp(now.Add(-48*time.Hour)), stamp(now.Add(-2*time.Minute)))
	if r.stdout != want {
		t.Errorf("status printed\n%s\nwant\n%s", r.stdout, want)
	}

	// One policy, through the binary as kubectl-amber; -n names the namespace.
	r = runBin(t, pluginBin, adminKubeconfig(t, "default"), "status", "pg", "-n", ns)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "BackupPolicy "+ns+"/pg (postgres, physical)\n") || strings.Contains(r.stdout, "fresh") {
		t.Errorf("status pg -n %s: %s", ns, r)
	}

	// --json: spec and status as the API holds them, and the newest Backup.
	r = runBin(t, amberBin, kc, "k8s", "status", "--json")
	if r.code != 0 {
		t.Fatalf("status --json: %s", r)
	}
	var doc struct {
		Policies []struct {
			Namespace    string                     `json:"namespace"`
			Name         string                     `json:"name"`
			Spec         amberv1.BackupPolicySpec   `json:"spec"`
			Status       amberv1.BackupPolicyStatus `json:"status"`
			LatestBackup *backupDoc                 `json:"latestBackup"`
		} `json:"policies"`
	}
	decodeOne(t, r.stdout, &doc)
	if len(doc.Policies) != 2 || doc.Policies[0].Name != "fresh" || doc.Policies[1].Name != "pg" {
		t.Fatalf("status --json: %s", r.stdout)
	}
	if p := doc.Policies[0]; p.LatestBackup != nil || len(p.Status.Conditions) != 0 || p.Spec.Mode != amberv1.ModeLogical {
		t.Errorf("status --json fresh = %+v", p)
	}
	p := doc.Policies[1]
	if p.Namespace != ns || p.Spec.Schedule != "@daily" || !p.Spec.Archive || p.Status.LastSuccessfulBackup != "pg-orders-20250101-0000" ||
		!p.Status.LastSuccessfulTime.Time.Equal(now.Add(-30*time.Hour)) || !p.Status.NextScheduleTime.Time.Equal(now.Add(20*time.Hour+30*time.Minute)) ||
		len(p.Status.Archivers) != 1 || p.Status.Archivers[0].Pod != "orders-1" || len(p.Status.Conditions) != 2 {
		t.Errorf("status --json pg = %+v", p)
	}
	if p.LatestBackup == nil || p.LatestBackup.Name != "pg-newest" || p.LatestBackup.Status.Error != "pod orders-1: disk full" {
		t.Errorf("status --json pg latest = %+v", p.LatestBackup)
	}
}

// TestErrors: what a user sees when something is missing or not allowed,
// and the exit status of a bad command line.
func TestErrors(t *testing.T) {
	needEnv(t)
	ns := namespace(t, "")
	kc := adminKubeconfig(t, ns)

	t.Run("PolicyNotFound", func(t *testing.T) {
		for _, args := range [][]string{{"k8s", "backup", "nope"}, {"k8s", "status", "nope"}, {"k8s", "ls", "nope"}} {
			r := runBin(t, amberBin, kc, args...)
			want := fmt.Sprintf(`amber: BackupPolicy "nope" not found in namespace %s (list the policies with `+"`amber k8s status -A`)", ns)
			if r.code != 1 || !strings.Contains(r.stderr, want) {
				t.Errorf("%q: %s; want exit 1 and %q", args, r, want)
			}
		}
		r := runBin(t, amberBin, kc, "k8s", "status", "-A", "nope")
		if r.code != 1 || !strings.Contains(r.stderr, `BackupPolicy "nope" not found in any namespace`) {
			t.Errorf("status -A nope: %s", r)
		}
		if l := listBackups(t, ns); len(l) != 0 {
			t.Errorf("a backup of a missing policy created %d Backups", len(l))
		}
	})

	t.Run("CRDsAbsent", func(t *testing.T) {
		bare := &envtest.Environment{BinaryAssetsDirectory: assetsDir}
		if _, err := bare.Start(); err != nil {
			t.Fatalf("start a second API server: %v", err)
		}
		defer bare.Stop()
		bkc := userKubeconfig(t, bare, envtest.User{Name: "admin", Groups: []string{"system:masters"}}, "default")
		for _, args := range [][]string{{"backup", "pg"}, {"restore", "pg", "--name", "c"}, {"ls"}, {"status", "-A"}, {"ls", "--json"}} {
			r := runBin(t, pluginBin, bkc, args...)
			if r.code != 1 || !strings.Contains(r.stderr, "install the CRDs: kubectl apply -f controller/config/crd/") {
				t.Errorf("%q without the CRDs: %s", args, r)
			}
			if args[len(args)-1] == "--json" {
				var doc struct{ Error string }
				decodeOne(t, r.stdout, &doc)
				if !strings.Contains(doc.Error, "install the CRDs") {
					t.Errorf("--json error document %q", r.stdout)
				}
			}
		}
	})

	t.Run("Forbidden", func(t *testing.T) {
		nkc := userKubeconfig(t, env, envtest.User{Name: "nobody"}, ns)
		r := runBin(t, amberBin, nkc, "k8s", "ls")
		want := fmt.Sprintf("ask a cluster administrator for permission to list backups.amber.dev (check with `kubectl auth can-i list backups.amber.dev -n %s`)", ns)
		if r.code != 1 || !strings.Contains(r.stderr, "forbidden") || !strings.Contains(r.stderr, want) {
			t.Errorf("ls without permission: %s", r)
		}
		// Allowed to read policies but not to create Backups.
		ctx := context.Background()
		must(t, k8s.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "read-policies"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"amber.dev"}, Resources: []string{"backuppolicies"}, Verbs: []string{"get"}}}}))
		must(t, k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nobody-reads"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "read-policies"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: "nobody"}}}))
		createPolicy(t, newPolicy(ns, "pg", nil), nil)
		want = fmt.Sprintf("permission to create backups.amber.dev (check with `kubectl auth can-i create backups.amber.dev -n %s`)", ns)
		deadline := time.Now().Add(10 * time.Second) // RBAC caches
		for {
			r = runBin(t, amberBin, nkc, "k8s", "backup", "pg")
			if strings.Contains(r.stderr, want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("backup without create permission: %s", r)
		}
	})

	t.Run("NoKubeconfig", func(t *testing.T) {
		r := runBin(t, pluginBin, filepath.Join(t.TempDir(), "missing"), "ls")
		if r.code != 1 || !strings.Contains(r.stderr, "kubectl amber: no kubeconfig found: pass --kubeconfig, set $KUBECONFIG or create ~/.kube/config") {
			t.Errorf("ls without a kubeconfig: %s", r)
		}
		r = runBin(t, amberBin, kc, "k8s", "ls", "--kubeconfig", filepath.Join(t.TempDir(), "missing"))
		if r.code != 1 || !strings.Contains(r.stderr, "read the kubeconfig") {
			t.Errorf("ls --kubeconfig <missing file>: %s", r)
		}
		r = runBin(t, amberBin, kc, "k8s", "ls", "--context", "nowhere")
		if r.code != 1 || !strings.Contains(r.stderr, `"nowhere"`) {
			t.Errorf("ls --context nowhere: %s", r)
		}
	})

	t.Run("Usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"k8s", "backup"},
			{"k8s", "backup", "pg", "--timeout", "1m"},
			{"k8s", "ls", "-A", "-n", ns},
			{"k8s", "ls", "a", "b"},
			{"k8s", "status", "--bogus"},
			{"k8s", "bogus"},
		} {
			r := runBin(t, amberBin, kc, args...)
			if r.code != 2 || !strings.Contains(r.stderr, "Run 'amber --help'") {
				t.Errorf("%q: %s; want exit 2", args, r)
			}
		}
		r := runBin(t, pluginBin, kc, "backup")
		if r.code != 2 || !strings.Contains(r.stderr, "Run 'kubectl amber --help'") {
			t.Errorf("kubectl amber backup: %s; want exit 2", r)
		}
	})
}

// TestPluginHelp: kubectl-amber is `amber k8s` under the kubectl plugin's
// name, and --help teaches with examples.
func TestPluginHelp(t *testing.T) {
	needEnv(t)
	kc := adminKubeconfig(t, "default")
	r := runBin(t, pluginBin, kc, "--help")
	for _, want := range []string{"kubectl amber [command]", "kubectl amber backup pg --wait", "backup ", "restore ", "ls ", "status ", "--namespace"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("kubectl-amber --help lacks %q: %s", want, r)
		}
	}
	r = runBin(t, amberBin, kc, "k8s", "backup", "--help")
	for _, want := range []string{"amber k8s backup POLICY [flags]", "amber k8s backup pg --wait", "--statefulset", "--timeout"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("amber k8s backup --help lacks %q: %s", want, r)
		}
	}
	r = runBin(t, pluginBin, kc, "restore", "--help")
	for _, want := range []string{"kubectl amber restore POLICY|STATEFULSET --name CLONE [flags]", "kubectl amber restore pg --name pg-yesterday --to-time 2026-11-27T18:00:00Z --wait",
		"--to-position", "--backup", "--statefulset", "--source-namespace", "--timeout", "kubectl delete sts,svc,pvc -l amber.dev/restore=CLONE"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("kubectl amber restore --help lacks %q: %s", want, r)
		}
	}
	r = runBin(t, amberBin, kc, "--help")
	if !strings.Contains(r.stdout, "k8s ") {
		t.Errorf("amber --help does not list k8s: %s", r)
	}
}

// TestImportsStayLight: the amber binary links this package, so it
// imports of Amber's code only the API types and the clock, and not
// client-go's full scheme (whose every API group an archive_command run
// would initialise).
func TestImportsStayLight(t *testing.T) {
	root, err := testbed.Root()
	must(t, err)
	cmd := exec.Command("go", "list", "-deps", "./controller/kubectl")
	cmd.Dir = root
	out, err := cmd.Output()
	must(t, err)
	allowed := map[string]bool{
		"github.com/amber-backup/amber/controller/kubectl":      true,
		"github.com/amber-backup/amber/controller/api/v1alpha1": true,
		"github.com/amber-backup/amber/plugins/api/clock":       true,
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/amber-backup/amber/") && !allowed[pkg] {
			t.Errorf("controller/kubectl imports %s", pkg)
		}
		if strings.HasPrefix(pkg, "k8s.io/client-go/kubernetes") || strings.HasPrefix(pkg, "k8s.io/api/") ||
			pkg == "sigs.k8s.io/controller-runtime/pkg/client" {
			t.Errorf("controller/kubectl imports %s", pkg)
		}
	}
}
