package mgengine

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestFlushAt: a segment goes out when due, or earlier when the reader
// has caught up and the spacing since the last segment has passed; a
// reader that is behind waits for the due time.
func TestFlushAt(t *testing.T) {
	now := time.Now()
	due := now.Add(time.Second)
	const spacing = 250 * time.Millisecond
	for _, c := range []struct {
		name     string
		lastSent time.Time
		caughtUp bool
		want     time.Time
	}{
		{"behind: the due time", now.Add(-time.Hour), false, due},
		{"caught up, the last segment long ago: at once", now.Add(-time.Hour), true, now.Add(-time.Hour + spacing)},
		{"caught up, the last segment just sent: one spacing after it", now, true, now.Add(spacing)},
		{"caught up, spacing later than the due time: the due time", now.Add(900 * time.Millisecond), true, due},
	} {
		if got := flushAt(due, c.lastSent, c.caughtUp, spacing); !got.Equal(c.want) {
			t.Errorf("%s: %v after now, want %v", c.name, got.Sub(now), c.want.Sub(now))
		}
	}
	if got := catchUpSpacing(time.Second); got != spacing {
		t.Errorf("spacing of a 1 s interval: %v, want %v", got, spacing)
	}
}

// loadCursor is a cursor double under a steady write load, as an
// awaitData cursor on MongoDB sees it: each getMore waits every, then
// answers with the one entry written meanwhile (its wall time now), until
// n entries; then a read blocks until its context ends.
type loadCursor struct {
	every time.Duration
	n     uint32

	mu      sync.Mutex
	i       uint32
	current bson.Raw
	err     error
	closed  bool
}

func (c *loadCursor) Next(ctx context.Context) bool { return c.TryNext(ctx) }

func (c *loadCursor) TryNext(ctx context.Context) bool {
	c.mu.Lock()
	more := c.i < c.n
	c.mu.Unlock()
	wait := c.every
	if !more {
		wait = time.Hour
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
	c.i++
	b, err := bson.Marshal(bson.D{{Key: "ts", Value: bson.Timestamp{T: 1700000000, I: c.i}}, {Key: "t", Value: int64(1)},
		{Key: "wall", Value: time.Now()}, {Key: "op", Value: "i"}, {Key: "ns", Value: "app.c"}, {Key: "o", Value: bson.D{{Key: "_id", Value: int32(c.i)}}}})
	if err != nil {
		c.err = err
		return false
	}
	c.current = b
	return true
}

func (c *loadCursor) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *loadCursor) ID() int64                 { return 42 }
func (c *loadCursor) RemainingBatchLength() int { return 0 }
func (c *loadCursor) raw() bson.Raw             { return c.current }
func (c *loadCursor) Close(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

// TestTailCaughtUpUnderLoad: under a steady load, each getMore bringing
// what was just written, segments go out every catchUpSpacing (a quarter
// of the interval), not every interval: each segment's first entry is
// sent well within the interval of its writing, and no more segments are
// cut than the spacing allows. The entries stay contiguous, each once.
func TestTailCaughtUpUnderLoad(t *testing.T) {
	const interval = time.Second
	const every = 20 * time.Millisecond
	const n = 100 // 2 s of load
	cur := &loadCursor{every: every, n: n}
	var mu sync.Mutex
	var segs []Segment
	var sentAt []time.Time
	send := func(_ context.Context, s Segment) error {
		mu.Lock()
		defer mu.Unlock()
		segs = append(segs, s)
		sentAt = append(sentAt, time.Now())
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := Pos{T: 1700000000, I: 1}
	done := make(chan error, 1)
	began := time.Now()
	go func() {
		_, err := tailCursor(ctx, cur, noRest, identity, start, false, ArchiveOptions{FlushInterval: interval, MaxSegment: 16 << 20}, &archState{epoch: 1}, send)
		done <- err
	}()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		last := len(segs) > 0 && segs[len(segs)-1].End == (Pos{T: 1700000000, I: n + 1})
		mu.Unlock()
		if last {
			break
		}
	}
	cancel()
	<-done
	took := time.Since(began)
	mu.Lock()
	defer mu.Unlock()
	at, entries := start, 0
	var worst time.Duration
	for i, s := range segs {
		if s.Start != at {
			t.Fatalf("segment %d starts at %s, the one before ended at %s", i, s.Start.Text(), at.Text())
		}
		at, entries = s.End, entries+s.Entries
		worst = max(worst, sentAt[i].Sub(s.FirstCommit))
	}
	if entries != n || at != (Pos{T: 1700000000, I: n + 1}) {
		t.Fatalf("%d entries sent up to %s, want %d up to increment %d", entries, at.Text(), n, n+1)
	}
	spacing := catchUpSpacing(interval)
	t.Logf("%d entries in %d segments over %v; oldest first entry at its send: %v", n, len(segs), took.Round(time.Millisecond), worst.Round(time.Millisecond))
	if most := int(took/spacing) + 1; len(segs) > most {
		t.Errorf("%d segments in %v: more than one per %v (%d)", len(segs), took, spacing, most)
	}
	if worst >= interval*3/4 {
		t.Errorf("a segment's first entry waited %v to be sent under a steady load; want about the spacing %v, well under the interval %v", worst, spacing, interval)
	}
	if len(segs) < 4 {
		t.Errorf("%d segments for %v of load: want one per spacing (%v), not one per interval", len(segs), took, spacing)
	}
}
