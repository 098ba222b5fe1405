package mgengine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// Transaction entries in the shapes MongoDB 4.2+ logs them (its
// documented oplog format; mongo-tools' transaction tests use the same):
// every entry on admin.$cmd with lsid, txnNumber and prevOpTime ({ts, t};
// Timestamp(0, 0) and t -1 on a transaction's first entry).
type txnLog struct {
	lsid bson.D
	num  int64
	prev bson.Timestamp
}

func newTxn(session byte, num int64) *txnLog {
	return &txnLog{lsid: bson.D{{Key: "id", Value: bson.Binary{Subtype: 4, Data: bytes.Repeat([]byte{session}, 16)}}}, num: num}
}

func txts(i uint32) bson.Timestamp { return bson.Timestamp{T: 1700000000, I: i} }

// entry is the transaction's next entry at ts(i), with command o.
func (x *txnLog) entry(i uint32, o bson.D) bson.D {
	prevT := int64(-1)
	if x.prev.T != 0 {
		prevT = 1
	}
	e := bson.D{
		{Key: "ts", Value: txts(i)}, {Key: "t", Value: int64(1)}, {Key: "wall", Value: time.Unix(1700000000, int64(i)*int64(time.Millisecond))},
		{Key: "op", Value: "c"}, {Key: "ns", Value: "admin.$cmd"}, {Key: "o", Value: o},
		{Key: "lsid", Value: x.lsid}, {Key: "txnNumber", Value: x.num},
		{Key: "prevOpTime", Value: bson.D{{Key: "ts", Value: x.prev}, {Key: "t", Value: prevT}}},
	}
	x.prev = txts(i)
	return e
}

// ops is an applyOps array inserting the given _ids into src.t.
func ops(ids ...int) bson.A {
	var a bson.A
	for _, id := range ids {
		a = append(a, bson.D{{Key: "op", Value: "i"}, {Key: "ns", Value: "src.t"}, {Key: "ui", Value: bson.Binary{Subtype: 4, Data: []byte("0123456789abcdef")}},
			{Key: "o", Value: bson.D{{Key: "_id", Value: int32(id)}}}})
	}
	return a
}

func (x *txnLog) partial(i uint32, ids ...int) bson.D {
	return x.entry(i, bson.D{{Key: "applyOps", Value: ops(ids...)}, {Key: "partialTxn", Value: true}})
}

func (x *txnLog) last(i uint32, count int, ids ...int) bson.D {
	return x.entry(i, bson.D{{Key: "applyOps", Value: ops(ids...)}, {Key: "count", Value: int64(count)}})
}

func (x *txnLog) prepare(i uint32, ids ...int) bson.D {
	return x.entry(i, bson.D{{Key: "applyOps", Value: ops(ids...)}, {Key: "prepare", Value: true}})
}

func (x *txnLog) commit(i, at uint32) bson.D {
	return x.entry(i, bson.D{{Key: "commitTransaction", Value: int32(1)}, {Key: "commitTimestamp", Value: txts(at)}})
}

func (x *txnLog) abort(i uint32) bson.D {
	return x.entry(i, bson.D{{Key: "abortTransaction", Value: int32(1)}})
}

func plain(i uint32, id int) bson.D {
	return bson.D{{Key: "ts", Value: txts(i)}, {Key: "t", Value: int64(1)}, {Key: "wall", Value: time.Unix(1700000000, int64(i)*int64(time.Millisecond))},
		{Key: "op", Value: "i"}, {Key: "ns", Value: "src.t"}, {Key: "o", Value: bson.D{{Key: "_id", Value: int32(id)}}}}
}

