package controllers

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/controller/sidecarapi"
)

// Candidate is one pod of a StatefulSet and what its sidecar answered.
type Candidate struct {
	Pod   *corev1.Pod
	Probe sidecarapi.ProbeResult
	// Err is why the sidecar could not be probed (then Probe is zero).
	Err error
	// Status is the sidecar's status, read on the same connection when
	// probeAll was asked for it and the sidecar archives; nil otherwise.
	Status *sidecarapi.Status
}

func (c Candidate) name() string { return c.Pod.Name }

// usable reports whether c answered and is healthy.
func (c Candidate) usable() bool { return c.Err == nil && c.Probe.Healthy }

// PickBackupTarget chooses the pod a backup is taken from, or returns nil
// and why none qualifies.
//
//   - standby: the healthy standby with the least lag within maxLag; if
//     none qualifies, the healthy primary.
//   - primary: the healthy primary only.
//   - any: the healthy pod with the least lag within maxLag (a primary
//     has none).
//
// A standby over maxLag is never chosen. Ties go to the pod whose name
// sorts first, so the choice is stable.
func PickBackupTarget(cands []Candidate, pref amberv1.ReplicaPreference, maxLag *time.Duration) (*Candidate, string) {
	if pref == "" {
		pref = amberv1.PreferStandby
	}
	var primaries, standbys []*Candidate
	var why []string
	for i := range cands {
		c := &cands[i]
		switch {
		case c.Err != nil:
			why = append(why, fmt.Sprintf("%s: sidecar unreachable (%v)", c.name(), c.Err))
		case !c.Probe.Healthy:
			why = append(why, c.name()+": unhealthy")
		case c.Probe.Role == sidecarapi.RolePrimary:
			primaries = append(primaries, c)
		case c.Probe.Role == sidecarapi.RoleStandby:
			if maxLag != nil && c.Probe.Lag > *maxLag {
				why = append(why, fmt.Sprintf("%s: standby lag %s over the bound %s", c.name(), c.Probe.Lag, *maxLag))
				continue
			}
			standbys = append(standbys, c)
		default:
			why = append(why, fmt.Sprintf("%s: unknown role %q", c.name(), c.Probe.Role))
		}
	}
	byLag := func(s []*Candidate) {
		sort.SliceStable(s, func(i, j int) bool {
			if s[i].Probe.Lag != s[j].Probe.Lag {
				return s[i].Probe.Lag < s[j].Probe.Lag
			}
			return s[i].name() < s[j].name()
		})
	}
	byLag(primaries)
	byLag(standbys)
	if len(primaries) > 1 {
		names := make([]string, len(primaries))
		for i, p := range primaries {
			names[i] = p.name()
		}
		// Two primaries is a split brain; backing up either may save the
		// wrong history.
		return nil, fmt.Sprintf("more than one primary (%s); resolve the split before backing up", strings.Join(names, ", "))
	}
	var pick *Candidate
	switch pref {
	case amberv1.PreferStandby:
		if len(standbys) > 0 {
			pick = standbys[0]
		} else if len(primaries) > 0 {
			pick = primaries[0]
		}
	case amberv1.PreferPrimary:
		if len(primaries) > 0 {
			pick = primaries[0]
		} else {
			why = append(why, "no healthy primary (the policy's replica preference is primary)")
		}
	case amberv1.PreferAny:
		all := append(append([]*Candidate{}, primaries...), standbys...)
		byLag(all)
		if len(all) > 0 {
			pick = all[0]
		}
	default:
		return nil, fmt.Sprintf("unknown replica preference %q", pref)
	}
	if pick != nil {
		return pick, ""
	}
	if len(cands) == 0 {
		return nil, "no pod of the StatefulSet runs with an amber sidecar yet (a pod counts once it was injected and has an IP)"
	}
	return nil, "no replica qualifies: " + strings.Join(why, "; ")
}

// PickArchiver chooses the pod that archives for a StatefulSet: the
// healthy primary (it produces the log, and after a failover the new
// primary takes over). With no healthy primary, a healthy pod that is
// archiving already (current) keeps the role, so a probe hiccup never
// stops archiving; otherwise nil and why.
func PickArchiver(cands []Candidate, current string) (*Candidate, string) {
	var primaries []*Candidate
	var keep *Candidate
	for i := range cands {
		c := &cands[i]
		if !c.usable() {
			continue
		}
		if c.Probe.Role == sidecarapi.RolePrimary {
			primaries = append(primaries, c)
		}
		if c.name() == current {
			keep = c
		}
	}
	switch {
	case len(primaries) == 1:
		return primaries[0], ""
	case len(primaries) > 1:
		if keep != nil && keep.Probe.Role == sidecarapi.RolePrimary {
			return keep, ""
		}
		return nil, "more than one primary; not moving the archiver until one remains"
	case keep != nil:
		return keep, ""
	}
	return nil, "no healthy primary to archive from"
}
