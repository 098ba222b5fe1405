package scale

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/amber-backup/amber/conformance/testbed"
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/app"
	"github.com/amber-backup/amber/controller/certs"
	"github.com/amber-backup/amber/controller/controllers"
	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/controller/internal/k8stest"
	"github.com/amber-backup/amber/plugins/api/clock"
)

// The goals of the Kubernetes issue for 300 StatefulSets of 3 replicas.
const (
	goalConverge = 60 * time.Second
	goalRSSMiB   = 200
)

const (
	controllerNS = "amber-system"
	caSecret     = "amber-ca"
	sidecarImage = "amber:scale"
	replicas     = 3
	nodeName     = "kwok-node-0"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(child(spec))
	}
	// envtest logs through controller-runtime's logger; the test has
	// nothing to add to its output.
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

// layout is what the test creates: n StatefulSets, each with its own
// BackupPolicy, perNS to a namespace.
type layout struct{ n, perNS int }

// describe names the layout's namespaces: "10 namespaces of 30".
func (l layout) describe() string {
	if n := len(l.namespaces()); n != 1 {
		return fmt.Sprintf("%d namespaces of %d", n, l.perNS)
	}
	return fmt.Sprintf("1 namespace of %d", l.n)
}

func (l layout) namespaces() []string {
	var out []string
	for i := 0; i*l.perNS < l.n; i++ {
		out = append(out, fmt.Sprintf("scale-%02d", i))
	}
	return out
}

type stsRef struct{ ns, name, policy string }

func (l layout) statefulSets() []stsRef {
	out := make([]stsRef, l.n)
	for i := range out {
		out[i] = stsRef{ns: fmt.Sprintf("scale-%02d", i/l.perNS), name: fmt.Sprintf("db-%03d", i), policy: fmt.Sprintf("pg-%03d", i)}
	}
	return out
}

// envInt reads a positive number from the environment, or def.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// TestControllerScale: with every pod of n StatefulSets Running and
// injected, a freshly started controller gives each StatefulSet exactly
// one archiver (its primary, ordinal 0), marks every policy Ready, within
// the goals for time and memory.
//
// AMBER_SCALE_STATEFULSETS sets n (default 30); AMBER_SCALE_PER_NAMESPACE
// how many StatefulSets share a namespace, a comma-separated list to
// measure several layouts one after the other (default 30);
// AMBER_SCALE_REPORT a Markdown file to write the figures into;
// AMBER_SCALE_PPROF a directory for the controller's CPU and heap profiles.
func TestControllerScale(t *testing.T) {
	assets, why := k8stest.AssetsDir()
	if assets == "" {
		testbed.Skip(t, "%s", why)
	}
	kwokBin, why := k8stest.KwokPath()
	if kwokBin == "" {
		testbed.Skip(t, "%s", why)
	}
	n := envInt(t, "AMBER_SCALE_STATEFULSETS", 30)
	var layouts []layout
	for _, v := range strings.Split(cmp.Or(os.Getenv("AMBER_SCALE_PER_NAMESPACE"), "30"), ",") {
		per, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || per < 1 {
			t.Fatalf("AMBER_SCALE_PER_NAMESPACE=%q: want positive numbers, comma-separated", os.Getenv("AMBER_SCALE_PER_NAMESPACE"))
		}
		layouts = append(layouts, layout{n: n, perNS: min(per, n)})
	}
	var runs []run
	for _, l := range layouts {
		t.Run(fmt.Sprintf("%d-statefulsets-%d-per-namespace", l.n, l.perNS), func(t *testing.T) {
			r := measure(t, assets, kwokBin, l)
			runs = append(runs, r)
			res := r.res
			if res.Child.StartArchiving != l.n || res.Child.StopArchiving != 0 {
				t.Errorf("StartArchiving called %d times and StopArchiving %d times, want once per StatefulSet (%d) and never",
					res.Child.StartArchiving, res.Child.StopArchiving, l.n)
			}
			if res.Child.ReconcileErrors > 0 {
				t.Errorf("%d reconciles failed; the controller's log ends:\n%s", res.Child.ReconcileErrors, res.Log)
			}
			if res.Converged > goalConverge {
				t.Errorf("converged after %s, goal < %s", res.Converged, goalConverge)
			}
			if peak := max(res.PeakRSSMiB, res.PeakRSSEndMiB); peak >= goalRSSMiB {
				t.Errorf("peak RSS %.1f MiB, goal < %d MiB", peak, goalRSSMiB)
			}
			// Nothing changes after convergence: the reconciles that the
			// timers bring write nothing. (Events are not checked here:
			// the recorder posts them in the background, so those of the
			// convergence may still be arriving.)
			for _, k := range []string{"PATCH backuppolicies/status", "PUT backuppolicies/status"} {
				if n := res.Steady.Requests[k]; n > 0 {
					t.Errorf("in the steady state: %d × %s; want none", n, k)
				}
			}
			if res.Steady.ReconcileErrors > 0 || res.Steady.StartArchiving != 0 || res.Steady.StopArchiving != 0 {
				t.Errorf("in the steady state: %d reconciles failed, %d StartArchiving, %d StopArchiving; want none",
					res.Steady.ReconcileErrors, res.Steady.StartArchiving, res.Steady.StopArchiving)
			}
		})
	}
	if out := os.Getenv("AMBER_SCALE_REPORT"); out != "" && len(runs) > 0 {
		must(t, writeReport(out, runs))
		t.Logf("wrote the controller scale section into %s", out)
	}
}

