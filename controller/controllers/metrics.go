package controllers

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PromDrillMetrics exports each policy's last drill:
// amber_drill_success (1 or 0), amber_drill_rto_seconds and
// amber_drill_rpo_seconds (of the last successful drill), labelled
// namespace and policy.
type PromDrillMetrics struct {
	success, rto, rpo *prometheus.GaugeVec
}

// NewDrillMetrics registers the drill metrics with reg.
func NewDrillMetrics(reg prometheus.Registerer) *PromDrillMetrics {
	l := []string{"namespace", "policy"}
	m := &PromDrillMetrics{
		success: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "amber_drill_success", Help: "1 when the policy's last restore drill succeeded, 0 when it failed."}, l),
		rto:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "amber_drill_rto_seconds", Help: "Request to ready (and probed) database in the policy's last successful restore drill."}, l),
		rpo:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "amber_drill_rpo_seconds", Help: "Drill request time minus the time of the last archived transaction, in the policy's last successful drill."}, l),
	}
	reg.MustRegister(m.success, m.rto, m.rpo)
	return m
}

// Drill implements DrillMetrics.
func (m *PromDrillMetrics) Drill(namespace, policy string, success bool, rto, rpo time.Duration) {
	if !success {
		m.success.WithLabelValues(namespace, policy).Set(0)
		return
	}
	m.success.WithLabelValues(namespace, policy).Set(1)
	m.rto.WithLabelValues(namespace, policy).Set(rto.Seconds())
	m.rpo.WithLabelValues(namespace, policy).Set(rpo.Seconds())
}
