package mgengine_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// TestApplyCollMod: collMod entries as MongoDB logs them (a validator
// change; a TTL index's expireAfterSeconds, with the old values in o2)
// reach the server as the collMod command, on the restored database
// (renamed), without o2. FerretDB refuses collMod (NotImplemented): there
// the command sent is what is checked, and the refusal is what replay
// reports; against a real server (AMBER_TEST_MONGODB_URI) the collection's
// validator and the index's expireAfterSeconds are checked after it.
func TestApplyCollMod(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	var mu sync.Mutex
	var sent []bson.Raw
	var sentDB []string
	cl, err := mongo.Connect(options.Client().ApplyURI(srv.Base).SetMonitor(&event.CommandMonitor{
		Started: func(_ context.Context, e *event.CommandStartedEvent) {
			if e.CommandName == "collMod" {
				mu.Lock()
				sent = append(sent, append(bson.Raw(nil), e.Command...))
				sentDB = append(sentDB, e.DatabaseName)
				mu.Unlock()
			}
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Disconnect(context.Background()) })
	db := srv.Prefix + "collmod"
	if err := cl.Database(db).CreateCollection(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	ttl := mongo.IndexModel{Keys: bson.D{{Key: "ts", Value: 1}}, Options: options.Index().SetName("ts_1")}
	if !srv.FerretDB {
		ttl.Options.SetExpireAfterSeconds(3600) // FerretDB refuses TTL indexes
	}
	if _, err := cl.Database(db).Collection("c").Indexes().CreateOne(ctx, ttl); err != nil {
		t.Fatal(err)
	}
	cmd := func(i uint32, o, o2 bson.D) bson.Raw {
		b, err := bson.Marshal(bson.D{{Key: "op", Value: "c"}, {Key: "ns", Value: "src.$cmd"}, {Key: "ts", Value: bson.Timestamp{T: 1700000000, I: i}},
			{Key: "o", Value: o}, {Key: "o2", Value: o2}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	validator := bson.D{{Key: "a", Value: bson.D{{Key: "$type", Value: "int"}}}}
	entries := []struct {
		raw  bson.Raw
		want string
	}{
		{cmd(1, bson.D{{Key: "collMod", Value: "c"}, {Key: "validator", Value: validator}, {Key: "validationLevel", Value: "moderate"}, {Key: "validationAction", Value: "warn"}},
			bson.D{{Key: "collectionOptions_old", Value: bson.D{{Key: "uuid", Value: bson.Binary{Subtype: 4, Data: []byte("0123456789abcdef")}}}}}),
			`{"collMod": "c","validator": {"a": {"$type": "int"}},"validationLevel": "moderate","validationAction": "warn"`},
		{cmd(2, bson.D{{Key: "collMod", Value: "c"}, {Key: "index", Value: bson.D{{Key: "name", Value: "ts_1"}, {Key: "expireAfterSeconds", Value: int64(60)}}}},
			bson.D{{Key: "collectionOptions_old", Value: bson.D{}}, {Key: "expireAfterSeconds_old", Value: int64(3600)}}),
			`{"collMod": "c","index": {"name": "ts_1","expireAfterSeconds": {"$numberLong":"60"}}`},
	}
	a := &mgengine.Applier{Client: cl, Rename: func(string) string { return db }, Only: map[string]bool{"src": true}}
	for i, e := range entries {
		err := a.Apply(ctx, e.raw)
		switch {
		case srv.FerretDB && (err == nil || !strings.Contains(err.Error(), "collMod")):
			t.Errorf("entry %d: FerretDB took collMod (%v): the test's premise is gone; check the effect instead", i+1, err)
		case !srv.FerretDB && err != nil:
			t.Errorf("entry %d: %v", i+1, err)
		}
		if srv.FerretDB {
			t.Logf("entry %d: FerretDB: %v", i+1, err)
		}
		mu.Lock()
		if len(sent) != i+1 {
			t.Fatalf("entry %d: %d collMod commands sent, want 1", i+1, len(sent)-i)
		}
		got, gotDB := sent[i].String(), sentDB[i]
		mu.Unlock()
		if gotDB != db || !strings.HasPrefix(got, e.want) || strings.Contains(got, "_old") {
			t.Errorf("entry %d: sent %s to %s, want %s... to %s", i+1, got, gotDB, e.want, db)
		}
	}
	if srv.FerretDB {
		return
	}
	specs, err := cl.Database(db).ListCollectionSpecifications(ctx, bson.D{{Key: "name", Value: "c"}})
	if err != nil || len(specs) != 1 {
		t.Fatalf("list collection c: %v %v", specs, err)
	}
	if v := specs[0].Options.Lookup("validator").String(); !strings.Contains(v, `"$type": "int"`) {
		t.Errorf("validator after replay: %s", v)
	}
	idx, err := cl.Database(db).Collection("c").Indexes().ListSpecifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range idx {
		if s.Name == "ts_1" && (s.ExpireAfterSeconds == nil || *s.ExpireAfterSeconds != 60) {
			t.Errorf("ts_1 expireAfterSeconds after replay: %v, want 60", s.ExpireAfterSeconds)
		}
	}
}

// TestApplyTimeSeries: writes to a time-series collection, which MongoDB
// logs as bucket writes to system.buckets.<name> (alone, inside applyOps,
// or a create of the buckets collection), are refused by replay
// (ErrTimeSeries, naming the collection), and skipped and counted where
// the applier is told to skip them (a dump's oplog window); other entries
// around them are applied.
func TestApplyTimeSeries(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	db := srv.Prefix + "tseries"
	ts := func(i uint32) bson.Timestamp { return bson.Timestamp{T: 1700000000, I: i} }
	bucket := bson.D{{Key: "_id", Value: bson.NewObjectID()}, {Key: "control", Value: bson.D{{Key: "version", Value: int32(1)}}},
		{Key: "meta", Value: "sensor-1"}, {Key: "data", Value: bson.D{{Key: "temp", Value: bson.D{{Key: "0", Value: 21.5}}}}}}
	raw := func(e bson.D) bson.Raw {
		b, err := bson.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	plainInsert := raw(bson.D{{Key: "op", Value: "i"}, {Key: "ns", Value: "src.c"}, {Key: "ts", Value: ts(1)}, {Key: "o", Value: bson.D{{Key: "_id", Value: 1}}}})
	for _, c := range []struct {
		name string
		e    bson.Raw
	}{
		{"a bucket insert", raw(bson.D{{Key: "op", Value: "i"}, {Key: "ns", Value: "src.system.buckets.weather"}, {Key: "ts", Value: ts(2)}, {Key: "o", Value: bucket}})},
		{"a bucket update inside applyOps", raw(bson.D{{Key: "op", Value: "c"}, {Key: "ns", Value: "admin.$cmd"}, {Key: "ts", Value: ts(3)}, {Key: "o", Value: bson.D{{Key: "applyOps", Value: bson.A{
			bson.D{{Key: "op", Value: "u"}, {Key: "ns", Value: "src.system.buckets.weather"}, {Key: "o2", Value: bson.D{{Key: "_id", Value: bucket[0].Value}}},
				{Key: "o", Value: bson.D{{Key: "$v", Value: int32(2)}, {Key: "diff", Value: bson.D{{Key: "sdata", Value: bson.D{{Key: "stemp", Value: bson.D{{Key: "i", Value: bson.D{{Key: "1", Value: 22.0}}}}}}}}}}}},
		}}}}})},
		{"the buckets collection's create", raw(bson.D{{Key: "op", Value: "c"}, {Key: "ns", Value: "src.$cmd"}, {Key: "ts", Value: ts(4)}, {Key: "o", Value: bson.D{
			{Key: "create", Value: "system.buckets.weather"}, {Key: "validator", Value: bson.D{}}, {Key: "clusteredIndex", Value: true},
			{Key: "timeseries", Value: bson.D{{Key: "timeField", Value: "t"}, {Key: "metaField", Value: "m"}, {Key: "granularity", Value: "seconds"}}}}}})},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := &mgengine.Applier{Client: cl, Rename: func(string) string { return db }, Only: map[string]bool{"src": true}}
			if err := a.Apply(ctx, plainInsert); err != nil {
				t.Fatal(err)
			}
			err := a.Apply(ctx, c.e)
			if !errors.Is(err, mgengine.ErrTimeSeries) || !strings.Contains(err.Error(), "src.weather") {
				t.Fatalf("replay took a time-series write: %v", err)
			}
			t.Log(err)
			skip := &mgengine.Applier{Client: cl, Rename: func(string) string { return db }, Only: map[string]bool{"src": true}, SkipTimeSeries: true}
			if err := skip.Apply(ctx, c.e); err != nil || skip.TimeSeriesSkipped != 1 {
				t.Errorf("skipping: %v, %d skipped", err, skip.TimeSeriesSkipped)
			}
			if names, _ := cl.Database(db).ListCollectionNames(ctx, bson.D{{Key: "name", Value: bson.D{{Key: "$regex", Value: "buckets"}}}}); len(names) != 0 {
				t.Errorf("buckets collections written: %v", names)
			}
			if n, _ := cl.Database(db).Collection("c").CountDocuments(ctx, bson.D{{Key: "_id", Value: 1}}); n != 1 {
				t.Error("the plain insert before it was not applied")
			}
		})
	}
}