// txnLogEntries is one oplog holding every kind of transaction, with the
// _ids each leaves in src.t once applied to the end.
func txnLogEntries() []bson.D {
	large, prepared, aborted, largePrepared, largeAborted, one := newTxn(1, 1), newTxn(2, 7), newTxn(3, 1), newTxn(4, 2), newTxn(5, 1), newTxn(6, 3)
	return []bson.D{
		plain(1, 1),
		large.partial(2, 10, 11), // a large transaction: two partial entries, then its last
		prepared.prepare(3, 20, 21),
		large.partial(4, 12),
		aborted.prepare(5, 30),
		plain(6, 2),
		large.last(7, 5, 13, 14), // large commits here: 10..14
		largePrepared.partial(8, 40),
		largePrepared.prepare(9, 41),
		largeAborted.partial(10, 50),
		largeAborted.prepare(11, 51),
		aborted.abort(12),            // 30 never applied
		prepared.commit(13, 12),      // prepared commits here: 20, 21
		one.last(14, 1, 60),          // a transaction of one entry
		largeAborted.abort(15),       // 50, 51 never applied
		plain(16, 3),                 //
		largePrepared.commit(17, 16), // 40, 41
	}
}

func marshalAll(t *testing.T, es []bson.D) []bson.Raw {
	t.Helper()
	var out []bson.Raw
	for _, e := range es {
		b, err := bson.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestApplyTransactions: the applier holds a transaction's entries until
// it commits, applies them all there, drops an aborted one, and reports
// the ones still open; after each entry, src.t holds exactly the
// transactions committed so far. Applied twice: idempotent.
func TestApplyTransactions(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	db := srv.Prefix + "txn"
	ids := func() string {
		cur, err := cl.Database(db).Collection("t").Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			t.Fatal(err)
		}
		var docs []struct {
			ID int32 `bson:"_id"`
		}
		if err := cur.All(ctx, &docs); err != nil {
			t.Fatal(err)
		}
		var out []int32
		for _, d := range docs {
			out = append(out, d.ID)
		}
		return fmt.Sprint(out)
	}
	// After entry i (1-based ts increment), what src.t holds and how many
	// transactions are open.
	want := map[uint32]struct {
		ids     string
		pending int
	}{
		1:  {"[1]", 0},
		4:  {"[1]", 2},
		6:  {"[1 2]", 3},
		7:  {"[1 2 10 11 12 13 14]", 2},
		11: {"[1 2 10 11 12 13 14]", 4},
		12: {"[1 2 10 11 12 13 14]", 3},
		13: {"[1 2 10 11 12 13 14 20 21]", 2},
		14: {"[1 2 10 11 12 13 14 20 21 60]", 2},
		15: {"[1 2 10 11 12 13 14 20 21 60]", 1},
		17: {"[1 2 3 10 11 12 13 14 20 21 40 41 60]", 0},
	}
	for pass := range 2 {
		a := &mgengine.Applier{Client: cl, Rename: func(string) string { return db }, Only: map[string]bool{"src": true}}
		for i, raw := range marshalAll(t, txnLogEntries()) {
			if err := a.Apply(ctx, raw); err != nil {
				t.Fatalf("pass %d, entry %d: %v", pass+1, i+1, err)
			}
			w, ok := want[uint32(i+1)]
			if !ok || pass == 1 {
				continue
			}
			if got := ids(); got != w.ids || a.Pending() != w.pending {
				t.Errorf("after entry %d: src.t %s with %d transactions open, want %s with %d", i+1, got, a.Pending(), w.ids, w.pending)
			}
		}
		if got := ids(); got != want[17].ids {
			t.Errorf("pass %d: src.t %s, want %s", pass+1, got, want[17].ids)
		}
	}
}

// TestApplyTransactionStartMissing: a transaction whose first entries
// are not in the log applied (they precede the backup's position) is
// refused at its commit, not applied in part; at the commit of a prepared
// one alike.
func TestApplyTransactionStartMissing(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	db := srv.Prefix + "txnmiss"
	for _, c := range []struct {
		name    string
		entries func() []bson.D
		partial int // documents applied with PartialStart
	}{
		{"large, only its last entry", func() []bson.D {
			x := newTxn(1, 1)
			x.partial(1, 1)
			return []bson.D{x.last(2, 2, 2)}
		}, 1},
		{"large, its second part and last", func() []bson.D {
			x := newTxn(1, 1)
			x.partial(1, 1)
			return []bson.D{x.partial(2, 2), x.last(3, 3, 3)}
		}, 2},
		{"prepared, only its commit", func() []bson.D {
			x := newTxn(1, 1)
			x.prepare(1, 1)
			return []bson.D{x.commit(2, 1)}
		}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := &mgengine.Applier{Client: cl, Rename: func(string) string { return db }, Only: map[string]bool{"src": true}}
			var err error
			for _, raw := range marshalAll(t, c.entries()) {
				if err = a.Apply(ctx, raw); err != nil {
					break
				}
			}
			if !errors.Is(err, mgengine.ErrTxnStartMissing) {
				t.Fatalf("applied a transaction without its first entries: %v", err)
			}
			t.Log(err)
			if n, _ := cl.Database(db).Collection("t").CountDocuments(ctx, bson.D{}); n != 0 {
				t.Errorf("%d documents of the transaction applied", n)
			}
			// PartialStart (a restore's own oplog window) applies what it
			// has instead, and counts it.
			p := &mgengine.Applier{Client: cl, Rename: func(string) string { return db + "p" }, Only: map[string]bool{"src": true}, PartialStart: true}
			es := c.entries()
			for _, raw := range marshalAll(t, es) {
				if err := p.Apply(ctx, raw); err != nil {
					t.Fatal(err)
				}
			}
			n, _ := cl.Database(db+"p").Collection("t").CountDocuments(ctx, bson.D{})
			if p.PartialTxns != 1 || n != int64(c.partial) {
				t.Errorf("with PartialStart: %d partial transactions, %d documents; want 1 and %d", p.PartialTxns, n, c.partial)
			}
			cl.Database(db + "p").Drop(ctx)
		})
	}
	// An applyOps without lsid and txnNumber (run by hand) is applied as
	// it comes, partialTxn or not.
	a := &mgengine.Applier{Client: cl, Rename: func(string) string { return db }, Only: map[string]bool{"src": true}}
	raw := marshalAll(t, []bson.D{{{Key: "ts", Value: txts(9)}, {Key: "op", Value: "c"}, {Key: "ns", Value: "admin.$cmd"},
		{Key: "o", Value: bson.D{{Key: "applyOps", Value: ops(7)}}}}})[0]
	if err := a.Apply(ctx, raw); err != nil || a.Pending() != 0 {
		t.Fatalf("applyOps outside a transaction: %v, %d open", err, a.Pending())
	}
	if n, _ := cl.Database(db).Collection("t").CountDocuments(ctx, bson.D{{Key: "_id", Value: 7}}); n != 1 {
		t.Error("applyOps outside a transaction not applied")
	}
}

