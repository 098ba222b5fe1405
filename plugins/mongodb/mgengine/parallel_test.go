package mgengine_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// spoolWaitSink holds the first data entry open until a collection has
// been spooled: a dump that reads one collection at a time never
// finishes it.
type spoolWaitSink struct {
	memSink
	dir     string
	once    sync.Once
	spooled bool
}

func (s *spoolWaitSink) Create(ctx context.Context, name, kind string) (io.WriteCloser, error) {
	if kind == "bson" && name != mgengine.OplogEntry {
		s.once.Do(func() {
			for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if files, _ := os.ReadDir(s.dir); len(files) > 0 {
					s.spooled = true
					return
				}
			}
		})
	}
	return s.memSink.Create(ctx, name, kind)
}

// TestDumpReadsInParallel: while the first collection's entry is being
// sent (held open here), other workers read other collections into spool
// files; the dump restores equal to its source.
func TestDumpReadsInParallel(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	src := cl.Database(srv.DBName)
	for _, name := range []string{"a", "b", "c", "d"} {
		docs := make([]any, 300)
		for i := range docs {
			docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "c", Value: name}}
		}
		if _, err := src.Collection(name).InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
	}
	want := checksums(t, src)
	sink := &spoolWaitSink{dir: t.TempDir()}
	if _, err := mgengine.LogicalDump(ctx, mgengine.URI(srv.DSN()), sink, mgengine.DumpOptions{Workers: 4, SpoolDir: sink.dir}); err != nil {
		t.Fatal(err)
	}
	if !sink.spooled {
		t.Fatal("no collection was read while the first one was being sent: the dump does not read in parallel")
	}
	target := srv.Prefix + "copy"
	if _, err := mgengine.LogicalRestore(ctx, mgengine.URI(srv.URIFor(target)), sink.source(), mgengine.RestoreOptions{Workers: 4}); err != nil {
		t.Fatal(err)
	}
	compare(t, want, checksums(t, cl.Database(target)))
}

// TestRestoreIndexesAfterData: watching the target while a restore runs,
// no index but _id's exists until every document is in, and documents
// were seen arriving without it; in the end the indexes are all there.
func TestRestoreIndexesAfterData(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	src := cl.Database(srv.DBName).Collection("big")
	const n = 20000
	docs := make([]any, 0, 1000)
	for i := range n {
		docs = append(docs, bson.D{{Key: "_id", Value: i}, {Key: "k", Value: i}, {Key: "v", Value: i % 97}})
		if len(docs) == cap(docs) {
			if _, err := src.InsertMany(ctx, docs); err != nil {
				t.Fatal(err)
			}
			docs = docs[:0]
		}
	}
	if _, err := src.Indexes().CreateMany(ctx, []mongo.IndexModel{
		{Keys: bson.D{{Key: "k", Value: 1}}, Options: options.Index().SetUnique(true)},
		{Keys: bson.D{{Key: "v", Value: -1}}},
	}); err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if _, err := mgengine.LogicalDump(ctx, mgengine.URI(srv.DSN()), &sink, mgengine.DumpOptions{}); err != nil {
		t.Fatal(err)
	}
	target := cl.Database(srv.Prefix + "copy").Collection("big")
	stop := make(chan struct{})
	type seen struct {
		docs    int64
		indexes int
	}
	var obs []seen
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var names []string
			if cur, err := target.Indexes().List(ctx); err == nil {
				for cur.Next(ctx) {
					names = append(names, cur.Current.Lookup("name").StringValue())
				}
				cur.Close(ctx)
			}
			c, err := target.EstimatedDocumentCount(ctx)
			if err == nil && len(names) > 0 {
				obs = append(obs, seen{docs: c, indexes: len(names)})
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	_, err := mgengine.LogicalRestore(ctx, mgengine.URI(srv.URIFor(srv.Prefix+"copy")), sink.source(), mgengine.RestoreOptions{Workers: 4})
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	loading := 0
	for _, o := range obs {
		// The count is read after the indexes: an index seen with fewer
		// documents than the collection ends with was built before them.
		if o.indexes > 1 && o.docs < n {
			t.Fatalf("an index existed with %d of %d documents in: indexes were built before the data", o.docs, n)
		}
		if o.indexes == 1 && o.docs > 0 && o.docs < n {
			loading++
		}
	}
	if loading == 0 {
		t.Fatalf("the restore was never seen loading documents (%d observations): the test proves nothing", len(obs))
	}
	idx, err := target.Indexes().ListSpecifications(ctx)
	if err != nil || len(idx) != 3 {
		t.Fatalf("after the restore: %d indexes (%v), want 3", len(idx), err)
	}
	t.Logf("%d observations while loading without secondary indexes", loading)
}

// TestDumpAllDatabases: a URI that names no database dumps every
// database but admin, local and config, and a restore into a URI without
// a database loads each under its own name (into a second, empty server:
// on a shared real server the dump's listing alone is checked).
func TestDumpAllDatabases(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	names := []string{srv.Prefix + "one", srv.Prefix + "two"}
	for i, db := range names {
		for j := range i + 1 {
			if _, err := cl.Database(db).Collection(fmt.Sprintf("c%d", j)).InsertOne(ctx, bson.D{{Key: "_id", Value: j}, {Key: "db", Value: db}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var sink memSink
	res, err := mgengine.LogicalDump(ctx, mgengine.URI(srv.Base), &sink, mgengine.DumpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range names {
		if !slices.Contains(res.Databases, db) {
			t.Errorf("dump of every database: %v lacks %s", res.Databases, db)
		}
	}
	for _, db := range []string{"admin", "local", "config"} {
		if slices.Contains(res.Databases, db) {
			t.Errorf("dump of every database holds %s: %v", db, res.Databases)
		}
	}
	if !srv.FerretDB {
		return
	}
	dst := testbed.StartMongoDB(t)
	if _, err := mgengine.LogicalRestore(ctx, mgengine.URI(dst.Base), sink.source(), mgengine.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	dcl := connect(t, dst.Base)
	for _, db := range names {
		compare(t, checksums(t, cl.Database(db)), checksums(t, dcl.Database(db)))
	}
}
