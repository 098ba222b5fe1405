package job

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/repo"
)

// repoSegments gives a plugin's Replay the archived segments of one stream
// of a repository: by name, or the first segment holding log after a
// position, following epochs forward.
type repoSegments struct {
	r      *repo.Repository
	stream string
	list   []repo.Segment // as repo.Segments orders them
}

var _ api.SegmentSource = (*repoSegments)(nil)

func newRepoSegments(ctx context.Context, r *repo.Repository, stream string) (*repoSegments, error) {
	list, err := r.Segments(ctx, stream)
	if err != nil {
		return nil, err
	}
	return &repoSegments{r: r, stream: stream, list: list}, nil
}

// Fetch answers q with a whole segment. After: the segment of After's
// epoch (any epoch when it is 0) with the smallest start that ends after
// After's offset, complete before partial; past the end of that epoch, the
// first segment of the next epoch that has one.
func (s *repoSegments) Fetch(ctx context.Context, q api.SegmentQuery) (api.Segment, io.ReadCloser, error) {
	if q.Stream != "" && q.Stream != s.stream {
		return api.Segment{}, nil, fmt.Errorf("stream %s: %w", q.Stream, api.ErrNoSegment)
	}
	if q.Name != "" {
		for _, seg := range s.list {
			got, data, err := s.r.GetSegment(ctx, seg.ObjectName())
			if err != nil {
				return api.Segment{}, nil, err
			}
			if got.Name == q.Name {
				return s.answer(got, data)
			}
		}
		return api.Segment{}, nil, fmt.Errorf("segment %s: %w", q.Name, api.ErrNoSegment)
	}
	var pick *repo.Segment
	for i := range s.list {
		seg := &s.list[i]
		if q.After.Epoch != 0 && seg.Epoch < q.After.Epoch {
			continue
		}
		if (q.After.Epoch == 0 || seg.Epoch == q.After.Epoch) && seg.End <= q.After.Offset {
			continue
		}
		if pick == nil || seg.Epoch < pick.Epoch || (seg.Epoch == pick.Epoch && seg.Start < pick.Start) {
			pick = seg
		}
	}
	if pick == nil {
		return api.Segment{}, nil, fmt.Errorf("log after %s: %w", q.After, api.ErrNoSegment)
	}
	got, data, err := s.r.GetSegment(ctx, pick.ObjectName())
	if err != nil {
		return api.Segment{}, nil, err
	}
	return s.answer(got, data)
}

func (s *repoSegments) answer(seg repo.Segment, data []byte) (api.Segment, io.ReadCloser, error) {
	end, err := archive.EndPosition(seg)
	if err != nil {
		return api.Segment{}, nil, fmt.Errorf("segment %s: %w", seg.ObjectName(), err)
	}
	out := api.Segment{
		SegmentHeader: api.SegmentHeader{Name: seg.Name, Start: archive.StartPosition(seg)},
		SegmentTrailer: api.SegmentTrailer{End: end, Partial: seg.Partial, FirstCommit: seg.FirstTime,
			LastCommit: seg.LastTime, Size: int64(len(data)), FileSize: archive.FileSize(seg)},
	}
	if b, ok := archive.Branch(seg); ok {
		out.Branch = b
	}
	return out, io.NopCloser(bytes.NewReader(data)), nil
}
