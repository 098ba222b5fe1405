package conformance_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance"
)

// mongoTransactionAcrossBackup: a large transaction whose first entry
// (partialTxn) is written before a backup's position and whose last
// applyOps after it, through `amber archive`, `amber backup` and
// `amber restore`: rolled forward past the commit, the copy holds the
// whole transaction (replay read the archive from the backup's start,
// ReplayRequest.log_start); to just before the commit, none of it.
// FerretDB has no transactions: the test writes the oplog entries and the
// config.transactions document MongoDB would (its documented shapes), at
// timestamps ahead of FerretDB's own, and waits for its clock to pass them
// before writing anything else, so the oplog stays in ts order.
//
// Each entry written into local.oplog.rs is followed there by the entry
// FerretDB logs for that insert, at its own clock, behind it: the archiver
// must end a segment one past its greatest ts, not its last entry's, or
// the next segment holds the commit again (tail_internal_test.go,
// TestTailEntryBehindTheOneBefore).
func mongoTransactionAcrossBackup(t *testing.T, amber conformance.AmberRunner) {
	ctx := context.Background()
	src := startMongo(t)
	if !src.FerretDB {
		t.Fatal("this test writes oplog entries itself, which only the FerretDB test bed allows")
	}
	cl := mongoClient(t, src.Base)
	if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(64<<20)); err != nil {
		t.Fatal(err)
	}
	oplog := cl.Database("local").Collection("oplog.rs")
	m := cl.Database(src.DBName).Collection("m")
	insert := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := m.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	repo := filepath.Join(t.TempDir(), "repo")
	run := func(t *testing.T, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		c := amber(repo, args...)
		c.Stdout, c.Stderr = &out, &errb
		if err := c.Run(); err != nil {
			t.Fatalf("amber %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	run(t, "repo", "init")
	var archErr bytes.Buffer
	arch := amber(repo, "archive", "--engine", "mongodb", "--dsn", src.Base, "--flush-interval", "200ms")
	arch.Stderr = &archErr
	if err := arch.Start(); err != nil {
		t.Fatal(err)
	}
	archDone := make(chan error, 1)
	go func() { archDone <- arch.Wait() }()
	t.Cleanup(func() { arch.Process.Kill() })
	time.Sleep(2 * time.Second) // the archiver has its starting point
	insert(1, 10)
	var last struct {
		TS bson.Timestamp `bson:"ts"`
	}
	if err := oplog.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}})).Decode(&last); err != nil {
		t.Fatal(err)
	}
	if d := time.Now().Unix() - int64(last.TS.T); d < -5 || d > 60 {
		t.Fatalf("FerretDB's oplog ts %d is not seconds of this clock (%d): the test's timestamps would not follow its own", last.TS.T, time.Now().Unix())
	}

	// The transaction's entries, in MongoDB's shape (txn.go).
	lsid := bson.D{{Key: "id", Value: bson.Binary{Subtype: 4, Data: bytes.Repeat([]byte{9}, 16)}}}
	ns := src.DBName + ".m"
	ops := func(ids ...int) bson.A {
		var a bson.A
		for _, id := range ids {
			a = append(a, bson.D{{Key: "op", Value: "i"}, {Key: "ns", Value: ns}, {Key: "o", Value: bson.D{{Key: "_id", Value: id}}}})
		}
		return a
	}
	entry := func(ts, prev bson.Timestamp, o bson.D) bson.D {
		prevT := int64(1)
		if prev.T == 0 {
			prevT = -1
		}
		return bson.D{{Key: "ts", Value: ts}, {Key: "t", Value: int64(1)}, {Key: "wall", Value: time.Unix(int64(ts.T), 0)},
			{Key: "op", Value: "c"}, {Key: "ns", Value: "admin.$cmd"}, {Key: "o", Value: o},
			{Key: "lsid", Value: lsid}, {Key: "txnNumber", Value: int64(1)},
			{Key: "prevOpTime", Value: bson.D{{Key: "ts", Value: prev}, {Key: "t", Value: prevT}}}}
	}
	// ahead writes an entry 2 s ahead of FerretDB's clock and waits until
	// that second has passed.
	ahead := func(build func(ts bson.Timestamp) bson.D) bson.Timestamp {
		ts := bson.Timestamp{T: uint32(time.Now().Unix() + 2), I: 1}
		if _, err := oplog.InsertOne(ctx, build(ts)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(time.Unix(int64(ts.T)+1, 100e6)))
		return ts
	}
	if _, err := cl.Database("config").Collection("transactions").InsertOne(ctx, bson.D{{Key: "_id", Value: lsid}, {Key: "txnNum", Value: int64(1)},
		{Key: "state", Value: "inProgress"}}); err != nil {
		t.Fatal(err)
	}
	first := ahead(func(ts bson.Timestamp) bson.D {
		return entry(ts, bson.Timestamp{}, bson.D{{Key: "applyOps", Value: ops(100, 101)}, {Key: "partialTxn", Value: true}})
	})
	if _, err := cl.Database("config").Collection("transactions").UpdateOne(ctx, bson.D{{Key: "_id", Value: lsid}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "startOpTime", Value: bson.D{{Key: "ts", Value: first}, {Key: "t", Value: int64(1)}}}}}}); err != nil {
		t.Fatal(err)
	}
	insert(11, 20)
	run(t, "backup", "--engine", "mongodb", "--dsn", src.DSN(), "--mode", "logical")
	insert(21, 30)
	commit := ahead(func(ts bson.Timestamp) bson.D {
		return entry(ts, first, bson.D{{Key: "applyOps", Value: ops(102)}, {Key: "count", Value: int64(3)}})
	})
	if _, err := cl.Database("config").Collection("transactions").DeleteOne(ctx, bson.D{{Key: "_id", Value: lsid}}); err != nil {
		t.Fatal(err)
	}
	insert(31, 40)
	if err := oplog.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}})).Decode(&last); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	arch.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-archDone:
		if err != nil {
			t.Fatalf("amber archive: %v\n%s", err, archErr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("amber archive did not stop within 60 s of SIGTERM:\n%s", archErr.String())
	}
	ids := func(uri string) string {
		cur, err := mongoDB(t, uri).Collection("m").Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			t.Fatal(err)
		}
		var docs []struct {
			ID int `bson:"_id"`
		}
		if err := cur.All(ctx, &docs); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for i, d := range docs {
			if i > 0 && docs[i-1].ID+1 == d.ID && i+1 < len(docs) && docs[i+1].ID == d.ID+1 {
				continue // inside a run
			}
			if i > 0 && docs[i-1].ID+1 == d.ID {
				b.WriteString("-")
			} else if i > 0 {
				b.WriteString(" ")
			}
			fmt.Fprint(&b, d.ID)
		}
		return b.String()
	}
	text := func(ts bson.Timestamp) string { return fmt.Sprintf("Timestamp(%d, %d)", ts.T, ts.I) }
	for i, c := range []struct {
		name string
		args []string
		want string
	}{
		{"past the commit", []string{"--to-position", text(last.TS)}, "1-40 100-102"},
		{"just before the commit", []string{"--to-position", text(commit), "--exclusive"}, "1-30"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := src.URIFor(fmt.Sprintf("%stxn_%d", src.Prefix, i))
			out := run(t, append([]string{"restore", "--engine", "mongodb", "--dsn", dst}, c.args...)...)
			if got := ids(dst); got != c.want {
				t.Errorf("restored to %s: _ids %s, want %s\n%s", c.name, got, c.want, out)
			}
		})
	}
}
