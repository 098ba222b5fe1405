package job

import (
	"context"
	"maps"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/repo"
)

// Window is the recoverable window of one database lineage: from its
// earliest base backup (physical, or a volume snapshot backup, restored
// from its snapshots) to the newest archived log reachable from it.
type Window struct {
	Stream           string        `json:"stream"`
	Engine           string        `json:"engine"`
	EarliestTime     time.Time     `json:"earliest_time"`
	EarliestPosition string        `json:"earliest_position"`
	LatestTime       time.Time     `json:"latest_time,omitzero"`
	LatestPosition   string        `json:"latest_position,omitempty"`
	Gaps             []archive.Gap `json:"gaps"`
	Note             string        `json:"note,omitempty"`
}

// Windows computes the recoverable window of every lineage that has a
// physical backup, in the order their backups are listed.
func Windows(ctx context.Context, r *repo.Repository, all []*repo.Manifest) ([]Window, error) {
	earliest := map[string]*repo.Manifest{}
	var order []string
	for _, m := range all {
		if !isBase(m) {
			continue
		}
		s := StreamName(m.Engine, m.Record.SystemID)
		if e, ok := earliest[s]; !ok || m.ConsistentTime.Before(e.ConsistentTime) {
			if !ok {
				order = append(order, s)
			}
			earliest[s] = m
		}
	}
	out := []Window{}
	for _, s := range order {
		m := earliest[s]
		w := Window{Stream: s, Engine: m.Engine, EarliestTime: m.ConsistentTime, EarliestPosition: m.Position, Gaps: []archive.Gap{}}
		cov, err := archive.Cover(ctx, r, s)
		if err != nil {
			return nil, err
		}
		w.LatestTime, w.LatestPosition = m.ConsistentTime, m.Position
		switch end, ok := cov.End(); {
		case !ok:
			w.Note = "no archived log: restorable only to the backups themselves"
		default:
			w.Gaps = cov.Gaps()
			consistent := posFromRecord(m.Record.Consistent)
			from, fromStart := logFrom(posFromRecord(m.Record.Start), consistent, baseMeta(m))
			reach, ok := cov.ReachFrom(from)
			if fromStart && (!ok || reachShort(reach, consistent) != "") {
				w.Note = "archived log does not start at or before the earliest backup's start, and that backup holds no log of its own (it cannot be restored); later backups may be covered"
				w.LatestTime, w.LatestPosition = end.LastTime, end.EndText
				break
			}
			if !ok {
				w.Note = "archived log does not continue from the earliest backup; later backups may be covered"
				w.LatestTime, w.LatestPosition = end.LastTime, end.EndText
				break
			}
			w.LatestTime, w.LatestPosition = reach.LastTime, reach.EndText
			if reach.Gap != nil {
				w.Note = "points past the first gap are reachable only from backups taken after it"
			} else if w.LatestTime.Before(w.EarliestTime) {
				// Times in the window are commit times: a time target
				// needs a commit at or after it to stop at.
				w.Note = "no commit archived since the earliest backup's consistent time: restore to the latest or to a position; a time target needs a later commit"
			}
		}
		out = append(out, w)
	}
	return out, nil
}

// isBase reports whether m is a backup a physical restore starts from: a
// physical backup, or a volume snapshot backup (its data in the volume
// snapshots it names, the record in the repository), with its engine
// record.
func isBase(m *repo.Manifest) bool {
	return (m.Mode == ModePhysical || m.Mode == repo.ModeSnapshot) && m.Record != nil && m.Record.SystemID != ""
}

// baseMeta is m's record metadata as a restore reads it: a volume
// snapshot holds no log amber vouches for, so archived log must run from
// the freeze on (api.MetaLogFromStart), as RestoreEngine has it.
func baseMeta(m *repo.Manifest) map[string]string {
	if m.Mode != repo.ModeSnapshot {
		return m.Record.Metadata
	}
	meta := maps.Clone(m.Record.Metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[api.MetaLogFromStart] = "true"
	return meta
}
