package workload

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/repo"
)

// modePhysical is the mode of the backups the sidecar takes of a data
// directory (sidecar/job's ModePhysical; job itself is not imported here).
const modePhysical = "physical"

// BaseTarget is a Restore's recovery target: a time or a position.
type BaseTarget struct {
	Time time.Time
	// Position in the engine's notation; only PostgreSQL's is read here
	// (ParsePostgresPosition), the one engine whose snapshot backups a
	// Restore restores.
	Position string
}

// Base is a backup a physical restore to a target may start from.
type Base struct {
	Backup *repo.Manifest
	// Problem says why archived log does not carry the backup to the
	// target; "" when it does.
	Problem string
}

// Bases opens repository spec (credentials from namespace ns) and lists
// the physical and snapshot backups of StatefulSet sourceNS/sts of engine
// that are consistent at or before target, newest first, each with
// whether the archived log reaches the target from it: the candidates for
// the base of a Restore that gives a point in time but no backup.
func (c *Capturer) Bases(ctx context.Context, ns string, spec amberv1.RepositorySpec, sourceNS, sts, engine string, target BaseTarget) ([]Base, error) {
	cr, err := ReadCredentials(ctx, c.Client, ns, spec.CredentialsSecret)
	if err != nil {
		return nil, err
	}
	r, err := Open(ctx, spec.URL, cr, c.Clock, c.Logger)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	all, err := r.Backups(ctx)
	if err != nil {
		return nil, err
	}
	covs := map[string]*archive.Coverage{}
	return ChooseBases(all, sourceNS+"/"+sts, engine, target, func(stream string) (*archive.Coverage, error) {
		if cov, ok := covs[stream]; ok {
			return cov, nil
		}
		cov, err := archive.Cover(ctx, r, stream)
		covs[stream] = cov
		return cov, err
	})
}

// ChooseBases is Bases on a listing: all the repository's backups, cover
// the archived log of a stream.
func ChooseBases(all []*repo.Manifest, name, engine string, target BaseTarget, cover func(stream string) (*archive.Coverage, error)) ([]Base, error) {
	var to api.Position
	if target.Time.IsZero() {
		var ok bool
		if to, ok = ParsePostgresPosition(target.Position); !ok || engine != string(amberv1.EnginePostgres) {
			return nil, nil // amber restore parses it, and says what is wrong
		}
	}
	var cands []*repo.Manifest
	for _, m := range all {
		if m.Name != name || m.Engine != engine || (m.Mode != modePhysical && m.Mode != repo.ModeSnapshot) || m.Record == nil || m.Record.SystemID == "" {
			continue
		}
		if !target.Time.IsZero() && m.ConsistentTime.After(target.Time) {
			continue
		}
		if target.Time.IsZero() && !atOrBefore(recordPos(m.Record.Consistent), to) {
			continue
		}
		cands = append(cands, m)
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if !a.ConsistentTime.Equal(b.ConsistentTime) {
			return a.ConsistentTime.After(b.ConsistentTime)
		}
		return a.End.After(b.End)
	})
	out := make([]Base, 0, len(cands))
	for _, m := range cands {
		cov, err := cover(repo.StreamName(m.Engine, m.Record.SystemID))
		if err != nil {
			return nil, fmt.Errorf("archived log of backup %s: %w", m.ID.Short(), err)
		}
		out = append(out, Base{Backup: m, Problem: reachProblem(cov, m, target.Time, to)})
	}
	return out, nil
}

// reachProblem says why archived log does not take backup m to the target
// (a time, else position to); "" when it does. It follows sidecar/job's
// checkReach: recovery needs log from the backup's start when the backup
// holds none of its own (a snapshot backup never does), else from its
// consistent point, without a hole up to the target.
func reachProblem(cov *archive.Coverage, m *repo.Manifest, at time.Time, to api.Position) string {
	start, consistent := recordPos(m.Record.Start), recordPos(m.Record.Consistent)
	from, fromStart := consistent, false
	if (m.Mode == repo.ModeSnapshot || m.Record.Metadata[api.MetaLogFromStart] == "true") && !start.IsZero() {
		from, fromStart = start, true
	}
	reach, ok := cov.ReachFrom(from)
	if !ok {
		if fromStart {
			return fmt.Sprintf("archived log does not hold its start %s (it holds no log of its own)", from)
		}
		return fmt.Sprintf("archived log does not continue from its consistent point %s", from)
	}
	end := api.Position{Epoch: reach.Epoch, Offset: reach.End}
	if fromStart && !atOrBefore(consistent, end) {
		return fmt.Sprintf("archived log from its start stops at %s, before its consistent point %s", reach.EndText, consistent)
	}
	if !at.IsZero() {
		if reach.LastTime.Before(at) {
			return fmt.Sprintf("archived log from it ends at %s (%s), before the target", reach.LastTime.UTC().Format(time.RFC3339Nano), reach.EndText)
		}
		return ""
	}
	// A target without a timeline compares by offset alone.
	if (to.Epoch == 0 && to.Offset > end.Offset) || (to.Epoch != 0 && to.Compare(end) > 0) {
		return fmt.Sprintf("archived log from it ends at %s, before the target position", reach.EndText)
	}
	return ""
}

func recordPos(p repo.LogPosition) api.Position {
	return api.Position{Epoch: p.Epoch, Offset: p.Offset, Token: p.Token, Text: p.Text}
}

// atOrBefore compares a position with a target; a target without an epoch
// compares by offset alone (as sidecar/job does).
func atOrBefore(p, target api.Position) bool {
	if target.Epoch == 0 {
		return p.Offset <= target.Offset
	}
	return p.Compare(target) <= 0
}

// ParsePostgresPosition reads the forms the PostgreSQL plugin accepts for
// a Restore's spec.position: an LSN ("0/3000060", any timeline) or a
// timeline and an LSN ("2/0/3000060"). ok is false for anything else.
func ParsePostgresPosition(text string) (api.Position, bool) {
	parts := strings.Split(strings.TrimSpace(text), "/")
	var tl uint64
	switch len(parts) {
	case 2:
	case 3:
		var err error
		if tl, err = strconv.ParseUint(parts[0], 10, 32); err != nil || tl == 0 {
			return api.Position{}, false
		}
		parts = parts[1:]
	default:
		return api.Position{}, false
	}
	hi, err1 := strconv.ParseUint(parts[0], 16, 32)
	lo, err2 := strconv.ParseUint(parts[1], 16, 32)
	if err1 != nil || err2 != nil {
		return api.Position{}, false
	}
	return api.Position{Epoch: uint32(tl), Offset: hi<<32 | lo, Text: text}, true
}
