package mgengine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Segment is a run of oplog entries read from one cursor without
// interruption: concatenated BSON documents. Start and End are
// boundaries: the segment holds the entries with Start <= ts < End, and End
// is one past its last entry, where the next segment starts.
type Segment struct {
	Name                    string
	Start, End              Pos
	Epoch                   uint32 // the history the segment belongs to (see fork.go)
	Branch                  Pos    // for an epoch after a rollback: where it takes over from epoch Epoch-1; zero otherwise
	EndTerm                 int64  // term (t) of the last entry, when EndHasTerm
	EndHasTerm              bool
	Data                    []byte
	Entries                 int
	FirstCommit, LastCommit time.Time
	Arrived                 time.Time // when its first entry reached the archiver
}

// ArchiveOptions tune Archive.
type ArchiveOptions struct {
	// Start is the boundary to resume from (the archived end); zero: just
	// after the newest entry in the oplog.
	Start Pos
	// Epoch is Start's epoch (0 is 1); StartTerm the term of the entry
	// just before Start, when StartHasTerm (kept in the position's token).
	Epoch        uint32
	StartTerm    int64
	StartHasTerm bool
	// StartBranch is the branch of Start's epoch, when it began at a
	// rollback (kept in the position's token too).
	StartBranch   Pos
	FlushInterval time.Duration // max age of the oldest unsent entry; default 1 s
	MaxSegment    int           // bytes; default 16 MiB
	Logger        *slog.Logger
	// Stop, when closed, makes Archive send what it holds and return nil.
	Stop <-chan struct{}
}

var errStopped = errors.New("archiving stopped")

// Archive tails local.oplog.rs with a tailable, awaitData cursor and
// sends its entries in segments until ctx ends.
func Archive(ctx context.Context, uri URI, o ArchiveOptions, send func(context.Context, Segment) error) error {
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
	}
	if o.MaxSegment <= 0 {
		o.MaxSegment = 16 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c, err := Connect(ctx, uri)
	if err != nil {
		return err
	}
	defer c.Close()
	last, ok, err := c.LastOplog(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNoOplog
	}
	oplog := c.Client.Database("local").Collection("oplog.rs")
	st := &archState{epoch: max(o.Epoch, 1), term: o.StartTerm, hasTerm: o.StartHasTerm, branch: o.StartBranch}
	start := o.Start
	if start.IsZero() {
		start = last.Next()
	} else if start, err = st.resume(ctx, c, oplog, start, o); err != nil {
		return err
	}
	o.Logger.Info("archiving the oplog", "from", start.Text(), "epoch", st.epoch)
	verify := false
	for {
		next, err := tail(ctx, c, oplog, start, verify, o, st, send)
		if errors.Is(err, errStopped) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errCheck) {
			// The entry the cursor had to start with was not the last
			// one sent: open the next from where the checks say (a new
			// epoch after a fork, past a hole after a roll-over).
			if start, err = st.resume(ctx, c, oplog, next, o); err != nil {
				return err
			}
			verify = false
			continue
		}
		if err != nil {
			return err
		}
		// The cursor died (the server closed it; a tailable cursor on
		// MongoDB dies when its query finds nothing, FerretDB's with its
		// first batch): open another from where this one stopped, that starts
		// with the last entry sent. Finding it there, with its term, is
		// what the rollback and roll-over checks of resume would find out
		// with two more queries of the oplog (each a read of the whole
		// collection on FerretDB); when it is not, tail says so (errCheck)
		// and those checks run.
		start, verify = next, true
	}
}

// errCheck is returned by tail when the first entry of a cursor opened
// with verify is not the last entry sent before its start.
var errCheck = errors.New("the oplog does not start with the last entry sent")

// archState is what an archiver carries from one cursor to the next: the
// epoch it writes, its branch, and the term of the last entry sent.
type archState struct {
	epoch   uint32
	branch  Pos
	term    int64
	hasTerm bool
	sent    time.Time // when the last segment was sent
}

