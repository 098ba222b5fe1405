package conformance_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance"
	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine/mgtest"
)

// TestMongoDBConformance runs the engine-independent suite against
// amber-plugin-mongodb and a MongoDB wire-protocol server: FerretDB 1.24
// (testbed), or the server AMBER_TEST_MONGODB_URI names.
func TestMongoDBConformance(t *testing.T) {
	bin := mongoBins(t)
	amber := mysqlAmberRunner(bin)
	t.Run("RoundTripTypes", func(t *testing.T) { mongoRoundTripTypes(t, amber) })
	t.Run("LogicalPointInTime", func(t *testing.T) { mongoLogicalPointInTime(t, amber) })
	t.Run("ExportArchive", func(t *testing.T) { mongoExportArchive(t, amber) })
	t.Run("Freeze", func(t *testing.T) { mongoFreeze(t, bin) })
	t.Run("ArchiveKill", func(t *testing.T) { mongoArchiveKill(t, amber) })
	if os.Getenv(testbed.MongoDBURIEnv) == "" {
		// A rollback made by deleting oplog entries: FerretDB's emulation only.
		t.Run("RollbackEpoch", func(t *testing.T) { mongoRollbackEpoch(t, amber) })
		t.Run("TransactionAcrossBackup", func(t *testing.T) { mongoTransactionAcrossBackup(t, amber) })
	}
	conformance.Run(t, &mongoDriver{}, amber)
}

// mongoBins builds amber and amber-plugin-mongodb side by side.
func mongoBins(t *testing.T) string {
	t.Helper()
	if os.Getenv(testbed.MongoDBURIEnv) == "" {
		testbed.Tool(t, "ferretdb-testbed")
	}
	dir := t.TempDir()
	testbed.BuildAmber(t, dir, "mongodb")
	return dir
}

func mongoClient(t testing.TB, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	return c
}

// mongoDB opens the database a URI names.
func mongoDB(t testing.TB, uri string) *mongo.Database {
	t.Helper()
	db := strings.TrimPrefix(uri[strings.LastIndex(uri, "/"):], "/")
	db, _, _ = strings.Cut(db, "?")
	if db == "" {
		t.Fatalf("URI %s names no database", uri)
	}
	return mongoClient(t, uri).Database(db)
}

// mongoServer is a test server with its default database.
type mongoServer struct{ *testbed.MongoDB }

// startMongo starts a server (on a shared one, testbed drops the test's
// databases in cleanup).
func startMongo(t testing.TB) *mongoServer {
	t.Helper()
	return &mongoServer{testbed.StartMongoDB(t)}
}

// mongoRoundTripTypes: every BSON type the server takes, a 15 MB
// document, a capped collection and indexes, through `amber backup` and
// `amber restore` into another database, equal byte for byte; with the
// figures of a dump and restore of 100 MB.
func mongoRoundTripTypes(t *testing.T, amber conformance.AmberRunner) {
	ctx := context.Background()
	src := startMongo(t)
	db := mongoDB(t, src.DSN())
	if err := mgtest.LoadTypes(ctx, db, 15<<20, src.FerretDB); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateCollection(ctx, "capped", options.CreateCollection().SetCapped(true).SetSizeInBytes(1<<20)); err != nil {
		t.Fatal(err)
	}
	const bulk = 100 << 20
	start := time.Now()
	ndocs := mongoBulk(t, db, bulk)
	t.Logf("loaded %d documents, %d MiB in %v", ndocs, bulk>>20, time.Since(start).Round(time.Millisecond))
	want, err := mgtest.Checksums(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(t.TempDir(), "repo")
	run := func(args ...string) string { t.Helper(); return amberRun(t, amber, repo, args...) }
	run("repo", "init")
	start = time.Now()
	run("backup", "--engine", "mongodb", "--dsn", src.DSN(), "--mode", "logical")
	dumpTook := time.Since(start)
	target := src.URIFor(src.Prefix + "restored")
	start = time.Now()
	run("restore", "--engine", "mongodb", "--dsn", target, "--backup", "latest")
	restoreTook := time.Since(start)
	got, err := mgtest.Checksums(ctx, mongoDB(t, target))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		t.Errorf("restored database differs:\nsource:   %v\nrestored: %v", want, got)
	}
	mb := float64(bulk+15<<20) / 1e6
	t.Logf("amber backup: %.1f MB, %d docs in %v (%.1f MB/s, %.0f docs/s); amber restore: %v (%.1f MB/s, %.0f docs/s)",
		mb, ndocs, dumpTook.Round(time.Millisecond), mb/dumpTook.Seconds(), float64(ndocs)/dumpTook.Seconds(),
		restoreTook.Round(time.Millisecond), mb/restoreTook.Seconds(), float64(ndocs)/restoreTook.Seconds())
}

