package testbed

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// maxClusterSlots is how many clusters may run on one machine at once; each
// slot has its own addresses, interface names and cgroup.
const maxClusterSlots = 16

// clusterSlot is one of maxClusterSlots, held through an abstract unix
// socket that the kernel releases when this process dies.
type clusterSlot struct {
	n int
	l net.Listener
}

func slotSocket(n int) string { return fmt.Sprintf("@amber-testbed-k8s-slot-%d", n) }

func acquireClusterSlot() (*clusterSlot, error) {
	for n := 0; n < maxClusterSlots; n++ {
		l, err := net.Listen("unix", slotSocket(n))
		if err == nil {
			return &clusterSlot{n: n, l: l}, nil
		}
	}
	return nil, fmt.Errorf("all %d kubernetes test cluster slots are in use on this machine; stop a cluster (make cluster-down) or wait", maxClusterSlots)
}

func (s *clusterSlot) release() {
	if s != nil && s.l != nil {
		s.l.Close()
		s.l = nil
	}
}

// othersActive reports whether another process holds a slot now.
func (s *clusterSlot) othersActive() bool {
	for n := 0; n < maxClusterSlots; n++ {
		if n == s.n {
			continue
		}
		l, err := net.Listen("unix", slotSocket(n))
		if err != nil {
			return true
		}
		l.Close()
	}
	return false
}

// Addresses: ranges reserved for benchmarking (RFC 2544), which nothing on a
// normal machine routes. Slot n: pods 198.18.n.0/24, node 198.19.n.1,
// services 198.19.(128+n).0/24 (virtual; nothing routes them).
func (s *clusterSlot) podCIDR() *net.IPNet {
	return &net.IPNet{IP: net.IPv4(198, 18, byte(s.n), 0).To4(), Mask: net.CIDRMask(24, 32)}
}
func (s *clusterSlot) nodeIP() net.IP { return net.IPv4(198, 19, byte(s.n), 1).To4() }
func (s *clusterSlot) serviceCIDR() *net.IPNet {
	return &net.IPNet{IP: net.IPv4(198, 19, byte(128+s.n), 0).To4(), Mask: net.CIDRMask(24, 32)}
}
func (s *clusterSlot) bridge() string     { return fmt.Sprintf("amber-br%d", s.n) }
func (s *clusterSlot) dummy() string      { return fmt.Sprintf("amber-node%d", s.n) }
func (s *clusterSlot) cgroupRoot() string { return fmt.Sprintf("amber-k8s-%d", s.n) }

// kernelTunables are the sysctls the kubelet sets unless they already hold
// these values. Read-only files with these values are bind-mounted over them
// in the node's mount namespace, so the host's settings never change.
var kernelTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// ipForward is set by the CNI bridge plugin; a writable file takes its write.
const ipForward = "net/ipv4/ip_forward"

// kubeletChains are the iptables chains a kubelet may create (it should not:
// its configuration turns them off); teardown removes those it finds new.
var kubeletChains = []struct{ table, chain string }{
	{"filter", "KUBE-FIREWALL"},
	{"filter", "KUBE-KUBELET-CANARY"},
	{"nat", "KUBE-KUBELET-CANARY"},
	{"mangle", "KUBE-KUBELET-CANARY"},
	{"mangle", "KUBE-IPTABLES-HINT"},
}

// clusterNode is the node half of a Cluster: the mount namespace, containerd,
// the kubelet, the network and the cgroups.
type clusterNode struct {
	c                   *Cluster
	dir                 string
	holder              *clusterProc
	holderNS            string
	containerd, kubelet *clusterProc
	sysctlsBefore       map[string]string
	chainsBefore        map[string]bool
}

func newClusterNode(c *Cluster) *clusterNode {
	return &clusterNode{c: c, dir: filepath.Join(c.Dir, "node")}
}

func (n *clusterNode) containerdSocket() string {
	return filepath.Join(n.dir, "containerd", "containerd.sock")
}

func (n *clusterNode) path(parts ...string) string {
	return filepath.Join(append([]string{n.dir}, parts...)...)
}

