package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// A Cluster is a one-node Kubernetes cluster on this machine: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler in the host's
// namespaces, and containerd with a real kubelet in a private mount namespace,
// so pods run in real containers (runc) on a private bridge network. Its node
// has an address on a dummy interface the cluster creates; pods get addresses
// in PodCIDR and reach nothing but each other and the node. PVCs of the
// StorageClass named StorageClass (the default class) are bound to
// directories under Dir by a provisioner running in this process.
//
// Images come from tarballs (LoadImage), never from a registry: pods must use
// imagePullPolicy Never or IfNotPresent. There is no kube-proxy and no DNS:
// Service cluster IPs do not route; talk to pods by their IPs. The apiserver
// routes webhook calls to endpoints directly (--enable-aggregator-routing), so
// admission webhooks served by pods work.
type Cluster struct {
	// Dir holds everything the cluster writes; Stop removes it.
	Dir string
	// LogDir holds one log file per process (etcd.log, kubelet.log, ...).
	LogDir string
	// Kubeconfig is the path of a kubeconfig for a cluster administrator
	// (group system:masters), certificates embedded.
	Kubeconfig string
	// Config is the same administrator's client configuration.
	Config *rest.Config
	// Client is a clientset for Config.
	Client *kubernetes.Clientset
	// Server is the apiserver's URL; it listens on NodeIP, which pods reach too.
	Server string
	// NodeName is the name of the one node; NodeIP its InternalIP.
	NodeName string
	NodeIP   net.IP
	// PodCIDR holds the pods' addresses; ServiceCIDR the (unrouted) service IPs.
	PodCIDR     *net.IPNet
	ServiceCIDR *net.IPNet
	// NodeInterface carries NodeIP; Bridge is the pods' network bridge. Stop
	// removes both.
	NodeInterface string
	Bridge        string
	// StorageClass is the default StorageClass, provisioned by the cluster.
	StorageClass string
	// StartupTime is how long NewCluster took.
	StartupTime time.Duration

	opts     ClusterOptions
	slot     *clusterSlot
	bins     map[string]string
	procs    []*clusterProc // in start order; stopped in reverse
	nsHolder *clusterProc
	node     *clusterNode
	stopProv context.CancelFunc
	provDone chan struct{}
	// csiProcs run the CSI driver and the snapshotter (StartSnapshots);
	// csiEnabled makes the provisioner serve CSIStorageClass too.
	csiProcs   []*clusterProc
	csiEnabled atomic.Bool
	stopOnce   sync.Once
	stopErr    error
}

// ClusterOptions choose how a Cluster runs.
type ClusterOptions struct {
	// Dir holds the cluster's state; it is emptied first and removed by Stop.
	// Default: amber-k8s-<slot> in the system's temporary directory, which
	// also lets a later run clean up after a crashed one.
	Dir string
	// Logf receives progress lines (phases and their times). Default: none.
	Logf func(format string, args ...any)
}

// MissingError says that something the cluster needs is not on this machine.
type MissingError struct{ Reason string }

func (e *MissingError) Error() string { return e.Reason }

// clusterBinaries are the programs a Cluster runs. The Kubernetes ones come
// from .deps/bin (conformance/tools/kube/build.sh), the rest from Debian
// packages (containerd, runc, containernetworking-plugins, iproute2,
// util-linux).
var clusterBinaries = []string{
	"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
	"containerd", "containerd-shim-runc-v2", "runc", "ctr", "unshare", "nsenter", "ip", "mount",
}

// cniPluginDir is where Debian's containernetworking-plugins installs.
const cniPluginDir = "/usr/lib/cni"

