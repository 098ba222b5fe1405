package job

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/repo/repotest"
)

// TestReachFromBackupStart: a backup that holds no log of its own
// (api.MetaLogFromStart) needs archived log from its start through its
// consistent point; a backup with its own log needs it from its consistent
// point only. Restores and `amber ls`'s window say so.
func TestReachFromBackupStart(t *testing.T) {
	ctx := context.Background()
	r, sink := newLogRepo(t)
	p := func(off uint64) api.Position { return api.Position{Epoch: 1, Offset: off, Token: []byte{1}} }
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, start := range []uint64{0x2000000, 0x3000000} {
		archiveSegment(t, sink, p(start), p(start+0x1000000), t0.Add(time.Duration(i)*time.Minute))
	}
	cov, err := archive.Cover(ctx, r, "postgres-1")
	if err != nil {
		t.Fatal(err)
	}
	own := map[string]string{}
	none := map[string]string{api.MetaLogFromStart: "true"}
	for _, c := range []struct {
		name              string
		start, consistent uint64
		meta              map[string]string
		want              string // "" for success, else part of the error
	}{
		{"own log, started before the archive", 0x1800000, 0x2100000, own, ""},
		{"no own log, started inside the archive", 0x2100000, 0x2200000, none, ""},
		{"no own log, started before the archive", 0x1800000, 0x2100000, none, "does not start at or before its start"},
		{"no own log, consistent past the archive", 0x3800000, 0x4100000, none, "before its consistent point"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := api.BackupResult{Start: p(c.start), Consistent: p(c.consistent), Metadata: c.meta}
			_, _, err := checkReach(cov, res, api.RecoveryTarget{})
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("checkReach: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("checkReach: %v; want an error saying %q", err, c.want)
			}
			m := &repo.Manifest{Mode: ModePhysical, Engine: "postgres", ConsistentTime: t0,
				Record: &repo.EngineRecord{SystemID: "1", Start: posRecord(res.Start), Consistent: posRecord(res.Consistent), Metadata: c.meta}}
			ws, err := Windows(ctx, r, []*repo.Manifest{m})
			if err != nil {
				t.Fatal(err)
			}
			bad := strings.Contains(ws[0].Note, "does not start at or before the earliest backup's start")
			if bad != (c.want != "") {
				t.Fatalf("window note %q; want it to say the archive misses the backup's start: %t", ws[0].Note, c.want != "")
			}
		})
	}
}

// TestReachPositionTarget: a position target past the end of the archived
// log is refused before anything is written, with or without an epoch (a
// bare LSN has epoch 0, which sorts before every epoch and once let any
// such target through); one inside the window is accepted.
func TestReachPositionTarget(t *testing.T) {
	r, sink := newLogRepo(t)
	p := func(epoch uint32, off uint64) api.Position {
		return api.Position{Epoch: epoch, Offset: off, Token: []byte{1}}
	}
	archiveSegment(t, sink, p(2, 0x2000000), p(2, 0x3000000), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cov, err := archive.Cover(context.Background(), r, "postgres-1")
	if err != nil {
		t.Fatal(err)
	}
	res := api.BackupResult{Start: p(2, 0x2000000), Consistent: p(2, 0x2100000)}
	for _, c := range []struct {
		to   api.Position
		past bool
	}{
		{api.Position{Offset: 0x2800000}, false},
		{api.Position{Offset: 0x3000000}, false},
		{api.Position{Offset: 0x3000001}, true},
		{api.Position{Offset: 0x9000000}, true},
		{p(2, 0x2800000), false},
		{p(2, 0x3800000), true},
		{p(3, 0x2100000), true},
	} {
		_, _, err := checkReach(cov, res, api.RecoveryTarget{Position: c.to})
		if got := err != nil && strings.Contains(err.Error(), "after the recoverable window"); got != c.past || (err != nil && !got) {
			t.Errorf("target %d/%x: error %v; want refused as past the window: %t", c.to.Epoch, c.to.Offset, err, c.past)
		}
	}
}

// TestLogStart: Replay is given a backup's start as LogStart only when it
// is before the backup's consistent point.
func TestLogStart(t *testing.T) {
	pos := func(epoch uint32, off uint64) api.Position {
		return api.Position{Epoch: epoch, Offset: off, Token: []byte{byte(off)}}
	}
	for _, c := range []struct {
		name              string
		start, consistent api.Position
		want              api.Position
	}{
		{"before, same epoch", pos(1, 10), pos(1, 20), pos(1, 10)},
		{"before, an earlier epoch", pos(1, 30), pos(2, 20), pos(1, 30)},
		{"at the consistent point", pos(1, 20), pos(1, 20), api.Position{}},
		{"no start", api.Position{}, pos(1, 20), api.Position{}},
		{"no consistent point", pos(1, 10), api.Position{}, api.Position{}},
	} {
		got := logStart(api.BackupResult{Start: c.start, Consistent: c.consistent})
		if got.Compare(c.want) != 0 || got.IsZero() != c.want.IsZero() {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// newLogRepo opens a new repository in a temporary directory (a fast key
// derivation) and a sink for archived log of stream postgres-1.
func newLogRepo(t *testing.T) (*repo.Repository, *archive.Sink) {
	t.Helper()
	r := repotest.New(t)
	return r, archive.NewSink(r, "postgres-1", slog.New(slog.DiscardHandler), nil)
}

// archiveSegment stores one segment of log from start to end whose last
// commit is at last.
func archiveSegment(t *testing.T, sink *archive.Sink, start, end api.Position, last time.Time) {
	t.Helper()
	w, err := sink.Begin(context.Background(), api.SegmentHeader{Name: "wal", Start: start})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 16))
	if err := w.Finish(api.SegmentTrailer{End: end, LastCommit: last}); err != nil {
		t.Fatal(err)
	}
}
