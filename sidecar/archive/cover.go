package archive

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage"
)

// Range is a stretch of log held without a hole, inside one epoch.
type Range struct {
	Epoch     uint32    `json:"epoch"`
	Start     uint64    `json:"start"`
	End       uint64    `json:"end"`
	StartText string    `json:"start_position,omitempty"` // the engine's words for Start
	EndText   string    `json:"end_position,omitempty"`
	LastTime  time.Time `json:"last_time,omitzero"` // newest commit time known in the range
	// Branch is where this range's epoch continues its parent epoch, when
	// the range is the first of its epoch and the plugin recorded it.
	Branch *api.Position `json:"-"`
}

// Gap is a hole in archived log: nothing is stored between From and To.
type Gap struct {
	Epoch    uint32 `json:"epoch"`
	From     uint64 `json:"from"`
	To       uint64 `json:"to"`
	FromText string `json:"from_position,omitempty"`
	ToText   string `json:"to_position,omitempty"`
	Reason   string `json:"reason"`
}

func (g Gap) String() string {
	return fmt.Sprintf("log missing from %s to %s (%s)", orHex(g.FromText, g.Epoch, g.From), orHex(g.ToText, g.Epoch, g.To), g.Reason)
}

func orHex(text string, epoch uint32, off uint64) string {
	if text != "" {
		return text
	}
	return fmt.Sprintf("%d/%#x", epoch, off)
}

// Coverage summarises a stream's archived log: the contiguous ranges per
// epoch, oldest first, and the segments that hold them.
type Coverage struct {
	Ranges   []Range        `json:"ranges"`
	Segments []repo.Segment `json:"-"`
}

// Cover lists a stream's segments and merges them into ranges. It reads
// segment names, plus the first and last segment of each range and each
// epoch's metadata segments (for positions in the engine's words, commit
// times and branch points).
//
// An archiver may replace a partial segment between the listing and the
// read; Cover then lists again (a few times) rather than fail.
func Cover(ctx context.Context, r *repo.Repository, stream string) (*Coverage, error) {
	for attempt := 1; ; attempt++ {
		c, err := cover(ctx, r, stream)
		if err == nil || !errors.Is(err, storage.ErrNotFound) || attempt == 5 {
			return c, err
		}
	}
}

func cover(ctx context.Context, r *repo.Repository, stream string) (*Coverage, error) {
	segs, err := r.Segments(ctx, stream)
	if err != nil {
		return nil, err
	}
	c := &Coverage{Segments: segs, Ranges: []Range{}}
	var first, last []repo.Segment // first and last segment of each range
	meta := map[uint32][]repo.Segment{}
	for _, s := range segs { // ordered by epoch, start
		if s.Start == s.End {
			meta[s.Epoch] = append(meta[s.Epoch], s) // metadata (a timeline history)
			continue
		}
		n := len(c.Ranges)
		if n > 0 && c.Ranges[n-1].Epoch == s.Epoch && s.Start <= c.Ranges[n-1].End {
			if s.End > c.Ranges[n-1].End {
				c.Ranges[n-1].End = s.End
				last[n-1] = s
			}
			continue
		}
		c.Ranges = append(c.Ranges, Range{Epoch: s.Epoch, Start: s.Start, End: s.End})
		first, last = append(first, s), append(last, s)
	}
	load := func(s repo.Segment) (repo.Segment, error) {
		full, _, err := r.GetSegment(ctx, s.ObjectName())
		if err != nil {
			return repo.Segment{}, fmt.Errorf("read %s: %w", s.ObjectName(), err)
		}
		return full, nil
	}
	branches := map[uint32]api.Position{}
	for ep, ms := range meta {
		for _, m := range ms {
			full, err := load(m)
			if err != nil {
				return nil, err
			}
			if b, ok := Branch(full); ok {
				branches[ep] = b
			}
		}
	}
	for i := range c.Ranges {
		rg := &c.Ranges[i]
		f, err := load(first[i])
		if err != nil {
			return nil, err
		}
		l := f
		if last[i].ObjectName() != first[i].ObjectName() {
			if l, err = load(last[i]); err != nil {
				return nil, err
			}
		}
		rg.StartText, rg.EndText, rg.LastTime = f.Meta[MetaStart], l.Meta[MetaEnd], l.LastTime
		if i == 0 || c.Ranges[i-1].Epoch != rg.Epoch { // the first range of its epoch
			b, ok := Branch(f)
			if !ok {
				b, ok = branches[rg.Epoch]
			}
			if ok {
				rg.Branch = &b
			}
		}
	}
	return c, nil
}

// Reach is how far archived log runs without a hole from a starting point,
// following epochs the way recovery does: to the newest epoch.
type Reach struct {
	Epoch    uint32    `json:"epoch"`
	End      uint64    `json:"end"`
	EndText  string    `json:"end_position,omitempty"`
	LastTime time.Time `json:"last_time,omitzero"`
	// Gap is the first hole after the start on the way to the newest log;
	// nil when the log is whole up to its end.
	Gap *Gap `json:"gap,omitempty"`
}

