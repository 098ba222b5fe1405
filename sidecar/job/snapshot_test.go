package job

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/repo/repotest"
)

// A snapshot backup's data is in volume snapshots: a restore never picks
// it, and one naming it is refused with what to do instead.
func TestPickBackupSkipsSnapshots(t *testing.T) {
	ctx := context.Background()
	r := repotest.New(t)
	w, err := r.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, err := w.Commit(ctx, &repo.Manifest{Name: "shop/pg", Engine: "postgres", Mode: repo.ModeSnapshot, Start: time.Now(),
		Entries: []repo.Entry{}, ConsistentTime: time.Now(), Record: &repo.EngineRecord{SystemID: "1"},
		Snapshots: []repo.VolumeSnapshot{{Claim: "data-pg-0", Name: "b1-data"}}})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"", ModePhysical} {
		if _, err := PickBackup(ctx, r, Choice{Engine: "postgres", Mode: mode}); !errors.Is(err, repo.ErrBackupNotFound) {
			t.Errorf("mode %q: picked a snapshot backup (err %v)", mode, err)
		}
	}
	if _, err := PickBackup(ctx, r, Choice{Ref: id.String(), Engine: "postgres"}); err == nil || !strings.Contains(err.Error(), "volume snapshot backup") {
		t.Errorf("by id: %v", err)
	}
}
