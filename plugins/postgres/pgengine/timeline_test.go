package pgengine

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// An archiver streaming from a standby follows the standby's promotion onto
// the new timeline, emits the history file, and the archive restores.
func TestArchiverFollowsTimelineSwitch(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	primary := testbed.StartPostgres(t, testbed.PostgresOptions{})
	primary.Psql(t, "postgres", "CREATE TABLE marks (m text); INSERT INTO marks VALUES ('before')")
	standby := testbed.StartStandby(t, primary)
	waitFor(t, 30*time.Second, "standby catch-up", func() bool {
		out, _ := standby.PsqlErr("postgres", "SELECT count(*) FROM marks")
		return out == "1"
	})
	store := DirSink(t.TempDir())
	if _, err := PhysicalBackup(ctx, DSN(standby.ReplicationDSN()), store, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	arch := newWALArchive(t)
	a, errc := startArchiver(t, ctx, standby.ReplicationDSN(), ArchiverOptions{Slot: "tl", OnSegment: arch.onSegment})
	primary.Psql(t, "postgres", "INSERT INTO marks VALUES ('on-1')")
	onOne := lsnOf(t, primary, "SELECT pg_current_wal_flush_lsn()")
	waitFor(t, 30*time.Second, "archiver to receive timeline 1 WAL", func() bool {
		r, _, _ := a.Positions()
		return r >= onOne
	})

	primary.Stop()
	standby.Promote(t)
	standby.Psql(t, "postgres", "INSERT INTO marks VALUES ('on-2')")
	end := lsnOf(t, standby, "SELECT pg_switch_wal()")
	last := WALFileName(2, SegmentStart(end-1, DefaultWALSegmentSize), DefaultWALSegmentSize)
	waitFor(t, 30*time.Second, "timeline 2 segment "+last, func() bool { return arch.has(last) })
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	var history *emission
	var lastOnOne, firstOnTwo *emission
	ems := arch.emissions()
	for i, e := range ems {
		switch {
		case e.History:
			history = &ems[i]
		case e.Timeline == 1:
			lastOnOne = &ems[i]
		case e.Timeline == 2 && firstOnTwo == nil:
			firstOnTwo = &ems[i]
		}
	}
	if history == nil || history.Name != "00000002.history" || lastOnOne == nil || firstOnTwo == nil {
		t.Fatalf("emissions: %+v", ems)
	}
	content := standby.Psql(t, "postgres", "SELECT pg_read_file('pg_wal/00000002.history')")
	switchAt, err := ParseLSN(strings.Fields(content)[1])
	if err != nil {
		t.Fatal(err)
	}
	if !lastOnOne.Partial || lastOnOne.EndLSN != switchAt {
		t.Fatalf("timeline 1 ends with %+v, switch at %s", lastOnOne.Segment, switchAt)
	}
	if firstOnTwo.StartLSN != SegmentStart(switchAt, DefaultWALSegmentSize) {
		t.Fatalf("timeline 2 starts with %+v, switch at %s", firstOnTwo.Segment, switchAt)
	}

	// The archive (history + new-timeline segments) restores across the switch.
	dataDir := filepath.Join(testbed.PostgresDir(t), "data")
	rc := &Recovery{RestoreCommand: arch.restoreCommand()}
	if err := PhysicalRestore(ctx, dataDir, store, RestoreOptions{Owner: postgresOwner(), Recovery: rc}); err != nil {
		t.Fatal(err)
	}
	restored := testbed.StartPostgresDataDir(t, dataDir, testbed.PostgresOptions{})
	waitFor(t, 30*time.Second, "promotion", func() bool {
		out, err := restored.PsqlErr("postgres", "SELECT pg_is_in_recovery()")
		return err == nil && out == "f"
	})
	if got := restored.Psql(t, "postgres", "SELECT string_agg(m, ',' ORDER BY m) FROM marks"); got != "before,on-1,on-2" {
		t.Fatalf("restored marks %q", got)
	}
}