// cleanupStale removes what a crashed earlier run in the same slot or Dir
// left: its processes, cgroups, interfaces and files.
func (c *Cluster) cleanupStale() error {
	n := c.node
	if _, err := os.Stat(c.Dir); err == nil {
		killProcsMatching(func(p procInfo) bool { return strings.Contains(p.cmdline, c.Dir) }, 10*time.Second)
	}
	var errs []error
	errs = append(errs, n.killCgroupProcs()...)
	errs = append(errs, n.removeCgroups()...)
	for _, link := range []string{c.slot.bridge(), c.slot.dummy()} {
		if linkExists(link) {
			if err := run("ip", "link", "del", link); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// setupNetwork gives the node its address on an interface of its own, after
// checking that nothing on this machine uses the slot's ranges.
func (n *clusterNode) setupNetwork() error {
	c := n.c
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return err
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if c.PodCIDR.Contains(ipn.IP) || ipn.Contains(c.NodeIP) && !ipn.IP.IsLoopback() {
			return fmt.Errorf("address %s on this machine overlaps the test cluster's network (pods %s, node %s)", ipn, c.PodCIDR, c.NodeIP)
		}
	}
	n.sysctlsBefore = map[string]string{}
	for k := range kernelTunables {
		n.sysctlsBefore[k] = readSysctl(k)
	}
	n.sysctlsBefore[ipForward] = readSysctl(ipForward)
	n.chainsBefore = map[string]bool{}
	for _, ch := range kubeletChains {
		for _, ipt := range []string{"iptables", "ip6tables"} {
			n.chainsBefore[ipt+" "+ch.table+" "+ch.chain] = chainExists(ipt, ch.table, ch.chain)
		}
	}
	dummy := c.slot.dummy()
	// A kernel without the dummy driver gets a bridge with no ports, which
	// serves as well: the address is local either way.
	if err := run("ip", "link", "add", dummy, "type", "dummy"); err != nil {
		if err2 := run("ip", "link", "add", dummy, "type", "bridge"); err2 != nil {
			return fmt.Errorf("create the node's interface: %w; and as a bridge: %w", err, err2)
		}
	}
	if err := run("ip", "addr", "add", c.NodeIP.String()+"/32", "dev", dummy); err != nil {
		return err
	}
	return run("ip", "link", "set", dummy, "up")
}

func readSysctl(name string) string {
	b, err := os.ReadFile(filepath.Join("/proc/sys", name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func chainExists(ipt, table, chain string) bool {
	if _, err := exec.LookPath(ipt); err != nil {
		return false
	}
	return exec.Command(ipt, "-w", "-t", table, "-S", chain).Run() == nil
}

// cgroupMounts returns the mount points of the cgroup hierarchies.
func cgroupMounts() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		i := strings.Index(line, " - ")
		if i < 0 {
			continue
		}
		f := strings.Fields(line[:i])
		after := strings.Fields(line[i+3:])
		if len(f) > 4 && len(after) > 0 && (after[0] == "cgroup" || after[0] == "cgroup2") {
			out = append(out, f[4])
		}
	}
	return out
}

// createCgroups makes the kubelet's cgroup root in every hierarchy (the
// kubelet refuses a root that does not exist).
func (n *clusterNode) createCgroups() error {
	for _, m := range cgroupMounts() {
		dir := filepath.Join(m, n.c.slot.cgroupRoot())
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		// A new cpuset (v1) admits no task until it has CPUs and memory nodes.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(m, f)); err == nil {
				if cur, _ := os.ReadFile(filepath.Join(dir, f)); strings.TrimSpace(string(cur)) == "" {
					if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
						return fmt.Errorf("set %s of %s: %w", f, dir, err)
					}
				}
			}
		}
	}
	return nil
}