// StartCluster starts a Cluster for t and stops it when t ends. It skips t
// (or fails it under AMBER_TEST_REQUIRE_ALL=1) when not root or when a
// binary is missing.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := NewCluster(ctx, opts)
	var missing *MissingError
	if errors.As(err, &missing) {
		Skip(t, "kubernetes test cluster: %s", missing.Reason)
	}
	if err != nil {
		t.Fatalf("start kubernetes test cluster: %v", err)
	}
	// Logging through t after the test ends panics; Stop runs in cleanup.
	c.opts.Logf = func(string, ...any) {}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop kubernetes test cluster: %v", err)
		}
	})
	return c
}

// NewCluster starts a Cluster. Call Stop to tear it down; on error nothing is
// left running. It returns a *MissingError when not root or a binary is missing.
func NewCluster(ctx context.Context, opts ClusterOptions) (*Cluster, error) {
	start := time.Now()
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if os.Geteuid() != 0 {
		return nil, &MissingError{Reason: "needs root (containerd, the kubelet, network interfaces, mounts)"}
	}
	bins, err := findClusterBinaries()
	if err != nil {
		return nil, err
	}
	slot, err := acquireClusterSlot()
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, slot: slot, bins: bins, NodeName: "amber-node", StorageClass: "amber-local"}
	c.Dir = opts.Dir
	if c.Dir == "" {
		c.Dir = filepath.Join(os.TempDir(), fmt.Sprintf("amber-k8s-%d", slot.n))
	}
	if c.Dir, err = absNoSymlinks(c.Dir); err != nil {
		slot.release()
		return nil, err
	}
	c.NodeIP, c.PodCIDR, c.ServiceCIDR = slot.nodeIP(), slot.podCIDR(), slot.serviceCIDR()
	c.NodeInterface, c.Bridge = slot.dummy(), slot.bridge()
	c.LogDir = filepath.Join(c.Dir, "logs")
	c.node = newClusterNode(c)
	if err := c.start(ctx); err != nil {
		logs := c.failureLogs()
		if serr := c.Stop(); serr != nil {
			err = fmt.Errorf("%w (and tearing down: %v)", err, serr)
		}
		return nil, fmt.Errorf("%w%s", err, logs)
	}
	c.StartupTime = time.Since(start)
	opts.Logf("kubernetes test cluster up in %s: apiserver %s, node %s (%s), pods %s, dir %s",
		c.StartupTime.Round(100*time.Millisecond), c.Server, c.NodeName, c.NodeIP, c.PodCIDR, c.Dir)
	return c, nil
}

// absNoSymlinks makes p absolute with its parent's symlinks resolved, so it
// reads the same in command lines and in /proc/self/mountinfo.
func absNoSymlinks(p string) (string, error) {
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	parent := filepath.Dir(p)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	if parent, err = filepath.EvalSymlinks(parent); err != nil {
		return "", err
	}
	return filepath.Join(parent, filepath.Base(p)), nil
}

func findClusterBinaries() (map[string]string, error) {
	bins := map[string]string{}
	var missing []string
	for _, name := range clusterBinaries {
		p := filepath.Join(DepsDir(), "bin", name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			bins[name] = p
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			bins[name] = p
			continue
		}
		missing = append(missing, name)
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniPluginDir, plugin)); err != nil {
			missing = append(missing, filepath.Join(cniPluginDir, plugin))
		}
	}
	if len(missing) > 0 {
		return nil, &MissingError{Reason: fmt.Sprintf("missing %s (not in %s/bin or on PATH)", strings.Join(missing, ", "), DepsDir())}
	}
	return bins, nil
}

