package mgengine

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// slowCursor is a cursor double whose getMore (the read after a batch is
// used up) takes getMore, as on a slow server. Its batches come in order; after the last, a read blocks until
// its context ends (a tailable cursor on a quiet oplog), or the cursor
// fails with failAfter or dies when dieAfter.
type slowCursor struct {
	getMore   time.Duration
	failAfter error
	dieAfter  bool

	mu        sync.Mutex
	batches   [][]bson.Raw
	cur       []bson.Raw
	current   bson.Raw
	err       error
	id        int64
	reading   bool // inside TryNext/Next
	readStart time.Time
	closed    bool
	closedIn  bool // Close was called while a read ran
}

func newSlowCursor(getMore time.Duration, batches ...[]bson.Raw) *slowCursor {
	return &slowCursor{getMore: getMore, batches: batches, id: 42}
}

func (c *slowCursor) Next(ctx context.Context) bool { return c.TryNext(ctx) }

func (c *slowCursor) TryNext(ctx context.Context) bool {
	c.mu.Lock()
	c.reading, c.readStart = true, time.Now()
	defer func() { c.mu.Lock(); c.reading = false; c.mu.Unlock() }()
	if c.err != nil || c.id == 0 {
		c.mu.Unlock()
		return false
	}
	if len(c.cur) > 0 {
		c.current, c.cur = c.cur[0], c.cur[1:]
		c.mu.Unlock()
		return true
	}
	// A getMore: a round trip that takes its time.
	more := len(c.batches) > 0
	c.mu.Unlock()
	wait := c.getMore
	if !more && c.failAfter == nil && !c.dieAfter {
		wait = time.Hour // nothing more is written
	}
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		c.mu.Lock()
		c.err = ctx.Err()
		c.mu.Unlock()
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case more:
		c.cur, c.batches = c.batches[0], c.batches[1:]
		c.current, c.cur = c.cur[0], c.cur[1:]
		return true
	case c.failAfter != nil:
		c.err = c.failAfter
	case c.dieAfter:
		c.id = 0
	}
	return false
}

func (c *slowCursor) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *slowCursor) ID() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id
}

func (c *slowCursor) RemainingBatchLength() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur)
}

func (c *slowCursor) Close(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.closedIn = c.closedIn || c.reading
	return nil
}

func (c *slowCursor) raw() bson.Raw { return c.current }

// blockedFor says how long the cursor has been inside a read.
func (c *slowCursor) blockedFor() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.reading {
		return 0
	}
	return time.Since(c.readStart)
}

func (c *slowCursor) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed || c.reading || c.closedIn {
		t.Errorf("after tail returned: cursor closed %v, a read still running %v, closed during a read %v: the reader outlived tail", c.closed, c.reading, c.closedIn)
	}
}

// entries returns oplog entries with ts (1700000000, from..to), written
// now by their wall time.
func entries(t *testing.T, from, to uint32) []bson.Raw {
	var out []bson.Raw
	for i := from; i <= to; i++ {
		b, err := bson.Marshal(bson.D{{Key: "ts", Value: bson.Timestamp{T: 1700000000, I: i}}, {Key: "t", Value: int64(1)},
			{Key: "wall", Value: time.Now()},
			{Key: "op", Value: "i"}, {Key: "ns", Value: "app.c"}, {Key: "o", Value: bson.D{{Key: "_id", Value: int32(i)}}}})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

type sentSeg struct {
	Segment
	at      time.Time
	blocked time.Duration // how long the cursor's read had been blocked when it was sent
	ts      []uint32
}

// recorder collects what tailCursor sends.
type recorder struct {
	mu   sync.Mutex
	segs []sentSeg
	cur  *slowCursor
}

func (r *recorder) send(_ context.Context, s Segment) error {
	var ts []uint32
	if err := ReadDocs(bytes.NewReader(s.Data), func(raw bson.Raw) error {
		_, i := raw.Lookup("ts").Timestamp()
		ts = append(ts, i)
		return nil
	}); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.segs = append(r.segs, sentSeg{Segment: s, at: time.Now(), blocked: r.cur.blockedFor(), ts: ts})
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.segs)
}

// contiguous checks that the segments hold the increments want in order,
// each once, and that each starts where the one before ended.
func (r *recorder) contiguous(t *testing.T, start Pos, want []uint32) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var got []uint32
	at := start
	for _, s := range r.segs {
		if s.Start != at {
			t.Errorf("a segment starts at %s, the one before ended at %s", s.Start.Text(), at.Text())
		}
		if s.Entries != len(s.ts) {
			t.Errorf("segment at %s says %d entries, holds %d", s.Start.Text(), s.Entries, len(s.ts))
		}
		got = append(got, s.ts...)
		at = s.End
	}
	if len(got) != len(want) {
		t.Fatalf("sent increments %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("sent increments %v, want %v", got, want)
		}
	}
	if last := want[len(want)-1]; at != (Pos{T: 1700000000, I: last + 1}) {
		t.Errorf("the last segment ends at %s, want one past increment %d", at.Text(), last)
	}
}

