package archive

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/amber-backup/amber/plugins/api/clock"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/repo"
)

// Segment meta keys (docs/repository-format.md, "Log segments"): the
// plugin's own positions, so archiving resumes exactly where the repository
// ends and people read positions in the engine's words.
const (
	MetaStart        = "start"               // text of the start position
	MetaStartToken   = "start_token"         // base64 of its token
	MetaEnd          = "end"                 // text of the end position
	MetaEndToken     = "end_token"           // base64 of its token
	MetaBranch       = "branch"              // text of the branch position, if any
	MetaBranchToken  = "branch_token"        // base64 of its token
	MetaBranchEpoch  = repo.MetaBranchEpoch  // decimal
	MetaBranchOffset = repo.MetaBranchOffset // decimal
	MetaFileSize     = "file_size"           // decimal: serve zero-filled to this size
)

// StartPosition rebuilds the plugin position at which a stored segment starts.
func StartPosition(s repo.Segment) api.Position {
	tok, _ := base64.StdEncoding.DecodeString(s.Meta[MetaStartToken])
	return api.Position{Epoch: s.Epoch, Offset: s.Start, Token: tok, Text: s.Meta[MetaStart]}
}

// EndPosition rebuilds the plugin position at which a stored segment ends.
func EndPosition(s repo.Segment) (api.Position, error) {
	tok, err := base64.StdEncoding.DecodeString(s.Meta[MetaEndToken])
	if err != nil || len(tok) == 0 {
		return api.Position{}, fmt.Errorf("segment %s has no end position", s.ObjectName())
	}
	return api.Position{Epoch: s.Epoch, Offset: s.End, Token: tok, Text: s.Meta[MetaEnd]}, nil
}

// Branch returns where a stored segment's epoch branched off its parent,
// or false when the segment does not say.
func Branch(s repo.Segment) (api.Position, bool) {
	if s.Meta[MetaBranchEpoch] == "" {
		return api.Position{}, false
	}
	ep, err1 := strconv.ParseUint(s.Meta[MetaBranchEpoch], 10, 32)
	off, err2 := strconv.ParseUint(s.Meta[MetaBranchOffset], 10, 64)
	if err1 != nil || err2 != nil {
		return api.Position{}, false
	}
	tok, _ := base64.StdEncoding.DecodeString(s.Meta[MetaBranchToken])
	return api.Position{Epoch: uint32(ep), Offset: off, Token: tok, Text: s.Meta[MetaBranch]}, true
}

// FileSize is the size a segment is served back as (0: its own size).
func FileSize(s repo.Segment) int64 {
	n, _ := strconv.ParseInt(s.Meta[MetaFileSize], 10, 64)
	return n
}

// Describe turns a plugin's segment description into the repository's
// record of it: epoch and offsets from the positions, the rest as meta.
func Describe(stream string, h api.SegmentHeader, t api.SegmentTrailer) (repo.Segment, error) {
	if h.Start.Epoch != t.End.Epoch {
		return repo.Segment{}, fmt.Errorf("segment %s starts in epoch %d and ends in epoch %d; a segment holds log of one epoch", h.Name, h.Start.Epoch, t.End.Epoch)
	}
	if t.End.Offset < h.Start.Offset {
		return repo.Segment{}, fmt.Errorf("segment %s ends (%s) before it starts (%s)", h.Name, t.End, h.Start)
	}
	meta := map[string]string{
		MetaStart: h.Start.Text, MetaStartToken: base64.StdEncoding.EncodeToString(h.Start.Token),
		MetaEnd: t.End.Text, MetaEndToken: base64.StdEncoding.EncodeToString(t.End.Token),
	}
	if !h.Branch.IsZero() {
		meta[MetaBranch] = h.Branch.Text
		meta[MetaBranchToken] = base64.StdEncoding.EncodeToString(h.Branch.Token)
		meta[MetaBranchEpoch] = strconv.FormatUint(uint64(h.Branch.Epoch), 10)
		meta[MetaBranchOffset] = strconv.FormatUint(h.Branch.Offset, 10)
	}
	if t.FileSize > 0 {
		meta[MetaFileSize] = strconv.FormatInt(t.FileSize, 10)
	}
	return repo.Segment{Stream: stream, Epoch: h.Start.Epoch, Start: h.Start.Offset, End: t.End.Offset, Partial: t.Partial,
		Name: h.Name, FirstTime: t.FirstCommit, LastTime: t.LastCommit, Meta: meta}, nil
}

