package job

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/repo"
)

// TestWindowCountsSnapshotBackups: a volume snapshot backup is a base of
// the recoverable window like a physical one: earlier than every physical
// backup, it moves the window's start back to its consistent point. It
// holds no log of its own, even when its record does not say so, so the
// archive must hold log from its start (the freeze).
func TestWindowCountsSnapshotBackups(t *testing.T) {
	ctx := context.Background()
	r, sink := newLogRepo(t)
	p := func(off uint64) api.Position { return api.Position{Epoch: 1, Offset: off, Token: []byte{1}} }
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, start := range []uint64{0x2000000, 0x3000000} {
		archiveSegment(t, sink, p(start), p(start+0x1000000), t0.Add(time.Duration(i+1)*time.Minute))
	}
	backup := func(mode string, at time.Duration, start, consistent uint64) *repo.Manifest {
		return &repo.Manifest{Mode: mode, Engine: "postgres", ConsistentTime: t0.Add(at), Position: p(consistent).String(),
			Record: &repo.EngineRecord{SystemID: "1", Start: posRecord(p(start)), Consistent: posRecord(p(consistent))}}
	}
	physical := backup(ModePhysical, 50*time.Second, 0x3100000, 0x3200000)

	ws, err := Windows(ctx, r, []*repo.Manifest{physical})
	if err != nil || len(ws) != 1 || !ws[0].EarliestTime.Equal(t0.Add(50*time.Second)) {
		t.Fatalf("physical backup alone: %+v %v", ws, err)
	}
	snap := backup(repo.ModeSnapshot, 10*time.Second, 0x2100000, 0x2200000)
	ws, err = Windows(ctx, r, []*repo.Manifest{snap, physical})
	if err != nil || len(ws) != 1 {
		t.Fatalf("with a snapshot backup: %+v %v", ws, err)
	}
	w := ws[0]
	if !w.EarliestTime.Equal(t0.Add(10*time.Second)) || w.EarliestPosition != snap.Position || !w.LatestTime.Equal(t0.Add(2*time.Minute)) || w.Note != "" {
		t.Fatalf("window %+v; want it from the snapshot backup (%s at %s) to the end of the log (%s)", w, snap.Position, t0.Add(10*time.Second), t0.Add(2*time.Minute))
	}

	// A snapshot backup frozen before the archive starts cannot be
	// restored: the window says so (its record has no log-from-start
	// metadata; a snapshot never holds log of its own).
	early := backup(repo.ModeSnapshot, 5*time.Second, 0x1800000, 0x2100000)
	ws, err = Windows(ctx, r, []*repo.Manifest{early, physical})
	if err != nil || len(ws) != 1 || !strings.Contains(ws[0].Note, "does not start at or before the earliest backup's start") {
		t.Fatalf("snapshot backup frozen before the archive: %+v %v", ws, err)
	}
}