// run is one layout measured.
type run struct {
	l   layout
	e   runEnv
	res result
}

// measure starts a control plane and kwok, creates the layout's objects
// and pods, then starts the controller and measures it.
func measure(t *testing.T, assets, kwokBin string, l layout) run {
	ctx := context.Background()
	dir := t.TempDir()
	e := runEnv{LoadStart: loadAvg(), Etcd: binaryVersion(filepath.Join(assets, "etcd")), Kwok: binaryVersion(kwokBin)}

	port := freePort(t)
	hookURL := fmt.Sprintf("https://127.0.0.1:%d%s", port, inject.Path)
	env, envCfg, err := k8stest.Start(assets, envtest.WebhookInstallOptions{
		LocalServingHost: "127.0.0.1",
		LocalServingPort: port,
		MutatingWebhooks: []*admissionregistrationv1.MutatingWebhookConfiguration{
			inject.MutatingWebhookConfiguration(admissionregistrationv1.WebhookClientConfig{URL: &hookURL}),
		},
	})
	if err != nil {
		t.Fatalf("start etcd and kube-apiserver: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	// Set-up creates thousands of objects: no client-side rate limit.
	cfg := rest.CopyConfig(envCfg)
	cfg.QPS, cfg.Burst = -1, 0
	k8s, err := client.New(cfg, client.Options{Scheme: app.Scheme()})
	must(t, err)
	if dc, err := discovery.NewDiscoveryClientForConfig(cfg); err == nil {
		if v, err := dc.ServerVersion(); err == nil {
			e.APIServer = "kube-apiserver " + v.GitVersion
		}
	}

	// A kubeconfig for kwok and for the controller, as a cluster admin.
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "amber-scale", Groups: []string{"system:masters"}}, nil)
	must(t, err)
	kc, err := user.KubeConfig()
	must(t, err)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	must(t, os.WriteFile(kubeconfig, kc, 0o600))

	kwok, err := k8stest.StartKwok(kwokBin, kubeconfig, dir)
	must(t, err)
	t.Cleanup(func() { _ = kwok.Stop() })
	must(t, k8s.Create(ctx, k8stest.KwokNode(nodeName)))

	setupStart := time.Now()
	certDir := filepath.Join(dir, "certs")
	stopHook := serveInjector(t, k8s, port, certDir)
	createWorkload(t, k8s, l)
	waitRunning(t, k8s, l, kwok)
	stopHook()
	t.Logf("set-up: %d StatefulSets × %d pods in %d namespace(s), Running and injected in %s",
		l.n, replicas, len(l.namespaces()), time.Since(setupStart).Round(time.Millisecond))

	res := runController(t, kubeconfig, port, certDir, k8s, l)
	e.LoadEnd = loadAvg()
	t.Logf("controller: all %d policies Ready after %s, all archivers placed after %s; peak RSS %.1f MiB (%.1f MiB after %s more); CPU %.2f s",
		l.n, res.Ready.Round(time.Millisecond), res.Converged.Round(time.Millisecond), res.PeakRSSMiB, res.PeakRSSEndMiB, steadyWindow, res.CPUSeconds)
	t.Logf("controller: %d reconciles (%s), %d API requests, %.2f per reconcile; sidecar calls: %d Probe, %d StartArchiving, %d StopArchiving",
		res.Child.TotalReconciles(), res.Child.reconcileSummary(), res.Child.TotalRequests(), res.RequestsPerReconcile(),
		res.Child.Probes, res.Child.StartArchiving, res.Child.StopArchiving)
	t.Logf("API requests by kind: %s", res.Child.requestSummary(12))
	t.Logf("steady state, %s after convergence (archivers checked every %s): %d reconciles (%s), %d API requests, %.2f per reconcile: %s",
		steadyWindow, archiveInterval, res.Steady.TotalReconciles(), res.Steady.reconcileSummary(), res.Steady.TotalRequests(),
		res.Steady.requestsPerReconcile(), res.Steady.requestSummary(6))
	return run{l: l, e: e, res: res}
}