// cgroupDirs lists the cluster's cgroup directories, deepest first.
func (n *clusterNode) cgroupDirs() []string {
	var dirs []string
	for _, m := range cgroupMounts() {
		root := filepath.Join(m, n.c.slot.cgroupRoot())
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	return dirs
}

// killCgroupProcs kills every process in the cluster's cgroups: the pods'
// containers.
func (n *clusterNode) killCgroupProcs() []error {
	pids := map[string]bool{}
	for _, d := range n.cgroupDirs() {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, pid := range strings.Fields(string(b)) {
			pids[pid] = true
		}
	}
	if len(pids) == 0 {
		return nil
	}
	left := killProcsMatching(func(p procInfo) bool { return pids[fmt.Sprint(p.pid)] }, 15*time.Second)
	var errs []error
	for _, p := range left {
		errs = append(errs, fmt.Errorf("container process %d (%s) survived SIGKILL", p.pid, p.cmdline))
	}
	return errs
}

func (n *clusterNode) removeCgroups() []error {
	var errs []error
	deadline := time.Now().Add(15 * time.Second)
	for {
		errs = errs[:0]
		for _, d := range n.cgroupDirs() {
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
		if len(errs) == 0 || time.Now().After(deadline) {
			return errs
		}
		n.killCgroupProcs()
		time.Sleep(200 * time.Millisecond)
	}
}

// startContainerd creates the node's private mount namespace and starts
// containerd in it, then imports the pause image.
func (n *clusterNode) startContainerd(ctx context.Context) error {
	c := n.c
	if l := len(n.containerdSocket()); l > 100 {
		return fmt.Errorf("containerd's socket path %s is %d bytes, too long for a unix socket; choose a shorter cluster Dir", n.containerdSocket(), l)
	}
	for _, d := range []string{"shadow/var-lib", "shadow/var-log", "shadow/run", "sysctl", "containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "volume-plugins", "images"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return err
		}
	}
	if err := n.createCgroups(); err != nil {
		return err
	}

	// The namespace: the kubelet's and CNI's fixed host paths (/var/lib/kubelet,
	// /var/lib/cni, /var/log/containers, /run/containerd, /run/netns) land in
	// directories of the cluster, and the sysctls the kubelet or CNI write are
	// files of the cluster too. Everything mounted inside (pod volumes,
	// container root filesystems, network namespaces) vanishes with it.
	script := []string{"set -e"}
	for shadow, target := range map[string]string{"var-lib": "/var/lib", "var-log": "/var/log", "run": "/run"} {
		script = append(script, fmt.Sprintf("mount --bind %s %s", shQuote(n.path("shadow", shadow)), target))
	}
	keys := make([]string, 0, len(kernelTunables))
	for k := range kernelTunables {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		target := filepath.Join("/proc/sys", k)
		if _, err := os.Stat(target); err != nil {
			continue
		}
		f := n.path("sysctl", strings.ReplaceAll(k, "/", "."))
		if err := os.WriteFile(f, []byte(kernelTunables[k]+"\n"), 0o444); err != nil {
			return err
		}
		script = append(script, fmt.Sprintf("mount --bind %s %s", shQuote(f), target),
			fmt.Sprintf("mount -o remount,bind,ro %s", target))
	}
	fwd := n.path("sysctl", "net.ipv4.ip_forward")
	if err := os.WriteFile(fwd, []byte(n.sysctlsBefore[ipForward]+"\n"), 0o644); err != nil {
		return err
	}
	script = append(script, fmt.Sprintf("mount --bind %s /proc/sys/%s", shQuote(fwd), ipForward),
		fmt.Sprintf("touch %s", shQuote(n.path("namespace-ready"))),
		"exec sleep infinity")
	var err error
	n.holder, err = startClusterProc("namespace", c.LogDir, []string{c.bins["unshare"], "--mount", "--propagation", "private", "--", "/bin/sh", "-c", strings.Join(script, "\n")})
	if err != nil {
		return err
	}
	c.nsHolder = n.holder
	if err := waitFor(ctx, 20*time.Second, n.holder, func() error {
		_, err := os.Stat(n.path("namespace-ready"))
		return err
	}); err != nil {
		return fmt.Errorf("mount namespace: %w: %s", err, n.holder.logTail(2000))
	}
	if n.holderNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.holder.pid())); err != nil {
		return err
	}

	cfg := n.path("containerd", "config.toml")
	if err := os.WriteFile(cfg, []byte(n.containerdConfig()), 0o644); err != nil {
		return err
	}
	if err := n.writeCNIConfig(); err != nil {
		return err
	}
	n.containerd, err = startClusterProc("containerd", c.LogDir, n.inNamespace(c.bins["containerd"], "--config", cfg))
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, n.containerd, func() error {
		return exec.CommandContext(ctx, c.bins["ctr"], "--address", n.containerdSocket(), "version").Run()
	}); err != nil {
		return fmt.Errorf("containerd not serving: %w", err)
	}
	pause, err := writePauseImage(ctx, n.path("images"))
	if err != nil {
		return err
	}
	return c.LoadImageFile(ctx, pause)
}