func seq(from, to uint32) []uint32 {
	var out []uint32
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func noRest(context.Context, Pos) (cursor, error) { return nil, errors.New("no plain query here") }

func identity(err error) error { return err }

// TestTailFlushWhileReadBlocks: entries received before a getMore that
// blocks (for far longer than the flush interval) are sent when due
// (dueTime: at most one flush interval after the first of them arrived),
// while the read still blocks;
// what the slow read brings afterwards follows in order, each segment
// starting where the one before ended; cancelling ends tail, and the
// reader with it, while a read blocks.
func TestTailFlushWhileReadBlocks(t *testing.T) {
	const interval = 200 * time.Millisecond
	const getMore = 3 * time.Second
	cur := newSlowCursor(getMore, entries(t, 1, 3), entries(t, 4, 5))
	cur.cur, cur.batches = cur.batches[0], cur.batches[1:] // the first batch comes with the query
	rec := &recorder{cur: cur}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := Pos{T: 1700000000, I: 1}
	st := &archState{epoch: 1}
	began := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := tailCursor(ctx, cur, noRest, identity, start, false, ArchiveOptions{FlushInterval: interval, MaxSegment: 16 << 20}, st, rec.send)
		done <- err
	}()
	// The second batch takes getMore to arrive; the last read blocks
	// until cancelled.
	for deadline := time.Now().Add(getMore + 20*time.Second); rec.count() < 2 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("tail returned %v, want context.Canceled", err)
	}
	cur.check(t)
	rec.contiguous(t, start, seq(1, 5))
	first := rec.segs[0]
	t.Logf("first segment sent %v after tail began, its getMore blocked for %v then", first.at.Sub(began).Round(time.Millisecond), first.blocked.Round(time.Millisecond))
	if first.blocked == 0 {
		t.Fatalf("the first segment was sent after the slow getMore returned (%v after tail began), not while it blocked", first.at.Sub(began))
	}
	// On schedule: one interval after the entries came in, not after the
	// 3 s read (1 s of room for a loaded machine).
	if d := first.at.Sub(began); d > interval+time.Second {
		t.Errorf("first segment sent %v after its entries arrived, flush interval %v", d, interval)
	}
	if st.term != 1 || !st.hasTerm {
		t.Errorf("resume state after the sends: term %d (known %v), want 1", st.term, st.hasTerm)
	}
}