// phase runs one step of startup and logs how long it took.
func (c *Cluster) phase(name string, f func() error) error {
	t0 := time.Now()
	if err := f(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	c.opts.Logf("kubernetes test cluster: %s in %s", name, time.Since(t0).Round(10*time.Millisecond))
	return nil
}

func (c *Cluster) start(ctx context.Context) error {
	if err := c.phase("clean up after an earlier run", func() error { return c.cleanupStale() }); err != nil {
		return err
	}
	for _, d := range []string{c.Dir, c.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The kubelet and pods run as other users; they must traverse Dir.
	if err := os.Chmod(c.Dir, 0o755); err != nil {
		return err
	}
	if err := c.phase("node network", c.node.setupNetwork); err != nil {
		return err
	}
	var pki *clusterPKI
	if err := c.phase("certificates", func() (err error) {
		pki, err = c.writePKI()
		return err
	}); err != nil {
		return err
	}
	if err := c.phase("etcd and kube-apiserver", func() error { return c.startControlPlane(ctx, pki) }); err != nil {
		return err
	}
	if err := c.phase("controller-manager and scheduler", func() error { return c.startControllers(pki) }); err != nil {
		return err
	}
	if err := c.phase("containerd", func() error { return c.node.startContainerd(ctx) }); err != nil {
		return err
	}
	if err := c.phase("kubelet and node Ready", func() error { return c.node.startKubelet(ctx) }); err != nil {
		return err
	}
	if err := c.phase("storage class and default service account", func() error { return c.startStorage(ctx) }); err != nil {
		return err
	}
	return nil
}

func (c *Cluster) pkiDir() string { return filepath.Join(c.Dir, "pki") }

func (c *Cluster) writePKI() (*clusterPKI, error) {
	pki, err := newClusterPKI(c.pkiDir())
	if err != nil {
		return nil, err
	}
	port, err := freePortOn(c.NodeIP)
	if err != nil {
		return nil, err
	}
	c.Server = fmt.Sprintf("https://%s", net.JoinHostPort(c.NodeIP.String(), fmt.Sprint(port)))
	firstService := append(net.IP(nil), c.ServiceCIDR.IP.To4()...)
	firstService[3]++
	if _, err := pki.issue("apiserver", "kube-apiserver", nil, []string{
		c.NodeIP.String(), "127.0.0.1", firstService.String(), "localhost",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
	}); err != nil {
		return nil, err
	}
	if _, err := pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil); err != nil {
		return nil, err
	}
	if _, _, err := pki.serviceAccountKeys(); err != nil {
		return nil, err
	}
	users := []struct{ file, cn, group string }{
		{"admin", "amber-testbed-admin", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", ""},
		{"scheduler", "system:kube-scheduler", ""},
		{"kubelet", "system:node:" + c.NodeName, "system:nodes"},
	}
	for _, u := range users {
		var groups []string
		if u.group != "" {
			groups = []string{u.group}
		}
		is, err := pki.issue(u.file, u.cn, groups, nil)
		if err != nil {
			return nil, err
		}
		if err := pki.writeKubeconfig(filepath.Join(c.pkiDir(), u.file+".kubeconfig"), c.Server, u.cn, is); err != nil {
			return nil, err
		}
	}
	c.Kubeconfig = filepath.Join(c.pkiDir(), "admin.kubeconfig")
	return pki, nil
}

func (c *Cluster) startProc(name string, argv ...string) (*clusterProc, error) {
	p, err := startClusterProc(name, c.LogDir, argv)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

func (c *Cluster) startControlPlane(ctx context.Context, pki *clusterPKI) error {
	clientPort, err := freePortOn(net.IPv4(127, 0, 0, 1))
	if err != nil {
		return err
	}
	peerPort, err := freePortOn(net.IPv4(127, 0, 0, 1))
	if err != nil {
		return err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	etcd, err := c.startProc("etcd", c.bins["etcd"],
		"--name=amber-testbed",
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=amber-testbed="+peerURL,
		"--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, etcd, func() error { return httpOK(ctx, nil, etcdURL+"/health") }); err != nil {
		return fmt.Errorf("etcd not healthy: %w", err)
	}

	dir := c.pkiDir()
	ap, err := c.startProc("kube-apiserver", c.bins["kube-apiserver"],
		"--etcd-servers="+etcdURL,
		"--bind-address="+c.NodeIP.String(),
		"--advertise-address="+c.NodeIP.String(),
		"--secure-port="+c.Server[strings.LastIndexByte(c.Server, ':')+1:],
		"--tls-cert-file="+filepath.Join(dir, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(dir, "apiserver.key"),
		"--client-ca-file="+pki.caFile(),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range="+c.ServiceCIDR.String(),
		"--kubelet-client-certificate="+filepath.Join(dir, "apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+filepath.Join(dir, "apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--enable-aggregator-routing=true",
		"--allow-privileged=true",
		"--profiling=false",
		"--cert-dir="+filepath.Join(c.Dir, "apiserver-certs"),
	)
	if err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load admin kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	c.Config = cfg
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	return waitFor(ctx, 120*time.Second, ap, func() error {
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("kube-apiserver not ready: %w: %s", err, body)
		}
		return nil
	})
}

func (c *Cluster) startControllers(pki *clusterPKI) error {
	dir := c.pkiDir()
	if _, err := c.startProc("kube-controller-manager", c.bins["kube-controller-manager"],
		"--kubeconfig="+filepath.Join(dir, "controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(dir, "controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(dir, "controller-manager.kubeconfig"),
		"--service-account-private-key-file="+filepath.Join(dir, "sa.key"),
		"--root-ca-file="+pki.caFile(),
		"--use-service-account-credentials=true",
		"--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=0",
		"--flex-volume-plugin-dir="+filepath.Join(c.Dir, "controller-manager", "volume-plugins"),
		"--cert-dir="+filepath.Join(c.Dir, "controller-manager", "certs"),
		"--profiling=false",
	); err != nil {
		return err
	}
	_, err := c.startProc("kube-scheduler", c.bins["kube-scheduler"],
		"--kubeconfig="+filepath.Join(dir, "scheduler.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(dir, "scheduler.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(dir, "scheduler.kubeconfig"),
		"--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=0",
		"--cert-dir="+filepath.Join(c.Dir, "scheduler", "certs"),
		"--profiling=false",
		// A pod tried while its new claim was not yet bound can miss the
		// binding's event and wait in the unschedulable queue until this
		// much time has passed (default 5m; kubernetes/kubernetes#125762):
		// seen in CI as a StatefulSet pod Pending for minutes with
		// "pod has unbound immediate PersistentVolumeClaims" while its
		// claim was Bound.
		"--pod-max-in-unschedulable-pods-duration=15s",
	)
	return err
}

// startStorage creates the default StorageClass, starts its provisioner, and
// waits for what every pod needs from the controller-manager: the default
// service account and the root CA ConfigMap in the default namespace.
func (c *Cluster) startStorage(ctx context.Context) error {
	if err := c.startProvisioner(ctx); err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, nil, func() error {
		if _, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return fmt.Errorf("default service account: %w", err)
		}
		if _, err := c.Client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
			return fmt.Errorf("kube-root-ca.crt: %w", err)
		}
		return nil
	})
}

// Stop tears the cluster down and removes everything it made: processes
// (pods' containers included), cgroups, network interfaces, and Dir. It is
// safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Cluster) stop() error {
	t0 := time.Now()
	c.stopCSI()
	if c.stopProv != nil {
		c.stopProv()
		<-c.provDone
	}
	var errs []error
	errs = append(errs, c.node.stop()...)
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(10 * time.Second)
	}
	errs = append(errs, c.node.cleanup()...)
	if c.Dir != "" {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
		}
	}
	if left := c.Leftovers(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("left behind: %s", strings.Join(left, "; ")))
	}
	c.slot.release()
	c.opts.Logf("kubernetes test cluster: stopped in %s", time.Since(t0).Round(10*time.Millisecond))
	return errors.Join(errs...)
}