// inNamespace returns argv that runs a program in the node's mount namespace.
func (n *clusterNode) inNamespace(argv ...string) []string {
	return append([]string{n.c.bins["nsenter"], "--target", fmt.Sprint(n.holder.pid()), "--mount", "--"}, argv...)
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (n *clusterNode) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
oom_score = 0

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %q
    # Without it every sandbox fails where CAP_SYS_RESOURCE is missing
    # ("can't get final child's PID from pipe"): no negative oom_score_adj.
    restrict_oom_score_adj = true
    enable_selinux = false
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %q
      conf_dir = %q
      max_conf_num = 1
`, n.path("containerd", "root"), n.path("containerd", "state"), n.containerdSocket(), n.containerdSocket()+".ttrpc",
		n.path("containerd", "opt"), pauseImageRef, cniPluginDir, n.path("cni", "net.d"))
}

// writeCNIConfig writes the pod network: a bridge with the slot's subnet,
// no masquerading and no default route, so pods reach each other and the
// node (the apiserver listens there) and nothing else.
func (n *clusterNode) writeCNIConfig() error {
	c := n.c
	conf := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "amber-testbed",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "%s/32"}],
        "dataDir": %q
      }
    }
  ]
}
`, c.slot.bridge(), c.PodCIDR.String(), c.NodeIP, n.path("cni", "ipam"))
	return os.WriteFile(n.path("cni", "net.d", "10-amber-testbed.conflist"), []byte(conf), 0o644)
}

