package pgengine

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

func TestPointInTimeRestore(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	arch := newWALArchive(t)
	a, errc := startArchiver(t, ctx, pg.ReplicationDSN(), ArchiverOptions{Slot: "pitr", OnSegment: arch.onSegment})
	waitFor(t, 20*time.Second, "archiver streaming", func() bool {
		return pg.Psql(t, "postgres", "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pitr' AND active") == "1"
	})
	store := DirSink(t.TempDir())
	res, err := PhysicalBackup(ctx, DSN(pg.ReplicationDSN()), store, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}

	const now = `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`
	pg.Psql(t, "postgres", "CREATE TABLE marks (m text)")
	pg.Psql(t, "postgres", "INSERT INTO marks VALUES ('a')")
	pg.Psql(t, "postgres", "INSERT INTO marks VALUES ('b')")
	targetTime, err := time.Parse(time.RFC3339Nano, pg.Psql(t, "postgres", now))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	pg.Psql(t, "postgres", "INSERT INTO marks VALUES ('c')")
	targetLSN := lsnOf(t, pg, "SELECT pg_current_wal_insert_lsn()")
	pg.Psql(t, "postgres", "INSERT INTO marks VALUES ('d')")
	pg.Psql(t, "postgres", "SELECT pg_create_restore_point('before-e')")
	pg.Psql(t, "postgres", "INSERT INTO marks VALUES ('e')")
	end := lsnOf(t, pg, "SELECT pg_switch_wal()")
	last := WALFileName(1, SegmentStart(end-1, DefaultWALSegmentSize), DefaultWALSegmentSize)
	waitFor(t, 20*time.Second, "segment "+last+" archived", func() bool { return arch.has(last) })
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !res.ConsistentTime.Before(targetTime) {
		t.Fatalf("backup consistent at %v, after target %v", res.ConsistentTime, targetTime)
	}

	for _, tc := range []struct {
		name string
		rc   Recovery
		want string
	}{
		{"time", Recovery{TargetTime: targetTime}, "a,b"},
		{"lsn", Recovery{TargetLSN: targetLSN}, "a,b,c"},
		{"name", Recovery{TargetName: "before-e"}, "a,b,c,d"},
		{"all", Recovery{}, "a,b,c,d,e"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.rc.RestoreCommand = arch.restoreCommand()
			dataDir := filepath.Join(testbed.PostgresDir(t), "data")
			if err := PhysicalRestore(ctx, dataDir, store, RestoreOptions{Owner: postgresOwner(), Recovery: &tc.rc}); err != nil {
				t.Fatal(err)
			}
			restored := testbed.StartPostgresDataDir(t, dataDir, testbed.PostgresOptions{})
			waitFor(t, 30*time.Second, "promotion", func() bool {
				out, err := restored.PsqlErr("postgres", "SELECT pg_is_in_recovery()")
				return err == nil && out == "f"
			})
			if got := restored.Psql(t, "postgres", "SELECT string_agg(m, ',' ORDER BY m) FROM marks"); got != tc.want {
				t.Fatalf("recovered marks %q, want %q", got, tc.want)
			}
		})
	}
	_ = context.Background
}