// Leftovers lists what of the cluster is still on the machine: processes,
// mounts under Dir, network interfaces, cgroups. Empty after Stop.
func (c *Cluster) Leftovers() []string {
	var out []string
	for _, p := range c.procs {
		if !p.exited() {
			out = append(out, fmt.Sprintf("process %s (pid %d)", p.name, p.pid()))
		}
	}
	for _, p := range listProcs() {
		if c.Dir != "" && strings.Contains(p.cmdline, c.Dir) && !isZombie(p.pid) {
			out = append(out, fmt.Sprintf("process %d: %s", p.pid, p.cmdline))
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && c.Dir != "" && (f[4] == c.Dir || strings.HasPrefix(f[4], c.Dir+"/")) {
				out = append(out, "mount "+f[4])
			}
		}
	}
	out = append(out, c.node.leftovers()...)
	return out
}

// LoadImage imports an image tarball (docker-archive or OCI layout, as
// BuildPostgresImage writes) into the node's containerd, for pods to use
// with imagePullPolicy Never or IfNotPresent.
func (c *Cluster) LoadImage(t testing.TB, tarball string) {
	t.Helper()
	t0 := time.Now()
	if err := c.LoadImageFile(context.Background(), tarball); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded image %s in %s", filepath.Base(tarball), time.Since(t0).Round(10*time.Millisecond))
}

