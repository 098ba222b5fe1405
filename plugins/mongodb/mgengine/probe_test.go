package mgengine_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mongodb/mgengine"
)

// TestProbeOplog: a server is known to have an oplog by its
// local.oplog.rs, whatever its setName says: FerretDB reports none, and
// once the collection exists Probe finds the oplog and its newest entry;
// before, it answers ErrNoOplog, which names the fix.
func TestProbeOplog(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMongoDB(t)
	if !srv.FerretDB {
		testbed.Skip(t, "needs a server without an oplog, then with one: the FerretDB test bed")
	}
	info, err := mgengine.Probe(ctx, mgengine.URI(srv.Base))
	if !errors.Is(err, mgengine.ErrNoOplog) || info == nil || info.Oplog || info.SetName != "" {
		t.Fatalf("without local.oplog.rs: %+v, %v; want no oplog and ErrNoOplog", info, err)
	}
	if !strings.Contains(err.Error(), "replica set") {
		t.Errorf("ErrNoOplog does not name the fix: %v", err)
	}
	cl := connect(t, srv.Base)
	if err := cl.Database("local").CreateCollection(ctx, "oplog.rs", options.CreateCollection().SetCapped(true).SetSizeInBytes(1<<20)); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Database(srv.DBName).Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	info, err = mgengine.Probe(ctx, mgengine.URI(srv.Base))
	if err != nil || !info.Oplog || info.SetName != "" || info.Last.IsZero() {
		t.Fatalf("with local.oplog.rs and no setName: %+v, %v; want the oplog and its newest entry", info, err)
	}
}
