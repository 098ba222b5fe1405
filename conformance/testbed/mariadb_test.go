package testbed

import (
	"strings"
	"testing"
)

func TestMariaDBReplicaPromote(t *testing.T) {
	p := StartMariaDB(t, MariaDBOptions{})
	if got := p.SQL(t, "SELECT @@log_bin, @@binlog_format, @@time_zone"); got != "1\tROW\t+00:00" {
		t.Fatalf("settings: %q", got)
	}
	r := StartMariaDBReplica(t, p)
	p.SQL(t, "CREATE TABLE app.t (id int PRIMARY KEY); INSERT INTO app.t VALUES (1), (2)")
	r.WaitCaughtUp(t, p)
	if got := r.SQL(t, "SELECT count(*) FROM app.t"); got != "2" {
		t.Fatalf("replica has %s rows, want 2", got)
	}
	p.Stop()
	r.Promote(t)
	r.SQL(t, "INSERT INTO app.t VALUES (3)")
	if got := r.SQL(t, "SELECT @@read_only"); got != "0" {
		t.Fatalf("promoted replica read_only=%s", got)
	}
	if !strings.HasPrefix(r.DSN(), "mysql://amber:") {
		t.Fatalf("DSN %s", r.DSN())
	}
}