// LoadImageFile is LoadImage without a test.
func (c *Cluster) LoadImageFile(ctx context.Context, tarball string) error {
	cmd := exec.CommandContext(ctx, c.bins["ctr"], "--address", c.node.containerdSocket(), "--namespace", "k8s.io",
		"images", "import", "--no-unpack=false", tarball)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("import image %s into containerd: %w: %s", tarball, err, out)
	}
	return nil
}

// WaitPodReady waits until pod ns/name exists and is Ready, and returns it.
// On timeout it fails t with the pod's status and events.
func (c *Cluster) WaitPodReady(t testing.TB, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	pod, err := c.WaitPod(context.Background(), ns, name, timeout, func(p *corev1.Pod) bool { return PodReady(p) })
	if err != nil {
		t.Fatalf("%v\n%s", err, c.DescribePod(context.Background(), ns, name))
	}
	return pod
}

// WaitPod waits until pod ns/name exists and cond holds for it.
func (c *Cluster) WaitPod(ctx context.Context, ns, name string, timeout time.Duration, cond func(*corev1.Pod) bool) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := waitFor(ctx, timeout, nil, func() error {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !cond(p) {
			return fmt.Errorf("pod %s/%s is %s%s", ns, name, p.Status.Phase, podWhy(p))
		}
		pod = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("wait for pod %s/%s: %w", ns, name, err)
	}
	return pod, nil
}

