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
	"syscall"
	"time"
)

// AmberController is amber-controller running on the cluster's node as a
// host process, as a person would run it against a remote cluster with a
// kubeconfig. The API server reaches its webhook through the Service
// amber/amber-controller, whose one endpoint is the node's address (the
// webhook configurations of controller/config/webhook point there, as they
// would at the controller's pods).
type AmberController struct {
	// Bin is the amber-controller binary; LogFile receives its output.
	Bin, LogFile string
	// WebhookPort is where the webhook listens on the node; Health is the
	// host:port of /healthz and /readyz, Metrics that of /metrics.
	WebhookPort     int
	Health, Metrics string
	args, env       []string
	cmd             *exec.Cmd
	exited          chan struct{}
}

// BuildController builds amber-controller from this checkout into dir.
func BuildController(dir string) (string, error) {
	if err := goBuild(dir, "", "./controller/cmd/amber-controller"); err != nil {
		return "", err
	}
	return filepath.Join(dir, "amber-controller"), nil
}

// InstallAmber installs the CRDs, the namespace amber, the webhook Service
// with the node as its endpoint and the webhook configurations, and returns
// the controller (not started yet) that serves them, with its state and log
// in dir. The sidecar it injects is AmberImageRef, never pulled.
func (c *Cluster) InstallAmber(ctx context.Context, controllerBin, dir string) (*AmberController, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	if err := c.ApplyFiles(ctx, filepath.Join(root, "controller", "config", "crd")); err != nil {
		return nil, fmt.Errorf("install the CRDs: %w", err)
	}
	webhookPort, err := freePortOn(c.NodeIP)
	if err != nil {
		return nil, err
	}
	healthPort, err := freePortOn(net.IPv4(127, 0, 0, 1))
	if err != nil {
		return nil, err
	}
	metricsPort, err := freePortOn(net.IPv4(127, 0, 0, 1))
	if err != nil {
		return nil, err
	}
	svc := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: amber}
---
apiVersion: v1
kind: Service
metadata: {name: amber-controller, namespace: amber}
spec:
  ports: [{name: webhook, port: 443, targetPort: %[1]d}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: amber-controller, namespace: amber}
subsets:
- addresses: [{ip: "%[2]s"}]
  ports: [{name: webhook, port: %[1]d}]
`, webhookPort, c.NodeIP)
	if err := c.Apply(ctx, []byte(svc)); err != nil {
		return nil, fmt.Errorf("the webhook Service: %w", err)
	}
	if err := c.ApplyFiles(ctx, filepath.Join(root, "controller", "config", "webhook", "manifests.yaml")); err != nil {
		return nil, fmt.Errorf("the webhook configurations: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	a := &AmberController{Bin: controllerBin, LogFile: filepath.Join(dir, "amber-controller.log"),
		WebhookPort: webhookPort, Health: fmt.Sprintf("127.0.0.1:%d", healthPort), Metrics: fmt.Sprintf("127.0.0.1:%d", metricsPort)}
	a.args = []string{
		"--namespace", "amber",
		"--sidecar-image", AmberImageRef, "--sidecar-pull-policy", "Never",
		"--webhook-port", fmt.Sprint(webhookPort), "--cert-dir", filepath.Join(dir, "certs"),
		"--metrics-addr", a.Metrics, "--health-addr", a.Health,
	}
	a.env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	return a, nil
}

// SetSidecarImage makes the controller inject ref (never pulled) instead
// of AmberImageRef, as --sidecar-image names an image built FROM amber's;
// it takes effect at the next Start.
func (a *AmberController) SetSidecarImage(ref string) {
	for i := range a.args {
		if a.args[i] == "--sidecar-image" && i+1 < len(a.args) {
			a.args[i+1] = ref
		}
	}
}

// Start starts the controller and returns once its webhook serves (its CA
// is in the webhook configurations by then).
func (a *AmberController) Start(ctx context.Context) error {
	if a.cmd != nil {
		return errors.New("amber-controller already runs")
	}
	f, err := os.OpenFile(a.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(a.Bin, a.args...)
	cmd.Env = a.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	a.cmd, a.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(a.exited)
	err = waitFor(ctx, 90*time.Second, nil, func() error {
		select {
		case <-a.exited:
			return fmt.Errorf("amber-controller exited (%v)", cmd.ProcessState)
		default:
		}
		resp, err := http.Get("http://" + a.Health + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		a.Kill()
		return fmt.Errorf("start amber-controller: %w; its log ends:\n%s", err, a.Log(4000))
	}
	return nil
}

// Kill ends the controller with SIGKILL, as a crash or an OOM kill would.
func (a *AmberController) Kill() {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Kill()
	<-a.exited
	a.cmd = nil
}

// Stop ends the controller with SIGTERM and waits (a minute at most).
func (a *AmberController) Stop() {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(time.Minute):
		_ = a.cmd.Process.Kill()
		<-a.exited
	}
	a.cmd = nil
}

// Log returns the last n bytes of the controller's log.
func (a *AmberController) Log(n int) string {
	b, _ := os.ReadFile(a.LogFile)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