// link is one step of the history recovery follows: a range, possibly cut
// where a later epoch branches off it, and the gap before it, if any.
type link struct {
	r      Range
	end    uint64 // r.End, or the branch point a later epoch takes over at
	endTxt string
	gap    *Gap // hole between the previous link and this one
}

// history walks back from the newest epoch's last range through branch
// points to where the archive's history begins, and returns it oldest first.
func (c *Coverage) history() []link {
	if len(c.Ranges) == 0 {
		return nil
	}
	var out []link
	i := len(c.Ranges) - 1
	cur := link{r: c.Ranges[i], end: c.Ranges[i].End, endTxt: c.Ranges[i].EndText}
	for {
		rg := cur.r
		var prev *link
		switch {
		case i > 0 && c.Ranges[i-1].Epoch == rg.Epoch: // a hole inside the epoch
			p := c.Ranges[i-1]
			cur.gap = &Gap{Epoch: rg.Epoch, From: p.End, To: rg.Start, FromText: p.EndText, ToText: rg.StartText,
				Reason: "segments missing"}
			prev, i = &link{r: p, end: p.End, endTxt: p.EndText}, i-1
		case rg.Branch != nil: // the epoch continues its parent at the branch
			b := *rg.Branch
			j := c.find(b.Epoch, b.Offset)
			if j >= 0 {
				p := c.Ranges[j]
				prev, i = &link{r: p, end: b.Offset, endTxt: b.Text}, j
				break
			}
			// The parent does not reach the branch point: find the last
			// range of the parent before it.
			for j = len(c.Ranges) - 1; j >= 0; j-- {
				if c.Ranges[j].Epoch == b.Epoch && c.Ranges[j].End < b.Offset {
					break
				}
			}
			cur.gap = &Gap{Epoch: b.Epoch, To: b.Offset, ToText: b.Text,
				Reason: fmt.Sprintf("epoch %d branches off epoch %d at a point not archived", rg.Epoch, b.Epoch)}
			if j >= 0 {
				p := c.Ranges[j]
				cur.gap.From, cur.gap.FromText = p.End, p.EndText
				prev, i = &link{r: p, end: p.End, endTxt: p.EndText}, j
			}
		default:
			if i > 0 { // earlier epochs exist, but this one does not say how it follows them
				cur.gap = &Gap{Epoch: rg.Epoch, To: rg.Start, ToText: rg.StartText,
					Reason: fmt.Sprintf("epoch %d records no branch point on an earlier epoch", rg.Epoch)}
			}
		}
		out = append(out, cur)
		if prev == nil {
			break
		}
		cur = *prev
	}
	for l, r := 0, len(out)-1; l < r; l, r = l+1, r-1 {
		out[l], out[r] = out[r], out[l]
	}
	return out
}

// find returns the index of the range of epoch holding off, or -1.
func (c *Coverage) find(epoch uint32, off uint64) int {
	for j, rg := range c.Ranges {
		if rg.Epoch == epoch && rg.Start <= off && off <= rg.End {
			return j
		}
	}
	return -1
}

// ReachFrom says how far log runs from p without a hole, on the history
// that leads to the newest epoch. ok is false when no archived log on that
// history holds p.
func (c *Coverage) ReachFrom(p api.Position) (Reach, bool) {
	h := c.history()
	at := -1
	for k, l := range h {
		if l.r.Epoch == p.Epoch && l.r.Start <= p.Offset && p.Offset <= l.end {
			at = k
			break
		}
	}
	if at < 0 {
		return Reach{}, false
	}
	k := at
	for k+1 < len(h) && h[k+1].gap == nil {
		k++
	}
	l := h[k]
	re := Reach{Epoch: l.r.Epoch, End: l.end, EndText: l.endTxt, LastTime: l.r.LastTime}
	if k+1 < len(h) {
		re.Gap = h[k+1].gap
	}
	return re, true
}

// Gaps lists the holes on the history that leads to the newest epoch,
// oldest first, including the start of a history that does not say how it
// follows earlier epochs.
func (c *Coverage) Gaps() []Gap {
	out := []Gap{}
	for _, l := range c.history() {
		if l.gap != nil {
			out = append(out, *l.gap)
		}
	}
	return out
}

// End is the newest archived log on the history: epoch, offset, the
// engine's words for it and the newest commit time. ok is false when the
// stream holds no log.
func (c *Coverage) End() (Reach, bool) {
	h := c.history()
	if len(h) == 0 {
		return Reach{}, false
	}
	l := h[len(h)-1]
	return Reach{Epoch: l.r.Epoch, End: l.end, EndText: l.endTxt, LastTime: l.r.LastTime}, true
}