// mongoLogicalPointInTime: `amber archive` tails the oplog while markers
// are written; a logical restore into a new database with --to-position
// or --to-time holds exactly the markers written up to the target (the
// target entry itself left out with --exclusive), and a target past the
// archive is refused before anything is written.
func mongoLogicalPointInTime(t *testing.T, amber conformance.AmberRunner) {
	ctx := context.Background()
	src := startMongo(t)
	cl := mongoClient(t, src.Base)
	if src.FerretDB {
		if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(64<<20)); err != nil {
			t.Fatal(err)
		}
	}
	m := cl.Database(src.DBName).Collection("m")
	insert := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := m.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	repo := filepath.Join(t.TempDir(), "repo")
	run := func(t *testing.T, args ...string) string { t.Helper(); return amberRun(t, amber, repo, args...) }
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
	insert(1, 30)
	run(t, "backup", "--engine", "mongodb", "--dsn", src.DSN(), "--mode", "logical")
	insert(31, 40)
	newest := func() string {
		var last struct {
			TS bson.Timestamp `bson:"ts"`
		}
		if err := cl.Database("local").Collection("oplog.rs").FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}})).Decode(&last); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("Timestamp(%d, %d)", last.TS.T, last.TS.I)
	}
	pos := newest()
	insert(41, 60)
	time.Sleep(50 * time.Millisecond)
	cut := time.Now().UTC()
	time.Sleep(50 * time.Millisecond)
	insert(61, 80)
	end := newest()
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
	count := func(uri string) (int64, int32) {
		c := mongoDB(t, uri).Collection("m")
		n, err := c.CountDocuments(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		var top struct {
			ID int32 `bson:"_id"`
		}
		if n > 0 {
			if err := c.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "_id", Value: -1}})).Decode(&top); err != nil {
				t.Fatal(err)
			}
		}
		return n, top.ID
	}
	for i, c := range []struct {
		name string
		args []string
		want int
	}{
		{"position", []string{"--to-position", pos}, 40},
		{"time", []string{"--to-time", cut.Format(time.RFC3339Nano)}, 60},
		{"the last entry", []string{"--to-position", end}, 80},
		{"exclusive", []string{"--to-position", end, "--exclusive"}, 79},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := src.URIFor(fmt.Sprintf("%spitr_%d", src.Prefix, i))
			run(t, append([]string{"restore", "--engine", "mongodb", "--dsn", dst}, c.args...)...)
			if n, top := count(dst); n != int64(c.want) || int(top) != c.want {
				t.Errorf("restored to %s: %d markers up to %d, want %d", c.name, n, top, c.want)
			}
		})
	}
	t.Run("past the window", func(t *testing.T) {
		dst := src.URIFor(src.Prefix + "never")
		c := amber(repo, "restore", "--engine", "mongodb", "--dsn", dst, "--to-time", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
		out, err := c.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "recoverable window") {
			t.Fatalf("a restore past the archive: %v\n%s", err, out)
		}
		if names, _ := cl.Database(src.Prefix+"never").ListCollectionNames(ctx, bson.D{}); len(names) != 0 {
			t.Errorf("a refused restore created %v", names)
		}
	})
}