// MaxSegment bounds one segment held in memory before it is stored (a
// PostgreSQL WAL segment is 16 MiB; binlog files are cut by the plugin).
const MaxSegment = 256 << 20

// Stats are the archiver's counters; hold the lock to read them.
type Stats struct {
	sync.Mutex
	Segments  int64
	Bytes     int64
	LastEnd   api.Position
	LastLag   time.Duration // last commit to durable, for the last segment
	LagSample []time.Duration
	// PendingSince is when the oldest log the plugin began to hand over
	// and that is not yet durable arrived (zero: everything handed over is
	// durable). Unlike LastLag it grows while a store hangs, and it stays
	// zero on an idle database.
	PendingSince time.Time
	// Compacted counts complete segments stored in the background over
	// their pieces (Finish).
	Compacted int64
	open      int
}

// Sink implements api.SegmentSink over a repository stream.
type Sink struct {
	repo    *repo.Repository
	stream  string
	durable chan api.Position
	log     *slog.Logger
	clock   clock.Clock

	mu       sync.Mutex
	partials map[[3]uint64]repo.Segment // (epoch, start, end) -> partial object stored
	conflict error                      // met by a background store (compact)
	// compacting holds a token while a complete segment is stored in the
	// background; wg waits for that store.
	compacting chan struct{}
	wg         sync.WaitGroup
	// lastCommit is the newest commit time stored so far, carried onto
	// segments that hold none: a window's end is its newest commit.
	lastCommit time.Time
	Stats      Stats
}

var _ api.SegmentSink = (*Sink)(nil)

// NewSink stores segments under stream and reports durable positions on
// the returned channel, which always holds the newest position (older
// undelivered ones are replaced). Lag is measured with clk (nil: clock.Real).
func NewSink(r *repo.Repository, stream string, log *slog.Logger, clk clock.Clock) *Sink {
	return &Sink{repo: r, stream: stream, durable: make(chan api.Position, 1), log: log, clock: clock.Or(clk),
		partials: make(map[[3]uint64]repo.Segment), compacting: make(chan struct{}, 1)}
}

// CommittedUntil tells the sink the newest commit time the stream already
// holds (the repository's newest segment's), which segments stored from
// now on that hold no commit of their own carry.
func (s *Sink) CommittedUntil(t time.Time) {
	s.mu.Lock()
	if t.After(s.lastCommit) {
		s.lastCommit = t
	}
	s.mu.Unlock()
}

// Durable is the channel to hand to api.Engine.Archive.
func (s *Sink) Durable() <-chan api.Position { return s.durable }

// CloseDurable tells the plugin to stop once it has flushed what it holds.
func (s *Sink) CloseDurable() { close(s.durable) }

// Begin implements api.SegmentSink.
func (s *Sink) Begin(ctx context.Context, h api.SegmentHeader) (api.SegmentWriter, error) {
	s.pend()
	return &segWriter{s: s, ctx: ctx, h: h}, nil
}

// pend counts one more share of log handed over and not yet durable,
// starting PendingSince if it is the only one.
func (s *Sink) pend() {
	now := s.clock.Now()
	st := &s.Stats
	st.Lock()
	if st.open == 0 {
		st.PendingSince = now
	}
	st.open++
	st.Unlock()
}

