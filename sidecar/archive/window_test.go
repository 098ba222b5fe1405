package archive

import (
	"context"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/file"
)

func TestCoverGaps(t *testing.T) {
	ctx := context.Background()
	be, err := file.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(ctx, be, []byte("pw"), repo.Options{KDF: repo.KDFParams{Time: 1, Memory: 1024, Threads: 1}, CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	put := func(epoch uint32, start, end uint64, partial bool, last time.Time) {
		t.Helper()
		s := repo.Segment{Stream: "pg", Epoch: epoch, Start: start, End: end, Partial: partial, LastTime: last}
		if err := r.PutSegment(ctx, s, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
	}
	put(1, 0x1000000, 0x2000000, false, t0)
	put(1, 0x2000000, 0x2800000, true, t0.Add(time.Second)) // partial, superseded below
	put(1, 0x2000000, 0x3000000, false, t0.Add(2*time.Second))
	put(1, 0x3000000, 0x3400000, true, t0.Add(3*time.Second))  // the old timeline ends mid-segment
	put(2, 0x3000000, 0x4000000, false, t0.Add(4*time.Second)) // the new one restarts at the boundary: no gap
	put(2, 0x5000000, 0x6000000, false, t0.Add(5*time.Second)) // segment 4 missing: a gap
	put(3, 0x7000000, 0x8000000, false, t0.Add(6*time.Second)) // timeline 3 starts past where 2 ends: a gap
	put(2, 0, 0, false, time.Time{})                           // a history file: no log range
	cov, err := Cover(ctx, r, "pg")
	if err != nil {
		t.Fatal(err)
	}
	want := []Gap{{Epoch: 2, From: 0x4000000, To: 0x5000000}, {Epoch: 3, From: 0x6000000, To: 0x7000000}}
	if len(cov.Gaps) != len(want) || cov.Gaps[0] != want[0] || cov.Gaps[1] != want[1] {
		t.Fatalf("gaps %+v, want %+v", cov.Gaps, want)
	}
	last := cov.Ranges[len(cov.Ranges)-1]
	if last.Epoch != 3 || last.End != 0x8000000 || !last.LastTime.Equal(t0.Add(6*time.Second)) {
		t.Fatalf("last range %+v", last)
	}
	if n := len(cov.Ranges); n != 4 {
		t.Fatalf("%d ranges, want 4 (timeline 1, timeline 2 twice, timeline 3): %+v", n, cov.Ranges)
	}
}
