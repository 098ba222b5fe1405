package conformance_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance"
	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine/mgtest"
)

// mongoExportArchive: `amber restore --stdout` of a MongoDB backup is
// mongodump's archive format, and the stock mongorestore (mongo-tools
// 100.10.0, built by make deps) loads it into another server: every
// collection, document and index equal to the source. The source has an
// oplog, so the archive carries the dump's oplog window as mongodump
// --oplog does; on a real server mongorestore also replays it
// (--oplogReplay), on FerretDB (no applyOps) it skips it.
func mongoExportArchive(t *testing.T, amber conformance.AmberRunner) {
	mongorestore := testbed.Tool(t, "mongorestore")
	ctx := context.Background()
	src := startMongo(t)
	cl := mongoClient(t, src.Base)
	if src.FerretDB {
		if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(16<<20)); err != nil {
			t.Fatal(err)
		}
	}
	db := cl.Database(src.DBName)
	if err := mgtest.LoadTypes(ctx, db, 2<<20, src.FerretDB); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateCollection(ctx, "capped", options.CreateCollection().SetCapped(true).SetSizeInBytes(1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateCollection(ctx, "empty"); err != nil {
		t.Fatal(err)
	}
	// More than one archive segment (16 MiB) in one collection.
	mongoBulk(t, db, 20<<20)
	for i := range 20 {
		c := db.Collection(fmt.Sprintf("small_%02d", i))
		docs := make([]any, 50)
		for j := range docs {
			docs[j] = bson.D{{Key: "_id", Value: j}, {Key: "v", Value: fmt.Sprintf("%d-%d", i, j)}, {Key: "n", Value: i * j}}
		}
		if _, err := c.InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "n", Value: -1}, {Key: "v", Value: 1}}, Options: options.Index().SetName("n_v")}); err != nil {
			t.Fatal(err)
		}
	}
	want, err := mgtest.Checksums(ctx, db)
	if err != nil {
		t.Fatal(err)
	}

	repo := filepath.Join(t.TempDir(), "repo")
	run := func(stdout *os.File, args ...string) {
		t.Helper()
		var out, errb bytes.Buffer
		c := amber(repo, args...)
		c.Stdout, c.Stderr = &out, &errb
		if stdout != nil {
			c.Stdout = stdout
		}
		if err := c.Run(); err != nil {
			t.Fatalf("amber %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
		}
	}
	run(nil, "repo", "init")
	start := time.Now()
	run(nil, "backup", "--engine", "mongodb", "--dsn", src.DSN(), "--mode", "logical")
	amberTook := time.Since(start)
	dir := t.TempDir()
	// Side by side, same data, same run: the stock mongodump's archive
	// of the database (it runs on FerretDB too).
	start = time.Now()
	if out, err := exec.Command(testbed.Tool(t, "mongodump"), "--uri", src.DSN(), "--archive="+filepath.Join(dir, "mongodump.archive")).CombinedOutput(); err != nil {
		t.Fatalf("mongodump: %v\n%s", err, lastLines(string(out), 5))
	}
	mongodumpTook := time.Since(start)
	t.Logf("amber backup %v, mongodump --archive %v (ratio %.2f; one run, shared machine)",
		amberTook.Round(time.Millisecond), mongodumpTook.Round(time.Millisecond), amberTook.Seconds()/mongodumpTook.Seconds())
	export := func(name string, args ...string) string {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		run(f, append([]string{"restore", "--stdout"}, args...)...)
		return path
	}
	archive := export("a.archive", "--engine", "mongodb")
	// Without --engine too (the manifest names the engine), and the same
	// bytes: the export is deterministic.
	again := export("b.archive", "--backup", "latest")
	a, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("two exports of one backup differ: %d and %d bytes", len(a), len(b))
	}
	if len(a) < 4 || binary.LittleEndian.Uint32(a) != 0x8199e26d {
		t.Fatalf("export does not start with mongodump's archive magic: % x", a[:min(len(a), 8)])
	}
	t.Logf("archive: %d bytes", len(a))

	// mongorestore into another server: a fresh FerretDB, where the
	// database keeps its name and the oplog window is replayed (FerretDB
	// has no applyOps: the window of this idle source is the no-op entry
	// the export writes for an empty one); or, on a real server shared
	// with the source, renamed (mongorestore refuses --oplogReplay with a
	// rename).
	dst := startMongo(t)
	target := dst.Prefix + "fromarchive"
	args := []string{"--uri", dst.Base, "--archive=" + archive}
	if dst.FerretDB {
		// mongorestore sends index specs with an "ns" field, which
		// MongoDB ignores and FerretDB refuses ("Index option ns is
		// unknown"): on FerretDB the test builds the indexes itself from
		// the archive's prelude, which checks what it holds just as well.
		target = src.DBName
		args = append(args, "--noIndexRestore", "--oplogReplay")
	} else {
		args = append(args, "--nsFrom", src.DBName+".*", "--nsTo", target+".*")
	}
	out, err := exec.Command(mongorestore, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mongorestore: %v\n%s", err, out)
	}
	t.Logf("mongorestore: %s", lastLines(string(out), 3))
	if dst.FerretDB && !strings.Contains(string(out), "applied 0 oplog entries") {
		t.Errorf("mongorestore --oplogReplay did not report the oplog window:\n%s", lastLines(string(out), 5))
	}
	tdb := mongoClient(t, dst.Base).Database(target)
	if dst.FerretDB {
		for _, md := range archivePrelude(t, a) {
			if md.DB != src.DBName || md.Type == "view" {
				continue
			}
			var meta struct {
				Indexes []bson.D `bson:"indexes"`
			}
			if err := bson.UnmarshalExtJSON([]byte(md.Metadata), true, &meta); err != nil {
				t.Fatalf("metadata of %s: %v", md.Collection, err)
			}
			var specs bson.A
			for _, ix := range meta.Indexes {
				var clean bson.D
				id := false
				for _, e := range ix {
					id = id || (e.Key == "name" && e.Value == "_id_")
					if e.Key != "v" && e.Key != "ns" {
						clean = append(clean, e)
					}
				}
				if !id {
					specs = append(specs, clean)
				}
			}
			if len(specs) > 0 {
				if err := tdb.RunCommand(ctx, bson.D{{Key: "createIndexes", Value: md.Collection}, {Key: "indexes", Value: specs}}).Err(); err != nil {
					t.Fatalf("indexes of %s from the archive: %v", md.Collection, err)
				}
			}
		}
	}
	got, err := mgtest.Checksums(ctx, tdb)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		t.Errorf("mongorestore of the export differs from the source:\nsource:   %v\nrestored: %v", want, got)
	}

	// A damaged archive is refused by mongorestore (its CRC check), so the
	// check above is meaningful: flip a byte in the last document of the
	// data.
	bad := bytes.Clone(a)
	i := bytes.LastIndex(bad, []byte("small_19"))
	if i < 0 {
		t.Fatal("no small_19 namespace in the archive")
	}
	j := bytes.LastIndex(bad[:i], []byte("19-49"))
	if j < 0 {
		t.Fatal("no last document of small_19 in the archive")
	}
	bad[j] = 'X'
	badPath := filepath.Join(dir, "bad.archive")
	if err := os.WriteFile(badPath, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(mongorestore, "--uri", dst.Base, "--archive="+badPath, "--noIndexRestore", "--nsFrom", src.DBName+".*", "--nsTo", dst.Prefix+"bad.*").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "CRC mismatch") {
		t.Errorf("mongorestore of a damaged archive: err %v, want a CRC mismatch:\n%s", err, out)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

type archiveCollection struct {
	DB         string `bson:"db"`
	Collection string `bson:"collection"`
	Metadata   string `bson:"metadata"`
	Type       string `bson:"type"`
}

// archivePrelude reads the collection metadata of a mongodump archive:
// after the magic number and the header document, documents up to the
// terminator 0xffffffff.
func archivePrelude(t *testing.T, a []byte) []archiveCollection {
	t.Helper()
	rest := a[4:]
	var out []archiveCollection
	for first := true; ; first = false {
		if len(rest) < 4 {
			t.Fatal("archive prelude: truncated")
		}
		n := binary.LittleEndian.Uint32(rest)
		if n == 0xffffffff {
			return out
		}
		if int(n) > len(rest) || n < 5 {
			t.Fatalf("archive prelude: document of %d bytes", n)
		}
		if !first {
			var c archiveCollection
			if err := bson.Unmarshal(rest[:n], &c); err != nil {
				t.Fatalf("archive prelude: %v", err)
			}
			out = append(out, c)
		}
		rest = rest[n:]
	}
}
