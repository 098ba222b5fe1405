// Command amber-testcluster runs the test bed's one-node Kubernetes cluster
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd
// and a real kubelet; conformance/testbed) for a person, in the background:
//
//	amber-testcluster up [-dir D] [-images=false] [-load image.tar]... [-apply manifests]...
//	amber-testcluster down [-dir D]
//
// `up` returns once the node is Ready and Amber's pieces are installed, with
// the administrator's kubeconfig in D/kubeconfig; `down` stops the cluster
// and removes everything it made. D defaults to .deps/cluster. `make cluster`
// and `make cluster-down` call these. Needs root.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type options struct {
	dir    string
	images bool
	amber  bool
	loads  listFlag
	apply  listFlag
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	var o options
	fs.StringVar(&o.dir, "dir", filepath.Join(testbed.DepsDir(), "cluster"), "directory for the kubeconfig, the log and the cluster's state")
	fs.BoolVar(&o.images, "images", true, "build and load the PostgreSQL 15 and amber images ("+testbed.PostgresImageRef+", "+testbed.AmberImageRef+")")
	fs.BoolVar(&o.amber, "amber", true, "install Amber (CRDs, webhook, amber-controller on the node) and start a MinIO repository for the pods (needs -images)")
	fs.Var(&o.loads, "load", "an image tarball to load into the node (repeatable)")
	fs.Var(&o.apply, "apply", "a manifest file or directory to apply after the images are loaded (repeatable)")
	_ = fs.Parse(os.Args[2:])
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		log.Fatal(err)
	}
	o.dir = dir
	switch cmd {
	case "up":
		err = up(o)
	case "run":
		err = serve(o)
	case "down":
		err = down(o)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "amber-testcluster %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: amber-testcluster up|down [-dir D] [-images=false] [-amber=false] [-load image.tar]... [-apply manifests]...")
	os.Exit(2)
}

func (o options) path(name string) string { return filepath.Join(o.dir, name) }