// resume returns where the next cursor starts after the archived end
// start: a new epoch when the history forked since (see fork.go), past a
// hole when the oplog rolled over the entries since.
func (st *archState) resume(ctx context.Context, c *Conn, oplog *mongo.Collection, start Pos, o ArchiveOptions) (Pos, error) {
	f, err := forkFacts(ctx, c, oplog, start, st.term, st.hasTerm)
	if err != nil {
		return start, err
	}
	if forked, at := f.Fork(); forked {
		o.Logger.Warn("the oplog's history forked (a rollback): entries archived after the fork point are not in the server's oplog; starting a new epoch",
			"archived_end", start.Text(), "fork", at.Text(), "epoch", st.epoch+1)
		st.epoch++
		st.branch = at
		st.hasTerm = false
		start = at
	}
	return rolledPast(ctx, c, oplog, start, o)
}

// rolledPast checks that the oplog still holds the entries from start
// (one past the last archived entry): when its oldest entry is newer, the
// oplog rolled past the archived end and the entries between are lost;
// archiving goes on from the oldest entry left, and the segment that
// starts there, past the previous one's end, is the hole the host reports.
func rolledPast(ctx context.Context, c *Conn, oplog *mongo.Collection, start Pos, o ArchiveOptions) (Pos, error) {
	var first struct {
		TS bson.Timestamp `bson:"ts"`
	}
	err := oplog.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "$natural", Value: 1}})).Decode(&first)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return start, nil
	}
	if err != nil {
		return start, c.explain(fmt.Errorf("read the oldest oplog entry: %w", err))
	}
	// start is a boundary: the last archived entry is just before it.
	// The oplog still holds it (or the one right after it, on a quiet
	// server) only if its oldest entry is at or before start.
	if oldest := (Pos{T: first.TS.T, I: first.TS.I}); start.Less(oldest) {
		o.Logger.Warn("the oplog rolled past the archived end: log between them is lost", "archived_end", start.Text(), "oldest", oldest.Text())
		return oldest, nil
	}
	return start, nil
}

// cursor is what tail reads: a mongo.Cursor, or a double in tests.
type cursor interface {
	TryNext(ctx context.Context) bool
	Next(ctx context.Context) bool
	Err() error
	ID() int64
	RemainingBatchLength() int
	Close(ctx context.Context) error
	raw() bson.Raw
}

type mongoCursor struct{ *mongo.Cursor }

func (c mongoCursor) raw() bson.Raw { return c.Current }

// read is what the cursor reader hands tail: a run of entries (copies,
// in cursor order), or how the cursor ended: err when it failed, dead
// when the server closed it.
type read struct {
	entries []bson.Raw
	// caughtUp: the entries end the batch the server sent; reading on
	// takes a round trip (on MongoDB an awaitData getMore answers as soon
	// as anything is written, so a batch used up means the reader has what
	// was written when the server answered).
	caughtUp bool
	err      error
	dead     bool
}

// maxReadBatch bounds the entries one read carries, so tail sees the
// flush interval and the segment size between them.
const maxReadBatch = 1000

