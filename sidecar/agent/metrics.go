package agent

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Error kinds counted by amber_errors_total.
var errorKinds = []string{"backup", "archive", "freeze", "thaw", "probe", "window"}

// metrics are the agent's Prometheus metrics, in a registry of their own.
type metrics struct {
	a       *Agent
	reg     *prometheus.Registry
	errors  *prometheus.CounterVec
	backups *prometheus.CounterVec
}

var (
	descLastSuccess = prometheus.NewDesc("amber_last_backup_success_timestamp_seconds",
		"When the last successful backup finished (Unix time).", nil, nil)
	descDuration = prometheus.NewDesc("amber_backup_duration_seconds",
		"How long the last successful backup took.", nil, nil)
	descBytes = prometheus.NewDesc("amber_backup_bytes",
		"Bytes of the last successful backup: read from the database (kind=in) and added to the repository after deduplication and compression (kind=added).",
		[]string{"kind"}, nil)
	descFiles = prometheus.NewDesc("amber_backup_files",
		"Files of the last successful file-level physical backup (the agent reads the data directory): read from it (kind=read), and unchanged since the previous backup, stored again without being read (kind=reused). Absent for other backups.",
		[]string{"kind"}, nil)
	descBackupRunning = prometheus.NewDesc("amber_backup_running",
		"1 while a backup runs.", nil, nil)
	descArchiving = prometheus.NewDesc("amber_archive_running",
		"1 while this agent holds the archiver role.", nil, nil)
	descArchiveLag = prometheus.NewDesc("amber_archive_lag_seconds",
		"While archiving: from the newest archived commit to its segment being durable, as measured when the last segment was stored.", nil, nil)
	descArchivePending = prometheus.NewDesc("amber_archive_pending_seconds",
		"While archiving: how long the oldest log the engine plugin handed over (it flushes at least every flush interval) has waited to be durable in the repository; 0 when all of it is durable (an idle database included).", nil, nil)
	descArchiveSegments = prometheus.NewDesc("amber_archive_segments_total",
		"Log segments (whole and partial) this agent made durable.", nil, nil)
	descArchiveBytes = prometheus.NewDesc("amber_archive_bytes_total",
		"Bytes of log this agent made durable.", nil, nil)
	descWindowStart = prometheus.NewDesc("amber_recoverable_window_start_timestamp_seconds",
		"Earliest point this database can be restored to (Unix time).", nil, nil)
	descWindowEnd = prometheus.NewDesc("amber_recoverable_window_end_timestamp_seconds",
		"Latest point this database can be restored to (Unix time).", nil, nil)
	descWindowGaps = prometheus.NewDesc("amber_recoverable_window_gaps",
		"Holes in the archived log inside the recoverable window.", nil, nil)
	descLeases = prometheus.NewDesc("amber_freeze_leases",
		"Freeze leases held (the database is frozen while > 0).", nil, nil)
)

func newMetrics(a *Agent) *metrics {
	m := &metrics{a: a, reg: prometheus.NewRegistry(),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amber_errors_total",
			Help: "Failures by kind: backup, archive, freeze, thaw, probe, window."}, []string{"kind"}),
		backups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amber_backups_total",
			Help: "Backups finished since the agent started, by result (success, failure)."}, []string{"result"}),
	}
	for _, k := range errorKinds {
		m.errors.WithLabelValues(k)
	}
	m.backups.WithLabelValues("success")
	m.backups.WithLabelValues("failure")
	m.reg.MustRegister(m.errors, m.backups, m, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Describe implements prometheus.Collector for the metrics read from state.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLastSuccess, descDuration, descBytes, descBackupRunning, descArchiving,
		descArchiveLag, descArchivePending, descArchiveSegments, descArchiveBytes, descWindowStart, descWindowEnd, descWindowGaps, descLeases} {
		ch <- d
	}
}

// Collect reads the agent's state at scrape time. Metrics without a value
// yet (no backup, no window) are left out rather than reported as 0.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	a := m.a
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	now := a.clk.Now()
	a.mu.Lock()
	last, running := a.lastBackup, a.backup != nil
	leases := 0
	for _, l := range a.leases {
		if l.ExpiresAt.AsTime().After(now) {
			leases++
		}
	}
	a.mu.Unlock()
	if last != nil {
		gauge(descLastSuccess, float64(last.FinishedAt.AsTime().UnixNano())/1e9)
		gauge(descDuration, last.Duration.AsDuration().Seconds())
		gauge(descBytes, float64(last.BytesIn), "in")
		gauge(descBytes, float64(last.BytesAdded), "added")
		if last.FilesRead > 0 || last.FilesReused > 0 {
			gauge(descFiles, float64(last.FilesRead), "read")
			gauge(descFiles, float64(last.FilesReused), "reused")
		}
	}
	gauge(descBackupRunning, b2f(running))
	gauge(descArchiving, b2f(a.arch.isRunning()))
	if lag, ok := a.arch.lag(); ok {
		gauge(descArchiveLag, lag.Seconds())
	}
	if p, ok := a.arch.pending(now); ok {
		gauge(descArchivePending, p.Seconds())
	}
	segs, bytes := a.arch.totals()
	ch <- prometheus.MustNewConstMetric(descArchiveSegments, prometheus.CounterValue, float64(segs))
	ch <- prometheus.MustNewConstMetric(descArchiveBytes, prometheus.CounterValue, float64(bytes))
	if w := a.win.current(); w != nil {
		gauge(descWindowStart, float64(w.EarliestTime.UnixNano())/1e9)
		if !w.LatestTime.IsZero() {
			gauge(descWindowEnd, float64(w.LatestTime.UnixNano())/1e9)
		}
		gauge(descWindowGaps, float64(len(w.Gaps)))
	}
	gauge(descLeases, float64(leases))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// handler serves /metrics, /healthz (the process answers) and /readyz
// (the plugin answers Probe).
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		a := m.a
		if a.closing.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), a.cfg.ProbeTimeout)
		defer cancel()
		p, err := a.probe(ctx)
		if err != nil {
			m.errors.WithLabelValues("probe").Inc()
			http.Error(w, fmt.Sprintf("%s plugin does not answer Probe: %v", a.cfg.EngineName, err), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok: %s %s healthy=%t\n", p.Role, p.ServerVersion, p.Healthy)
	})
	return mux
}
