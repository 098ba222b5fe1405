package archive

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/repo/repotest"
)

// TestSinkPieces: partial pieces (each the bytes since the previous flush)
// all stay until the complete segment arrives, which supersedes every one
// of them (a shorter resend from the segment's start included); a partial
// with the same start that reaches further replaces the shorter one.
func TestSinkPieces(t *testing.T) {
	ctx := context.Background()
	r := repotest.New(t)
	s := NewSink(r, "pg", slog.New(slog.DiscardHandler), nil)
	send := func(start, end uint64, partial bool) {
		t.Helper()
		w, err := s.Begin(ctx, api.SegmentHeader{Name: "seg", Start: pos(1, start)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(bytes.Repeat([]byte{byte(start)}, int(end-start))); err != nil {
			t.Fatal(err)
		}
		if err := w.Finish(api.SegmentTrailer{End: pos(1, end), Partial: partial}); err != nil {
			t.Fatal(err)
		}
	}
	names := func() []string {
		t.Helper()
		segs, err := r.Segments(ctx, "pg")
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, g := range segs {
			n = append(n, g.ObjectName())
		}
		return n
	}
	send(0x1000, 0x1100, true)
	send(0x1100, 0x1180, true)
	send(0x1180, 0x1200, true)
	if got := names(); len(got) != 3 {
		t.Fatalf("after three pieces: %v", got)
	}
	send(0x1000, 0x1190, true) // a restarted plugin sends the segment so far again
	if got := names(); len(got) != 3 {
		t.Fatalf("the longer partial from the start should replace the first piece only: %v", got)
	}
	send(0x1000, 0x1050, true) // a shorter one from the start: kept beside the longer one
	if got := names(); len(got) != 4 {
		t.Fatalf("a shorter partial from the start should be stored beside the longer one: %v", got)
	}
	send(0x1000, 0x2000, false)
	if got := names(); len(got) != 1 || got[0] != "log/pg/00000001/0000000000001000-0000000000002000" {
		t.Fatalf("the complete segment should supersede every piece: %v", got)
	}
}

// TestSinkPending: PendingSince marks the oldest log handed over and not yet
// durable: set when a segment begins, kept while its store has not
// returned, cleared once everything begun is durable or given up, and
// never set on an idle database (so an alert on it does not fire there).
func TestSinkPending(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	s := NewSink(repotest.New(t), "pg", slog.New(slog.DiscardHandler), clk)
	pending := func() time.Time {
		s.Stats.Lock()
		defer s.Stats.Unlock()
		return s.Stats.PendingSince
	}
	if !pending().IsZero() {
		t.Fatal("pending before anything was handed over")
	}
	t0 := clk.Now()
	a, _ := s.Begin(ctx, api.SegmentHeader{Name: "a", Start: pos(1, 0)})
	clk.Advance(time.Second)
	b, _ := s.Begin(ctx, api.SegmentHeader{Name: "b", Start: pos(1, 100)})
	if got := pending(); !got.Equal(t0) {
		t.Fatalf("PendingSince %v, want the first Begin %v", got, t0)
	}
	a.Write(make([]byte, 100))
	if err := a.Finish(api.SegmentTrailer{End: pos(1, 100)}); err != nil {
		t.Fatal(err)
	}
	if pending().IsZero() {
		t.Fatal("pending cleared while segment b is not durable")
	}
	if err := b.Abort("test"); err != nil {
		t.Fatal(err)
	}
	if !pending().IsZero() {
		t.Fatal("pending kept after everything begun was durable or given up")
	}
	c, _ := s.Begin(ctx, api.SegmentHeader{Name: "c", Start: pos(1, 100)})
	_ = c
	s.ForgetOpen() // the plugin died with c open
	if !pending().IsZero() {
		t.Fatal("pending kept for a dead plugin's segment")
	}
}

// TestSinkCarriesLastCommit: a segment without a commit of its own records
// the newest commit before it (the one the repository held when archiving
// started, or an earlier segment's), so Cover's window ends at the last
// commit and never at zero; the archive lag follows only segments with
// commits.
func TestSinkCarriesLastCommit(t *testing.T) {
	ctx := context.Background()
	r := repotest.New(t)
	s := NewSink(r, "pg", slog.New(slog.DiscardHandler), nil)
	held := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	s.CommittedUntil(held)
	send := func(start, end uint64, commit time.Time) {
		t.Helper()
		w, err := s.Begin(ctx, api.SegmentHeader{Name: "seg", Start: pos(1, start)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(make([]byte, end-start)); err != nil {
			t.Fatal(err)
		}
		if err := w.Finish(api.SegmentTrailer{End: pos(1, end), Partial: true, LastCommit: commit}); err != nil {
			t.Fatal(err)
		}
	}
	end := func() time.Time {
		t.Helper()
		c, err := Cover(ctx, r, "pg")
		if err != nil {
			t.Fatal(err)
		}
		e, ok := c.End()
		if !ok {
			t.Fatal("no archived log")
		}
		return e.LastTime
	}
	send(0x1000, 0x1100, time.Time{})
	if got := end(); !got.Equal(held) {
		t.Fatalf("a first piece without commits: window ends at %s; want the repository's last commit %s", got, held)
	}
	if s.Stats.LastLag != 0 {
		t.Errorf("lag %s from a piece without commits", s.Stats.LastLag)
	}
	commit := held.Add(time.Minute)
	send(0x1100, 0x1200, commit)
	send(0x1200, 0x1300, time.Time{}) // a checkpoint a minute later, say
	if got := end(); !got.Equal(commit) {
		t.Fatalf("after a commit and a piece without one: window ends at %s; want %s", got, commit)
	}
}
