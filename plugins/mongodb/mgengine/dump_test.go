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
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine/mgtest"
)

// memSink keeps entries in memory, in order; memSource plays them back.
type memSink struct {
	names []string
	data  []*bytes.Buffer
}

type memEntry struct{ *bytes.Buffer }

func (memEntry) Close() error { return nil }

func (s *memSink) Create(_ context.Context, name, _ string) (io.WriteCloser, error) {
	b := &bytes.Buffer{}
	s.names = append(s.names, name)
	s.data = append(s.data, b)
	return memEntry{b}, nil
}

func (s *memSink) source() *memSource { return &memSource{s: s} }

type memSource struct {
	s *memSink
	i int
}

func (m *memSource) Next(context.Context) (string, io.Reader, error) {
	if m.i >= len(m.s.names) {
		return "", nil, io.EOF
	}
	m.i++
	return m.s.names[m.i-1], bytes.NewReader(m.s.data[m.i-1].Bytes()), nil
}

func connect(t testing.TB, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	return c
}

func checksums(t testing.TB, db *mongo.Database) map[string]string {
	t.Helper()
	m, err := mgtest.Checksums(context.Background(), db)
	if err != nil {
		t.Fatalf("checksums of %s: %v", db.Name(), err)
	}
	return m
}

func compare(t testing.TB, want, got map[string]string) {
	t.Helper()
	if fmt.Sprint(want) != fmt.Sprint(got) {
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s:\n  source:   %.400s\n  restored: %.400s", k, w, got[k])
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("unexpected %s", k)
			}
		}
	}
}