// mongoBulk inserts about size bytes of random 1 KB documents into
// collection "bulk", two sessions at once, and returns how many.
func mongoBulk(t testing.TB, db *mongo.Database, size int64) int {
	t.Helper()
	const docSize, batch, parts = 1000, 1000, 2
	n := int(size / (docSize + 40))
	errs := make(chan error, parts)
	for p := range parts {
		go func() {
			c := db.Collection("bulk")
			for from := p * n / parts; from < (p+1)*n/parts; from += batch {
				to := min(from+batch, (p+1)*n/parts)
				docs := make([]any, 0, to-from)
				for i := from; i < to; i++ {
					b := make([]byte, docSize)
					rand.Read(b)
					docs = append(docs, bson.D{{Key: "_id", Value: i}, {Key: "p", Value: bson.Binary{Data: b}}})
				}
				if _, err := c.InsertMany(context.Background(), docs); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range parts {
		if err := <-errs; err != nil {
			t.Fatalf("bulk load: %v", err)
		}
	}
	return n
}

// mongoDriver runs the conformance suite: logical backups only (MongoDB
// has no streaming physical backup in its community server).
type mongoDriver struct{ dbs atomic.Int64 }

func (*mongoDriver) Engine() string { return "mongodb" }

func (*mongoDriver) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{Logical: true}
}

// Start returns a server whose database exists and is empty of data: a
// MongoDB database exists only once it has a collection, and the plugin
// refuses a URI naming a database the server does not have (a typo must
// not give an empty backup), so the database gets one empty collection.
func (*mongoDriver) Start(t testing.TB) conformance.Server {
	m := startMongo(t)
	if err := mongoDB(t, m.DSN()).CreateCollection(context.Background(), "conformance_empty"); err != nil {
		t.Fatalf("create the test database: %v", err)
	}
	return m
}

func (*mongoDriver) TempDir(t testing.TB) string { return t.TempDir() }

func (*mongoDriver) StartRestored(t testing.TB, _ string) conformance.Server {
	t.Fatal("mongodb has no physical restores")
	return nil
}

func (d *mongoDriver) CreateEmptyDB(t testing.TB, s conformance.Server) string {
	m := s.(*mongoServer)
	return m.URIFor(fmt.Sprintf("%srestored_%d", m.Prefix, d.dbs.Add(1)))
}

// LoadFixture: the types collection (every BSON type the server takes and
// a 15 MB document, with indexes), a capped collection, and 500
// collections of 5 documents each with an index.
func (*mongoDriver) LoadFixture(t testing.TB, s conformance.Server) {
	ctx := context.Background()
	m := s.(*mongoServer)
	db := mongoDB(t, m.DSN())
	if err := mgtest.LoadTypes(ctx, db, 15<<20, m.FerretDB); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateCollection(ctx, "capped", options.CreateCollection().SetCapped(true).SetSizeInBytes(1<<20)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection("capped").InsertMany(ctx, []any{bson.D{{Key: "n", Value: 1}}, bson.D{{Key: "n", Value: 2}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		c := db.Collection(fmt.Sprintf("many_%03d", i))
		docs := make([]any, 5)
		for j := range docs {
			docs[j] = bson.D{{Key: "_id", Value: j}, {Key: "v", Value: fmt.Sprintf("%d-%d", i, j)}, {Key: "n", Value: i * j}}
		}
		if _, err := c.InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			if _, err := c.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "n", Value: -1}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (*mongoDriver) LoadBulk(t testing.TB, s conformance.Server, size int64) {
	mongoBulk(t, mongoDB(t, s.DSN()), size)
}

func (*mongoDriver) Checksums(t testing.TB, dsn string) map[string]string {
	m, err := mgtest.Checksums(context.Background(), mongoDB(t, dsn))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The bank keeps every account in one document: MongoDB makes one
// document's update atomic, and multi-document transactions need a replica
// set (FerretDB has none), so a transfer is one $inc of two fields.
type mongoBank struct{ c *mongo.Collection }

func (b mongoBank) Transfer(ctx context.Context, from, to int, amount int64) error {
	_, err := b.c.UpdateOne(ctx, bson.D{{Key: "_id", Value: "bank"}},
		bson.D{{Key: "$inc", Value: bson.D{{Key: "a" + strconv.Itoa(from), Value: -amount}, {Key: "a" + strconv.Itoa(to), Value: amount}}}})
	return err
}

func (*mongoDriver) BankSetup(t testing.TB, dsn string, accounts int, balance int64) conformance.Bank {
	c := mongoDB(t, dsn).Collection("accounts")
	doc := bson.D{{Key: "_id", Value: "bank"}}
	for i := 1; i <= accounts; i++ {
		doc = append(doc, bson.E{Key: "a" + strconv.Itoa(i), Value: balance})
	}
	if _, err := c.InsertOne(context.Background(), doc); err != nil {
		t.Fatal(err)
	}
	return mongoBank{c}
}

func (*mongoDriver) BankTotals(t testing.TB, dsn string) (int, int64) {
	var doc bson.D
	if err := mongoDB(t, dsn).Collection("accounts").FindOne(context.Background(), bson.D{{Key: "_id", Value: "bank"}}).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	n, sum := 0, int64(0)
	for _, e := range doc {
		if strings.HasPrefix(e.Key, "a") {
			n++
			switch v := e.Value.(type) {
			case int64:
				sum += v
			case int32:
				sum += int64(v)
			case float64:
				sum += int64(v)
			}
		}
	}
	return n, sum
}

func (*mongoDriver) BadInputs(t testing.TB, s conformance.Server) []conformance.BadInput {
	m := s.(*mongoServer)
	logical := func(dsn string) []string {
		return []string{"backup", "--engine", "mongodb", "--dsn", dsn, "--mode", "logical"}
	}
	cases := []conformance.BadInput{
		{Name: "nothing listening", Args: logical("mongodb://amber:Cl0sed-Pw-5521@127.0.0.1:" + strconv.Itoa(testbed.FreePort(t)) + "/app?serverSelectionTimeoutMS=2000"),
			Want: []string{"cannot reach MongoDB", "check the host and port"}, Secret: "Cl0sed-Pw-5521"},
		{Name: "malformed URI", Args: logical("mongodb://amber:Bad-Pw-3318@127.0.0.1:notaport/app"),
			Want: []string{"malformed", "mongodb://user:password@host:27017"}, Secret: "Bad-Pw-3318"},
		{Name: "not a MongoDB URI", Args: logical("postgres://amber:Pg-Pw-7719@127.0.0.1/app"),
			Want: []string{"malformed", "mongodb://"}, Secret: "Pg-Pw-7719"},
	}
	if m.FerretDB {
		// FerretDB with SQLite has no replica set and no oplog until
		// local.oplog.rs is created: a standalone server.
		cases = append(cases, conformance.BadInput{Name: "archive without an oplog",
			Args: []string{"archive", "--engine", "mongodb", "--dsn", m.DSN()},
			Want: []string{"oplog", "replica set"}})
	} else {
		// FerretDB's SQLite handler has no authentication; a real server does.
		cases = append(cases, conformance.BadInput{Name: "wrong password", Args: logical(testbed.WithUser(m.DSN(), "amber_nobody", "Wr0ng-Pw-9184")),
			Want: []string{"authentication failed", "check the user and password"}, Secret: "Wr0ng-Pw-9184"})
	}
	return cases
}
