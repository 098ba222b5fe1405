package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/repo/repotest"
	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/file"
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
	if err := s.Wait(); err != nil { // the whole segment is stored in the background
		t.Fatal(err)
	}
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
		if err := hand(ctx, s, "seg", start, make([]byte, end-start), api.SegmentTrailer{End: pos(1, end), Partial: true, LastCommit: commit}); err != nil {
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

// gated holds back the store of complete log segments until open is closed.
type gated struct {
	storage.Backend
	open chan struct{}
}

// hand gives s one segment of epoch 1 as a plugin does: its header, its
// bytes, then tr.
func hand(ctx context.Context, s *Sink, name string, start uint64, data []byte, tr api.SegmentTrailer) error {
	w, err := s.Begin(ctx, api.SegmentHeader{Name: name, Start: pos(1, start)})
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	return w.Finish(tr)
}

// newGated makes a repository on a file backend whose complete log
// segments wait for g.open.
func newGated(t *testing.T) (gated, *repo.Repository) {
	t.Helper()
	be, err := file.Open(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	g := gated{Backend: be, open: make(chan struct{})}
	return g, repotest.NewOn(t, g)
}

func (g gated) Create(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	if strings.HasPrefix(name, "log/") && !strings.HasSuffix(name, ".partial") {
		<-g.open
	}
	c, _ := storage.AsCreator(g.Backend)
	return c.Create(ctx, name, r, size)
}

// TestSinkTailPiece: a complete segment whose log is durable in pieces up
// to a point is reported durable once only the rest is stored, as one more
// piece, while its whole store is still held back; the pieces then hold
// exactly the segment's bytes. Once the whole is stored (Wait), it alone
// remains. A complete segment without pieces is stored whole at once.
func TestSinkTailPiece(t *testing.T) {
	ctx := context.Background()
	g, r := newGated(t)
	s := NewSink(r, "pg", slog.New(slog.DiscardHandler), nil)
	whole := make([]byte, 0x1000)
	for i := range whole {
		whole[i] = byte(i * 7)
	}
	send := func(start, end uint64, partial bool) {
		t.Helper()
		if err := hand(ctx, s, "seg", start, whole[start-0x1000:end-0x1000], api.SegmentTrailer{End: pos(1, end), Partial: partial, FileSize: 0x1000}); err != nil {
			t.Fatal(err)
		}
	}
	list := func() []repo.Segment {
		t.Helper()
		segs, err := r.Segments(ctx, "pg")
		if err != nil {
			t.Fatal(err)
		}
		return segs
	}
	send(0x1000, 0x1400, true)
	send(0x1400, 0x1a00, true)
	send(0x1000, 0x2000, false) // returns although the whole store is held back
	select {
	case p := <-s.Durable():
		if p.Offset != 0x2000 {
			t.Fatalf("durable %s; want the segment's end", p)
		}
	default:
		t.Fatal("the segment's end was not reported durable")
	}
	segs := list()
	if len(segs) != 3 {
		t.Fatalf("before the whole is stored: %v; want the two pieces and the rest", segs)
	}
	var got []byte
	for _, sg := range segs {
		if !sg.Partial {
			t.Fatalf("%s is complete; the whole should still be held back", sg.ObjectName())
		}
		if uint64(len(got)) != sg.Start-0x1000 {
			t.Fatalf("piece %s does not continue the pieces before it", sg.ObjectName())
		}
		full, b, err := r.GetSegment(ctx, sg.ObjectName())
		if err != nil {
			t.Fatal(err)
		}
		if FileSize(full) != 0x1000 || full.Name != "seg" {
			t.Fatalf("piece %s: file size %d, name %q", sg.ObjectName(), FileSize(full), full.Name)
		}
		if start := StartPosition(full); sg.Start == 0x1a00 && !bytes.Equal(start.Token, pos(1, 0x1a00).Token) {
			t.Fatalf("the rest starts at %v; want the plugin's position where the last piece ended", start)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, whole) {
		t.Fatal("the pieces do not hold the segment's bytes")
	}
	close(g.open)
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
	segs = list()
	if len(segs) != 1 || segs[0].Partial || segs[0].Start != 0x1000 || segs[0].End != 0x2000 {
		t.Fatalf("after the whole is stored: %v; want it alone", segs)
	}
	if _, b, err := r.GetSegment(ctx, segs[0].ObjectName()); err != nil || !bytes.Equal(b, whole) {
		t.Fatalf("the whole segment: %v, equal %v", err, bytes.Equal(b, whole))
	}
	if s.Stats.Compacted != 1 {
		t.Fatalf("compacted %d; want 1", s.Stats.Compacted)
	}
	whole = append(whole, whole...)
	send(0x2000, 0x3000, false) // no pieces before it: stored whole at once
	if segs := list(); len(segs) != 2 || segs[1].Partial {
		t.Fatalf("a complete segment without pieces: %v", segs)
	}
	if s.Stats.Compacted != 1 {
		t.Fatalf("compacted %d after a segment without pieces; want 1", s.Stats.Compacted)
	}
}

// TestSinkTailPieceConflict: another server's complete segment under the
// same name, met by the background store, ends archiving as a foreground
// store would: Wait and the next segment's Finish return the conflict.
func TestSinkTailPieceConflict(t *testing.T) {
	ctx := context.Background()
	r := repotest.New(t)
	other, err := Describe("pg", api.SegmentHeader{Name: "seg", Start: pos(1, 0x1000)}, api.SegmentTrailer{End: pos(1, 0x2000)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PutSegment(ctx, other, bytes.Repeat([]byte{1}, 0x1000)); err != nil {
		t.Fatal(err)
	}
	s := NewSink(r, "pg", slog.New(slog.DiscardHandler), nil)
	send := func(start, end uint64, partial bool) error {
		return hand(ctx, s, "seg", start, make([]byte, end-start), api.SegmentTrailer{End: pos(1, end), Partial: partial})
	}
	if err := send(0x1000, 0x1800, true); err != nil {
		t.Fatal(err)
	}
	if err := send(0x1000, 0x2000, false); err != nil {
		t.Fatal(err) // the rest is stored as a piece; the whole in the background
	}
	if err := s.Wait(); !errors.Is(err, repo.ErrSegmentConflict) {
		t.Fatalf("Wait: %v; want the conflict", err)
	}
	if err := send(0x2000, 0x2100, true); !errors.Is(err, repo.ErrSegmentConflict) {
		t.Fatalf("the next segment: %v; want the conflict", err)
	}
}

// TestSinkTailPieceWaits: while one complete segment is stored in the
// background, the next one's Finish (its rest already durable) waits for it,
// and the log behind it counts as pending (PendingSince) until the first
// store returns.
func TestSinkTailPieceWaits(t *testing.T) {
	ctx := context.Background()
	g, r := newGated(t)
	s := NewSink(r, "pg", slog.New(slog.DiscardHandler), nil)
	send := func(start, end uint64, partial bool) error {
		return hand(ctx, s, fmt.Sprintf("seg%x", start&^0xfff), start, make([]byte, end-start), api.SegmentTrailer{End: pos(1, end), Partial: partial})
	}
	for _, st := range []uint64{0x1000, 0x2000} {
		if err := send(st, st+0x800, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := send(0x1000, 0x2000, false); err != nil { // its whole store is held back
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- send(0x2000, 0x3000, false) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.Stats.Lock()
		since := s.Stats.PendingSince
		s.Stats.Unlock()
		if !since.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no pending log while the second segment waits for the first one's store")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-second:
		t.Fatalf("the second segment returned (%v) while the first one's store was held back", err)
	default:
	}
	close(g.open)
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
	s.Stats.Lock()
	defer s.Stats.Unlock()
	if !s.Stats.PendingSince.IsZero() || s.Stats.Compacted != 2 {
		t.Fatalf("after both stores: pending since %s, compacted %d; want none pending, 2", s.Stats.PendingSince, s.Stats.Compacted)
	}
}
