package controllers

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestDrillMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewDrillMetrics(reg)
	m.Drill("shop", "pg", true, 42*time.Second, 3*time.Second)
	m.Drill("shop", "orders", false, 0, 0)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			key := f.GetName()
			for _, l := range mt.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = mt.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"amber_drill_success,namespace=shop,policy=pg":     1,
		"amber_drill_success,namespace=shop,policy=orders": 0,
		"amber_drill_rto_seconds,namespace=shop,policy=pg": 42,
		"amber_drill_rpo_seconds,namespace=shop,policy=pg": 3,
	}
	if len(got) != len(want) {
		t.Fatalf("metrics %v, want %v", got, want)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Fatalf("metrics %v, want %v", got, want)
		}
	}
}
