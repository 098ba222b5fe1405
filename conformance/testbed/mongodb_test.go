package testbed

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestMongoURIs(t *testing.T) {
	for _, c := range []struct{ uri, db, want string }{
		{"mongodb://127.0.0.1:27017/", "app", "mongodb://127.0.0.1:27017/app"},
		{"mongodb://127.0.0.1:27017", "app", "mongodb://127.0.0.1:27017/app"},
		{"mongodb://u:p@h1:1,h2:2/old?replicaSet=rs&authSource=admin", "new", "mongodb://u:p@h1:1,h2:2/new?replicaSet=rs&authSource=admin"},
		{"mongodb://h:1/?tls=true", "", "mongodb://h:1/?tls=true"},
	} {
		if got := WithDatabase(c.uri, c.db); got != c.want {
			t.Errorf("WithDatabase(%s, %s) = %s, want %s", c.uri, c.db, got, c.want)
		}
	}
	for _, c := range []struct{ uri, want string }{
		{"mongodb://h:1/app", "mongodb://x:p%40ss@h:1/app"},
		{"mongodb://old:pw@h1:1,h2:2/app?authSource=admin", "mongodb://x:p%40ss@h1:1,h2:2/app?authSource=admin"},
	} {
		if got := WithUser(c.uri, "x", "p@ss"); got != c.want {
			t.Errorf("WithUser(%s) = %s, want %s", c.uri, got, c.want)
		}
	}
}

// TestStartMongoDB: the server listens where its URI says, and stops.
func TestStartMongoDB(t *testing.T) {
	m := StartMongoDB(t)
	if !strings.HasPrefix(m.DSN(), "mongodb://") || !strings.HasSuffix(m.DSN(), "/"+m.DBName) {
		t.Fatalf("DSN %s", m.DSN())
	}
	if !m.FerretDB {
		return
	}
	host := strings.TrimSuffix(strings.TrimPrefix(m.Base, "mongodb://"), "/")
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatalf("nothing listens at %s: %v", host, err)
	}
	c.Close()
	m.Stop()
	if c, err := net.DialTimeout("tcp", host, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still listens after Stop", host)
	}
}

// TestStartMongoDBShared: with AMBER_TEST_MONGODB_URI set, StartMongoDB
// hands out that server (here a FerretDB of the test's own), with a
// default database of a fresh prefix, and drops the test's databases
// (those named with its prefix) in cleanup, leaving others alone.
func TestStartMongoDBShared(t *testing.T) {
	own := StartMongoDB(t) // a FerretDB, or the shared server itself
	ctx := context.Background()
	c, err := mongo.Connect(options.Client().ApplyURI(own.Base))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	other := own.Prefix + "other"
	if _, err := c.Database(other).Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	t.Setenv(MongoDBURIEnv, own.Base)
	var shared *MongoDB
	t.Run("shared", func(t *testing.T) {
		shared = StartMongoDB(t)
		if shared.FerretDB || shared.Base != own.Base || !strings.HasPrefix(shared.DBName, shared.Prefix) || shared.Prefix == own.Prefix {
			t.Fatalf("got %+v; want the server of %s with a fresh prefix", shared, MongoDBURIEnv)
		}
		for _, db := range []string{shared.DBName, shared.Prefix + "copy"} {
			if _, err := c.Database(db).Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
				t.Fatal(err)
			}
		}
	})
	names, err := c.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, shared.Prefix) {
			t.Errorf("database %s of the finished test is still there", n)
		}
	}
	if !slices.Contains(names, other) {
		t.Errorf("database %s of another test was dropped: %v", other, names)
	}
}
