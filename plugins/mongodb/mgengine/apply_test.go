package mgengine_test

import (
	"context"
	"fmt"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// TestApplyEntryShapes applies oplog entries in the shapes MongoDB 5.0+
// writes (built from its documented formats, since FerretDB's emulation
// writes none of them: $v 2 diffs, applyOps, commands: create, drop,
// createIndexes, the two-phase startIndexBuild/commitIndexBuild/
// abortIndexBuild, dropIndexes), each twice, to a server, and checks the
// documents, indexes and collections after both passes: applying is
// idempotent.
func TestApplyEntryShapes(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	db := srv.Prefix + "apply"
	ts := func(i uint32) bson.Timestamp { return bson.Timestamp{T: 1700000000, I: i} }
	ns := "src.c"
	// cmd is a command entry of database src, as MongoDB logs it.
	cmd := func(i uint32, o, o2 bson.D) bson.D {
		e := bson.D{{Key: "op", Value: "c"}, {Key: "ns", Value: "src.$cmd"}, {Key: "ts", Value: ts(i)}, {Key: "o", Value: o}}
		if o2 != nil {
			e = append(e, bson.E{Key: "o2", Value: o2})
		}
		return e
	}
	uuid := bson.Binary{Subtype: 4, Data: []byte("0123456789abcdef")}
	specB := bson.D{{Key: "v", Value: int32(2)}, {Key: "key", Value: bson.D{{Key: "b", Value: int32(-1)}}}, {Key: "name", Value: "b_-1"}}
	specX := bson.D{{Key: "v", Value: int32(2)}, {Key: "key", Value: bson.D{{Key: "x", Value: int32(1)}}}, {Key: "name", Value: "x_1"}}
	entries := []bson.D{
		{{Key: "op", Value: "c"}, {Key: "ns", Value: "src.$cmd"}, {Key: "ts", Value: ts(1)}, {Key: "o", Value: bson.D{{Key: "create", Value: "c"}}}},
		{{Key: "op", Value: "i"}, {Key: "ns", Value: ns}, {Key: "ts", Value: ts(2)}, {Key: "o", Value: bson.D{
			{Key: "_id", Value: 1}, {Key: "a", Value: 1}, {Key: "sub", Value: bson.D{{Key: "k", Value: 1}, {Key: "gone", Value: true}}}, {Key: "arr", Value: bson.A{10, 20, 30}}}}},
		{{Key: "op", Value: "i"}, {Key: "ns", Value: ns}, {Key: "ts", Value: ts(3)}, {Key: "o", Value: bson.D{{Key: "_id", Value: 2}, {Key: "a", Value: 2}}}},
		// $v 2 diff: set a, delete sub.gone, set sub.k, truncate arr to 2 and set arr[1].
		{{Key: "op", Value: "u"}, {Key: "ns", Value: ns}, {Key: "ts", Value: ts(4)}, {Key: "o2", Value: bson.D{{Key: "_id", Value: 1}}}, {Key: "o", Value: bson.D{
			{Key: "$v", Value: int32(2)}, {Key: "diff", Value: bson.D{
				{Key: "u", Value: bson.D{{Key: "a", Value: "one"}}},
				{Key: "ssub", Value: bson.D{{Key: "d", Value: bson.D{{Key: "gone", Value: false}}}, {Key: "u", Value: bson.D{{Key: "k", Value: 2}}}}},
				{Key: "sarr", Value: bson.D{{Key: "a", Value: true}, {Key: "l", Value: int32(2)}, {Key: "u1", Value: 21}}},
			}}}}},
		// A transaction: applyOps with an insert and a delete.
		{{Key: "op", Value: "c"}, {Key: "ns", Value: "admin.$cmd"}, {Key: "ts", Value: ts(5)}, {Key: "o", Value: bson.D{{Key: "applyOps", Value: bson.A{
			bson.D{{Key: "op", Value: "i"}, {Key: "ns", Value: ns}, {Key: "o", Value: bson.D{{Key: "_id", Value: 3}, {Key: "a", Value: 3}}}},
			bson.D{{Key: "op", Value: "d"}, {Key: "ns", Value: ns}, {Key: "o", Value: bson.D{{Key: "_id", Value: 2}}}},
		}}}}},
		// A replacement and a $v 1 update.
		{{Key: "op", Value: "u"}, {Key: "ns", Value: ns}, {Key: "ts", Value: ts(6)}, {Key: "o2", Value: bson.D{{Key: "_id", Value: 3}}}, {Key: "o", Value: bson.D{{Key: "_id", Value: 3}, {Key: "b", Value: "replaced"}}}},
		{{Key: "op", Value: "u"}, {Key: "ns", Value: ns}, {Key: "ts", Value: ts(7)}, {Key: "o2", Value: bson.D{{Key: "_id", Value: 3}}}, {Key: "o", Value: bson.D{{Key: "$v", Value: int32(1)}, {Key: "$set", Value: bson.D{{Key: "c", Value: true}}}}}},
		// Another database's entry and a no-op: skipped.
		{{Key: "op", Value: "i"}, {Key: "ns", Value: "other.c"}, {Key: "ts", Value: ts(8)}, {Key: "o", Value: bson.D{{Key: "_id", Value: 9}}}},
		{{Key: "op", Value: "n"}, {Key: "ns", Value: ""}, {Key: "ts", Value: ts(9)}, {Key: "o", Value: bson.D{{Key: "msg", Value: "periodic noop"}}}},
		// Indexes as MongoDB 4.4+ logs them: on an empty collection one
		// createIndexes entry with the specification inline; else a
		// two-phase build, startIndexBuild then commitIndexBuild (or
		// abortIndexBuild); dropIndexes names the index, o2 its spec.
		cmd(10, bson.D{{Key: "createIndexes", Value: "c"}, {Key: "v", Value: int32(2)}, {Key: "key", Value: bson.D{{Key: "a", Value: int32(1)}}}, {Key: "name", Value: "a_1"}}, nil),
		cmd(11, bson.D{{Key: "startIndexBuild", Value: "c"}, {Key: "indexBuildUUID", Value: uuid}, {Key: "indexes", Value: bson.A{specB}}}, nil),
		cmd(12, bson.D{{Key: "commitIndexBuild", Value: "c"}, {Key: "indexBuildUUID", Value: uuid}, {Key: "indexes", Value: bson.A{specB}}}, nil),
		cmd(13, bson.D{{Key: "startIndexBuild", Value: "c"}, {Key: "indexBuildUUID", Value: uuid}, {Key: "indexes", Value: bson.A{specX}}}, nil),
		cmd(14, bson.D{{Key: "abortIndexBuild", Value: "c"}, {Key: "indexBuildUUID", Value: uuid}, {Key: "indexes", Value: bson.A{specX}},
			{Key: "cause", Value: bson.D{{Key: "ok", Value: int32(0)}, {Key: "code", Value: int32(276)}, {Key: "codeName", Value: "IndexBuildAborted"}}}}, nil),
		cmd(15, bson.D{{Key: "dropIndexes", Value: "c"}, {Key: "index", Value: "a_1"}}, bson.D{{Key: "v", Value: int32(2)}, {Key: "key", Value: bson.D{{Key: "a", Value: int32(1)}}}, {Key: "name", Value: "a_1"}}),
		// A collection created, written and dropped inside the window.
		cmd(16, bson.D{{Key: "create", Value: "tmp"}}, nil),
		{{Key: "op", Value: "i"}, {Key: "ns", Value: "src.tmp"}, {Key: "ts", Value: ts(17)}, {Key: "o", Value: bson.D{{Key: "_id", Value: 1}}}},
		cmd(18, bson.D{{Key: "drop", Value: "tmp"}}, bson.D{{Key: "numRecords", Value: int64(1)}}),
		// A rename (run on admin, renamed as the restore renames; one
		// over an existing collection, dropTarget: UUID in the oplog,
		// FerretDB does not take: TestOplogCommand).
		cmd(19, bson.D{{Key: "create", Value: "r1"}}, nil),
		{{Key: "op", Value: "i"}, {Key: "ns", Value: "src.r1"}, {Key: "ts", Value: ts(20)}, {Key: "o", Value: bson.D{{Key: "_id", Value: "moved"}}}},
		cmd(21, bson.D{{Key: "renameCollection", Value: "src.r1"}, {Key: "to", Value: "src.r2"}, {Key: "stayTemp", Value: false}}, nil),
	}
	a := &mgengine.Applier{Client: cl, Rename: func(string) string { return db }, Only: map[string]bool{"src": true}}
	for pass := range 2 {
		for _, e := range entries {
			b, err := bson.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Apply(ctx, b); err != nil {
				t.Fatalf("pass %d: %v", pass+1, err)
			}
		}
		cur, err := cl.Database(db).Collection("c").Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			t.Fatal(err)
		}
		var got []bson.D
		if err := cur.All(ctx, &got); err != nil {
			t.Fatal(err)
		}
		want := []bson.D{
			{{Key: "_id", Value: int32(1)}, {Key: "a", Value: "one"}, {Key: "sub", Value: bson.D{{Key: "k", Value: int32(2)}}}, {Key: "arr", Value: bson.A{int32(10), int32(21)}}},
			{{Key: "_id", Value: int32(3)}, {Key: "b", Value: "replaced"}, {Key: "c", Value: true}},
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("pass %d:\n got  %v\n want %v", pass+1, got, want)
		}
		var idx []string
		specs, err := cl.Database(db).Collection("c").Indexes().ListSpecifications(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range specs {
			idx = append(idx, s.Name)
		}
		if fmt.Sprint(idx) != "[_id_ b_-1]" {
			t.Errorf("pass %d: indexes %v, want [_id_ b_-1] (a_1 built then dropped, b_-1 committed, x_1 aborted)", pass+1, idx)
		}
		if names, _ := cl.Database(db).ListCollectionNames(ctx, bson.D{{Key: "name", Value: "tmp"}}); len(names) != 0 {
			t.Errorf("pass %d: collection tmp was created and dropped in the window, yet exists", pass+1)
		}
		if n, err := cl.Database(db).Collection("r2").CountDocuments(ctx, bson.D{{Key: "_id", Value: "moved"}}); err != nil || n != 1 {
			t.Errorf("pass %d: r1 renamed over r2: r2 holds %d of its documents (%v)", pass+1, n, err)
		}
	}
	// (The other database's entry would have landed in db.c as _id 9,
	// since Rename maps every database there: want leaves it out.)
}

// TestApplyDropDatabase: a dropDatabase entry of the restored database
// drops the restored copy (renamed as the restore renames), what follows
// it is applied to a fresh database, and a dropDatabase of a database the
// restore does not take changes nothing; applying twice gives the same.
func TestApplyDropDatabase(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	db := srv.Prefix + "dropdb"
	ts := func(i uint32) bson.Timestamp { return bson.Timestamp{T: 1700000000, I: i} }
	cmd := func(i uint32, dbName string, o bson.D) bson.D {
		return bson.D{{Key: "op", Value: "c"}, {Key: "ns", Value: dbName + ".$cmd"}, {Key: "ts", Value: ts(i)}, {Key: "o", Value: o}}
	}
	insert := func(i uint32, ns string, id int) bson.D {
		return bson.D{{Key: "op", Value: "i"}, {Key: "ns", Value: ns}, {Key: "ts", Value: ts(i)}, {Key: "o", Value: bson.D{{Key: "_id", Value: id}}}}
	}
	entries := []bson.D{
		cmd(1, "src", bson.D{{Key: "create", Value: "old"}}),
		insert(2, "src.old", 1),
		cmd(3, "src", bson.D{{Key: "dropDatabase", Value: int32(1)}}),
		cmd(4, "src", bson.D{{Key: "create", Value: "new"}}),
		insert(5, "src.new", 2),
		cmd(6, "other", bson.D{{Key: "dropDatabase", Value: int32(1)}}),
	}
	a := &mgengine.Applier{Client: cl, Rename: func(string) string { return db }, Only: map[string]bool{"src": true}}
	for pass := range 2 {
		for _, e := range entries {
			b, err := bson.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Apply(ctx, b); err != nil {
				t.Fatalf("pass %d: %v", pass+1, err)
			}
		}
		names, err := cl.Database(db).ListCollectionNames(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := cl.Database(db).Collection("new").CountDocuments(ctx, bson.D{{Key: "_id", Value: 2}})
		if fmt.Sprint(names) != "[new]" || err != nil || n != 1 {
			t.Errorf("pass %d: collections %v, new holds _id 2: %d (%v); want only new, with it", pass+1, names, n, err)
		}
	}
}
