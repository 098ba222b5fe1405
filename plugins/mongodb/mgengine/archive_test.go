package mgengine_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// TestArchiveReplay: the oplog tailed while markers are inserted, updated
// and deleted, then a dump restored and rolled forward to a time between
// two markers, holds exactly the markers written before it; rolled forward
// to the end, everything. Segments are contiguous (each starts where the
// previous ended).
func TestArchiveReplay(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	if srv.FerretDB {
		if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(64<<20)); err != nil {
			t.Fatal(err)
		}
	}
	m := cl.Database(srv.DBName).Collection("m")
	insert := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := m.InsertOne(ctx, bson.D{{Key: "_id", Value: i}, {Key: "v", Value: i}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert(1, 10)

	var mu sync.Mutex
	var segs []mgengine.Segment
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		// A flush interval longer than the test: the last entries are
		// sent only because Stop asks for what is held.
		done <- mgengine.Archive(ctx, mgengine.URI(srv.Base), mgengine.ArchiveOptions{FlushInterval: time.Minute, MaxSegment: 2000, Stop: stop},
			func(_ context.Context, s mgengine.Segment) error {
				mu.Lock()
				defer mu.Unlock()
				s.Data = append([]byte(nil), s.Data...)
				segs = append(segs, s)
				return nil
			})
	}()
	time.Sleep(300 * time.Millisecond) // the archiver has its starting point

	var sink memSink
	dump, err := mgengine.LogicalDump(ctx, mgengine.URI(srv.DSN()), &sink, mgengine.DumpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	insert(11, 20)
	if _, err := m.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: "one"}}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	cut := time.Now()
	time.Sleep(50 * time.Millisecond)
	insert(21, 30)
	if _, err := m.DeleteOne(ctx, bson.D{{Key: "_id", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("archive ended with %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(segs) == 0 {
		t.Fatal("no segment archived")
	}
	entries := 0
	for i, s := range segs {
		entries += s.Entries
		if i > 0 && s.Start != segs[i-1].End {
			t.Errorf("segment %d starts at %s, the previous ended at %s", i, s.Start.Text(), segs[i-1].End.Text())
		}
	}
	if entries != 22 {
		t.Errorf("archived %d entries in %d segments, want 22 (20 inserts, an update, a delete)", entries, len(segs))
	}
	fetch := func(_ context.Context, after mgengine.Pos) (mgengine.Pos, mgengine.Pos, io.ReadCloser, error) {
		for _, s := range segs {
			if after.Less(s.End) {
				return s.Start, s.End, io.NopCloser(bytes.NewReader(s.Data)), nil
			}
		}
		return mgengine.Pos{}, mgengine.Pos{}, nil, mgengine.ErrNoMoreLog
	}
	ids := func(db string) []int32 {
		var docs []struct {
			ID int32 `bson:"_id"`
		}
		cur, err := cl.Database(db).Collection("m").Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			t.Fatal(err)
		}
		if err := cur.All(ctx, &docs); err != nil {
			t.Fatal(err)
		}
		out := make([]int32, len(docs))
		for i, d := range docs {
			out[i] = d.ID
		}
		return out
	}
	for _, tc := range []struct {
		name string
		stop time.Time
		want int // markers 1..want, and 2 deleted when want == 30
	}{{"to the cut", cut, 20}, {"to the end", time.Time{}, 30}} {
		t.Run(tc.name, func(t *testing.T) {
			db := srv.Prefix + "pitr" + string(rune('a'+tc.want%26))
			if _, err := mgengine.LogicalRestore(ctx, mgengine.URI(srv.URIFor(db)), sink.source(), mgengine.RestoreOptions{}); err != nil {
				t.Fatal(err)
			}
			res, err := mgengine.Replay(ctx, mgengine.URI(srv.URIFor(db)), mgengine.ReplayOptions{
				From: dump.End.Next(), StopTime: tc.stop, Databases: []string{srv.DBName},
				Rename: func(string) string { return db },
			}, fetch)
			if err != nil {
				t.Fatal(err)
			}
			got := ids(db)
			var want []int32
			for i := 1; i <= tc.want; i++ {
				if !(i == 2 && tc.want == 30) {
					want = append(want, int32(i))
				}
			}
			if len(got) != len(want) || (len(got) > 0 && (got[0] != want[0] || got[len(got)-1] != want[len(want)-1])) {
				t.Errorf("replayed to %s: markers %v, want %v", res.Pos.Text(), got, want)
			}
			var one struct {
				V any `bson:"v"`
			}
			if err := cl.Database(db).Collection("m").FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&one); err != nil || one.V != "one" {
				t.Errorf("marker 1 after replay: %v (%v), want the update applied", one.V, err)
			}
			t.Logf("replayed %d entries from %d segments to %s", res.Entries, res.Segments, res.Pos.Text())
		})
	}
}