// readCursor reads cur until ctx ends or the cursor does, and sends what
// it reads on out, in order; it closes out when it returns. It is the only
// user of cur while it runs: a getMore that blocks (an awaitData wait, a
// slow server) blocks it alone, and tail goes on sending what it already
// received on time.
func readCursor(ctx context.Context, cur cursor, out chan<- read) {
	defer close(out)
	put := func(r read) bool {
		select {
		case out <- r:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		if cur.TryNext(ctx) {
			// The rest of the batch the server sent is in memory:
			// TryNext returns it without a round trip.
			r := read{entries: []bson.Raw{bytes.Clone(cur.raw())}}
			for len(r.entries) < maxReadBatch && cur.RemainingBatchLength() > 0 && cur.TryNext(ctx) {
				r.entries = append(r.entries, bytes.Clone(cur.raw()))
			}
			r.caughtUp = cur.RemainingBatchLength() == 0
			if !put(r) {
				return
			}
			continue
		}
		if err := cur.Err(); err != nil {
			put(read{err: err})
			return
		}
		if ctx.Err() != nil {
			return
		}
		if cur.ID() == 0 {
			put(read{dead: true})
			return
		}
	}
}

// restFunc reads the oplog from a boundary with a plain query: what tail
// sends when archiving stops.
type restFunc func(ctx context.Context, from Pos) (cursor, error)

// tail reads from one cursor and returns the boundary it reached when
// the cursor ends.
//
// With verify, the cursor opens at the last entry sent (the one just
// before start) and must show it first, with the term st holds, or tail
// returns errCheck before sending anything.
func tail(ctx context.Context, c *Conn, oplog *mongo.Collection, start Pos, verify bool, o ArchiveOptions, st *archState, send func(context.Context, Segment) error) (Pos, error) {
	from := start
	if verify {
		from = lastOf(start)
	}
	filter := bson.D{{Key: "ts", Value: bson.D{{Key: "$gte", Value: bson.Timestamp{T: from.T, I: from.I}}}}}
	await := min(o.FlushInterval, time.Second)
	cur, err := oplog.Find(ctx, filter, options.Find().SetCursorType(options.TailableAwait).SetMaxAwaitTime(await))
	if err != nil {
		return start, c.explain(fmt.Errorf("open a tailable cursor on the oplog: %w", err))
	}
	rest := func(ctx context.Context, from Pos) (cursor, error) {
		cur, err := oplog.Find(ctx, bson.D{{Key: "ts", Value: bson.D{{Key: "$gte", Value: bson.Timestamp{T: from.T, I: from.I}}}}},
			options.Find().SetSort(bson.D{{Key: "$natural", Value: 1}}))
		if err != nil {
			return nil, c.explain(fmt.Errorf("read the oplog: %w", err))
		}
		return mongoCursor{cur}, nil
	}
	return tailCursor(ctx, mongoCursor{cur}, rest, c.explain, start, verify, o, st, send)
}

// dueTime is when a segment whose first entry arrived at arrived, and
// was written at written (its wall time, by the server's clock), is sent:
// when that entry is interval old by its own time, so an entry that
// arrives late (after a slow read, or a reopened cursor's query, which
// on FerretDB reads its whole oplog collection) goes out at once and not
// one more interval later; yet not sooner than interval/10 after it arrived, so a server
// clock behind this one cannot make every read a segment of its own, and
// never later than interval after it arrived, so one ahead cannot hold
// entries back.
func dueTime(arrived, written time.Time, interval time.Duration) time.Time {
	at := written.Add(interval)
	if floor := arrived.Add(interval / 10); at.Before(floor) {
		at = floor
	}
	if ceil := arrived.Add(interval); ceil.Before(at) {
		at = ceil
	}
	return at
}

// traceRead, set by a benchmark only, is told of every read the
// archiver receives from its cursor reader, and when.
var traceRead func(entries []bson.Raw, at time.Time)

// catchUpSpacing is the least time between two segments sent because the
// reader caught up (flushAt): at most four such segments a second with the
// default interval.
func catchUpSpacing(interval time.Duration) time.Duration { return interval / 4 }

// flushAt is when a segment due at dueAt (dueTime) is sent: then, or,
// when the reader has caught up with the oplog (nothing more was pending
// when the server last answered), as soon as spacing has passed since the
// previous segment was sent. Under a steady load the cursor keeps
// answering with what was just written, so segments go out every spacing
// rather than every interval; a reader that is behind (a backlog read in
// full batches) waits for dueAt and sends fuller segments.
func flushAt(dueAt, lastSent time.Time, caughtUp bool, spacing time.Duration) time.Time {
	if at := lastSent.Add(spacing); caughtUp && at.Before(dueAt) {
		return at
	}
	return dueAt
}

// tailCursor sends the entries of cur in segments: a reader goroutine
// reads the cursor (readCursor) while this one cuts and sends segments, so
// a segment goes out FlushInterval after its first entry arrived even when
// the cursor's next read blocks for longer. It returns the boundary after
// the last entry sent. Entries go out in the order the cursor gave them;
// a segment ends one past its last entry, and the next starts there.
func tailCursor(ctx context.Context, cur cursor, rest restFunc, explain func(error) error, start Pos, verify bool, o ArchiveOptions, st *archState, send func(context.Context, Segment) error) (Pos, error) {
	rctx, cancel := context.WithCancel(ctx)
	reads := make(chan read)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		readCursor(rctx, cur, reads)
	}()
	// stopReader ends the reader and waits for it: the cursor is then
	// free to close, and no goroutine outlives tail.
	stopped := false
	stopReader := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		for range reads {
			// Entries the reader still held: not added; the plain query
			// of the stop path, or the next cursor, reads them from start.
		}
		<-readerDone
		cur.Close(context.WithoutCancel(ctx))
	}
	defer stopReader()

	seg := Segment{Start: start, Epoch: st.epoch, Branch: st.branch}
	var buf bytes.Buffer
	var dueAt time.Time
	caughtUp := false
	spacing := catchUpSpacing(o.FlushInterval)
	if st.sent.IsZero() {
		st.sent = time.Now()
	}
	flush := func() error {
		if seg.Entries == 0 {
			return nil
		}
		seg.Data = buf.Bytes()
		seg.Name = fmt.Sprintf("oplog-%010d-%010d", seg.Start.T, seg.Start.I)
		st.sent = time.Now()
		if err := send(ctx, seg); err != nil {
			return err
		}
		start = seg.End
		st.term, st.hasTerm = seg.EndTerm, seg.EndHasTerm
		seg = Segment{Start: start, Epoch: st.epoch, Branch: st.branch}
		buf = bytes.Buffer{}
		return nil
	}
	add := func(raw bson.Raw) error {
		var e struct {
			TS   bson.Timestamp `bson:"ts"`
			Wall time.Time      `bson:"wall"`
			T    *int64         `bson:"t"`
		}
		if err := bson.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("oplog entry: %w", err)
		}
		p := Pos{T: e.TS.T, I: e.TS.I}
		if p.Less(seg.Start) {
			return nil
		}
		at := e.Wall
		if at.IsZero() {
			at = time.Unix(int64(e.TS.T), 0)
		}
		if seg.Entries == 0 {
			seg.FirstCommit = at
			seg.Arrived = time.Now()
			dueAt = dueTime(seg.Arrived, at, o.FlushInterval)
		}
		// A segment ends one past its greatest ts, which is its last
		// entry's on mongod, whose oplog is in ts order. FerretDB's
		// emulated oplog can hold an entry behind the one before it (one
		// written into local.oplog.rs ahead of its clock is followed by the
		// entry FerretDB logs for that write): ending at the last entry
		// would let the next segment, which starts at the end, hold the
		// greater entry again, and replay would apply it twice.
		if seg.Entries == 0 || !p.Less(seg.End) {
			seg.End = p.Next()
			seg.LastCommit = at
			seg.EndTerm, seg.EndHasTerm = 0, e.T != nil
			if e.T != nil {
				seg.EndTerm = *e.T
			}
		}
		seg.Entries++
		buf.Write(raw)
		if buf.Len() >= o.MaxSegment {
			return flush()
		}
		return nil
	}
	// check is verify's test of the cursor's first entry.
	check := func(raw bson.Raw) error {
		var e struct {
			TS bson.Timestamp `bson:"ts"`
			T  *int64         `bson:"t"`
		}
		if err := bson.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("oplog entry: %w", err)
		}
		if (Pos{T: e.TS.T, I: e.TS.I}) != lastOf(start) || (st.hasTerm && e.T != nil && *e.T != st.term) {
			return errCheck
		}
		return nil
	}
	// due flushes the segment when it is due (flushAt).
	due := func() error {
		if seg.Entries > 0 && !time.Now().Before(flushAt(dueAt, st.sent, caughtUp, spacing)) {
			return flush()
		}
		return nil
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		// The timer runs only while entries wait to be sent (Go 1.23+
		// timers: Reset leaves no stale tick in the channel).
		var tick <-chan time.Time
		if seg.Entries > 0 {
			timer.Reset(max(time.Until(flushAt(dueAt, st.sent, caughtUp, spacing)), 0))
			tick = timer.C
		} else {
			timer.Stop()
		}
		select {
		case r, ok := <-reads:
			if !ok {
				// The reader ends without saying how the cursor ended
				// only when ctx ends.
				return start, ctx.Err()
			}
			caughtUp = false // until the read's last entry is in
			if traceRead != nil {
				traceRead(r.entries, time.Now())
			}
			for _, raw := range r.entries {
				if verify {
					if err := check(raw); err != nil {
						return start, err
					}
					verify = false
				}
				if err := add(raw); err != nil {
					return start, err
				}
				// Under a steady write load the reader always has more:
				// the interval is checked after every entry too.
				if err := due(); err != nil {
					return start, err
				}
			}
			if r.caughtUp {
				caughtUp = true
				if err := due(); err != nil {
					return start, err
				}
			}
			switch {
			case r.err != nil:
				if ctx.Err() != nil {
					return start, ctx.Err()
				}
				if err := flush(); err != nil {
					return start, err
				}
				return start, explain(fmt.Errorf("tail the oplog: %w", r.err))
			case r.dead && verify:
				return start, errCheck // it showed nothing, not even the last entry sent
			case r.dead:
				return start, flush()
			}
		case <-tick:
			if err := due(); err != nil {
				return start, err
			}
		case <-o.Stop:
			// Send every entry written before the stop. A tailable cursor
			// may show the newest entries only on a later batch, or die
			// when it runs dry: read them with a plain query instead.
			if err := flush(); err != nil {
				return start, err
			}
			stopReader()
			rc, err := rest(ctx, start)
			if err != nil {
				return start, err
			}
			defer rc.Close(context.WithoutCancel(ctx))
			for rc.Next(ctx) {
				if err := add(rc.raw()); err != nil {
					return start, err
				}
			}
			if err := rc.Err(); err != nil {
				return start, explain(fmt.Errorf("read the oplog: %w", err))
			}
			if err := flush(); err != nil {
				return start, err
			}
			return start, errStopped
		case <-ctx.Done():
			return start, ctx.Err()
		}
	}
}

