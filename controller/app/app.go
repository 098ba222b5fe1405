// Package app wires amber-controller together: the CA and certificates,
// the webhook server with the pod injector and the policy validator, and
// the reconcilers, under one controller-runtime manager with leader
// election. cmd/amber-controller parses flags into Options and calls Run;
// the envtest tests call Run too, so they test the same wiring.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/certs"
	"github.com/amber-backup/amber/controller/controllers"
	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/controller/retention"
	"github.com/amber-backup/amber/controller/sidecarapi"
	"github.com/amber-backup/amber/controller/sidecarclient"
	"github.com/amber-backup/amber/controller/workload"
	"github.com/amber-backup/amber/plugins/api/clock"
)

// The permissions the controller needs; controller-gen writes them to
// controller/config/rbac/role.yaml.
//
// +kubebuilder:rbac:groups=amber.dev,resources=backuppolicies;backups;restores,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=amber.dev,resources=backuppolicies/status;backups/status;restores/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=amber.dev,resources=restores,verbs=delete
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;create;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=list;create;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;create
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=list;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=delete
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create;update
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,resources=volumesnapshots,verbs=get;list;create;delete;patch
// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,resources=volumesnapshotcontents,verbs=get
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations;validatingwebhookconfigurations,verbs=get;patch

// Options configure the controller.
type Options struct {
	// Namespace the controller runs in: its CA Secret and leader lease live there.
	Namespace string
	// CASecret names the Secret holding the CA.
	CASecret string
	// Sidecar is the injected container's configuration. NativeSidecar is
	// decided from the server's version unless ForceNativeSidecar is set.
	Sidecar            inject.Config
	ForceNativeSidecar *bool

	// WebhookHost is the address the webhook server listens on ("" all).
	WebhookHost string
	WebhookPort int
	// CertDir receives the webhook's serving certificate.
	CertDir string
	// ServingNames are the DNS names or IPs in the serving certificate
	// (the webhook Service's names, e.g. amber-controller.amber.svc).
	ServingNames []string
	// MutatingConfig and ValidatingConfig name the webhook
	// configurations whose caBundle is patched ("" skips one).
	MutatingConfig   string
	ValidatingConfig string

	LeaderElection   bool
	LeaderElectionID string
	MetricsAddr      string
	HealthAddr       string

	// Dialer reaches sidecars; nil: the agent API over mutual TLS
	// (sidecarclient) with the controller's CA.
	Dialer sidecarapi.Dialer
	// Pruner applies retention; nil: the repository-backed retention.Pruner.
	Pruner controllers.Pruner
	// Workloads stores and finds captured workloads; nil: the
	// repository-backed workload.Capturer.
	Workloads controllers.WorkloadStore
	// Snapshots records snapshot backups; nil: Workloads when it can
	// (workload.Capturer does, into the policy's repository).
	Snapshots controllers.SnapshotRecorder
	// Clock drives schedules; nil: the real clock.
	Clock           clock.Clock
	ArchiveInterval time.Duration
	Logger          *slog.Logger
	// ReplicaWait is how long a Backup waits, Pending, for a replica to
	// qualify before it fails: 0 two minutes, negative not at all.
	ReplicaWait time.Duration
	// Restartable lets Run be called again in one process (tests): it
	// skips controller-runtime's check that controller names are unique
	// process-wide.
	Restartable bool
}

// Scheme is the scheme the controller uses: client-go's types and amber.dev.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(amberv1.AddToScheme(s))
	return s
}