// TestArchiveRolledOver: an archiver resumed from its archived end after
// the capped oplog dropped the entries past it starts its first segment at
// the oldest entry left, past that end: the hole the host reports. Resumed
// with nothing lost, it starts exactly at the end.
func TestArchiveRolledOver(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	if !srv.FerretDB {
		testbed.Skip(t, "rolls the oplog over by deleting its oldest entries, which only the FerretDB test bed allows")
	}
	cl := connect(t, srv.Base)
	if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(1<<20)); err != nil {
		t.Fatal(err)
	}
	m := cl.Database(srv.DBName).Collection("m")
	insert := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := m.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert(1, 1)
	// archive runs an archiver from start while fn writes, and returns
	// its segments.
	archive := func(start mgengine.Pos, fn func()) []mgengine.Segment {
		var mu sync.Mutex
		var segs []mgengine.Segment
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- mgengine.Archive(ctx, mgengine.URI(srv.Base), mgengine.ArchiveOptions{Start: start, FlushInterval: 100 * time.Millisecond, Stop: stop},
				func(_ context.Context, s mgengine.Segment) error {
					mu.Lock()
					defer mu.Unlock()
					segs = append(segs, s)
					return nil
				})
		}()
		time.Sleep(300 * time.Millisecond)
		fn()
		time.Sleep(300 * time.Millisecond)
		close(stop)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(segs) == 0 {
			t.Fatal("no segment")
		}
		return segs
	}
	segs := archive(mgengine.Pos{}, func() { insert(2, 3) })
	end := segs[len(segs)-1].End

	// Nothing lost: the next archiver starts at the end.
	segs = archive(end, func() { insert(4, 4) })
	if segs[0].Start != end {
		t.Fatalf("resumed without loss at %s, want %s", segs[0].Start.Text(), end.Text())
	}
	end = segs[len(segs)-1].End

	// 20 inserts with no archiver, then the oplog keeps only the newest
	// 5, as a capped oplog that rolled over does (FerretDB does not
	// enforce the cap itself: the test removes the older entries).
	insert(5, 24)
	oplog := cl.Database("local").Collection("oplog.rs")
	var oldest struct {
		TS bson.Timestamp `bson:"ts"`
	}
	if err := oplog.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}}).SetSkip(4)).Decode(&oldest); err != nil {
		t.Fatal(err)
	}
	if _, err := oplog.DeleteMany(ctx, bson.D{{Key: "ts", Value: bson.D{{Key: "$lt", Value: oldest.TS}}}}); err != nil {
		t.Fatal(err)
	}
	segs = archive(end, func() { insert(25, 25) })
	want := mgengine.Pos{T: oldest.TS.T, I: oldest.TS.I}
	if segs[0].Start == end || segs[0].Start != want {
		t.Fatalf("resumed past a roll-over at %s; the archived end was %s and the oldest entry left is %s: want the segment to start there, leaving a hole",
			segs[0].Start.Text(), end.Text(), want.Text())
	}
	t.Logf("hole reported: archived end %s, next segment starts at %s", end.Text(), segs[0].Start.Text())
}

