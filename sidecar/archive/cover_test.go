package archive

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/repo/repotest"
)

func pos(epoch uint32, off uint64) api.Position {
	return api.Position{Epoch: epoch, Offset: off, Token: []byte{byte(epoch), byte(off >> 24)}, Text: api.Position{Epoch: epoch, Offset: off}.String()}
}

// put stores one segment described the way a plugin describes it.
func put(t *testing.T, r *repo.Repository, epoch uint32, start, end uint64, partial bool, last time.Time, branch api.Position) {
	t.Helper()
	s, err := Describe("pg", api.SegmentHeader{Name: "x", Start: pos(epoch, start), Branch: branch},
		api.SegmentTrailer{End: pos(epoch, end), Partial: partial, LastCommit: last})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PutSegment(context.Background(), s, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
}

// TestCoverFollowsBranches: holes inside an epoch, a branch point the parent
// reaches, one it does not, and an epoch that names no branch.
func TestCoverFollowsBranches(t *testing.T) {
	ctx := context.Background()
	r := repotest.New(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	none := api.Position{}
	put(t, r, 1, 0x1000000, 0x2000000, false, t0, none)
	put(t, r, 1, 0x2000000, 0x2800000, true, t0.Add(time.Second), none) // superseded below
	put(t, r, 1, 0x2000000, 0x3000000, false, t0.Add(2*time.Second), none)
	put(t, r, 1, 0x3000000, 0x3400000, true, t0.Add(3*time.Second), none) // timeline 1 ends mid-segment
	// Timeline 2 branches off at 1/0x3200000, inside what timeline 1 holds.
	put(t, r, 2, 0, 0, false, time.Time{}, pos(1, 0x3200000)) // its history: metadata only
	put(t, r, 2, 0x3000000, 0x4000000, false, t0.Add(4*time.Second), pos(1, 0x3200000))

	cov, err := Cover(ctx, r, "pg")
	if err != nil {
		t.Fatal(err)
	}
	if g := cov.Gaps(); len(g) != 0 {
		t.Fatalf("gaps %+v across a branch the parent reaches", g)
	}
	reach, ok := cov.ReachFrom(pos(1, 0x1800000))
	if !ok || reach.Epoch != 2 || reach.End != 0x4000000 || reach.Gap != nil || !reach.LastTime.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("reach from 1/0x1800000 = %+v, %v; want the end of timeline 2", reach, ok)
	}

	// A hole inside timeline 2: segment 4 missing.
	put(t, r, 2, 0x5000000, 0x6000000, false, t0.Add(5*time.Second), pos(1, 0x3200000))
	cov, _ = Cover(ctx, r, "pg")
	g := cov.Gaps()
	if len(g) != 1 || g[0].Epoch != 2 || g[0].From != 0x4000000 || g[0].To != 0x5000000 {
		t.Fatalf("gaps %+v, want the hole 2/0x4000000..0x5000000", g)
	}
	reach, _ = cov.ReachFrom(pos(1, 0x1800000))
	if reach.End != 0x4000000 || reach.Gap == nil || !strings.Contains(reach.Gap.String(), "missing") {
		t.Fatalf("reach %+v should stop at the hole and name it", reach)
	}

	// Timeline 3 branches off timeline 2 past anything archived there.
	put(t, r, 3, 0x7000000, 0x8000000, false, t0.Add(6*time.Second), pos(2, 0x7100000))
	cov, _ = Cover(ctx, r, "pg")
	g = cov.Gaps()
	if len(g) != 2 || g[1].Epoch != 2 || g[1].From != 0x6000000 || g[1].To != 0x7100000 {
		t.Fatalf("gaps %+v, want timeline 2 not reaching the branch at 0x7100000", g)
	}
	end, _ := cov.End()
	if end.Epoch != 3 || end.End != 0x8000000 {
		t.Fatalf("end %+v", end)
	}

	// Timeline 4 records no branch: its history begins on its own.
	put(t, r, 4, 0x9000000, 0xA000000, false, t0.Add(7*time.Second), none)
	cov, _ = Cover(ctx, r, "pg")
	g = cov.Gaps()
	if len(g) != 1 || !strings.Contains(g[0].Reason, "no branch") {
		t.Fatalf("gaps %+v, want one: timeline 4 names no branch point", g)
	}
	if _, ok := cov.ReachFrom(pos(1, 0x1800000)); ok {
		t.Fatal("a point on timeline 1 is not on the history of timeline 4")
	}
}
