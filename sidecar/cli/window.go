package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/repo"
)

// window is the recoverable window of one database lineage: from its
// earliest physical backup to the newest archived log.
type window struct {
	Stream           string        `json:"stream"`
	Engine           string        `json:"engine"`
	EarliestTime     time.Time     `json:"earliest_time"`
	EarliestPosition string        `json:"earliest_position"`
	LatestTime       time.Time     `json:"latest_time,omitzero"`
	LatestPosition   string        `json:"latest_position,omitempty"`
	Gaps             []archive.Gap `json:"gaps"`
	Note             string        `json:"note,omitempty"`
}

func formatPos(epoch uint32, off uint64) string {
	return fmt.Sprintf("%d/%X/%X", epoch, off>>32, uint32(off))
}

func recoverableWindows(ctx context.Context, r *repo.Repository, all []*repo.Manifest) ([]window, error) {
	earliest := map[string]*repo.Manifest{}
	engines := map[string]string{}
	var order []string
	for _, m := range all {
		if m.Mode != "physical" || m.Meta[metaSystemID] == "" {
			continue
		}
		s := streamName(m.Engine, m.Meta[metaSystemID])
		if e, ok := earliest[s]; !ok || m.ConsistentTime.Before(e.ConsistentTime) {
			if !ok {
				order = append(order, s)
			}
			earliest[s] = m
			engines[s] = m.Engine
		}
	}
	out := []window{}
	for _, s := range order {
		m := earliest[s]
		w := window{Stream: s, Engine: engines[s], EarliestTime: m.ConsistentTime, EarliestPosition: m.Position, Gaps: []archive.Gap{}}
		cov, err := archive.Cover(ctx, r, s)
		if err != nil {
			return nil, err
		}
		if len(cov.Ranges) == 0 {
			w.Note = "no archived log: restorable only to the backups themselves"
			w.LatestTime, w.LatestPosition = m.ConsistentTime, m.Position
		} else {
			last := cov.Ranges[len(cov.Ranges)-1]
			w.LatestTime, w.LatestPosition = last.LastTime, formatPos(last.Epoch, last.End)
			w.Gaps = cov.Gaps
		}
		out = append(out, w)
	}
	return out, nil
}

func printWindows(out io.Writer, ws []window) {
	for _, w := range ws {
		fmt.Fprintf(out, "\nrecoverable window of %s (%s):\n  from %s (%s)\n  to   %s (%s)\n", w.Stream, w.Engine,
			w.EarliestTime.Local().Format(time.DateTime+".000"), w.EarliestPosition,
			w.LatestTime.Local().Format(time.DateTime+".000"), w.LatestPosition)
		for _, g := range w.Gaps {
			fmt.Fprintf(out, "  GAP: log missing from %s to %s; points in between cannot be recovered\n",
				formatPos(g.Epoch, g.From), formatPos(g.Epoch, g.To))
		}
		if w.Note != "" {
			fmt.Fprintf(out, "  %s\n", w.Note)
		}
	}
}
