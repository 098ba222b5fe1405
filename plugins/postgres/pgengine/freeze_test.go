package pgengine

import (
	"errors"
	"fmt"
	"github.com/amber-backup/amber/plugins/api/clock"
	"os"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

func TestFreezeThaw(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	clock := clock.NewFake(time.Unix(1e9, 0))
	dsn := DSN(pg.ReplicationDSN())
	active := func(pid uint32) bool {
		return pg.Psql(t, "postgres", fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid)) == "1"
	}

	f, err := Freeze(ctx, dsn, FreezeOptions{Lease: time.Minute, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	if !active(f.PID()) || f.StartLSN == 0 || f.Timeline != 1 {
		t.Fatalf("freeze %+v", f)
	}
	pg.Psql(t, "postgres", "CREATE TABLE during AS SELECT 1 AS x")
	clock.Advance(59 * time.Second) // within the lease
	res, err := f.Thaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(res.BackupLabel, "LABEL: amber") || !contains(res.BackupLabel, "START WAL LOCATION: "+f.StartLSN.String()) ||
		res.StopLSN < res.StartLSN || res.TablespaceMap != "" {
		t.Fatalf("thaw %+v", res)
	}
	if _, err := f.Thaw(ctx); err == nil {
		t.Fatal("second Thaw succeeded")
	}

	// A caller that disappears: the lease ends the backup by itself.
	f2, err := Freeze(ctx, dsn, FreezeOptions{Lease: time.Minute, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	pid := f2.PID()
	clock.Advance(61 * time.Second)
	waitFor(t, 10*time.Second, "freeze session to close", func() bool { return !active(pid) })
	if _, err := f2.Thaw(ctx); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("Thaw after lease: %v", err)
	}
	waitFor(t, 10*time.Second, "server to log the aborted backup", func() bool {
		b, _ := os.ReadFile(pg.LogFile)
		return contains(string(b), "aborting backup due to backend exiting before pg_backup_stop was called")
	})
}