// unpend ends one share counted by pend; PendingSince ends with the last.
func (s *Sink) unpend() {
	st := &s.Stats
	st.Lock()
	if st.open--; st.open <= 0 {
		st.open, st.PendingSince = 0, time.Time{}
	}
	st.Unlock()
}

// ForgetOpen drops the segments a dead plugin had begun: its successor
// sends that log again, and PendingSince restarts with it.
func (s *Sink) ForgetOpen() {
	s.Stats.Lock()
	s.Stats.open, s.Stats.PendingSince = 0, time.Time{}
	s.Stats.Unlock()
}

// settled ends one writer's share of PendingSince: the writer finished
// (durable) or was given up.
func (w *segWriter) settled() {
	if w.done {
		return
	}
	w.done = true
	w.s.unpend()
}

type segWriter struct {
	s    *Sink
	ctx  context.Context
	h    api.SegmentHeader
	buf  bytes.Buffer
	done bool
}

func (w *segWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > MaxSegment {
		return 0, fmt.Errorf("segment %s exceeds %d bytes", w.h.Name, MaxSegment)
	}
	return w.buf.Write(p)
}

func (w *segWriter) Abort(reason string) error {
	w.settled()
	w.s.log.Warn("segment aborted by the plugin", "segment", w.h.Name, "reason", reason)
	return nil
}

// Finish stores the segment and, once it is durable, reports its end.
//
// A complete segment whose log up to some point is durable already, in
// pieces this sink stored (each flush's new bytes), is made durable by
// storing only the rest as one more piece; the segment is then stored whole
// in the background, where it supersedes its pieces (Compacted). So the
// whole segment's store (16 MiB for PostgreSQL's WAL) never delays the
// report of the log at its end, nor the next flush. Killed before the whole
// is stored, the pieces stay, and they cover the segment: log fetches put
// them together.
func (w *segWriter) Finish(t api.SegmentTrailer) error {
	s := w.s
	if err := s.compactErr(); err != nil {
		return err
	}
	seg, err := Describe(s.stream, w.h, t)
	if err != nil {
		return err
	}
	if seg.Start != seg.End {
		// A segment records the newest commit up to its end, its own or
		// an earlier one's: a plugin reports only those in the segment
		// (PostgreSQL), and the window ends at the newest of all.
		s.mu.Lock()
		if seg.LastTime.Before(s.lastCommit) {
			seg.LastTime = s.lastCommit
		} else {
			s.lastCommit = seg.LastTime
		}
		s.mu.Unlock()
	}
	data := w.buf.Bytes()
	tail, pieced := s.tail(seg, w.h, t, len(data))
	store, stored := seg, data
	if pieced {
		store, stored = tail, data[tail.Start-seg.Start:]
	}
	if err := s.repo.PutSegment(w.ctx, store, stored); err != nil {
		return fmt.Errorf("archive %s: %w", w.h.Name, err)
	}
	now := s.clock.Now()
	w.settled()
	s.Stats.Lock()
	s.Stats.Segments++
	s.Stats.Bytes += int64(len(data))
	s.Stats.LastEnd = t.End
	if !t.LastCommit.IsZero() {
		s.Stats.LastLag = now.Sub(t.LastCommit)
	}
	s.Stats.Unlock()
	s.supersede(w.ctx, store)
	if seg.Start != seg.End { // metadata such as a timeline history is not a log position
		s.report(t.End)
	}
	if pieced {
		s.compact(w.ctx, seg, data)
	}
	return nil
}