// TestReplayTransactionTargets: point-in-time replay through the same log
// with targets between a transaction's entries: a transaction is in the
// copy exactly when its commit is at or before the target.
func TestReplayTransactionTargets(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	var seg bytes.Buffer
	for _, raw := range marshalAll(t, txnLogEntries()) {
		seg.Write(raw)
	}
	from, end := mgengine.Pos{T: 1700000000, I: 1}, mgengine.Pos{T: 1700000000, I: 18}
	fetch := func(_ context.Context, after mgengine.Pos) (mgengine.Pos, mgengine.Pos, io.ReadCloser, error) {
		if after.Less(end) {
			return from, end, io.NopCloser(bytes.NewReader(seg.Bytes())), nil
		}
		return mgengine.Pos{}, mgengine.Pos{}, nil, mgengine.ErrNoMoreLog
	}
	for _, c := range []struct {
		name    string
		stop    mgengine.Pos
		time    time.Time
		ids     string
		pending int
	}{
		{"between the large transaction's parts", mgengine.Pos{T: 1700000000, I: 5}, time.Time{}, "[1]", 3},
		{"at the large transaction's last entry", mgengine.Pos{T: 1700000000, I: 7}, time.Time{}, "[1 2 10 11 12 13 14]", 2},
		{"between prepare and commit", mgengine.Pos{T: 1700000000, I: 12}, time.Time{}, "[1 2 10 11 12 13 14]", 3},
		{"at the commit, by time", mgengine.Pos{}, time.Unix(1700000000, 13*int64(time.Millisecond)), "[1 2 10 11 12 13 14 20 21]", 2},
		{"the end", mgengine.Pos{}, time.Time{}, "[1 2 3 10 11 12 13 14 20 21 40 41 60]", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := fmt.Sprintf("%stxnpitr%d", srv.Prefix, c.stop.I+uint32(c.time.Nanosecond()/int(time.Millisecond)))
			res, err := mgengine.Replay(ctx, mgengine.URI(srv.URIFor(db)), mgengine.ReplayOptions{
				From: from, StopPos: c.stop, StopTime: c.time, Inclusive: true, Databases: []string{"src"},
				Rename: func(string) string { return db },
			}, fetch)
			if err != nil {
				t.Fatal(err)
			}
			cur, err := cl.Database(db).Collection("t").Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
			if err != nil {
				t.Fatal(err)
			}
			var docs []struct {
				ID int32 `bson:"_id"`
			}
			if err := cur.All(ctx, &docs); err != nil {
				t.Fatal(err)
			}
			var got []int32
			for _, d := range docs {
				got = append(got, d.ID)
			}
			if fmt.Sprint(got) != c.ids || res.Pending != c.pending {
				t.Errorf("replayed to %s: src.t %v with %d transactions open, want %s with %d", res.Pos.Text(), got, res.Pending, c.ids, c.pending)
			}
		})
	}
}