// running returns the pid of a live cluster process recorded in dir, or 0.
func running(o options) int {
	b, err := os.ReadFile(o.path("pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !alive(pid) {
		return 0
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !strings.Contains(string(cmdline), "amber-testcluster") {
		return 0
	}
	return pid
}

// up starts `run` in its own session, waits until it is ready, and prints
// how to use the cluster.
func up(o options) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (containerd, the kubelet, network interfaces, mounts); run it as root")
	}
	if pid := running(o); pid != 0 {
		fmt.Printf("cluster already running (pid %d)\n", pid)
		return printInfo(o)
	}
	if err := testbed.CleanupStaleClusters(o.path("state")); err != nil {
		return fmt.Errorf("clean up an earlier cluster: %w", err)
	}
	for _, f := range []string{"ready", "pid", "kubeconfig"} {
		_ = os.Remove(o.path(f))
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	logf, err := os.Create(o.path("log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := append([]string{"run"}, os.Args[2:]...)
	args = append(args, "-dir", o.dir)
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := os.WriteFile(o.path("pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Printf("starting the cluster (log: %s) ...\n", o.path("log"))
	t0 := time.Now()
	for {
		if _, err := os.Stat(o.path("ready")); err == nil {
			break
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(o.path("log"))
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			return fmt.Errorf("cluster process ended (%v) before it was ready; its log ends:\n%s", err, b)
		case <-time.After(500 * time.Millisecond):
		}
		if time.Since(t0) > 15*time.Minute {
			return fmt.Errorf("cluster not ready after %s; see %s", time.Since(t0).Round(time.Second), o.path("log"))
		}
	}
	fmt.Printf("cluster ready in %s\n", time.Since(t0).Round(100*time.Millisecond))
	return printInfo(o)
}

func printInfo(o options) error {
	b, err := os.ReadFile(o.path("ready"))
	if err != nil {
		return err
	}
	fmt.Print(string(b))
	return nil
}

// serve runs the cluster in the foreground until SIGTERM or SIGINT.
func serve(o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := log.New(os.Stderr, "", log.LstdFlags)
	c, err := testbed.NewCluster(ctx, testbed.ClusterOptions{Dir: o.path("state"), Logf: logger.Printf})
	if err != nil {
		return err
	}
	defer func() {
		logger.Print("stopping the cluster")
		for _, f := range []string{"ready", "kubeconfig", "pid", "repository.env"} {
			_ = os.Remove(o.path(f))
		}
		if err := c.Stop(); err != nil {
			logger.Printf("stop: %v", err)
		}
	}()
	kc, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.path("kubeconfig"), kc, 0o600); err != nil {
		return err
	}
	if err := install(ctx, c, o, logger); err != nil {
		return err
	}
	var extra string
	if o.amber && o.images {
		ctl, m, err := installAmber(ctx, c, o, logger)
		if err != nil {
			return err
		}
		defer m.Stop()
		defer ctl.Stop()
		extra, err = amberInfo(ctl, m, o)
		if err != nil {
			return err
		}
	}
	if err := writeInfo(c, o, extra); err != nil {
		return err
	}
	logger.Print("cluster ready; waiting for SIGTERM (amber-testcluster down)")
	<-ctx.Done()
	return nil
}

// install puts Amber's pieces into the cluster, in this order: the test
// images (-images), more image tarballs (-load), then manifests (-apply):
// CRDs, the controller, its webhook configuration and whatever else they
// need, as files or directories of YAML.
func install(ctx context.Context, c *testbed.Cluster, o options, logger *log.Logger) error {
	loads := append([]string(nil), o.loads...)
	if o.images {
		imgDir := o.path("images")
		if err := os.MkdirAll(imgDir, 0o755); err != nil {
			return err
		}
		pg := filepath.Join(imgDir, "postgres.tar")
		if _, err := os.Stat(pg); err != nil {
			logger.Printf("building %s", testbed.PostgresImageRef)
			if err := testbed.WritePostgresImage(pg); err != nil {
				return err
			}
		}
		am := filepath.Join(imgDir, "amber.tar")
		logger.Printf("building %s", testbed.AmberImageRef)
		if err := testbed.WriteAmberImage(filepath.Join(imgDir, "amber-bin"), am); err != nil {
			return err
		}
		loads = append([]string{pg, am}, loads...)
	}
	for _, l := range loads {
		logger.Printf("loading image %s", l)
		if err := c.LoadImageFile(ctx, l); err != nil {
			return err
		}
	}
	if len(o.apply) > 0 {
		logger.Printf("applying %s", strings.Join(o.apply, ", "))
		if err := c.ApplyFiles(ctx, o.apply...); err != nil {
			return err
		}
	}
	return nil
}

// installAmber starts amber-controller on the node (its webhook
// registered, the CRDs installed) and a MinIO on the node's address, which
// pods reach, with one bucket "amber".
func installAmber(ctx context.Context, c *testbed.Cluster, o options, logger *log.Logger) (*testbed.AmberController, *testbed.MinIO, error) {
	dir := o.path("amber")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	logger.Printf("building amber-controller")
	bin, err := testbed.BuildController(dir)
	if err != nil {
		return nil, nil, err
	}
	ctl, err := c.InstallAmber(ctx, bin, dir)
	if err != nil {
		return nil, nil, err
	}
	logger.Printf("starting amber-controller (log: %s)", ctl.LogFile)
	if err := ctl.Start(ctx); err != nil {
		return nil, nil, err
	}
	minioBin := filepath.Join(testbed.DepsDir(), "bin", "minio")
	logger.Printf("starting MinIO on %s", c.NodeIP)
	m, err := testbed.NewMinIO(minioBin, filepath.Join(c.Dir, "minio"), testbed.MinIOOptions{Host: c.NodeIP.String()})
	if err != nil {
		ctl.Stop()
		return nil, nil, fmt.Errorf("start MinIO (%s, built by make deps): %w", minioBin, err)
	}
	if err := m.MakeBucket(ctx, "amber"); err != nil {
		ctl.Stop()
		m.Stop()
		return nil, nil, err
	}
	return ctl, m, nil
}

// amberInfo writes the repository's settings to o.dir/repository.env
// (mode 0600: it holds the MinIO keys) and says how to use them.
func amberInfo(ctl *testbed.AmberController, m *testbed.MinIO, o options) (string, error) {
	url := fmt.Sprintf("s3://amber/demo?endpoint=http://%s", m.Endpoint)
	env := fmt.Sprintf("AMBER_REPOSITORY='%s'\nAWS_ACCESS_KEY_ID='%s'\nAWS_SECRET_ACCESS_KEY='%s'\n", url, m.AccessKey, m.SecretKey)
	if err := os.WriteFile(o.path("repository.env"), []byte(env), 0o600); err != nil {
		return "", err
	}
	return fmt.Sprintf(`Amber: amber-controller runs on the node (log: %s), its webhook is registered,
the CRDs are installed. A MinIO for repositories listens on %s (bucket "amber");
its URL and keys are in %s (readable by root only):
  set -a; . %s; set +a
README.md ("Try the Kubernetes half") continues from here.
`, ctl.LogFile, m.Endpoint, o.path("repository.env"), o.path("repository.env")), nil
}

func writeInfo(c *testbed.Cluster, o options, extra string) error {
	var b strings.Builder
	w := bufio.NewWriter(&b)
	fmt.Fprintf(w, `
One-node Kubernetes cluster (node %s at %s, pods on %s; no kube-proxy, no DNS).
  export KUBECONFIG=%s
  kubectl get nodes            # or any client-go program with that kubeconfig
Images are never pulled: use imagePullPolicy: Never. Loaded: %s, %s (with -images).
Load another: ctr --address %s -n k8s.io images import IMAGE.tar
Default StorageClass %s gives each claim a directory under %s/volumes.
Logs of etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet: %s
%sStop and remove everything: make cluster-down
`, c.NodeName, c.NodeIP, c.PodCIDR, o.path("kubeconfig"), testbed.PostgresImageRef, testbed.AmberImageRef,
		filepath.Join(c.Dir, "node", "containerd", "containerd.sock"), c.StorageClass, c.Dir, c.LogDir, extra)
	w.Flush()
	tmp := o.path("ready.tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, o.path("ready"))
}

// down stops a running cluster and cleans up after one that did not stop.
func down(o options) error {
	if pid := running(o); pid != 0 {
		fmt.Printf("stopping the cluster (pid %d) ...\n", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(3 * time.Minute)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	} else {
		fmt.Println("no cluster running; removing what an earlier one left")
	}
	for _, f := range []string{"ready", "pid", "kubeconfig", "repository.env"} {
		_ = os.Remove(o.path(f))
	}
	if err := testbed.CleanupStaleClusters(o.path("state")); err != nil {
		return err
	}
	fmt.Println("cluster stopped and removed")
	return nil
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}
