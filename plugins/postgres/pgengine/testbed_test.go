package pgengine

import (
	"testing"

	"github.com/amber-backup/amber/conformance/testbed"
)

func TestTestbedSmoke(t *testing.T) {
	t.Parallel()
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	if got := pg.Psql(t, "postgres", "show wal_level"); got != "replica" {
		t.Fatalf("wal_level %q", got)
	}
	pg.Stop()
	pg.Start()
	sb := testbed.StartStandby(t, pg)
	if got := sb.Psql(t, "postgres", "select pg_is_in_recovery()"); got != "t" {
		t.Fatalf("standby in recovery: %q", got)
	}
	sb.Promote(t)
	if got := sb.Psql(t, "postgres", "select pg_is_in_recovery()"); got != "f" {
		t.Fatalf("promoted standby in recovery: %q", got)
	}
}