// podWhy says in one line what a pod that is not Ready waits for: its
// false conditions (scheduling: an unbound claim; containers not ready)
// and its containers that are not running, so a timeout's first line,
// the one a test summary repeats, names the cause.
func podWhy(p *corev1.Pod) string {
	var why []string
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && (c.Reason != "" || c.Message != "") {
			why = append(why, strings.TrimSpace(fmt.Sprintf("%s: %s %s", c.Type, c.Reason, c.Message)))
		}
	}
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		switch {
		case cs.State.Waiting != nil:
			why = append(why, strings.TrimSpace(fmt.Sprintf("container %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)))
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode != 0:
			why = append(why, fmt.Sprintf("container %s exited %d (%s)", cs.Name, cs.State.Terminated.ExitCode, cs.State.Terminated.Reason))
		}
	}
	if len(why) == 0 {
		return ""
	}
	return " (" + strings.Join(why, "; ") + ")"
}

// PodReady reports whether the pod's Ready condition is true.
func PodReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// DescribePod returns a pod's phase, container states and events, for test
// failure messages.
func (c *Cluster) DescribePod(ctx context.Context, ns, name string) string {
	var b strings.Builder
	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		fmt.Fprintf(&b, "pod %s/%s: %v\n", ns, name, err)
	} else {
		fmt.Fprintf(&b, "pod %s/%s: phase %s, node %q, IP %s\n", ns, name, p.Status.Phase, p.Spec.NodeName, p.Status.PodIP)
		for _, cond := range p.Status.Conditions {
			fmt.Fprintf(&b, "  condition %s=%s %s %s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
		}
		for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			fmt.Fprintf(&b, "  container %s: ready=%v restarts=%d state=%+v last=%+v\n", cs.Name, cs.Ready, cs.RestartCount, cs.State, cs.LastTerminationState)
			logs, err := c.Client.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{Container: cs.Name, TailLines: ptr(int64(20))}).DoRaw(ctx)
			if err == nil && len(logs) > 0 {
				fmt.Fprintf(&b, "    log: %s\n", strings.ReplaceAll(strings.TrimSpace(string(logs)), "\n", "\n    log: "))
			}
		}
	}
	evs, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, e := range evs.Items {
			if strings.HasPrefix(e.InvolvedObject.Name, name) || e.InvolvedObject.Kind == "PersistentVolumeClaim" {
				fmt.Fprintf(&b, "  event %s %s/%s: %s %s\n", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	return b.String()
}

// ProcessLog returns the end of one cluster process's log (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, containerd,
// kubelet).
func (c *Cluster) ProcessLog(name string, n int) string {
	for _, p := range append([]*clusterProc{c.nsHolder}, c.procs...) {
		if p != nil && p.name == name {
			return p.logTail(n)
		}
	}
	return ""
}

// StorageReport describes the claims and volumes of the cluster and ends
// with the in-process provisioner's log: what to read when a pod waits
// for its volume.
func (c *Cluster) StorageReport(ctx context.Context) string {
	var b strings.Builder
	if pvcs, err := c.Client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pvcs.Items {
			class := ""
			if p.Spec.StorageClassName != nil {
				class = *p.Spec.StorageClassName
			}
			fmt.Fprintf(&b, "claim %s/%s: %s, class %q, volume %q\n", p.Namespace, p.Name, p.Status.Phase, class, p.Spec.VolumeName)
		}
	}
	if pvs, err := c.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, v := range pvs.Items {
			claim := ""
			if v.Spec.ClaimRef != nil {
				claim = v.Spec.ClaimRef.Namespace + "/" + v.Spec.ClaimRef.Name
			}
			fmt.Fprintf(&b, "volume %s: %s, claim %s\n", v.Name, v.Status.Phase, claim)
		}
	}
	select {
	case <-c.provDone:
		b.WriteString("the provisioner has stopped\n")
	default:
	}
	if log, err := os.ReadFile(filepath.Join(c.LogDir, "provisioner.log")); err == nil {
		if len(log) > 4000 {
			log = log[len(log)-4000:]
		}
		fmt.Fprintf(&b, "provisioner log:\n%s", log)
	}
	return b.String()
}

func (c *Cluster) failureLogs() string {
	var b strings.Builder
	for _, p := range c.procs {
		if p.exited() {
			fmt.Fprintf(&b, "\n%s exited (%v); its log ends:\n%s", p.name, p.cmd.ProcessState, p.logTail(3000))
		}
	}
	if b.Len() == 0 && len(c.procs) > 0 {
		last := c.procs[len(c.procs)-1]
		fmt.Fprintf(&b, "\n%s log ends:\n%s", last.name, last.logTail(3000))
	}
	return b.String()
}

// waitFor calls f until it returns nil, timeout passes, ctx ends, or p exits.
func waitFor(ctx context.Context, timeout time.Duration, p *clusterProc, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited: %v", p.name, p.cmd.ProcessState)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func httpOK(ctx context.Context, client *http.Client, url string) error {
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// freePortOn returns a TCP port free on ip a moment ago.
func freePortOn(ip net.IP) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func ptr[T any](v T) *T { return &v }

func ignoreAlreadyExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
