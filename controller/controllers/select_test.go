package controllers

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/sidecarapi"
)

func cand(name string, role sidecarapi.Role, lag time.Duration) Candidate {
	return Candidate{Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}},
		Probe: sidecarapi.ProbeResult{Healthy: true, Role: role, Lag: lag}}
}

func unhealthy(c Candidate) Candidate { c.Probe.Healthy = false; return c }

func unreachable(name string) Candidate {
	return Candidate{Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}, Err: errors.New("connection refused")}
}

func archiving(c Candidate) Candidate { c.Probe.Archiving = true; return c }

const (
	primary = sidecarapi.RolePrimary
	standby = sidecarapi.RoleStandby
)

func TestPickBackupTarget(t *testing.T) {
	sec := time.Second
	lag := func(d time.Duration) *time.Duration { return &d }
	tests := []struct {
		name   string
		cands  []Candidate
		pref   amberv1.ReplicaPreference
		maxLag *time.Duration
		want   string // "" means none
	}{
		{"standby with least lag wins", []Candidate{cand("db-0", primary, 0), cand("db-1", standby, 5*sec), cand("db-2", standby, sec)}, amberv1.PreferStandby, nil, "db-2"},
		{"default preference is standby", []Candidate{cand("db-0", primary, 0), cand("db-1", standby, 5*sec)}, "", nil, "db-1"},
		{"standby over the bound is never chosen", []Candidate{cand("db-0", primary, 0), cand("db-1", standby, 5*sec), cand("db-2", standby, 3*sec)}, amberv1.PreferStandby, lag(4 * sec), "db-2"},
		{"all standbys over the bound: the primary", []Candidate{cand("db-0", primary, 0), cand("db-1", standby, 5*sec)}, amberv1.PreferStandby, lag(sec), "db-0"},
		{"lag equal to the bound qualifies", []Candidate{cand("db-0", primary, 0), cand("db-1", standby, sec)}, amberv1.PreferStandby, lag(sec), "db-1"},
		{"unhealthy standby skipped", []Candidate{cand("db-0", primary, 0), unhealthy(cand("db-1", standby, 0)), cand("db-2", standby, 2*sec)}, amberv1.PreferStandby, nil, "db-2"},
		{"unreachable sidecar skipped", []Candidate{unreachable("db-0"), cand("db-1", standby, 2*sec), cand("db-2", primary, 0)}, amberv1.PreferStandby, nil, "db-1"},
		{"equal lag: first name", []Candidate{cand("db-2", standby, sec), cand("db-1", standby, sec), cand("db-0", primary, 0)}, amberv1.PreferStandby, nil, "db-1"},
		{"primary preference", []Candidate{cand("db-0", standby, 0), cand("db-1", primary, 0)}, amberv1.PreferPrimary, nil, "db-1"},
		{"primary preference without a primary: none", []Candidate{cand("db-0", standby, 0), unhealthy(cand("db-1", primary, 0))}, amberv1.PreferPrimary, nil, ""},
		{"any: least lag, primary counts as none", []Candidate{cand("db-0", standby, sec), cand("db-1", primary, 0)}, amberv1.PreferAny, nil, "db-1"},
		{"any: bound still applies", []Candidate{cand("db-0", standby, 9*sec), unhealthy(cand("db-1", primary, 0))}, amberv1.PreferAny, lag(sec), ""},
		{"no healthy pod: none", []Candidate{unreachable("db-0"), unhealthy(cand("db-1", standby, 0))}, amberv1.PreferStandby, nil, ""},
		{"no pods: none", nil, amberv1.PreferStandby, nil, ""},
		{"two primaries: none", []Candidate{cand("db-0", primary, 0), cand("db-1", primary, 0), cand("db-2", standby, 0)}, amberv1.PreferStandby, nil, ""},
		{"unknown role skipped", []Candidate{cand("db-0", "witness", 0), cand("db-1", primary, 0)}, amberv1.PreferStandby, nil, "db-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := PickBackupTarget(tt.cands, tt.pref, tt.maxLag)
			switch {
			case tt.want == "" && got != nil:
				t.Fatalf("picked %s, want none", got.Pod.Name)
			case tt.want == "" && why == "":
				t.Fatal("no pick and no reason")
			case tt.want != "" && got == nil:
				t.Fatalf("picked none (%s), want %s", why, tt.want)
			case tt.want != "" && got.Pod.Name != tt.want:
				t.Fatalf("picked %s, want %s", got.Pod.Name, tt.want)
			}
		})
	}
}

func TestPickArchiver(t *testing.T) {
	tests := []struct {
		name    string
		cands   []Candidate
		current string
		want    string
	}{
		{"the primary archives", []Candidate{cand("db-0", primary, 0), cand("db-1", standby, 0)}, "", "db-0"},
		{"after failover the new primary takes over", []Candidate{archiving(cand("db-0", standby, 0)), cand("db-1", primary, 0)}, "db-0", "db-1"},
		{"no primary: the current archiver keeps it", []Candidate{archiving(cand("db-0", standby, 0)), unhealthy(cand("db-1", primary, 0))}, "db-0", "db-0"},
		{"no primary and the current one gone: none", []Candidate{unreachable("db-0"), cand("db-1", standby, 0)}, "db-0", ""},
		{"two primaries: the current one stays", []Candidate{archiving(cand("db-0", primary, 0)), cand("db-1", primary, 0)}, "db-0", "db-0"},
		{"two primaries, neither current: none", []Candidate{cand("db-0", primary, 0), cand("db-1", primary, 0)}, "", ""},
		{"unreachable primary: none", []Candidate{unreachable("db-0"), cand("db-1", standby, 0)}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := PickArchiver(tt.cands, tt.current)
			name := ""
			if got != nil {
				name = got.Pod.Name
			}
			if name != tt.want {
				t.Fatalf("archiver %q (%s), want %q", name, why, tt.want)
			}
			if got == nil && why == "" {
				t.Fatal("no archiver and no reason")
			}
		})
	}
}

func TestScheduledBackupName(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	if got, want := ScheduledBackupName("nightly", "db", at), "nightly-db-20260304-0506"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