// TestArchiveRollback: an archiver resumed after the oplog's newest
// archived entries were rolled back (removed, then new writes made) starts
// epoch 2 just past the newest entry both histories hold, and every
// segment of it names that point as its branch; the new entries are all
// archived. Resumed with the history intact, it stays in epoch 1. A dump
// given the archived end (api.BackupRequest.Archived) reports the epoch
// its position belongs to: 1 before the rollback; 2 after it, both before
// the archiver has found the rollback and once epoch 2 is archived.
func TestArchiveRollback(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	if !srv.FerretDB {
		testbed.Skip(t, "rolls the oplog back by deleting its newest entries, which only the FerretDB test bed allows")
	}
	cl := connect(t, srv.Base)
	if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(1<<20)); err != nil {
		t.Fatal(err)
	}
	m := cl.Database(srv.DBName).Collection("m")
	insert := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := m.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	archive := func(start mgengine.Pos, epoch uint32, branch mgengine.Pos, fn func()) []mgengine.Segment {
		var mu sync.Mutex
		var segs []mgengine.Segment
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- mgengine.Archive(ctx, mgengine.URI(srv.Base), mgengine.ArchiveOptions{Start: start, Epoch: epoch, StartBranch: branch, FlushInterval: 100 * time.Millisecond, Stop: stop},
				func(_ context.Context, s mgengine.Segment) error {
					mu.Lock()
					defer mu.Unlock()
					segs = append(segs, s)
					return nil
				})
		}()
		time.Sleep(300 * time.Millisecond)
		fn()
		time.Sleep(300 * time.Millisecond)
		close(stop)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(segs) == 0 {
			t.Fatal("no segment")
		}
		return segs
	}
	oplog := cl.Database("local").Collection("oplog.rs")
	entries := func() []mgengine.Pos {
		cur, err := oplog.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "$natural", Value: 1}}))
		if err != nil {
			t.Fatal(err)
		}
		var out []mgengine.Pos
		for cur.Next(ctx) {
			ts := cur.Current.Lookup("ts")
			s, i := ts.Timestamp()
			out = append(out, mgengine.Pos{T: s, I: i})
		}
		return out
	}
	insert(1, 1)
	segs := archive(mgengine.Pos{}, 0, mgengine.Pos{}, func() { insert(2, 4) })
	end := segs[len(segs)-1].End
	if segs[0].Epoch != 1 {
		t.Fatalf("first archiver in epoch %d, want 1", segs[0].Epoch)
	}
	segs = archive(end, 1, mgengine.Pos{}, func() { insert(5, 5) })
	if segs[0].Epoch != 1 || segs[0].Start != end || !segs[0].Branch.IsZero() {
		t.Fatalf("resumed with the history intact: epoch %d from %s, want epoch 1 from %s", segs[0].Epoch, segs[0].Start.Text(), end.Text())
	}
	end = segs[len(segs)-1].End
	dumpEpoch := func(a mgengine.Archived) (uint32, mgengine.Pos) {
		t.Helper()
		res, err := mgengine.LogicalDump(ctx, mgengine.URI(srv.Base), &memSink{}, mgengine.DumpOptions{Databases: []string{srv.DBName}, Archived: a})
		if err != nil {
			t.Fatal(err)
		}
		return res.Epoch, res.End.Next()
	}
	if e, at := dumpEpoch(mgengine.Archived{End: end, Epoch: 1}); e != 1 {
		t.Fatalf("dump at %s before the rollback: epoch %d, want 1", at.Text(), e)
	}
	if e, _ := dumpEpoch(mgengine.Archived{}); e != 1 {
		t.Fatalf("dump with nothing archived: epoch %d, want 1", e)
	}

	// A rollback: the newest two archived entries (inserts 4 and 5)
	// leave the oplog; the new history writes on.
	all := entries()
	shared := all[len(all)-3]
	if _, err := oplog.DeleteMany(ctx, bson.D{{Key: "ts", Value: bson.D{{Key: "$gt", Value: bson.Timestamp{T: shared.T, I: shared.I}}}}}); err != nil {
		t.Fatal(err)
	}
	insert(6, 7)
	if e, at := dumpEpoch(mgengine.Archived{End: end, Epoch: 1}); e != 2 {
		t.Fatalf("dump at %s after the rollback, the archiver not yet resumed: epoch %d, want 2", at.Text(), e)
	}
	segs = archive(end, 1, mgengine.Pos{}, func() { insert(8, 8) })
	n := 0
	for i, s := range segs {
		if s.Epoch != 2 || s.Branch != shared.Next() {
			t.Fatalf("segment %d after the rollback: epoch %d, branch %s; want epoch 2, branch %s", i, s.Epoch, s.Branch.Text(), shared.Next().Text())
		}
		// Inserts only: FerretDB also logs the deletes of its own oplog
		// entries above.
		if err := mgengine.ReadDocs(bytes.NewReader(s.Data), func(d bson.Raw) error {
			if d.Lookup("op").StringValue() == "i" && d.Lookup("ns").StringValue() == srv.DBName+".m" {
				n++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if segs[0].Start != shared.Next() || n != 3 {
		t.Fatalf("epoch 2 starts at %s with %d entries, want %s and 3 (inserts 6 to 8)", segs[0].Start.Text(), n, shared.Next().Text())
	}
	t.Logf("rollback: archived end %s, epoch 2 from %s", end.Text(), segs[0].Start.Text())

	// Resumed in epoch 2 (its branch read back from the end's token), it
	// stays there and keeps naming the branch.
	end = segs[len(segs)-1].End
	last := segs[len(segs)-1]
	if e, at := dumpEpoch(mgengine.Archived{End: end, Epoch: 2, Term: last.EndTerm, HasTerm: last.EndHasTerm, Branch: shared.Next()}); e != 2 {
		t.Fatalf("dump at %s with epoch 2 archived: epoch %d, want 2", at.Text(), e)
	}
	segs = archive(end, 2, shared.Next(), func() { insert(9, 9) })
	if segs[0].Epoch != 2 || segs[0].Start != end || segs[0].Branch != shared.Next() {
		t.Fatalf("resumed in epoch 2: epoch %d from %s, branch %s; want epoch 2 from %s, branch %s",
			segs[0].Epoch, segs[0].Start.Text(), segs[0].Branch.Text(), end.Text(), shared.Next().Text())
	}
}

// TestArchiveRollbackLive: a rollback while the archiver runs. Its
// cursors die after each batch on FerretDB and are reopened at the last
// entry sent; when that entry has left the oplog, the reopened cursor
// does not show it first, and the archiver runs its rollback checks and
// starts epoch 2 at the newest entry both histories hold, then archives
// the new history's entries there.
func TestArchiveRollbackLive(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	if !srv.FerretDB {
		testbed.Skip(t, "rolls the oplog back by deleting its newest entries, which only the FerretDB test bed allows")
	}
	cl := connect(t, srv.Base)
	if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(1<<20)); err != nil {
		t.Fatal(err)
	}
	m := cl.Database(srv.DBName).Collection("m")
	insert := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := m.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert(0, 0)
	var mu sync.Mutex
	var segs []mgengine.Segment
	ids := func(epoch uint32) []int32 {
		mu.Lock()
		defer mu.Unlock()
		var out []int32
		for _, s := range segs {
			if s.Epoch != epoch {
				continue
			}
			mgengine.ReadDocs(bytes.NewReader(s.Data), func(d bson.Raw) error {
				if d.Lookup("op").StringValue() == "i" && d.Lookup("ns").StringValue() == srv.DBName+".m" {
					out = append(out, d.Lookup("o", "_id").Int32())
				}
				return nil
			})
		}
		return out
	}
	wait := func(epoch uint32, n int) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); len(ids(epoch)) < n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("epoch %d: archived inserts %v, want %d", epoch, ids(epoch), n)
			}
		}
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- mgengine.Archive(ctx, mgengine.URI(srv.Base), mgengine.ArchiveOptions{FlushInterval: 100 * time.Millisecond, Stop: stop},
			func(_ context.Context, s mgengine.Segment) error {
				mu.Lock()
				defer mu.Unlock()
				segs = append(segs, s)
				return nil
			})
	}()
	time.Sleep(500 * time.Millisecond)
	insert(1, 3)
	wait(1, 3)
	// The rollback: the entries of inserts 2 and 3 leave the oplog; the
	// new history writes 4 and 5.
	oplog := cl.Database("local").Collection("oplog.rs")
	var shared struct {
		TS bson.Timestamp `bson:"ts"`
	}
	if err := oplog.FindOne(ctx, bson.D{{Key: "ns", Value: srv.DBName + ".m"}, {Key: "o._id", Value: 1}}).Decode(&shared); err != nil {
		t.Fatal(err)
	}
	if _, err := oplog.DeleteMany(ctx, bson.D{{Key: "ts", Value: bson.D{{Key: "$gt", Value: shared.TS}}}}); err != nil {
		t.Fatal(err)
	}
	insert(4, 5)
	wait(2, 2)
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	branch := mgengine.Pos{T: shared.TS.T, I: shared.TS.I}.Next()
	mu.Lock()
	for _, s := range segs {
		if s.Epoch == 2 && s.Branch != branch {
			t.Errorf("an epoch 2 segment names branch %s, want %s", s.Branch.Text(), branch.Text())
		}
	}
	mu.Unlock()
	if got := fmt.Sprint(ids(1), ids(2)); got != "[1 2 3] [4 5]" {
		t.Errorf("archived inserts by epoch: %s, want [1 2 3] [4 5]", got)
	}
}
