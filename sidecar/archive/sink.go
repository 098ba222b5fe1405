package archive

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/repo"
)

// Segment meta keys: the plugin's own positions, so archiving can resume
// exactly where the repository ends.
const (
	MetaStart      = "start"
	MetaStartToken = "start_token"
	MetaEnd        = "end"
	MetaEndToken   = "end_token"
)

// EndPosition rebuilds the plugin position at which a stored segment ends.
func EndPosition(s repo.Segment) (api.Position, error) {
	tok, err := base64.StdEncoding.DecodeString(s.Meta[MetaEndToken])
	if err != nil || len(tok) == 0 {
		return api.Position{}, fmt.Errorf("segment %s has no end position", s.ObjectName())
	}
	order := api.OrderKey(uint64(s.Epoch), s.End)
	return api.Position{Token: tok, Text: s.Meta[MetaEnd], Order: order}, nil
}

// MaxSegment bounds one segment held in memory before it is stored (a
// PostgreSQL WAL segment is 16 MiB; binlog files are cut by the plugin).
const MaxSegment = 256 << 20

// Split maps a position's ordering key onto the repository's (epoch, offset)
// pair: a two-part key (timeline, LSN) gives both, a one-part key only the
// offset.
func Split(p api.Position) (epoch uint32, off uint64, err error) {
	switch len(p.Order) {
	case 16:
		return uint32(binary.BigEndian.Uint64(p.Order)), binary.BigEndian.Uint64(p.Order[8:]), nil
	case 8:
		return 0, binary.BigEndian.Uint64(p.Order), nil
	}
	return 0, 0, fmt.Errorf("position %q has an ordering key of %d bytes; want 8 or 16", p, len(p.Order))
}

// Stats are the archiver's counters; hold the lock to read them.
type Stats struct {
	sync.Mutex
	Segments  int64
	Bytes     int64
	LastEnd   api.Position
	LastLag   time.Duration // last commit to durable, for the last segment
	LagSample []time.Duration
}

// Sink implements api.SegmentSink over a repository stream.
type Sink struct {
	repo    *repo.Repository
	stream  string
	durable chan api.Position
	log     *slog.Logger
	now     func() time.Time

	mu       sync.Mutex
	partials map[[2]uint64]repo.Segment // (epoch, start) -> partial object stored
	Stats    Stats
}

var _ api.SegmentSink = (*Sink)(nil)

// NewSink stores segments under stream and reports durable positions on
// the returned channel, which always holds the newest position (older
// undelivered ones are replaced).
func NewSink(r *repo.Repository, stream string, log *slog.Logger) *Sink {
	return &Sink{repo: r, stream: stream, durable: make(chan api.Position, 1), log: log, now: time.Now,
		partials: make(map[[2]uint64]repo.Segment)}
}

// Durable is the channel to hand to api.Engine.Archive.
func (s *Sink) Durable() <-chan api.Position { return s.durable }

// CloseDurable tells the plugin to stop once it has flushed what it holds.
func (s *Sink) CloseDurable() { close(s.durable) }

// Begin implements api.SegmentSink.
func (s *Sink) Begin(ctx context.Context, h api.SegmentHeader) (api.SegmentWriter, error) {
	return &segWriter{s: s, ctx: ctx, h: h}, nil
}

type segWriter struct {
	s   *Sink
	ctx context.Context
	h   api.SegmentHeader
	buf bytes.Buffer
}

func (w *segWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > MaxSegment {
		return 0, fmt.Errorf("segment %s exceeds %d bytes", w.h.Name, MaxSegment)
	}
	return w.buf.Write(p)
}

func (w *segWriter) Abort(reason string) error {
	w.s.log.Warn("segment aborted by the plugin", "segment", w.h.Name, "reason", reason)
	return nil
}

// Finish stores the segment and, once it is durable, reports its end.
func (w *segWriter) Finish(t api.SegmentTrailer) error {
	s := w.s
	epoch, start, err := Split(w.h.Start)
	if err != nil {
		return err
	}
	_, end, err := Split(t.End)
	if err != nil {
		return err
	}
	meta := map[string]string{
		MetaStart: w.h.Start.Text, MetaStartToken: base64.StdEncoding.EncodeToString(w.h.Start.Token),
		MetaEnd: t.End.Text, MetaEndToken: base64.StdEncoding.EncodeToString(t.End.Token),
	}
	seg := repo.Segment{Stream: s.stream, Epoch: epoch, Start: start, End: end, Partial: t.Partial,
		Name: w.h.Name, FirstTime: t.FirstCommit, LastTime: t.LastCommit, Meta: meta}
	if err := s.repo.PutSegment(w.ctx, seg, w.buf.Bytes()); err != nil {
		return fmt.Errorf("archive %s: %w", w.h.Name, err)
	}
	now := s.now()
	s.Stats.Lock()
	s.Stats.Segments++
	s.Stats.Bytes += int64(w.buf.Len())
	s.Stats.LastEnd = t.End
	if !t.LastCommit.IsZero() {
		s.Stats.LastLag = now.Sub(t.LastCommit)
	}
	s.Stats.Unlock()

	// The new object supersedes the partial one with the same start.
	key := [2]uint64{uint64(epoch), start}
	s.mu.Lock()
	old, had := s.partials[key]
	if t.Partial {
		s.partials[key] = seg
	} else {
		delete(s.partials, key)
	}
	s.mu.Unlock()
	if had && old.ObjectName() != seg.ObjectName() {
		if err := s.repo.RemoveSegment(w.ctx, old); err != nil {
			s.log.Warn("could not remove a superseded partial segment", "object", old.ObjectName(), "err", err)
		}
	}
	if start == end { // metadata such as a timeline history: not a log position
		return nil
	}
	s.report(t.End)
	return nil
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