// straddleLog is an oplog whose transactions straddle a backup's
// position (straddleFrom, the boundary before entry 8): the backup's
// window starts at entry 1, so its copy holds entries 1-7 applied, which
// the test's empty target stands for (nothing before the position may be
// applied to it). Segments: entries 1-5, 6-10, 11-12.
func straddleLog(t *testing.T) [][]bson.Raw {
	large, prepared, aborted, done := newTxn(1, 1), newTxn(2, 4), newTxn(3, 9), newTxn(4, 2)
	es := marshalAll(t, []bson.D{
		plain(1, 1),              // in the copy
		large.partial(2, 10, 11), // large: begins before the position...
		done.partial(3, 70),      // done: begins and commits before it (in the copy)
		prepared.prepare(4, 20),  // prepared before the position...
		aborted.prepare(5, 30),   // aborted after it
		done.last(6, 2, 71),      //
		large.partial(7, 12),     //
		plain(8, 2),              // the position: the first entry replayed
		large.last(9, 4, 13),     // ... commits after it: 10-13
		aborted.abort(10),        // 30 never applied
		prepared.commit(11, 4),   // ... commits after it: 20
		plain(12, 3),             //
	})
	return [][]bson.Raw{es[:5], es[5:10], es[10:]}
}

var straddleFrom = mgengine.Pos{T: 1700000000, I: 8}

// segmentFetch serves segs (consecutive runs of entries) as an archive
// does: the first segment that ends after the position asked for.
func segmentFetch(segs [][]bson.Raw) mgengine.ReplayFetch {
	return func(_ context.Context, after mgengine.Pos) (mgengine.Pos, mgengine.Pos, io.ReadCloser, error) {
		for _, s := range segs {
			var e struct {
				TS bson.Timestamp `bson:"ts"`
			}
			if err := bson.Unmarshal(s[0], &e); err != nil {
				return mgengine.Pos{}, mgengine.Pos{}, nil, err
			}
			start := mgengine.Pos{T: e.TS.T, I: e.TS.I}
			if err := bson.Unmarshal(s[len(s)-1], &e); err != nil {
				return mgengine.Pos{}, mgengine.Pos{}, nil, err
			}
			end := mgengine.Pos{T: e.TS.T, I: e.TS.I}.Next()
			if after.Less(end) {
				var b bytes.Buffer
				for _, raw := range s {
					b.Write(raw)
				}
				return start, end, io.NopCloser(&b), nil
			}
		}
		return mgengine.Pos{}, mgengine.Pos{}, nil, mgengine.ErrNoMoreLog
	}
}