// serveInjector serves the pod webhook (the controller's own Injector, with
// the CA the controller will load) while the test creates pods, so they
// are injected exactly as in a cluster; it returns a function that stops it.
func serveInjector(t *testing.T, k8s client.Client, port int, certDir string) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controllerNS}}))
	ca, err := certs.EnsureAuthority(ctx, k8s, controllerNS, caSecret, time.Now())
	must(t, err)
	must(t, ca.WriteServingCert(certDir, []string{"127.0.0.1"}, time.Now()))
	must(t, ca.PatchCABundle(ctx, k8s, inject.MutatingConfigName, ""))
	in := &inject.Injector{Client: k8s, Reader: k8s, Authority: ca, Clock: clock.Real,
		Config: inject.Config{Image: sidecarImage, NativeSidecar: true},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	srv := webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: certDir})
	srv.Register(inject.Path, in.Webhook())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("webhook server: %v", err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := tlsDial(port); err == nil {
			return stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatal("webhook server did not listen within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// createWorkload creates the namespaces, each policy with its credentials
// Secret, and each StatefulSet with its pods, bound to the kwok node.
// The pods are created by the test as a StatefulSet's controller would
// (names, owner, labels from the template): no controller-manager runs.
func createWorkload(t *testing.T, k8s client.Client, l layout) {
	t.Helper()
	ctx := context.Background()
	for _, ns := range l.namespaces() {
		must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
		must(t, k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}))
		must(t, k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "repo-creds"},
			Data: map[string][]byte{"password": []byte("scale-test-password")}}))
	}
	parallel(t, l.statefulSets(), func(s stsRef) error {
		p := &amberv1.BackupPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.policy},
			Spec: amberv1.BackupPolicySpec{
				Engine:     amberv1.EnginePostgres,
				Repository: amberv1.RepositorySpec{URL: "s3://bucket/" + s.ns + "/" + s.name, CredentialsSecret: amberv1.SecretRef{Name: "repo-creds"}},
				// Daily, counted from the policy's creation: never due
				// during the test, so only archivers are placed.
				Schedule: "@every 24h",
				Archive:  true,
			},
		}
		if err := k8s.Create(ctx, p); err != nil {
			return fmt.Errorf("create BackupPolicy %s/%s: %w", s.ns, s.policy, err)
		}
		labels := map[string]string{"app": s.name}
		podLabels := map[string]string{"app": s.name, inject.LabelInject: "true"}
		podAnn := map[string]string{inject.AnnotationPolicy: s.policy}
		spec := corev1.PodSpec{
			NodeName:                      nodeName,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{Name: "postgres", Image: "postgres:15",
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/postgresql/data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		}
		sts := &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name},
			Spec: appsv1.StatefulSetSpec{
				Replicas: ptr.To(int32(replicas)), ServiceName: s.name,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnn}, Spec: spec},
			},
		}
		if err := k8s.Create(ctx, sts); err != nil {
			return fmt.Errorf("create StatefulSet %s/%s: %w", s.ns, s.name, err)
		}
		for i := range replicas {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: fmt.Sprintf("%s-%d", s.name, i),
					Labels: podLabels, Annotations: podAnn,
					OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: s.name,
						UID: sts.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
				Spec: *spec.DeepCopy(),
			}
			if err := k8s.Create(ctx, pod); err != nil {
				return fmt.Errorf("create pod %s/%s: %w", s.ns, pod.Name, err)
			}
			if !inject.Injected(pod) {
				return fmt.Errorf("pod %s/%s was not injected", s.ns, pod.Name)
			}
		}
		return nil
	})
}