// TestRoundTripTypes: a dump of every BSON type, a 10 MB document, several
// collections (one capped, one with a validator) and a view, restored
// under another database name, equals its source document for document,
// byte for byte, with the same indexes and options.
func TestRoundTripTypes(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	src := cl.Database(srv.DBName)
	if err := mgtest.LoadTypes(ctx, src, 10<<20, srv.FerretDB); err != nil {
		t.Fatal(err)
	}
	if err := src.CreateCollection(ctx, "capped", options.CreateCollection().SetCapped(true).SetSizeInBytes(1<<20)); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := src.Collection("many").InsertOne(ctx, bson.D{{Key: "_id", Value: i}, {Key: "v", Value: strings.Repeat("x", i)}}); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Collection("capped").InsertOne(ctx, bson.D{{Key: "n", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Collection("empty").Database().CreateCollection(ctx, "empty"); err != nil {
		t.Fatal(err)
	}
	want := checksums(t, src)
	if len(want) < 4 {
		t.Fatalf("fixture has %d collections: %v", len(want), want)
	}

	var sink memSink
	start := time.Now()
	res, err := mgengine.LogicalDump(ctx, mgengine.URI(srv.DSN()), &sink, mgengine.DumpOptions{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	dumpTook := time.Since(start)
	if sink.names[0] != mgengine.MetadataEntry {
		t.Fatalf("first entry %s, want %s", sink.names[0], mgengine.MetadataEntry)
	}
	if res.Collections != 4 || res.Docs != 7+50+50 {
		t.Errorf("dump: %d collections, %d docs; want 4 and 107 (entries %v)", res.Collections, res.Docs, sink.names)
	}

	if _, err := mgengine.LogicalDump(ctx, mgengine.URI(srv.URIFor(srv.Prefix+"nosuch")), &memSink{}, mgengine.DumpOptions{}); err == nil || !strings.Contains(err.Error(), "check the database name") {
		t.Errorf("dump of a database that does not exist: %v, want an error naming the fix", err)
	}

	target := srv.Prefix + "copy"
	start = time.Now()
	rres, err := mgengine.LogicalRestore(ctx, mgengine.URI(srv.URIFor(target)), sink.source(), mgengine.RestoreOptions{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	restoreTook := time.Since(start)
	compare(t, want, checksums(t, cl.Database(target)))
	t.Logf("dump %d docs, %.1f MB in %v; restore %d docs (%d indexes) in %v", res.Docs, float64(res.Bytes)/1e6, dumpTook, rres.Docs, rres.Indexes, restoreTook)

	// A second restore into the same, now full, database is refused...
	_, err = mgengine.LogicalRestore(ctx, mgengine.URI(srv.URIFor(target)), sink.source(), mgengine.RestoreOptions{})
	if err == nil || !strings.Contains(err.Error(), "restore into an empty database") {
		t.Errorf("restore over a full database: %v, want a refusal naming the fix", err)
	}
	// ... unless asked to drop.
	if _, err := mgengine.LogicalRestore(ctx, mgengine.URI(srv.URIFor(target)), sink.source(), mgengine.RestoreOptions{Drop: true}); err != nil {
		t.Fatalf("restore with drop: %v", err)
	}
	compare(t, want, checksums(t, cl.Database(target)))
}

// hookSink calls hook before creating the entry named at.
type hookSink struct {
	memSink
	at   string
	hook func()
}

func (s *hookSink) Create(ctx context.Context, name, kind string) (io.WriteCloser, error) {
	if name == s.at {
		s.hook()
	}
	return s.memSink.Create(ctx, name, kind)
}

// TestOplogWindow: on a server with an oplog, writes to a collection
// already read, made while the dump runs, reach the restore through the
// oplog window (FerretDB's emulation: inserts, $set updates, deletes).
func TestOplogWindow(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	if srv.FerretDB {
		if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(64<<20)); err != nil {
			t.Fatal(err)
		}
	}
	src := cl.Database(srv.DBName)
	a, b := src.Collection("a"), src.Collection("b")
	for i := range 10 {
		if _, err := a.InsertOne(ctx, bson.D{{Key: "_id", Value: i}, {Key: "v", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	sink := &hookSink{at: "data/" + srv.DBName + "/b.bson", hook: func() {
		_, err1 := a.InsertOne(ctx, bson.D{{Key: "_id", Value: 100}, {Key: "v", Value: "late"}})
		_, err2 := a.UpdateOne(ctx, bson.D{{Key: "_id", Value: 3}}, bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: "changed"}}}})
		_, err3 := a.DeleteOne(ctx, bson.D{{Key: "_id", Value: 5}})
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Error(err)
		}
	}}
	res, err := mgengine.LogicalDump(ctx, mgengine.URI(srv.DSN()), sink, mgengine.DumpOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.OplogOps != 3 || !res.Start.Less(res.End) {
		t.Fatalf("oplog window %s..%s holds %d entries, want 3", res.Start.Text(), res.End.Text(), res.OplogOps)
	}
	want := checksums(t, src)
	target := srv.Prefix + "copy"
	if _, err := mgengine.LogicalRestore(ctx, mgengine.URI(srv.URIFor(target)), sink.source(), mgengine.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	compare(t, want, checksums(t, cl.Database(target)))
	// Without the window the restore holds the data as read: the proof
	// that the window mattered.
	other := srv.Prefix + "nowindow"
	if _, err := mgengine.LogicalRestore(ctx, mgengine.URI(srv.URIFor(other)), sink.source(), mgengine.RestoreOptions{NoOplog: true}); err != nil {
		t.Fatal(err)
	}
	if n, _ := cl.Database(other).Collection("a").CountDocuments(ctx, bson.D{{Key: "_id", Value: 100}}); n != 0 {
		t.Errorf("the dump's data already held the late insert; the test proves nothing")
	}
}

// TestOplogWindowOpenTransaction: a transaction in progress when the dump
// begins (config.transactions, state inProgress, startOpTime: its first
// oplog entry) opens the dump's oplog window at that entry, so a restore
// holds the transaction whole if it commits inside the window; committed
// ones do not move the window. (FerretDB keeps no config.transactions:
// the test writes the documents MongoDB would.)
func TestOplogWindowOpenTransaction(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	if srv.FerretDB {
		if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(64<<20)); err != nil {
			t.Fatal(err)
		}
	}
	src := cl.Database(srv.DBName)
	for i := range 5 {
		if _, err := src.Collection("a").InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	var e struct {
		TS bson.Timestamp `bson:"ts"`
	}
	if err := cl.Database("local").Collection("oplog.rs").FindOne(ctx, bson.D{{Key: "ns", Value: srv.DBName + ".a"}, {Key: "o._id", Value: 1}}).Decode(&e); err != nil {
		t.Fatal(err)
	}
	first := mgengine.Pos{T: e.TS.T, I: e.TS.I}
	if srv.FerretDB {
		txns := cl.Database("config").Collection("transactions")
		lsid := func(b byte) bson.D {
			return bson.D{{Key: "id", Value: bson.Binary{Subtype: 4, Data: bytes.Repeat([]byte{b}, 16)}}}
		}
		if _, err := txns.InsertMany(ctx, []any{
			bson.D{{Key: "_id", Value: lsid(1)}, {Key: "txnNum", Value: int64(3)}, {Key: "state", Value: "committed"},
				{Key: "startOpTime", Value: bson.D{{Key: "ts", Value: bson.Timestamp{T: 1, I: 1}}, {Key: "t", Value: int64(1)}}}},
			bson.D{{Key: "_id", Value: lsid(2)}, {Key: "txnNum", Value: int64(1)}, {Key: "state", Value: "inProgress"},
				{Key: "startOpTime", Value: bson.D{{Key: "ts", Value: e.TS}, {Key: "t", Value: int64(1)}}}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	sink := &hookSink{}
	res, err := mgengine.LogicalDump(ctx, mgengine.URI(srv.DSN()), sink, mgengine.DumpOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	// On a real server config.transactions is the server's own (no
	// transaction open here): only the restore is checked.
	if srv.FerretDB && res.Start.Next() != first {
		t.Fatalf("oplog window opens after %s, want just before the open transaction's first entry %s", res.Start.Text(), first.Text())
	}
	if srv.FerretDB && res.OplogOps < 4 {
		t.Errorf("the window holds %d entries, want at least the 4 inserts from the transaction's start", res.OplogOps)
	}
	want := checksums(t, src)
	target := srv.Prefix + "copy"
	if _, err := mgengine.LogicalRestore(ctx, mgengine.URI(srv.URIFor(target)), sink.source(), mgengine.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	compare(t, want, checksums(t, cl.Database(target)))
}