func (n *clusterNode) kubeletConfig() string {
	c := n.c
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: %[1]s
healthzPort: 10248
containerRuntimeEndpoint: unix://%[2]s
imageServiceEndpoint: unix://%[2]s
cgroupDriver: cgroupfs
cgroupRoot: /%[3]s
failSwapOn: false
failCgroupV1: false
protectKernelDefaults: false
makeIPTablesUtilChains: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[4]q}
authorization:
  mode: AlwaysAllow
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
fileCheckFrequency: 5s
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
resolvConf: ""
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
volumePluginDir: %[5]q
podLogsDir: %[6]q
`, c.NodeIP, n.containerdSocket(), c.slot.cgroupRoot(), filepath.Join(c.pkiDir(), "ca.crt"),
		n.path("volume-plugins"), n.path("pod-logs"))
}

// startKubelet starts the kubelet in the node's namespace and waits for the
// node to be Ready.
func (n *clusterNode) startKubelet(ctx context.Context) error {
	c := n.c
	cfg := n.path("kubelet-config.yaml")
	if err := os.WriteFile(cfg, []byte(n.kubeletConfig()), 0o644); err != nil {
		return err
	}
	var err error
	n.kubelet, err = startClusterProc("kubelet", c.LogDir, n.inNamespace(c.bins["kubelet"],
		"--config="+cfg,
		"--kubeconfig="+filepath.Join(c.pkiDir(), "kubelet.kubeconfig"),
		"--root-dir="+n.path("kubelet"),
		"--cert-dir="+n.path("kubelet", "pki"),
		"--hostname-override="+c.NodeName,
		"--node-ip="+c.NodeIP.String(),
		"--v=1",
	))
	if err != nil {
		return err
	}
	return waitFor(ctx, 120*time.Second, n.kubelet, func() error {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node %s not Ready: %s", c.NodeName, cond.Message)
			}
		}
		return fmt.Errorf("node %s has no Ready condition yet", c.NodeName)
	})
}

// stop ends the kubelet, the pods' containers, containerd and its shims, and
// the namespace. Everything mounted in the namespace goes with it.
func (n *clusterNode) stop() []error {
	var errs []error
	n.kubelet.stop(10 * time.Second)
	errs = append(errs, n.killCgroupProcs()...)
	n.containerd.stop(10 * time.Second)
	// containerd's shims outlive containerd; they share its namespace.
	if n.holderNS != "" {
		left := killProcsMatching(func(p procInfo) bool {
			return p.mntNS == n.holderNS && (n.holder == nil || p.pid != n.holder.pid())
		}, 15*time.Second)
		for _, p := range left {
			errs = append(errs, fmt.Errorf("process %d (%s) in the node's namespace survived SIGKILL", p.pid, p.cmdline))
		}
	}
	n.holder.stop(5 * time.Second)
	return errs
}

// cleanup removes the cgroups, the interfaces and any kubelet iptables
// chains, and restores sysctls that changed (none should).
func (n *clusterNode) cleanup() []error {
	c := n.c
	var errs []error
	errs = append(errs, n.removeCgroups()...)
	for _, link := range []string{c.slot.bridge(), c.slot.dummy()} {
		if linkExists(link) {
			if err := run("ip", "link", "del", link); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if n.chainsBefore != nil && !c.slot.othersActive() {
		for _, ch := range kubeletChains {
			for _, ipt := range []string{"iptables", "ip6tables"} {
				if !n.chainsBefore[ipt+" "+ch.table+" "+ch.chain] && chainExists(ipt, ch.table, ch.chain) {
					if err := deleteChain(ipt, ch.table, ch.chain); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
	}
	for k, v := range n.sysctlsBefore {
		if now := readSysctl(k); v != "" && now != v {
			errs = append(errs, fmt.Errorf("sysctl %s changed from %s to %s; restored", k, v, now))
			_ = os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644)
		}
	}
	return errs
}

// deleteChain removes every jump to chain in table, then the chain.
func deleteChain(ipt, table, chain string) error {
	out, err := exec.Command(ipt, "-w", "-t", table, "-S").Output()
	if err != nil {
		return fmt.Errorf("%s -t %s -S: %w", ipt, table, err)
	}
	for _, rule := range strings.Split(string(out), "\n") {
		f := strings.Fields(rule)
		if len(f) > 2 && f[0] == "-A" && strings.Contains(rule, "-j "+chain) && f[1] != chain {
			_ = exec.Command(ipt, append([]string{"-w", "-t", table, "-D"}, f[1:]...)...).Run()
		}
	}
	if err := run(ipt, "-w", "-t", table, "-F", chain); err != nil {
		return err
	}
	return run(ipt, "-w", "-t", table, "-X", chain)
}

func (n *clusterNode) leftovers() []string {
	var out []string
	c := n.c
	for _, p := range []*clusterProc{n.kubelet, n.containerd, n.holder} {
		if p != nil && !p.exited() {
			out = append(out, fmt.Sprintf("process %s (pid %d)", p.name, p.pid()))
		}
	}
	// Only while the holder pins the namespace: once it is gone, the kernel
	// may give the namespace's inode number to a new one (a container of
	// another test's cluster was once reported here). stop reports what
	// survived in it while it was still pinned.
	if n.holderNS != "" && n.holder != nil && !n.holder.exited() {
		for _, p := range listProcs() {
			if p.mntNS == n.holderNS && !isZombie(p.pid) {
				out = append(out, fmt.Sprintf("process %d in the node's namespace: %s", p.pid, p.cmdline))
			}
		}
	}
	for _, link := range []string{c.slot.bridge(), c.slot.dummy()} {
		if linkExists(link) {
			out = append(out, "network interface "+link)
		}
	}
	for _, d := range n.cgroupDirs() {
		out = append(out, "cgroup "+d)
	}
	return out
}

// CleanupStaleClusters removes what clusters that did not stop cleanly left
// on this machine: processes whose command line names dir (when dir is not
// empty) and dir itself, and the interfaces, cgroups and pods' processes of
// every slot that no running cluster holds.
func CleanupStaleClusters(dir string) error {
	var errs []error
	if dir != "" {
		if d, err := absNoSymlinks(dir); err == nil {
			dir = d
		}
		for _, p := range killProcsMatching(func(p procInfo) bool { return strings.Contains(p.cmdline, dir) }, 15*time.Second) {
			errs = append(errs, fmt.Errorf("process %d (%s) survived SIGKILL", p.pid, p.cmdline))
		}
	}
	for i := 0; i < maxClusterSlots; i++ {
		l, err := net.Listen("unix", slotSocket(i))
		if err != nil {
			continue // a running cluster holds it
		}
		s := &clusterSlot{n: i, l: l}
		n := &clusterNode{c: &Cluster{slot: s}}
		errs = append(errs, n.killCgroupProcs()...)
		errs = append(errs, n.removeCgroups()...)
		for _, link := range []string{s.bridge(), s.dummy()} {
			if linkExists(link) {
				if err := run("ip", "link", "del", link); err != nil {
					errs = append(errs, err)
				}
			}
		}
		s.release()
	}
	if dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
