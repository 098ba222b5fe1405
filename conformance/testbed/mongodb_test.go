package testbed

import (
	"net"
	"strings"
	"testing"
	"time"
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
