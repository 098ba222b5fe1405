package mgengine_test

import (
	"bytes"
	"context"
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