// TestTailStopWhileReadBlocks: Stop while a getMore blocks sends what was
// received, then what a plain query from the end sent finds (the
// entries the blocked read would have brought), each once, and ends the
// reader before tail returns.
func TestTailStopWhileReadBlocks(t *testing.T) {
	cur := newSlowCursor(time.Hour)
	cur.cur = entries(t, 1, 3)
	rec := &recorder{cur: cur}
	var restFrom Pos
	rest := func(_ context.Context, from Pos) (cursor, error) {
		restFrom = from
		// The plain query finds from its boundary on (and, as a
		// $gte query may, an entry already sent: skipped).
		c := newSlowCursor(0)
		c.cur = entries(t, from.I-1, 6)
		c.dieAfter = true
		return c, nil
	}
	stop := make(chan struct{})
	start := Pos{T: 1700000000, I: 1}
	done := make(chan error, 1)
	go func() {
		_, err := tailCursor(context.Background(), cur, rest, identity, start, false, ArchiveOptions{FlushInterval: time.Hour, MaxSegment: 16 << 20, Stop: stop}, &archState{epoch: 1}, rec.send)
		done <- err
	}()
	for deadline := time.Now().Add(20 * time.Second); cur.blockedFor() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	select {
	case err := <-done:
		if !errors.Is(err, errStopped) {
			t.Fatalf("tail returned %v, want errStopped", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("tail did not return after Stop while a read blocked")
	}
	cur.check(t)
	if restFrom != (Pos{T: 1700000000, I: 4}) {
		t.Errorf("the plain query read from %s, want the end of what was sent", restFrom.Text())
	}
	rec.contiguous(t, start, seq(1, 6))
}

// TestTailCursorEnds: a cursor that fails sends what it holds and
// returns the error; one the server closes sends what it holds and
// returns where it ended, for the next cursor.
func TestTailCursorEnds(t *testing.T) {
	start := Pos{T: 1700000000, I: 1}
	for _, c := range []struct {
		name string
		fail error
	}{{"failed", errors.New("CappedPositionLost")}, {"closed by the server", nil}} {
		t.Run(c.name, func(t *testing.T) {
			cur := newSlowCursor(10*time.Millisecond, entries(t, 3, 4))
			cur.cur = entries(t, 1, 2)
			cur.failAfter, cur.dieAfter = c.fail, c.fail == nil
			rec := &recorder{cur: cur}
			next, err := tailCursor(context.Background(), cur, noRest, identity, start, false, ArchiveOptions{FlushInterval: time.Hour, MaxSegment: 16 << 20}, &archState{epoch: 1}, rec.send)
			if c.fail != nil && (err == nil || !errors.Is(err, c.fail)) {
				t.Fatalf("tail returned %v, want the cursor's error", err)
			}
			if c.fail == nil && err != nil {
				t.Fatal(err)
			}
			cur.check(t)
			rec.contiguous(t, start, seq(1, 4))
			if next != (Pos{T: 1700000000, I: 5}) {
				t.Errorf("tail returned boundary %s, want one past the last entry", next.Text())
			}
		})
	}
}

// TestTailSendFails: an error of send ends tail with that error, and the
// reader with it.
func TestTailSendFails(t *testing.T) {
	cur := newSlowCursor(time.Hour)
	cur.cur = entries(t, 1, 2)
	boom := errors.New("repository unreachable")
	_, err := tailCursor(context.Background(), cur, noRest, identity, Pos{T: 1700000000, I: 1}, false,
		ArchiveOptions{FlushInterval: 50 * time.Millisecond, MaxSegment: 16 << 20}, &archState{epoch: 1},
		func(context.Context, Segment) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("tail returned %v, want the send error", err)
	}
	cur.check(t)
}

// TestDueTime: a segment is due when its first entry is one interval old
// by the server's clock, at least interval/10 and at most one interval
// after it arrived.
func TestDueTime(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const iv = time.Second
	for _, c := range []struct {
		name    string
		written time.Time
		want    time.Duration // after arrival
	}{
		{"arrived as written", now, iv},
		{"arrived 300 ms late", now.Add(-300 * time.Millisecond), 700 * time.Millisecond},
		{"arrived 2 s late (a slow getMore)", now.Add(-2 * time.Second), iv / 10},
		{"server clock an hour behind", now.Add(-time.Hour), iv / 10},
		{"server clock an hour ahead", now.Add(time.Hour), iv},
	} {
		if got := dueTime(now, c.written, iv).Sub(now); got != c.want {
			t.Errorf("%s: due %v after arrival, want %v", c.name, got, c.want)
		}
	}
}

// TestTailLateEntriesGoAtOnce: entries that arrive already a flush
// interval old by their wall time (written before a slow getMore
// returned them) are sent interval/10 after they arrive, not one more
// interval later.
func TestTailLateEntriesGoAtOnce(t *testing.T) {
	const interval = time.Second
	late := entries(t, 1, 3)
	for i, e := range late {
		var d bson.D
		if err := bson.Unmarshal(e, &d); err != nil {
			t.Fatal(err)
		}
		for j := range d {
			if d[j].Key == "wall" {
				d[j].Value = time.Now().Add(-3 * time.Second)
			}
		}
		b, err := bson.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		late[i] = b
	}
	cur := newSlowCursor(time.Hour)
	cur.cur = late
	rec := &recorder{cur: cur}
	ctx, cancel := context.WithCancel(context.Background())
	began := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := tailCursor(ctx, cur, noRest, identity, Pos{T: 1700000000, I: 1}, false, ArchiveOptions{FlushInterval: interval, MaxSegment: 16 << 20}, &archState{epoch: 1}, rec.send)
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); rec.count() < 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	cur.check(t)
	rec.contiguous(t, Pos{T: 1700000000, I: 1}, seq(1, 3))
	if d := rec.segs[0].at.Sub(began); d >= interval {
		t.Errorf("late entries sent %v after they arrived, flush interval %v: want interval/10", d, interval)
	} else {
		t.Logf("late entries sent %v after they arrived", d.Round(time.Millisecond))
	}
}

// TestTailVerify: a cursor reopened after one died starts at the last
// entry sent; when it shows that entry first (with the term sent), it is
// not sent again and what follows is; when it shows another entry, the
// same ts with another term (a rollback), or nothing, tail returns
// errCheck before sending anything, so that the checks of resume run.
func TestTailVerify(t *testing.T) {
	start := Pos{T: 1700000000, I: 3} // entries 1 and 2 were sent
	withTerm := func(raws []bson.Raw, term int64) []bson.Raw {
		var out []bson.Raw
		for _, r := range raws {
			var d bson.D
			if err := bson.Unmarshal(r, &d); err != nil {
				t.Fatal(err)
			}
			for i := range d {
				if d[i].Key == "t" {
					d[i].Value = term
				}
			}
			b, err := bson.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
		return out
	}
	for _, c := range []struct {
		name    string
		first   []bson.Raw
		dead    bool
		wantErr bool
		sent    []uint32
	}{
		{"the last entry sent comes first", entries(t, 2, 5), true, false, seq(3, 5)},
		{"it is gone: the next entry comes first", entries(t, 3, 5), true, true, nil},
		{"the same ts with another term", withTerm(entries(t, 2, 5), 2), true, true, nil},
		{"nothing", nil, true, true, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			cur := newSlowCursor(10 * time.Millisecond)
			cur.cur, cur.dieAfter = c.first, c.dead
			rec := &recorder{cur: cur}
			st := &archState{epoch: 1, term: 1, hasTerm: true}
			next, err := tailCursor(context.Background(), cur, noRest, identity, start, true, ArchiveOptions{FlushInterval: time.Hour, MaxSegment: 16 << 20}, st, rec.send)
			cur.check(t)
			if c.wantErr {
				if !errors.Is(err, errCheck) || next != start || rec.count() != 0 {
					t.Fatalf("tail returned %s, %v after sending %d segments; want errCheck at the start, nothing sent", next.Text(), err, rec.count())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rec.contiguous(t, start, c.sent)
		})
	}
}

// TestTailEntryBehindTheOneBefore: an entry whose ts is behind the one
// before it in the oplog's order (FerretDB's emulated oplog, after a write
// into local.oplog.rs ahead of its clock) leaves its segment's end one
// past the greatest ts sent, so the next segment, which starts there,
// never holds that greater entry again (replay would apply it twice).
func TestTailEntryBehindTheOneBefore(t *testing.T) {
	start := Pos{T: 1700000000, I: 1}
	all := entries(t, 1, 7)
	// The oplog's order: 1 2 5 3, then 6 7; a segment is cut after 4 entries.
	first := []bson.Raw{all[0], all[1], all[4], all[2]}
	cur := newSlowCursor(10*time.Millisecond, []bson.Raw{all[5], all[6]})
	cur.cur = first
	cur.dieAfter = true
	rec := &recorder{cur: cur}
	size := 0
	for _, raw := range first {
		size += len(raw)
	}
	next, err := tailCursor(context.Background(), cur, noRest, identity, start, false, ArchiveOptions{FlushInterval: time.Hour, MaxSegment: size}, &archState{epoch: 1}, rec.send)
	if err != nil {
		t.Fatal(err)
	}
	rec.contiguous(t, start, []uint32{1, 2, 5, 3, 6, 7})
	if len(rec.segs) < 2 {
		t.Fatalf("%d segments sent, want the first cut after 4 entries", len(rec.segs))
	}
	if end := rec.segs[0].End; end != (Pos{T: 1700000000, I: 6}) {
		t.Errorf("the first segment (increments %v) ends at %s, want one past its greatest, increment 5", rec.segs[0].ts, end.Text())
	}
	if next != (Pos{T: 1700000000, I: 8}) {
		t.Errorf("tail returned boundary %s, want one past the last entry", next.Text())
	}
}
