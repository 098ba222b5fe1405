package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/amber-backup/amber/controller/app"
	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/controller/sidecarapi"
)

// The controller's own process: the test binary run again with childEnv
// set to a JSON childSpec. It runs app.Run as amber-controller's main does
// (the rest.Config from ctrl.GetConfig, here from $KUBECONFIG, so with
// the same client settings), with a stub of the sidecar API, until
// SIGTERM, then writes a childResult.
const childEnv = "AMBER_SCALE_CHILD"

type childSpec struct {
	WebhookPort int
	CertDir     string
	// Result is the file the childResult is written to at the end; on
	// SIGUSR1 the figures so far go to Result + ".converged".
	Result string
	// ArchiveInterval is the controller's Options.ArchiveInterval.
	ArchiveInterval time.Duration
	// Pprof, if set, is a directory for cpu.pprof and heap.pprof.
	Pprof string
}

type childResult struct {
	// Requests counts the API requests the controller made, by verb and
	// resource ("PATCH backuppolicies/status").
	Requests map[string]int64
	// Reconciles counts finished reconciles by controller and result
	// (controller-runtime's controller_runtime_reconcile_total).
	Reconciles      map[string]float64
	ReconcileErrors int
	Probes          int
	StartArchiving  int
	StopArchiving   int
}

func (r childResult) TotalRequests() int64 {
	var n int64
	for _, v := range r.Requests {
		n += v
	}
	return n
}

func (r childResult) TotalReconciles() int {
	var n float64
	for _, v := range r.Reconciles {
		n += v
	}
	return int(n)
}

func (r childResult) requestsPerReconcile() float64 {
	if n := r.TotalReconciles(); n > 0 {
		return float64(r.TotalRequests()) / float64(n)
	}
	return 0
}

// minus is what r counted beyond earlier.
func (r childResult) minus(earlier childResult) childResult {
	out := childResult{Requests: map[string]int64{}, Reconciles: map[string]float64{},
		ReconcileErrors: r.ReconcileErrors - earlier.ReconcileErrors, Probes: r.Probes - earlier.Probes,
		StartArchiving: r.StartArchiving - earlier.StartArchiving, StopArchiving: r.StopArchiving - earlier.StopArchiving}
	for k, v := range r.Requests {
		if d := v - earlier.Requests[k]; d != 0 {
			out.Requests[k] = d
		}
	}
	for k, v := range r.Reconciles {
		if d := v - earlier.Reconciles[k]; d != 0 {
			out.Reconciles[k] = d
		}
	}
	return out
}

func (r childResult) reconcileSummary() string {
	var parts []string
	for _, k := range sortedCounts(r.Reconciles) {
		parts = append(parts, fmt.Sprintf("%s %d", k, int(r.Reconciles[k])))
	}
	return strings.Join(parts, ", ")
}

func (r childResult) requestSummary(n int) string {
	var parts []string
	for i, k := range sortedCounts(r.Requests) {
		if i == n {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", k, r.Requests[k]))
	}
	return strings.Join(parts, ", ")
}

func child(raw string) int {
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "scale child:", err)
		return 2
	}
	if err := runChild(spec); err != nil {
		fmt.Fprintln(os.Stderr, "scale child:", err)
		return 1
	}
	return 0
}

func runChild(spec childSpec) error {
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	counter := &requestCounter{counts: map[string]int64{}}
	cfg.Wrap(counter.wrap)
	if spec.Pprof != "" {
		f, err := os.Create(filepath.Join(spec.Pprof, "cpu.pprof"))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	stub := &ordinalDialer{archiving: map[string]bool{}}
	// On SIGTERM the figures are taken first, then the controller stops:
	// reconciles that the stop cuts short count neither as errors nor
	// at all.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	var res childResult
	var resErr error
	go func() {
		<-sigs
		res, resErr = collect(counter, stub)
		cancel()
	}()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			r, err := collect(counter, stub)
			if err == nil {
				err = writeJSON(spec.Result+".converged", r)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "scale child: figures on SIGUSR1:", err)
			}
		}
	}()
	err = app.Run(ctx, cfg, app.Options{
		Namespace:        controllerNS,
		CASecret:         caSecret,
		Sidecar:          inject.Config{Image: sidecarImage},
		WebhookHost:      "127.0.0.1",
		WebhookPort:      spec.WebhookPort,
		CertDir:          spec.CertDir,
		ServingNames:     []string{"127.0.0.1"},
		MutatingConfig:   inject.MutatingConfigName,
		LeaderElection:   true,
		LeaderElectionID: "amber-controller-scale",
		MetricsAddr:      "0",
		ArchiveInterval:  spec.ArchiveInterval,
		Dialer:           stub,
		Logger:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if ctx.Err() == nil {
		return fmt.Errorf("the controller stopped by itself: %v", err)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if resErr != nil {
		return resErr
	}
	if spec.Pprof != "" {
		f, err := os.Create(filepath.Join(spec.Pprof, "heap.pprof"))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			return err
		}
	}
	return writeJSON(spec.Result, res)
}

// writeJSON writes v to path whole: to a temporary file renamed into place.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// collect takes the figures of the run so far.
func collect(counter *requestCounter, stub *ordinalDialer) (childResult, error) {
	res := childResult{Requests: counter.snapshot(), Reconciles: map[string]float64{}}
	res.Probes, res.StartArchiving, res.StopArchiving = int(stub.probes.Load()), int(stub.starts.Load()), int(stub.stops.Load())
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		return res, err
	}
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ctl, result string
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "controller":
					ctl = lp.GetValue()
				case "result":
					result = lp.GetValue()
				}
			}
			v := m.GetCounter().GetValue()
			if v == 0 {
				continue
			}
			if result == "error" {
				res.ReconcileErrors += int(v)
			}
			res.Reconciles[ctl+" "+result] += v
		}
	}
	return res, nil
}