// TestReplayTransactionsStraddle: transactions open at the backup's
// position, replayed with the log from its window's start (LogStart): one
// that commits after the position is applied whole at its commit (large
// and prepared), a target before its commit leaves it out, one aborted
// after the position is dropped; nothing before the position is applied.
// Without LogStart the first such commit is refused; with an archive that
// does not reach back to the transaction's first entry, too.
func TestReplayTransactionsStraddle(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	logStart := mgengine.Pos{T: 1700000000, I: 1}
	n := 0
	replay := func(o mgengine.ReplayOptions, segs [][]bson.Raw) (string, *mgengine.Replayed, error) {
		t.Helper()
		n++
		db := fmt.Sprintf("%sstraddle%d", srv.Prefix, n)
		o.From, o.Databases, o.Inclusive = straddleFrom, []string{"src"}, true
		o.Rename = func(string) string { return db }
		var res *mgengine.Replayed
		var err error
		for range 2 { // idempotent: twice gives the same
			if res, err = mgengine.Replay(ctx, mgengine.URI(srv.URIFor(db)), o, segmentFetch(segs)); err != nil {
				return "", nil, err
			}
		}
		cur, err := cl.Database(db).Collection("t").Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			t.Fatal(err)
		}
		var docs []struct {
			ID int32 `bson:"_id"`
		}
		if err := cur.All(ctx, &docs); err != nil {
			t.Fatal(err)
		}
		var got []int32
		for _, d := range docs {
			got = append(got, d.ID)
		}
		return fmt.Sprint(got), res, nil
	}
	segs := straddleLog(t)
	for _, c := range []struct {
		name             string
		stop             mgengine.Pos
		time             time.Time
		ids              string
		carried, pending int
	}{
		{"to the end", mgengine.Pos{}, time.Time{}, "[2 3 10 11 12 13 20]", 3, 0},
		{"to the position's first entry", mgengine.Pos{T: 1700000000, I: 8}, time.Time{}, "[2]", 3, 3},
		{"to the large transaction's commit", mgengine.Pos{T: 1700000000, I: 9}, time.Time{}, "[2 10 11 12 13]", 3, 2},
		{"to the abort, before the prepared commit", mgengine.Pos{T: 1700000000, I: 10}, time.Time{}, "[2 10 11 12 13]", 3, 1},
		{"to the prepared commit, by time", mgengine.Pos{}, time.Unix(1700000000, 11*int64(time.Millisecond)), "[2 10 11 12 13 20]", 3, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			ids, res, err := replay(mgengine.ReplayOptions{LogStart: logStart, StopPos: c.stop, StopTime: c.time}, segs)
			if err != nil {
				t.Fatal(err)
			}
			if ids != c.ids || res.Carried != c.carried || res.Pending != c.pending || res.ReadFrom != logStart {
				t.Errorf("src.t %s, %d transactions carried, %d open, log read from %s; want %s, %d, %d, %s",
					ids, res.Carried, res.Pending, res.ReadFrom.Text(), c.ids, c.carried, c.pending, logStart.Text())
			}
		})
	}
	t.Run("without the window's start", func(t *testing.T) {
		_, _, err := replay(mgengine.ReplayOptions{}, segs)
		if !errors.Is(err, mgengine.ErrTxnStartMissing) {
			t.Fatalf("replay from the position alone: %v, want the commit refused", err)
		}
	})
	t.Run("an archive that starts after the window's start", func(t *testing.T) {
		// The archive starts at entry 6: the large transaction's first
		// entry (2) is missing, and its commit is refused.
		_, _, err := replay(mgengine.ReplayOptions{LogStart: logStart}, [][]bson.Raw{segs[1], segs[2]})
		if !errors.Is(err, mgengine.ErrTxnStartMissing) {
			t.Fatalf("%v, want the commit refused", err)
		}
		// To a target before that commit it works, reading from entry 6.
		ids, res, err := replay(mgengine.ReplayOptions{LogStart: logStart, StopPos: mgengine.Pos{T: 1700000000, I: 8}}, [][]bson.Raw{segs[1], segs[2]})
		if err != nil || ids != "[2]" || res.ReadFrom != (mgengine.Pos{T: 1700000000, I: 6}) {
			t.Fatalf("%s, read from %v: %v; want [2] read from entry 6", ids, res, err)
		}
	})
	t.Run("an archive that starts after the position", func(t *testing.T) {
		_, _, err := replay(mgengine.ReplayOptions{LogStart: logStart}, [][]bson.Raw{segs[2]})
		if err == nil || !strings.Contains(err.Error(), "log between them is missing") {
			t.Fatalf("%v, want the missing log refused", err)
		}
	})
}