// waitRunning waits until kwok reports every pod Running with an IP.
func waitRunning(t *testing.T, k8s client.Client, l layout, kwok *k8stest.Kwok) {
	t.Helper()
	want := l.n * replicas
	deadline := time.Now().Add(time.Duration(60+want/5) * time.Second)
	running := 0
	for time.Now().Before(deadline) {
		if exited, err := kwok.Exited(); exited {
			t.Fatalf("kwok exited (%v):\n%s", err, kwok.LogTail())
		}
		var pods corev1.PodList
		must(t, k8s.List(context.Background(), &pods, client.MatchingLabels{inject.LabelInject: "true"}))
		running = 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				running++
			}
		}
		if running == want {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%d of %d pods Running with an IP; kwok's log:\n%s", running, want, kwok.LogTail())
}

// archiveInterval is how often the controller in the test re-checks each
// policy's archiver (its default is 30 s); the steady state after
// convergence is watched for steadyWindow, two rounds of those checks.
const (
	archiveInterval = 5 * time.Second
	steadyWindow    = 2*archiveInterval + time.Second
)

// result is what one controller run measured.
type result struct {
	// Ready and Converged are times from starting the controller's
	// process until every policy was Ready, and until moreover every
	// StatefulSet had its archiver.
	Ready, Converged time.Duration
	// PeakRSSMiB is VmHWM at convergence, PeakRSSEndMiB after the
	// steady-state window too.
	PeakRSSMiB, PeakRSSEndMiB float64
	// CPUSeconds is the process's CPU time (user + system) until
	// convergence.
	CPUSeconds float64
	// Child is what the process counted until convergence, Steady what it
	// counted during the steady-state window after it.
	Child, Steady childResult
	// Log is the end of the controller's log (warnings and errors).
	Log string
}

func (r result) RequestsPerReconcile() float64 { return r.Child.requestsPerReconcile() }