// requestCounter counts the requests through a rest.Config's transport.
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int64
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		k := requestKind(r)
		c.mu.Lock()
		c.counts[k]++
		c.mu.Unlock()
		return rt.RoundTrip(r)
	})
}

func (c *requestCounter) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// requestKind names a request by verb (LIST and WATCH apart from GET) and
// resource, with any subresource: "PATCH backuppolicies/status".
func requestKind(r *http.Request) string {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var rest []string
	switch {
	case len(segs) >= 2 && segs[0] == "api":
		rest = segs[2:]
	case len(segs) >= 3 && segs[0] == "apis":
		rest = segs[3:]
	default:
		return r.Method + " " + r.URL.Path // discovery, /version
	}
	if len(rest) >= 3 && rest[0] == "namespaces" {
		rest = rest[2:]
	}
	resource := ""
	if len(rest) > 0 {
		resource = rest[0]
	}
	if len(rest) >= 3 {
		resource += "/" + rest[2]
	}
	verb := r.Method
	switch {
	case r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1":
		verb = "WATCH"
	case r.Method == http.MethodGet && len(rest) == 1:
		verb = "LIST"
	}
	return verb + " " + resource
}

// ordinalDialer is a stub of the sidecar API: the pod of ordinal 0 of each
// StatefulSet answers Probe as a healthy primary, the others as healthy
// standbys; archiving starts and stops as asked. Backups are refused (no
// schedule is due in the test).
type ordinalDialer struct {
	mu                    sync.Mutex
	archiving             map[string]bool
	probes, starts, stops atomic.Int64
}

var _ sidecarapi.Dialer = (*ordinalDialer)(nil)

func (d *ordinalDialer) Dial(_ context.Context, pod *corev1.Pod) (sidecarapi.Sidecar, error) {
	i := strings.LastIndexByte(pod.Name, '-')
	ord, err := strconv.Atoi(pod.Name[i+1:])
	if i < 0 || err != nil {
		return nil, fmt.Errorf("pod %s has no ordinal", pod.Name)
	}
	return &ordinalSidecar{d: d, key: pod.Namespace + "/" + pod.Name, primary: ord == 0}, nil
}

type ordinalSidecar struct {
	d       *ordinalDialer
	key     string
	primary bool
}

func (s *ordinalSidecar) Probe(context.Context) (sidecarapi.ProbeResult, error) {
	s.d.probes.Add(1)
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	role := sidecarapi.RoleStandby
	if s.primary {
		role = sidecarapi.RolePrimary
	}
	return sidecarapi.ProbeResult{Healthy: true, Role: role, Archiving: s.d.archiving[s.key]}, nil
}

func (s *ordinalSidecar) Backup(context.Context, sidecarapi.BackupRequest) (sidecarapi.BackupResult, error) {
	return sidecarapi.BackupResult{}, errors.New("the scale test's sidecar stub takes no backups")
}

func (s *ordinalSidecar) StartArchiving(context.Context, sidecarapi.ArchiveRequest) error {
	s.d.starts.Add(1)
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.archiving[s.key] = true
	return nil
}

func (s *ordinalSidecar) StopArchiving(context.Context) error {
	s.d.stops.Add(1)
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.archiving[s.key] = false
	return nil
}

func (s *ordinalSidecar) Status(context.Context) (sidecarapi.Status, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return sidecarapi.Status{Archiving: s.d.archiving[s.key]}, nil
}

// The scale test takes no snapshot backups.
func (s *ordinalSidecar) Freeze(context.Context, sidecarapi.FreezeRequest) (sidecarapi.Frozen, error) {
	return sidecarapi.Frozen{}, errors.New("the scale test's sidecars do not freeze")
}

func (s *ordinalSidecar) RenewLease(context.Context, string, time.Duration) (time.Time, error) {
	return time.Time{}, errors.New("the scale test's sidecars do not freeze")
}

func (s *ordinalSidecar) Thaw(context.Context, string) (sidecarapi.Thawed, error) {
	return sidecarapi.Thawed{}, errors.New("the scale test's sidecars do not freeze")
}

func (s *ordinalSidecar) Close() error { return nil }
