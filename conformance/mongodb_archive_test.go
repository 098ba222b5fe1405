package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance"
)

// mongoRollbackEpoch: after a rollback of archived oplog entries, a
// backup taken through amber (which records the cluster time it is
// consistent at) reports epoch 2 — before the archiver has
// found the rollback (the plugin compares the archived end the host passes
// it with the server's oplog) and after it has archived epoch 2 — and a
// restore from it to the newest archived entry rolls forward in epoch 2; a
// backup from before the rolled-back writes rolls forward across the
// branch without them, and one holding them is refused.
// The rollback is made by deleting the newest entries of FerretDB's oplog
// emulation, which a real replica set does not allow: the subtest runs on
// the test bed's FerretDB only (fork_internal_test.go checks the decision
// on the shapes a replica set's entries have, terms included).
func mongoRollbackEpoch(t *testing.T, amber conformance.AmberRunner) {
	ctx := context.Background()
	src := startMongo(t)
	cl := mongoClient(t, src.Base)
	oplog := cl.Database("local").Collection("oplog.rs")
	if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(64<<20)); err != nil {
		t.Fatal(err)
	}
	m := cl.Database(src.DBName).Collection("m")
	insert := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			if _, err := m.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	repo := filepath.Join(t.TempDir(), "repo")
	run := func(args ...string) string { t.Helper(); return amberRun(t, amber, repo, args...) }
	// archive runs amber archive while fn writes, then stops it.
	archive := func(fn func()) string {
		t.Helper()
		var errb syncBuf
		c := amber(repo, "archive", "--engine", "mongodb", "--dsn", src.Base, "--flush-interval", "200ms")
		c.Stderr = &errb
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		t.Cleanup(func() { c.Process.Kill() })
		time.Sleep(3 * time.Second) // the archiver has its starting point
		fn()
		time.Sleep(2 * time.Second)
		c.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("amber archive: %v\n%s", err, errb.String())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("amber archive did not stop within 60 s of SIGTERM:\n%s", errb.String())
		}
		return errb.String()
	}
	// backupEpoch takes a backup and returns the epoch of its consistent
	// position (and the backup's id in lastID).
	var lastID string
	backupEpoch := func() uint32 {
		t.Helper()
		var b struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(run("backup", "--engine", "mongodb", "--dsn", src.DSN(), "--mode", "logical", "--json")), &b); err != nil || b.ID == "" {
			t.Fatalf("amber backup --json: %v", err)
		}
		lastID = b.ID
		var man struct {
			Record struct {
				Consistent struct {
					Epoch  uint32 `json:"epoch"`
					Offset uint64 `json:"offset"`
				} `json:"consistent"`
				Metadata map[string]string `json:"metadata"`
			} `json:"engine_record"`
		}
		out := run("cat", "manifest", "latest")
		if err := json.Unmarshal([]byte(out), &man); err != nil {
			t.Fatalf("manifest: %v\n%s", err, out)
		}
		if man.Record.Consistent.Offset == 0 {
			t.Fatalf("manifest without a consistent position:\n%s", out)
		}
		// The cluster time of the consistent point: the ts of the window's
		// last entry, just before the consistent boundary.
		if ct := man.Record.Metadata["cluster_time"]; ct != fmt.Sprintf("Timestamp(%d, %d)", uint32((man.Record.Consistent.Offset-1)>>32), uint32(man.Record.Consistent.Offset-1)) {
			t.Fatalf("cluster_time %q does not name the entry before the consistent position %#x", ct, man.Record.Consistent.Offset)
		}
		return man.Record.Consistent.Epoch
	}

	run("repo", "init")
	insert(1, 5)
	archive(func() { insert(6, 8) })
	if e := backupEpoch(); e != 1 {
		t.Fatalf("backup before the rollback: epoch %d, want 1", e)
	}
	early := lastID // holds 1 to 8, all of them in both histories
	archive(func() { insert(9, 10) })
	if e := backupEpoch(); e != 1 {
		t.Fatalf("backup before the rollback: epoch %d, want 1", e)
	}
	undone := lastID // holds 9 and 10, which the rollback undoes

	// A rollback: the newest archived entries (inserts 9 and 10) leave
	// the oplog, and the new history writes on (11 to 20).
	cur, err := oplog.Find(ctx, bson.D{{Key: "ns", Value: src.DBName + ".m"}}, options.Find().SetSort(bson.D{{Key: "$natural", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var ts []bson.Timestamp
	for cur.Next(ctx) {
		s, i := cur.Current.Lookup("ts").Timestamp()
		ts = append(ts, bson.Timestamp{T: s, I: i})
	}
	if len(ts) < 3 {
		t.Fatalf("%d oplog entries of the collection, want 10", len(ts))
	}
	if _, err := oplog.DeleteMany(ctx, bson.D{{Key: "ts", Value: bson.D{{Key: "$gt", Value: ts[len(ts)-3]}}}}); err != nil {
		t.Fatal(err)
	}
	insert(11, 12)
	if e := backupEpoch(); e != 2 {
		t.Fatalf("backup after the rollback, before the archiver found it: epoch %d, want 2", e)
	}
	log := archive(func() { insert(13, 15) })
	if segs, _ := filepath.Glob(filepath.Join(repo, "log", "*", "00000002", "*")); len(segs) == 0 {
		t.Fatalf("the archiver did not start epoch 2 (no segment under log/*/00000002):\n%s", log)
	}
	if e := backupEpoch(); e != 2 {
		t.Fatalf("backup with epoch 2 archived: epoch %d, want 2", e)
	}
	insert(16, 18)
	archive(func() { insert(19, 20) })

	count := func(uri string, id int) int64 {
		t.Helper()
		f := bson.D{}
		if id != 0 {
			f = bson.D{{Key: "_id", Value: id}}
		}
		n, err := mongoDB(t, uri).Collection("m").CountDocuments(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	newest := newestOplog(t, cl)

	// Restored from the epoch-2 backup and rolled forward to the newest
	// archived entry: every document (9 and 10 are in the data that dump
	// read; the rollback only took their oplog entries).
	dst := src.URIFor(src.Prefix + "rolled")
	run("restore", "--engine", "mongodb", "--dsn", dst, "--to-position", newest)
	if n := count(dst, 0); n != 20 {
		t.Fatalf("restored from the epoch-2 backup: %d documents, want 20", n)
	}
	// From the backup taken before 9 and 10, across the branch: epoch 1
	// up to where epoch 2 took over, then epoch 2; 9 and 10 never come.
	dst = src.URIFor(src.Prefix + "across")
	run("restore", "--engine", "mongodb", "--dsn", dst, "--backup", early, "--to-position", newest)
	if n, n9, n10 := count(dst, 0), count(dst, 9), count(dst, 10); n != 18 || n9+n10 != 0 {
		t.Fatalf("restored from the backup before the rollback across it: %d documents (9: %d, 10: %d), want 18 without 9 and 10", n, n9, n10)
	}
	// The backup that holds 9 and 10 cannot be rolled forward into epoch
	// 2: amber finds no archived history from it to the target (its
	// position is past the branch, on the replaced history) and refuses
	// before writing anything; the plugin would refuse too ("holds writes
	// the rollback undid").
	c := amber(repo, "restore", "--engine", "mongodb", "--dsn", src.URIFor(src.Prefix+"undone"), "--backup", undone, "--to-position", newest)
	out, err := c.CombinedOutput()
	if err == nil || !(strings.Contains(string(out), "does not continue from the backup") || strings.Contains(string(out), "rollback undid")) {
		t.Fatalf("a restore of a backup holding rolled-back writes, rolled forward past the rollback: %v\n%s", err, out)
	}
	if names, _ := cl.Database(src.Prefix+"undone").ListCollectionNames(ctx, bson.D{}); len(names) != 0 {
		t.Errorf("the refused restore created %v", names)
	}
}

// newestOplog is the newest oplog entry's ts, as --to-position takes it.
func newestOplog(t *testing.T, cl *mongo.Client) string {
	t.Helper()
	var last struct {
		TS bson.Timestamp `bson:"ts"`
	}
	if err := cl.Database("local").Collection("oplog.rs").FindOne(context.Background(), bson.D{},
		options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}})).Decode(&last); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("Timestamp(%d, %d)", last.TS.T, last.TS.I)
}

// syncBuf is a bytes.Buffer a process writes while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// mongoArchiveKill: `amber archive` tails the oplog while markers are
// inserted; its plugin is killed with SIGKILL (the host starts another),
// then amber itself (and its plugin with it, as a container's OOM kill
// would), and a new `amber archive` is started. A restore of the backup
// taken before the first marker, rolled forward to the newest oplog entry
// (which amber refuses when the archive has a gap after the backup),
// holds every marker.
func mongoArchiveKill(t *testing.T, amber conformance.AmberRunner) {
	ctx := context.Background()
	src := startMongo(t)
	cl := mongoClient(t, src.Base)
	if src.FerretDB {
		if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(64<<20)); err != nil {
			t.Fatal(err)
		}
	}
	m := cl.Database(src.DBName).Collection("m")
	insert := func(i int) {
		t.Helper()
		if _, err := m.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	repo := filepath.Join(t.TempDir(), "repo")
	run := func(args ...string) string { t.Helper(); return amberRun(t, amber, repo, args...) }
	type archiver struct {
		pid  int
		log  *syncBuf
		done chan error
	}
	start := func() archiver {
		t.Helper()
		a := archiver{log: &syncBuf{}, done: make(chan error, 1)}
		c := amber(repo, "archive", "--engine", "mongodb", "--dsn", src.Base, "--flush-interval", "200ms")
		c.Stderr = a.log
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		a.pid = c.Process.Pid
		go func() { a.done <- c.Wait() }()
		t.Cleanup(func() { c.Process.Kill() })
		time.Sleep(3 * time.Second) // the archiver has its starting point
		return a
	}
	const plugin = "amber-plugin-mongodb"
	run("repo", "init")
	insert(1)
	run("backup", "--engine", "mongodb", "--dsn", src.DSN(), "--mode", "logical")
	a := start()
	for i := 2; i <= 150; i++ {
		insert(i)
		switch i {
		case 50:
			pid := conformance.ChildNamed(a.pid, plugin)
			if pid == 0 {
				t.Fatalf("no %s under amber archive (pid %d)", plugin, a.pid)
			}
			syscall.Kill(pid, syscall.SIGKILL)
		case 100:
			pid := conformance.ChildNamed(a.pid, plugin)
			syscall.Kill(a.pid, syscall.SIGKILL)
			if pid != 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			<-a.done
			if !strings.Contains(a.log.String(), "restarting it") {
				t.Fatalf("amber archive did not restart its killed plugin:\n%s", a.log.String())
			}
			a = start()
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	syscall.Kill(a.pid, syscall.SIGTERM)
	select {
	case err := <-a.done:
		if err != nil {
			t.Fatalf("amber archive: %v\n%s", err, a.log.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("amber archive did not stop within 60 s of SIGTERM:\n%s", a.log.String())
	}
	// A gap in the archive after the backup makes amber refuse this.
	dst := src.URIFor(src.Prefix + "killed")
	run("restore", "--engine", "mongodb", "--dsn", dst, "--to-position", newestOplog(t, cl))
	n, err := mongoDB(t, dst).Collection("m").CountDocuments(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	if n != 150 {
		t.Fatalf("restored and rolled forward after the kills: %d markers, want 150", n)
	}
}