// Run runs the controller until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	log.SetLogger(toLogr(logger))
	if o.Namespace == "" {
		return errors.New("no namespace for the controller: set --namespace or POD_NAMESPACE")
	}
	if o.Sidecar.Image == "" {
		return errors.New("no sidecar image: set --sidecar-image")
	}
	clk := clock.Or(o.Clock)
	scheme := Scheme()

	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("connect to the Kubernetes API: %w", err)
	}
	// Certificates are dated by the wall clock whatever o.Clock says: the
	// API server and the sidecars check them against theirs.
	ca, err := certs.EnsureAuthority(ctx, direct, o.Namespace, o.CASecret, time.Now())
	if err != nil {
		return err
	}
	if err := ca.WriteServingCert(o.CertDir, o.ServingNames, time.Now()); err != nil {
		return fmt.Errorf("write the webhook's serving certificate: %w", err)
	}
	// A chart creates the Deployment and the webhook configurations in one
	// go, in no promised order: wait a while for configurations that do
	// not exist yet instead of exiting (and crash-looping) at once.
	for waited := time.Duration(0); ; waited += 2 * time.Second {
		err := ca.PatchCABundle(ctx, direct, o.MutatingConfig, o.ValidatingConfig)
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) || waited >= 2*time.Minute {
			return err
		}
		if waited == 0 {
			logger.Info("waiting for the webhook configurations to exist", "problem", err.Error())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}

	sidecar := o.Sidecar
	if o.ForceNativeSidecar != nil {
		sidecar.NativeSidecar = *o.ForceNativeSidecar
	} else {
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			return fmt.Errorf("discovery client: %w", err)
		}
		v, err := dc.ServerVersion()
		if err != nil {
			return fmt.Errorf("read the server version: %w", err)
		}
		sidecar.NativeSidecar = inject.NativeSidecarSupported(v)
		logger.Info("server version", "version", v.GitVersion, "native_sidecar", sidecar.NativeSidecar)
	}

	metricsAddr := o.MetricsAddr
	if metricsAddr == "" {
		metricsAddr = "0"
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		// Only opted-in pods are watched and cached; Secrets are never
		// cached (they are read when needed, one at a time).
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{inject.LabelInject: "true"})},
		}},
		Client:                        client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		LeaderElectionReleaseOnCancel: true,
		Controller:                    config.Controller{SkipNameValidation: ptr.To(o.Restartable)},
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        o.HealthAddr,
		LeaderElection:                o.LeaderElection,
		LeaderElectionID:              o.LeaderElectionID,
		LeaderElectionNamespace:       o.Namespace,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: o.WebhookHost, Port: o.WebhookPort, CertDir: o.CertDir,
		}),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	recorder := mgr.GetEventRecorderFor("amber-controller")
	injector := &inject.Injector{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: recorder, Authority: ca,
		Config: sidecar, Clock: clock.Real, Logger: logger}
	if err := injector.Check(); err != nil {
		return err
	}
	// The webhooks answer on every replica, leader or not.
	mgr.GetWebhookServer().Register(inject.Path, injector.Webhook())
	mgr.GetWebhookServer().Register(inject.ValidatePolicyPath, inject.PolicyValidatorWebhook(scheme))

	dialer := o.Dialer
	if dialer == nil {
		dialer = &sidecarclient.Dialer{TLS: sidecarclient.FromAuthority(ca, time.Now), Port: sidecar.APIPort}
	}
	pruner := o.Pruner
	if pruner == nil {
		pruner = &retention.Pruner{Client: mgr.GetAPIReader(), Clock: clk, Logger: logger}
	}
	workloads := o.Workloads
	if workloads == nil {
		workloads = &workload.Capturer{Client: mgr.GetAPIReader(), Clock: clk, Logger: logger}
	}
	if err := controllers.IndexPods(ctx, mgr); err != nil {
		return fmt.Errorf("index pods by policy: %w", err)
	}
	if err := (&controllers.PolicyReconciler{Client: mgr.GetClient(), Recorder: recorder, Clock: clk, Dialer: dialer,
		Logger: logger, ArchiveInterval: o.ArchiveInterval}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the BackupPolicy controller: %w", err)
	}
	var snapshots controllers.SnapshotRecorder
	if sr, ok := workloads.(controllers.SnapshotRecorder); ok {
		snapshots = sr
	}
	if o.Snapshots != nil {
		snapshots = o.Snapshots
	}
	if err := (&controllers.BackupReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: recorder, Clock: clk, Dialer: dialer,
		Pruner: pruner, Workloads: workloads, Snapshots: snapshots, Logger: logger, ReplicaWait: o.ReplicaWait}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the Backup controller: %w", err)
	}
	if err := (&controllers.DrillReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: recorder, Clock: clk,
		Prober: &workload.PostgresProber{Client: mgr.GetAPIReader()}, Metrics: drillMetrics(), Logger: logger}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the drill controller: %w", err)
	}
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("core API client: %w", err)
	}
	if err := (&controllers.RestoreReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: recorder, Clock: clk, Workloads: workloads,
		Image: o.Sidecar.Image, PullPolicy: o.Sidecar.ImagePullPolicy, Logger: logger, Logs: containerLogs(core)}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the Restore controller: %w", err)
	}
	if o.HealthAddr != "" {
		if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			return err
		}
	}
	logger.Info("amber-controller starting", "namespace", o.Namespace, "webhook_port", o.WebhookPort, "leader_election", o.LeaderElection)
	return mgr.Start(ctx)
}

var (
	_ controllers.Pruner           = (*retention.Pruner)(nil)
	_ controllers.SnapshotRecorder = (*workload.Capturer)(nil)
	_ controllers.WorkloadStore    = (*workload.Capturer)(nil)
)

var (
	drillMetricsOnce sync.Once
	drillMetricsVal  *controllers.PromDrillMetrics
)

// drillMetrics registers the drill metrics with controller-runtime's
// registry once per process (Run may be called again in tests).
func drillMetrics() *controllers.PromDrillMetrics {
	drillMetricsOnce.Do(func() { drillMetricsVal = controllers.NewDrillMetrics(ctrlmetrics.Registry) })
	return drillMetricsVal
}

// containerLogs reads the last 20 lines of a container's log: what the
// Restore controller looks for a restarted restore container's report in.
func containerLogs(core corev1client.CoreV1Interface) func(ctx context.Context, namespace, pod, container string) (string, error) {
	return func(ctx context.Context, namespace, pod, container string) (string, error) {
		b, err := core.Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container, TailLines: ptr.To[int64](20)}).DoRaw(ctx)
		return string(b), err
	}
}
