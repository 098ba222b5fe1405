package repo

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// StreamName is the log stream of an engine's database lineage (its system
// id): where the archiver stores its log and where a restore of the
// engine's backups looks for it.
func StreamName(engine, systemID string) string {
	s := strings.ToLower(engine + "-" + systemID)
	return streamChars.ReplaceAllString(s, "_")
}

var streamChars = regexp.MustCompile(`[^a-z0-9._-]`)

// Segment meta keys that link an epoch to its parent (docs/repository-
// format.md, "Log segments"): sidecar/archive writes them, prune reads them.
const (
	MetaBranchEpoch  = "branch_epoch"  // decimal
	MetaBranchOffset = "branch_offset" // decimal
)

// logObject is a stored log segment as its name and listing describe it.
type logObject struct {
	Segment
	stored int64
}

// unneededLog lists the log segments that no kept backup can use: those of
// a stream that lie wholly before the log every kept backup of the stream
// needs (its start position), and partial objects that a complete segment
// of the same epoch covers. It keeps, whatever their age:
//   - every segment of a stream that no kept backup names (there is no
//     backup to restore it onto, but nothing tells prune it is unwanted);
//   - metadata segments (start = end, a timeline history);
//   - the segment that ends the archive (an archiver resumes from it);
//   - the segment of each parent epoch that holds the branch point a kept
//     later epoch continues from, so the archive's history stays linked
//     and reports no hole before the earliest backup.
//
// A backup needs the log from its start: epochs only grow and offsets only
// grow within an epoch (docs/plugin-protocol.md), so log of an earlier
// epoch, or earlier in the same epoch, is never replayed onto it.
func (r *Repository) unneededLog(ctx context.Context, kept []*Manifest) ([]logObject, error) {
	anchors := map[string][]LogPosition{}
	keepAll := map[string]bool{}
	for _, m := range kept {
		if m.Record == nil || m.Record.SystemID == "" || m.Engine == "" {
			continue
		}
		s := StreamName(m.Engine, m.Record.SystemID)
		p := m.Record.Start
		if p.Epoch == 0 && p.Offset == 0 {
			p = m.Record.Consistent
		}
		if p.Epoch == 0 && p.Offset == 0 {
			keepAll[s] = true
			continue
		}
		anchors[s] = append(anchors[s], p)
	}
	var out []logObject
	for _, stream := range sortedStreams(anchors) {
		if keepAll[stream] {
			continue
		}
		segs, err := r.listLogObjects(ctx, stream)
		if err != nil {
			return nil, err
		}
		drop := make([]bool, len(segs))
		for i, s := range segs {
			drop[i] = s.Start != s.End && beforeAll(s.Segment, anchors[stream])
		}
		// The archive's end stays, even when a kept backup starts past it
		// (archiving was down while it ran): an archiver resumes from it,
		// and a stream with no log would be archived from wherever the
		// server is now.
		if last := lastLog(segs); last >= 0 {
			for i, s := range segs {
				if s.Epoch == segs[last].Epoch && s.End == segs[last].End {
					drop[i] = false
				}
			}
		}
		// Keep the chain of branch points, newest epoch first: a parent's
		// segment kept here may itself hold the parent's own branch.
		epochs := map[uint32][]int{}
		var order []uint32
		for i, s := range segs {
			if _, ok := epochs[s.Epoch]; !ok {
				order = append(order, s.Epoch)
			}
			epochs[s.Epoch] = append(epochs[s.Epoch], i)
		}
		sort.Slice(order, func(a, b int) bool { return order[a] > order[b] })
		for _, ep := range order {
			var cands []Segment // the first kept log segment, then metadata
			for _, i := range epochs[ep] {
				if !drop[i] && segs[i].Start != segs[i].End {
					cands = append(cands, segs[i].Segment)
					break
				}
			}
			if len(cands) == 0 {
				continue // nothing of this epoch stays
			}
			for _, i := range epochs[ep] {
				if segs[i].Start == segs[i].End {
					cands = append(cands, segs[i].Segment)
				}
			}
			b, ok, err := r.branchOf(ctx, cands)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			for j, p := range segs {
				if p.Epoch == b.Epoch && p.Start != p.End && p.Start <= b.Offset && b.Offset <= p.End {
					drop[j] = false
				}
			}
		}
		for i, s := range segs {
			if !drop[i] && s.Partial && coveredByComplete(s.Segment, segs) {
				drop[i] = true
			}
			if drop[i] {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// lastLog is the index of the segment that ends the archive: the newest
// epoch's segment that ends last; -1 if there is only metadata.
func lastLog(segs []logObject) int {
	last := -1
	for i, s := range segs {
		if s.Start == s.End {
			continue
		}
		if last < 0 || s.Epoch > segs[last].Epoch || s.Epoch == segs[last].Epoch && s.End > segs[last].End {
			last = i
		}
	}
	return last
}

// beforeAll reports whether s ends at or before every anchor.
func beforeAll(s Segment, anchors []LogPosition) bool {
	for _, a := range anchors {
		if !(s.Epoch < a.Epoch || s.Epoch == a.Epoch && s.End <= a.Offset) {
			return false
		}
	}
	return true
}

// coveredByComplete reports whether a complete segment of p's epoch holds
// p's whole range: p is a superseded partial object (or piece) that an
// archiver did not remove (it was restarted or died first).
func coveredByComplete(p Segment, segs []logObject) bool {
	for _, c := range segs {
		if !c.Partial && c.Epoch == p.Epoch && c.Start < c.End && c.Start <= p.Start && p.End <= c.End {
			return true
		}
	}
	return false
}

// branchOf reads where an epoch continues its parent, from the first of
// cands (segments of that epoch) that records it.
func (r *Repository) branchOf(ctx context.Context, cands []Segment) (LogPosition, bool, error) {
	for _, s := range cands {
		full, _, err := r.GetSegment(ctx, s.ObjectName())
		if err != nil {
			return LogPosition{}, false, fmt.Errorf("read %s for its branch point: %w", s.ObjectName(), err)
		}
		if full.Meta[MetaBranchEpoch] == "" {
			continue
		}
		ep, err1 := strconv.ParseUint(full.Meta[MetaBranchEpoch], 10, 32)
		off, err2 := strconv.ParseUint(full.Meta[MetaBranchOffset], 10, 64)
		if err1 != nil || err2 != nil {
			return LogPosition{}, false, fmt.Errorf("%s records a malformed branch point (%q, %q)", s.ObjectName(), full.Meta[MetaBranchEpoch], full.Meta[MetaBranchOffset])
		}
		return LogPosition{Epoch: uint32(ep), Offset: off}, true, nil
	}
	return LogPosition{}, false, nil
}

// listLogObjects lists a stream's segments with their stored sizes, in
// Segments' order.
func (r *Repository) listLogObjects(ctx context.Context, stream string) ([]logObject, error) {
	return r.listSegmentObjects(ctx, stream, logDir+stream+"/", func(Segment) bool { return true })
}

func sortedStreams(m map[string][]LogPosition) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