// runController starts the controller in a process of its own, waits
// until it has placed every archiver, watches it for steadyWindow more,
// then stops it.
func runController(t *testing.T, kubeconfig string, port int, certDir string, k8s client.Client, l layout) result {
	t.Helper()
	dir := t.TempDir()
	spec := childSpec{WebhookPort: port, CertDir: certDir, Result: filepath.Join(dir, "result.json"),
		ArchiveInterval: archiveInterval, Pprof: os.Getenv("AMBER_SCALE_PPROF")}
	raw, err := json.Marshal(spec)
	must(t, err)
	logPath := filepath.Join(dir, "controller.log")
	logFile, err := os.Create(logPath)
	must(t, err)
	defer logFile.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logTail := func() string { b, _ := os.ReadFile(logPath); return tail(string(b), 4000) }

	start := time.Now()
	must(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	pid := cmd.Process.Pid

	var res result
	timeout := 5 * time.Minute
	state := ""
	for {
		select {
		case err := <-exited:
			t.Fatalf("controller exited early (%v):\n%s", err, logTail())
		default:
		}
		ready, placed, s := progress(t, k8s, l)
		state = s
		if ready == l.n && res.Ready == 0 {
			res.Ready = time.Since(start)
		}
		if ready == l.n && placed == l.n {
			res.Converged = time.Since(start)
			break
		}
		if time.Since(start) > timeout {
			t.Fatalf("not converged after %s: %s\n%s", timeout, state, logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	hwm, err := peakRSS(pid)
	if err != nil {
		t.Fatalf("read the controller's peak RSS: %v", err)
	}
	res.PeakRSSMiB = float64(hwm) / 1024
	if res.CPUSeconds, err = cpuSeconds(pid); err != nil {
		t.Fatalf("read the controller's CPU time: %v", err)
	}
	// The figures at convergence (SIGUSR1 makes the process write them),
	// then the steady state.
	must(t, cmd.Process.Signal(syscall.SIGUSR1))
	convergedPath := spec.Result + ".converged"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(convergedPath); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the controller wrote no figures on SIGUSR1\n%s", logTail())
		}
	}
	time.Sleep(steadyWindow)
	if hwm, err = peakRSS(pid); err != nil {
		t.Fatalf("read the controller's peak RSS: %v", err)
	}
	res.PeakRSSEndMiB = float64(hwm) / 1024

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("controller: %v\n%s", err, logTail())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("controller did not stop within 30s of SIGTERM\n%s", logTail())
	}
	var end childResult
	readJSON(t, convergedPath, &res.Child)
	readJSON(t, spec.Result, &end)
	res.Steady = end.minus(res.Child)
	res.Log = logTail()
	return res
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	must(t, json.Unmarshal(b, v))
}

// cpuSeconds reads a live process's CPU time, user and system, from
// /proc/<pid>/stat (in ticks of USER_HZ, 100 on Linux).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after its ")".
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(utime+stime) / 100, nil
}

// progress counts the policies that are Ready for their generation and
// those whose only StatefulSet has its primary (ordinal 0) as archiver.
func progress(t *testing.T, k8s client.Client, l layout) (ready, placed int, state string) {
	t.Helper()
	var list amberv1.BackupPolicyList
	if err := k8s.List(context.Background(), &list); err != nil {
		return 0, 0, err.Error()
	}
	want := map[string]stsRef{}
	for _, s := range l.statefulSets() {
		want[s.ns+"/"+s.policy] = s
	}
	var bad []string
	for _, p := range list.Items {
		s, ok := want[p.Namespace+"/"+p.Name]
		if !ok {
			continue
		}
		c := meta.FindStatusCondition(p.Status.Conditions, controllers.CondReady)
		if c != nil && c.Status == metav1.ConditionTrue && p.Status.ObservedGeneration == p.Generation {
			ready++
		} else if len(bad) < 3 {
			bad = append(bad, fmt.Sprintf("%s/%s not Ready: %+v", p.Namespace, p.Name, c))
		}
		if len(p.Status.Archivers) == 1 && p.Status.Archivers[0].StatefulSet == s.name && p.Status.Archivers[0].Pod == s.name+"-0" {
			placed++
		} else if len(bad) < 3 {
			bad = append(bad, fmt.Sprintf("%s/%s archivers %+v", p.Namespace, p.Name, p.Status.Archivers))
		}
	}
	return ready, placed, fmt.Sprintf("%d/%d Ready, %d/%d archivers placed; e.g. %s", ready, l.n, placed, l.n, strings.Join(bad, "; "))
}

// peakRSS reads a live process's peak resident set (VmHWM) in KiB.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// parallel runs f on every item with a few workers, failing t on the
// first error.
func parallel[T any](t *testing.T, items []T, f func(T) error) {
	t.Helper()
	work := make(chan T)
	errs := make(chan error, len(items))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				if err := f(it); err != nil {
					errs <- err
				}
			}
		}()
	}
	for _, it := range items {
		work <- it
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// tlsDial completes a TLS handshake with the webhook server (a bare
// connect would make it log a handshake error); its certificate is not
// checked here.
func tlsDial(port int) error {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: &tls.Config{InsecureSkipVerify: true}}
	c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	return c.Close()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// sortedCounts orders a count map by count, then key.
func sortedCounts[N int64 | float64](m map[string]N) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}
