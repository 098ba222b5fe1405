package archive

import (
	"context"
	"fmt"
	"time"

	"github.com/amber-backup/amber/sidecar/repo"
)

// Range is a stretch of log held without a hole, on one epoch (timeline).
type Range struct {
	Epoch    uint32    `json:"epoch"`
	Start    uint64    `json:"start"`
	End      uint64    `json:"end"`
	LastTime time.Time `json:"last_time,omitzero"` // newest commit time known in the range
}

// Gap is a hole in archived log.
type Gap struct {
	Epoch uint32 `json:"epoch"`
	From  uint64 `json:"from"`
	To    uint64 `json:"to"`
}

// Coverage summarises a stream's archived log: the contiguous ranges per
// epoch, the holes between them, and the segments that hold them.
type Coverage struct {
	Ranges   []Range        `json:"ranges"`
	Gaps     []Gap          `json:"gaps"`
	Segments []repo.Segment `json:"-"`
}

// Cover lists a stream's segments and merges them into ranges. It reads
// segment names only, except for the last segment of each range, whose
// header gives the newest commit time.
func Cover(ctx context.Context, r *repo.Repository, stream string) (*Coverage, error) {
	segs, err := r.Segments(ctx, stream)
	if err != nil {
		return nil, err
	}
	c := &Coverage{Segments: segs}
	var last []repo.Segment  // last segment of each range
	for _, s := range segs { // ordered by epoch, start
		if s.Start == s.End {
			continue // metadata (timeline history)
		}
		n := len(c.Ranges)
		if n > 0 && c.Ranges[n-1].Epoch == s.Epoch && s.Start <= c.Ranges[n-1].End {
			if s.End > c.Ranges[n-1].End {
				c.Ranges[n-1].End = s.End
				last[n-1] = s
			}
			continue
		}
		// A hole inside one epoch, or a new epoch (timeline) starting past
		// where the previous one ends: log positions continue across a
		// switch, so the new epoch's first segment starts at or before it.
		if n > 0 && s.Start > c.Ranges[n-1].End {
			c.Gaps = append(c.Gaps, Gap{Epoch: s.Epoch, From: c.Ranges[n-1].End, To: s.Start})
		}
		c.Ranges = append(c.Ranges, Range{Epoch: s.Epoch, Start: s.Start, End: s.End})
		last = append(last, s)
	}
	for i, s := range last {
		hdr, _, err := r.GetSegment(ctx, s.ObjectName())
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", s.ObjectName(), err)
		}
		c.Ranges[i].LastTime = hdr.LastTime
	}
	return c, nil
}