// ErrNoMoreLog is returned by a ReplayFetch when no archived segment holds
// log after the position asked for.
var ErrNoMoreLog = errors.New("no more archived oplog")

// ReplayFetch returns the archived segment holding log just after after:
// its boundaries and its bytes.
type ReplayFetch func(ctx context.Context, after Pos) (start, end Pos, r io.ReadCloser, err error)

// ReplayOptions say what Replay applies.
type ReplayOptions struct {
	From Pos // boundary the restored copy stands at
	// LogStart, when before From, is where the backup's own log begins
	// (its oplog window's first entry). Replay then reads archived oplog
	// from there, applies nothing before From, and keeps of those entries
	// the transactions still open at From (Applier.Collect), so that one
	// that began before From and commits after it is applied whole at its
	// commit. Zero: From.
	LogStart  Pos
	StopTime  time.Time // apply entries written before it (at it when Inclusive)
	StopPos   Pos       // apply entries before this ts (and it when Inclusive)
	Inclusive bool
	// Databases limits replay to the dump's databases; empty: all but
	// admin, local and config.
	Databases []string
	Rename    func(db string) string
	// Until, when set, is asked after each fetch where the history of the
	// segment just fetched ends: the position from which a rollback
	// replaced it (where the next epoch took over), zero when it goes on.
	// Entries at or after it are not applied, and replay goes on from it.
	Until func(ctx context.Context) (Pos, error)
}

