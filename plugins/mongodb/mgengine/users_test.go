package mgengine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// TestUsersAndRoles: a dump with Users records the users and roles of its
// database (FerretDB has none: its SQLite handler has no users) and
// restores; a dump holding a user and a role of MongoDB's documented
// admin.system.users / admin.system.roles shapes loads them into the
// temporary collections and asks the server to merge them, which FerretDB
// refuses with an error that says the data is restored and the users are
// not, and leaves no temporary collection behind; restored under another
// database name, the users are skipped (merged, they would replace the
// source's) and the restore succeeds.
func TestUsersAndRoles(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	cl := connect(t, srv.Base)
	src := cl.Database(srv.DBName)
	if _, err := src.Collection("c").InsertMany(ctx, []any{bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 2}}}); err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	res, err := mgengine.LogicalDump(ctx, mgengine.URI(srv.DSN()), sink, mgengine.DumpOptions{Users: true})
	if err != nil {
		t.Fatal(err)
	}
	var meta mgengine.Metadata
	if err := json.Unmarshal(sink.data[0].Bytes(), &meta); err != nil {
		t.Fatal(err)
	}
	if meta.Auth == nil || !slices.Equal(meta.Auth.Databases, []string{srv.DBName}) ||
		!slices.Contains(sink.names, mgengine.UsersEntry) || !slices.Contains(sink.names, mgengine.RolesEntry) {
		t.Fatalf("auth %+v, entries %v: want users and roles of %s", meta.Auth, sink.names, srv.DBName)
	}
	if srv.FerretDB && (res.Users != 0 || res.Roles != 0) {
		t.Fatalf("FerretDB dumped %d users and %d roles, want none", res.Users, res.Roles)
	}
	if _, err := mgengine.LogicalRestore(ctx, mgengine.URI(srv.URIFor(srv.Prefix+"copy")), sink.source(), mgengine.RestoreOptions{}); err != nil {
		t.Fatalf("restore of a dump with users and roles: %v", err)
	}

	// A user and a role as MongoDB stores them.
	user, _ := bson.Marshal(bson.D{{Key: "_id", Value: srv.DBName + ".reporter"},
		{Key: "userId", Value: bson.Binary{Subtype: 4, Data: bytes.Repeat([]byte{7}, 16)}},
		{Key: "user", Value: "reporter"}, {Key: "db", Value: srv.DBName},
		{Key: "credentials", Value: bson.D{{Key: "SCRAM-SHA-256", Value: bson.D{{Key: "iterationCount", Value: 15000},
			{Key: "salt", Value: "c2FsdA=="}, {Key: "storedKey", Value: "c3RvcmVk"}, {Key: "serverKey", Value: "c2VydmVy"}}}}},
		{Key: "roles", Value: bson.A{bson.D{{Key: "role", Value: "reader"}, {Key: "db", Value: srv.DBName}}}}})
	role, _ := bson.Marshal(bson.D{{Key: "_id", Value: srv.DBName + ".reader"}, {Key: "role", Value: "reader"}, {Key: "db", Value: srv.DBName},
		{Key: "privileges", Value: bson.A{bson.D{{Key: "resource", Value: bson.D{{Key: "db", Value: srv.DBName}, {Key: "collection", Value: ""}}},
			{Key: "actions", Value: bson.A{"find"}}}}}, {Key: "roles", Value: bson.A{}}})
	for i, n := range sink.names {
		switch n {
		case mgengine.UsersEntry:
			sink.data[i].Reset()
			sink.data[i].Write(user)
		case mgengine.RolesEntry:
			sink.data[i].Reset()
			sink.data[i].Write(role)
		}
	}
	// mongodump's archive format leaves them out (see ExportArchive).
	var archive bytes.Buffer
	if _, err := mgengine.ExportArchive(ctx, sink.source(), &archive, mgengine.ExportOptions{}); err != nil {
		t.Fatalf("export of a dump with users and roles: %v", err)
	}
	if bytes.Contains(archive.Bytes(), []byte("reporter")) || bytes.Contains(archive.Bytes(), []byte("system.users")) {
		t.Fatal("the export holds the users")
	}
	rr, err := mgengine.LogicalRestore(ctx, mgengine.URI(srv.URIFor(srv.Prefix+"copy2")), sink.source(), mgengine.RestoreOptions{})
	if err != nil || rr.AuthSkipped == "" || rr.Users != 0 {
		t.Fatalf("restore under another name: %+v, %v; want the users skipped", rr, err)
	}
	if err := src.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	rr, err = mgengine.LogicalRestore(ctx, mgengine.URI(srv.DSN()), sink.source(), mgengine.RestoreOptions{})
	if srv.FerretDB {
		if err == nil || !strings.Contains(err.Error(), "the data is restored, the users and roles are not") {
			t.Fatalf("restore of a user and a role into FerretDB: %v; want the merge refused", err)
		}
		if n, _ := src.Collection("c").CountDocuments(ctx, bson.D{}); n != 2 {
			t.Fatalf("%d documents restored, want 2", n)
		}
	} else {
		t.Cleanup(func() {
			src.RunCommand(ctx, bson.D{{Key: "dropAllUsersFromDatabase", Value: 1}})
			src.RunCommand(ctx, bson.D{{Key: "dropAllRolesFromDatabase", Value: 1}})
		})
	}
	if !srv.FerretDB && (err != nil || rr.Users != 1 || rr.Roles != 1) {
		t.Fatalf("restore of a user and a role: %+v, %v", rr, err)
	}
	names, err := cl.Database("admin").ListCollectionNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, "amber_tempusers") || slices.Contains(names, "amber_temproles") {
		t.Fatalf("temporary collections left in admin: %v", names)
	}
}