// tail returns, for a complete segment seg of n bytes (one per position),
// described by h and t, whose start this sink stored pieces from without a
// hole up to a point inside it, the piece holding the rest: from where
// those pieces end (with the plugin's own position there, from the last
// piece's record) to the segment's end.
func (s *Sink) tail(seg repo.Segment, h api.SegmentHeader, t api.SegmentTrailer, n int) (repo.Segment, bool) {
	if seg.Partial || uint64(n) != seg.End-seg.Start {
		return repo.Segment{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var last *repo.Segment
	cur := seg.Start
	for {
		var best *repo.Segment
		for k, p := range s.partials {
			if k[0] == uint64(seg.Epoch) && p.Name == seg.Name && p.Start <= cur && p.End > cur && p.End < seg.End &&
				(best == nil || p.End > best.End) {
				best = &p
			}
		}
		if best == nil {
			break
		}
		last, cur = best, best.End
	}
	if last == nil {
		return repo.Segment{}, false
	}
	at, err := EndPosition(*last)
	if err != nil {
		return repo.Segment{}, false
	}
	h.Start = at
	t = api.SegmentTrailer{End: t.End, Partial: true, LastCommit: seg.LastTime, FileSize: t.FileSize}
	piece, err := Describe(seg.Stream, h, t)
	if err != nil {
		return repo.Segment{}, false
	}
	return piece, true
}

// supersede records a stored segment and removes the partial objects it
// supersedes: a partial object supersedes the one with the same start that
// it reaches past; a complete one supersedes every partial one inside its
// range: the pieces a plugin sent since the previous flush each (they start
// where the previous piece ended) included.
func (s *Sink) supersede(ctx context.Context, seg repo.Segment) {
	var superseded []repo.Segment
	s.mu.Lock()
	for k, old := range s.partials {
		if k[0] != uint64(seg.Epoch) {
			continue
		}
		if seg.Partial && k[1] == seg.Start && k[2] <= seg.End ||
			!seg.Partial && k[1] >= seg.Start && k[1] < max(seg.End, seg.Start+1) {
			superseded = append(superseded, old)
			delete(s.partials, k)
		}
	}
	if seg.Partial {
		s.partials[[3]uint64{uint64(seg.Epoch), seg.Start, seg.End}] = seg
	}
	s.mu.Unlock()
	for _, old := range superseded {
		if old.ObjectName() == seg.ObjectName() {
			continue
		}
		if err := s.repo.RemoveSegment(ctx, old); err != nil {
			s.log.Warn("could not remove a superseded partial segment", "object", old.ObjectName(), "err", err)
		}
	}
}

// compact stores a complete segment whose log is durable in pieces already,
// in the background, and then removes the pieces. One segment at a time: a
// second waits here until the first is stored, so at most one segment is
// held beyond the one being received. A conflict (another server's log
// under the segment's name) ends the archive at the next segment, as it
// would have in the foreground; any other failure leaves the pieces, which
// hold the same log.
func (s *Sink) compact(ctx context.Context, seg repo.Segment, data []byte) {
	ctx = context.WithoutCancel(ctx)
	select {
	case s.compacting <- struct{}{}:
	default:
		// The previous segment's store has not returned: the log after
		// this one waits with the plugin meanwhile, pending as if its own
		// store hung (PendingSince).
		s.pend()
		s.compacting <- struct{}{}
		s.unpend()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.compacting }()
		if err := s.repo.PutSegment(ctx, seg, data); err != nil {
			if errors.Is(err, repo.ErrSegmentConflict) {
				s.mu.Lock()
				s.conflict = fmt.Errorf("archive %s: %w", seg.Name, err)
				s.mu.Unlock()
			}
			s.log.Warn("could not store a complete segment; its pieces stay", "segment", seg.Name, "err", err)
			return
		}
		s.supersede(ctx, seg)
		s.Stats.Lock()
		s.Stats.Compacted++
		s.Stats.Unlock()
	}()
}

func (s *Sink) compactErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conflict
}

// Wait returns once the complete segments stored in the background are
// stored (or failed), with the conflict one of them met, if any.
func (s *Sink) Wait() error {
	s.wg.Wait()
	return s.compactErr()
}

// report offers the newest durable position, replacing an undelivered one.
func (s *Sink) report(p api.Position) {
	defer func() { _ = recover() }() // the channel may be closed on shutdown
	for {
		select {
		case s.durable <- p:
			return
		default:
			select {
			case <-s.durable:
			default:
			}
		}
	}
}
