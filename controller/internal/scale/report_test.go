package scale

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// The section of docs/benchmarks.md this test writes (replacing an earlier
// one between the markers, or appended).
const (
	reportBegin = "<!-- controller scale (controller/internal/scale): begin -->"
	reportEnd   = "<!-- controller scale (controller/internal/scale): end -->"
)

// env describes the machine and the servers of one run.
type runEnv struct {
	APIServer, Etcd, Kwok string
	LoadStart, LoadEnd    string
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "?"
}

// binaryVersion runs bin --version and returns its first line.
func binaryVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "?"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func writeReport(path string, runs []run) error {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	l0, e0 := runs[0].l, runs[0].e
	var pers []string
	for _, r := range runs {
		pers = append(pers, strconv.Itoa(r.l.perNS))
	}
	w("%s\n", reportBegin)
	w("# amber-controller at scale: %d StatefulSets under kwok\n\n", l0.n)
	w("Generated on %s by what `make bench` runs (docs/bench.sh):\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	w("`AMBER_SCALE_STATEFULSETS=%d AMBER_SCALE_PER_NAMESPACE=%s AMBER_SCALE_REPORT=docs/benchmarks.md go test\n", l0.n, strings.Join(pers, ","))
	w("./controller/internal/scale -run TestControllerScale -count=1 -v`. `make test` runs the same test at 30\n")
	w("StatefulSets and asserts the same goals.\n\n")
	w("## Set-up\n")
	w("- A real etcd (%s) and kube-apiserver (%s), started by envtest with Amber's CRDs; kwok\n", e0.Etcd, e0.APIServer)
	w("  (%s) plays the kubelet of one fake node: the pods bound to it are Running with a pod IP, and no container runs.\n", e0.Kwok)
	w("- %d StatefulSets × %d replicas (%d pods). Each StatefulSet has its own BackupPolicy (`archive: true`,\n", l0.n, replicas, l0.n*replicas)
	w("  `schedule: \"@every 24h\"`, so no backup falls due) and each namespace a credentials Secret. Every pod carries\n")
	w("  `amber.dev/inject=true` and `amber.dev/policy`, and was injected by the controller's own webhook when created. No\n")
	w("  kube-controller-manager runs: the test creates each StatefulSet's pods itself, named, labelled and owned as the\n")
	w("  StatefulSet controller would. Each layout below is a fresh control plane.\n")
	w("- Then the controller starts in a process of its own (the test binary run again): `app.Run` as amber-controller's\n")
	w("  main runs it, with leader election, the client settings of `ctrl.GetConfig` (no client-side rate limit), and a\n")
	w("  stub of the sidecar API in place of the sidecars' mTLS API: ordinal 0 answers Probe as a healthy primary, the\n")
	w("  others as healthy standbys, and StartArchiving succeeds at once.\n")
	w("- Timed from starting the process until every policy is Ready for its generation and every StatefulSet has\n")
	w("  exactly one archiver, its primary, in its policy's status (the test polls the API every 200 ms). Peak RSS is\n")
	w("  the process's VmHWM (/proc/<pid>/status) then. API requests are counted in the process by a wrapper of the\n")
	w("  rest.Config's transport (every client: cache, writes, events, leader election, discovery), reconciles by\n")
	w("  controller-runtime's `controller_runtime_reconcile_total`, both up to convergence (the process writes them\n")
	w("  on a signal), so follow-up reconciles still queued then count in the steady state, and so do the Events\n")
	w("  the recorder had not posted yet (it posts them in the background).\n")
	w("- The steady state: the process runs %s more, with its archivers re-checked every %s (Options.ArchiveInterval;\n", secs(steadyWindow), secs(archiveInterval))
	w("  30 s by default), so every policy is reconciled about twice by its timer; then it stops.\n")
	w("- Machine: %d cores (%s), GOMAXPROCS %d.\n\n", runtime.NumCPU(), cpuModel(), runtime.GOMAXPROCS(0))
	w("## Results\n")
	w("| measure | goal |")
	for _, r := range runs {
		w(" %s |", r.l.describe())
	}
	w("\n|---|---|")
	for range runs {
		w("---|")
	}
	w("\n")
	row := func(name, goal string, f func(r run) string) {
		w("| %s | %s |", name, goal)
		for _, r := range runs {
			w(" %s |", f(r))
		}
		w("\n")
	}
	row("start → every policy Ready", "", func(r run) string { return secs(r.res.Ready) })
	row("start → every StatefulSet has its archiver", "< "+secs(goalConverge), func(r run) string {
		return secs(r.res.Converged) + ", " + verdict(r.res.Converged < goalConverge)
	})
	row("peak RSS (VmHWM) at convergence; after the steady state", fmt.Sprintf("< %d MiB", goalRSSMiB), func(r run) string {
		peak := max(r.res.PeakRSSMiB, r.res.PeakRSSEndMiB)
		return fmt.Sprintf("%.1f MiB; %.1f MiB, %s", r.res.PeakRSSMiB, r.res.PeakRSSEndMiB, verdict(peak < goalRSSMiB))
	})
	row("CPU time (user + system), start to convergence", "", func(r run) string { return fmt.Sprintf("%.2f s", r.res.CPUSeconds) })
	row("reconciles", "", func(r run) string {
		return fmt.Sprintf("%d (%s)", r.res.Child.TotalReconciles(), r.res.Child.reconcileSummary())
	})
	row("API requests", "", func(r run) string { return strconv.FormatInt(r.res.Child.TotalRequests(), 10) })
	row("API requests per reconcile", "", func(r run) string { return fmt.Sprintf("%.2f", r.res.RequestsPerReconcile()) })
	row("sidecar API calls (Probe, StartArchiving, StopArchiving)", "one StartArchiving per StatefulSet", func(r run) string {
		return fmt.Sprintf("%d, %d, %d, %s", r.res.Child.Probes, r.res.Child.StartArchiving, r.res.Child.StopArchiving,
			verdict(r.res.Child.StartArchiving == r.l.n && r.res.Child.StopArchiving == 0))
	})
	row(fmt.Sprintf("steady state, %s after convergence: reconciles", secs(steadyWindow)), "", func(r run) string {
		return fmt.Sprintf("%d (%s)", r.res.Steady.TotalReconciles(), r.res.Steady.reconcileSummary())
	})
	row("steady state: API requests, per reconcile", "", func(r run) string {
		return fmt.Sprintf("%d, %.2f (%s)", r.res.Steady.TotalRequests(), r.res.Steady.requestsPerReconcile(), r.res.Steady.requestSummary(4))
	})
	row("steady state: sidecar API calls (Probe, StartArchiving, StopArchiving)", "no archiver moves", func(r run) string {
		ok := r.res.Steady.StartArchiving == 0 && r.res.Steady.StopArchiving == 0 && r.res.Steady.ReconcileErrors == 0
		return fmt.Sprintf("%d, %d, %d, %s", r.res.Steady.Probes, r.res.Steady.StartArchiving, r.res.Steady.StopArchiving, verdict(ok))
	})
	row("load average (1, 5, 15 min) before set-up / at the end", "", func(r run) string { return r.e.LoadStart + " / " + r.e.LoadEnd })
	w("\nAPI requests by kind until convergence (LIST and WATCH are GETs of a collection), per reconcile in brackets:\n\n| request |")
	kinds := map[string]int64{}
	for _, r := range runs {
		w(" %s |", r.l.describe())
		for k, v := range r.res.Child.Requests {
			kinds[k] += v
		}
	}
	w("\n|---|")
	for range runs {
		w("---|")
	}
	w("\n")
	for _, k := range sortedCounts(kinds) {
		w("| %s |", k)
		for _, r := range runs {
			v := r.res.Child.Requests[k]
			w(" %d (%.2f) |", v, float64(v)/float64(max(r.res.Child.TotalReconciles(), 1)))
		}
		w("\n")
	}
	w("\n## What it does not measure\n")
	w("- The sidecars' own latency. The stub answers at once; real probes and StartArchiving are gRPC calls over mutual\n")
	w("  TLS. A reconcile probes the pods of each StatefulSet in parallel (each probe bounded by 5 s), but the\n")
	w("  BackupPolicy controller runs one reconcile at a time, so slow or unreachable sidecars add up across policies.\n")
	w("- kube-controller-manager and kube-scheduler (not running), and a kubelet's updates of pod status (kwok makes\n")
	w("  each pod Running once and then leaves it alone).\n")
	w("- The API server's own cost: it, etcd and kwok ran on the same %d cores as the controller.\n", runtime.NumCPU())
	w("%s\n", reportEnd)

	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(old)
	if i := strings.Index(doc, reportBegin); i >= 0 {
		if j := strings.Index(doc[i:], reportEnd); j >= 0 {
			doc = doc[:i] + b.String() + strings.TrimPrefix(doc[i+j+len(reportEnd):], "\n")
			return os.WriteFile(path, []byte(doc), 0o644)
		}
	}
	if doc != "" && !strings.HasSuffix(doc, "\n\n") {
		doc = strings.TrimRight(doc, "\n") + "\n\n"
	}
	return os.WriteFile(path, []byte(doc+b.String()), 0o644)
}