// Replayed is where replay stopped.
type Replayed struct {
	Pos      Pos       // boundary after the last entry applied
	Time     time.Time // wall time of the last entry applied
	Entries  int
	Segments int
	// Pending is the number of transactions begun and not committed by
	// the target (a prepared one not yet committed, a large one whose last
	// entry is past it): none of their writes is applied.
	Pending int
	// Carried is the number of transactions open at From that the log
	// read from LogStart held (applied at their commit, or pending).
	Carried int
	// ReadFrom is where the log read begins: LogStart, or a later point
	// when the archive does not reach back that far (transactions that
	// began before ReadFrom and commit after From are refused).
	ReadFrom Pos
}

// Replay applies archived oplog from o.From up to the target.
func Replay(ctx context.Context, uri URI, o ReplayOptions, fetch ReplayFetch) (*Replayed, error) {
	c, err := Connect(ctx, uri)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	only := map[string]bool{}
	for _, d := range o.Databases {
		only[d] = true
	}
	a := &Applier{Client: c.Client, Rename: o.Rename, Only: only}
	// The log is read from LogStart (when before From); entries before
	// From are only collected (transactions open at From).
	scan := o.From
	if !o.LogStart.IsZero() && o.LogStart.Less(o.From) {
		scan = o.LogStart
	}
	res := &Replayed{Pos: o.From, ReadFrom: scan}
	crossed := !scan.Less(o.From)
	cross := func() {
		if !crossed {
			crossed = true
			res.Carried = a.Pending()
		}
	}
	after := scan
	for {
		start, end, r, err := fetch(ctx, after)
		if errors.Is(err, ErrNoMoreLog) {
			break
		}
		if err != nil {
			return nil, err
		}
		if (res.Segments == 0 || after.Less(o.From)) && o.From.Less(start) {
			r.Close()
			return nil, fmt.Errorf("archived oplog starts at %s, after the copy's position %s: log between them is missing", start.Text(), o.From.Text())
		}
		if after.Less(start) && after.Less(o.From) {
			// The archive does not hold all of the log before From:
			// transactions begun in the part it lacks cannot be completed.
			res.ReadFrom = start
		}
		var until Pos
		if o.Until != nil {
			if until, err = o.Until(ctx); err != nil {
				r.Close()
				return nil, err
			}
			if !until.IsZero() && until.Less(after) {
				r.Close()
				return nil, fmt.Errorf("the copy stands at %s, past %s where a rollback replaced the archived history: it holds writes the rollback undid; restore from a backup taken after the rollback", after.Text(), until.Text())
			}
		}
		res.Segments++
		stop := false
		err = ReadDocs(r, func(raw bson.Raw) error {
			var e struct {
				TS   bson.Timestamp `bson:"ts"`
				Wall time.Time      `bson:"wall"`
			}
			if err := bson.Unmarshal(raw, &e); err != nil {
				return err
			}
			p := Pos{T: e.TS.T, I: e.TS.I}
			if p.Less(after) {
				return nil // read already
			}
			if !until.IsZero() && !p.Less(until) {
				return io.EOF // a history a rollback replaced
			}
			if p.Less(o.From) {
				return a.Collect(raw) // in the copy already
			}
			cross()
			at := e.Wall
			if at.IsZero() {
				at = time.Unix(int64(e.TS.T), 0)
			}
			switch {
			case !o.StopTime.IsZero() && (at.After(o.StopTime) || (!o.Inclusive && !at.Before(o.StopTime))):
				stop = true
			case !o.StopPos.IsZero() && (o.StopPos.Less(p) || (!o.Inclusive && p == o.StopPos)):
				stop = true
			}
			if stop {
				return io.EOF
			}
			if err := a.Apply(ctx, raw); err != nil {
				return err
			}
			if !p.Less(res.Pos) {
				res.Pos, res.Time = p.Next(), at
			}
			res.Entries++
			return nil
		})
		r.Close()
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if stop {
			break
		}
		after = end
		if !until.IsZero() && !end.Less(until) {
			after = until // the next epoch's log starts here
		}
		if !after.Less(o.From) {
			cross()
			res.Pos = after
		}
	}
	cross()
	res.Pending = a.Pending()
	return res, nil
}
