// Command amber-controller runs Amber's Kubernetes controller: the sidecar
// injection webhook, the BackupPolicy validator, schedules, replica choice,
// archiver placement and retention (docs/controller.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/amber-backup/amber/controller/app"
	"github.com/amber-backup/amber/controller/inject"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "amber-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	var o app.Options
	var names, cpu, memory, cpuLimit, memoryLimit, pullPolicy string
	var nativeSidecar string
	fs := flag.NewFlagSet("amber-controller", flag.ContinueOnError)
	fs.StringVar(&o.Sidecar.Image, "sidecar-image", "", "image of the injected sidecar (it runs `amber sidecar`); required")
	fs.StringVar(&pullPolicy, "sidecar-pull-policy", "IfNotPresent", "imagePullPolicy of the sidecar: Always, IfNotPresent or Never")
	fs.StringVar(&cpu, "sidecar-cpu", "100m", "CPU request of the sidecar")
	fs.StringVar(&memory, "sidecar-memory", "128Mi", "memory request of the sidecar")
	fs.StringVar(&cpuLimit, "sidecar-cpu-limit", "", "CPU limit of the sidecar (empty: none)")
	fs.StringVar(&memoryLimit, "sidecar-memory-limit", "512Mi", "memory limit of the sidecar (empty: none)")
	apiPort := fs.Int("sidecar-api-port", inject.DefaultAPIPort, "port of the sidecar's mTLS API")
	fs.StringVar(&nativeSidecar, "native-sidecar", "auto", "inject as a native sidecar (init container with restartPolicy Always): auto (Kubernetes 1.29+), true or false")
	fs.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace the controller runs in (default $POD_NAMESPACE)")
	fs.StringVar(&o.CASecret, "ca-secret", "amber-ca", "Secret in --namespace holding the controller's CA (created if missing)")
	fs.IntVar(&o.WebhookPort, "webhook-port", 9443, "port of the webhook server")
	fs.StringVar(&o.CertDir, "cert-dir", "/tmp/amber-controller/certs", "directory the webhook's serving certificate is written to")
	fs.StringVar(&names, "webhook-names", "", "comma-separated DNS names of the webhook Service for its certificate (default amber-controller.<namespace>.svc)")
	fs.StringVar(&o.MutatingConfig, "mutating-webhook-config", inject.MutatingConfigName, "MutatingWebhookConfiguration to patch the CA into")
	fs.StringVar(&o.ValidatingConfig, "validating-webhook-config", inject.ValidatingConfigName, "ValidatingWebhookConfiguration to patch the CA into (empty: none)")
	fs.BoolVar(&o.LeaderElection, "leader-elect", true, "elect one active controller among replicas (webhooks answer on all)")
	fs.StringVar(&o.LeaderElectionID, "leader-election-id", "amber-controller.amber.dev", "name of the leader election Lease")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", ":8080", "address of the metrics endpoint (0: off)")
	fs.StringVar(&o.HealthAddr, "health-addr", ":8081", "address of /healthz and /readyz (empty: off)")
	replicaWait := fs.Duration("backup-replica-wait", 2*time.Minute, "how long a Backup waits, Pending, for a replica of its StatefulSet to qualify (a pod starting, a failover) before it fails; 0: fail at once")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	switch {
	case *replicaWait < 0:
		return fmt.Errorf("--backup-replica-wait=%s: must not be negative", *replicaWait)
	case *replicaWait == 0:
		o.ReplicaWait = -1 // the reconciler's "not at all"
	default:
		o.ReplicaWait = *replicaWait
	}
	o.Sidecar.ImagePullPolicy = corev1.PullPolicy(pullPolicy)
	o.Sidecar.APIPort = int32(*apiPort)
	res, err := resources(cpu, memory, cpuLimit, memoryLimit)
	if err != nil {
		return err
	}
	o.Sidecar.Resources = res
	switch nativeSidecar {
	case "auto":
	case "true", "false":
		v := nativeSidecar == "true"
		o.ForceNativeSidecar = &v
	default:
		return fmt.Errorf("--native-sidecar=%q: use auto, true or false", nativeSidecar)
	}
	if names == "" {
		names = "amber-controller." + o.Namespace + ".svc"
	}
	for _, n := range strings.Split(names, ",") {
		if n = strings.TrimSpace(n); n != "" {
			o.ServingNames = append(o.ServingNames, n)
		}
	}
	o.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("find the Kubernetes API (in-cluster or $KUBECONFIG): %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return app.Run(ctx, cfg, o)
}

func resources(cpu, memory, cpuLimit, memoryLimit string) (corev1.ResourceRequirements, error) {
	var r corev1.ResourceRequirements
	set := func(list *corev1.ResourceList, name corev1.ResourceName, flag, v string) error {
		if v == "" {
			return nil
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return fmt.Errorf("--%s=%q: %v", flag, v, err)
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[name] = q
		return nil
	}
	for _, s := range []struct {
		list    *corev1.ResourceList
		name    corev1.ResourceName
		flag, v string
	}{
		{&r.Requests, corev1.ResourceCPU, "sidecar-cpu", cpu},
		{&r.Requests, corev1.ResourceMemory, "sidecar-memory", memory},
		{&r.Limits, corev1.ResourceCPU, "sidecar-cpu-limit", cpuLimit},
		{&r.Limits, corev1.ResourceMemory, "sidecar-memory-limit", memoryLimit},
	} {
		if err := set(s.list, s.name, s.flag, s.v); err != nil {
			return r, err
		}
	}
	return r, nil
}
