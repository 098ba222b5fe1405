package conformance_test

import (
	"encoding/json"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// TestPostgresFailover: archiving survives a failover. amber archives from
// the standby, the way a standby-preferred policy runs it: the standby's
// replication slot lives on the node that becomes the primary, so after a
// failover nothing needs repointing and the slot still holds every byte not
// yet durable. (A slot on the old primary dies with it; PostgreSQL 15 does not
// copy slots to standbys, so an archiver repointed at the new primary would
// start from a fresh slot and could miss WAL.)
//
// A writer commits markers on the primary; the primary is stopped, as in a
// real failover, the standby is promoted and the writer goes on against it.
// Restores to points before and after the promotion must hold exactly the
// markers committed before each target, and the recoverable window must have
// no gap across the timeline switch.
func TestPostgresFailover(t *testing.T) {
	bin := bins(t)
	primary := testbed.StartPostgres(t, testbed.PostgresOptions{})
	db := open(t, primary.DSN())
	if _, err := db.Exec(`CREATE TABLE markers (id int PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	standby := testbed.StartStandby(t, primary)
	pollUntil(t, 30*time.Second, "standby to replay the markers table", func() bool {
		out, err := standby.PsqlErr("postgres", "SELECT count(*) FROM markers")
		return err == nil && out == "0"
	})

	a := &amberEnv{t: t, bin: bin, repo: filepath.Join(testbed.PostgresDir(t), "repo")}
	a.run("repo", "init")
	// Continuous archiving first, then the base backup, both from the standby:
	// the archive then covers the backup from its start.
	arch, archDone, archErr := startArchiver(t, a, standby)
	a.run("backup", "--engine", "postgres", "--dsn", standby.DSN(), "--mode", "physical", "--name", "failover")

	insert := func(id int) {
		t.Helper()
		if _, err := db.Exec(`INSERT INTO markers (id) VALUES ($1)`, id); err != nil {
			t.Fatalf("marker %d: %v", id, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	const onOld, total = 300, 600
	for i := 1; i <= onOld; i++ {
		insert(i)
	}

	// Failover: the primary goes away first (a fast shutdown sends the
	// standby everything it committed), then the standby is promoted.
	primary.Stop()
	db.Close()
	standby.Promote(t)
	promotedAt := time.Now()
	db = open(t, standby.DSN())
	for i := onOld + 1; i <= total; i++ {
		insert(i)
	}
	if out := standby.Psql(t, "postgres", "SELECT count(*) FROM pg_ls_waldir() WHERE name = '00000002.history'"); out != "1" {
		t.Fatalf("promoted standby has no 00000002.history")
	}

	// Did the archiver follow the switch on its own connection, or exit?
	select {
	case err := <-archDone:
		t.Logf("archiver exited at the timeline switch (%v); restarting it, as a controller would:\n%s", err, archErr.String())
		arch, archDone, archErr = startArchiver(t, a, standby)
	default:
		t.Logf("archiver kept running across the promotion (followed the timeline switch)")
	}

	// The newest marker becomes durable within a few flush intervals.
	ts := markerTimes(t, db)
	if len(ts) != total {
		t.Fatalf("new primary holds %d markers, want %d: the failover lost commits", len(ts), total)
	}
	var ls lsWindows
	pollUntil(t, 20*time.Second, "the recoverable window to reach the last marker", func() bool {
		ls = lsWindows{}
		if err := json.Unmarshal([]byte(a.run("ls", "--json")), &ls); err != nil {
			t.Fatal(err)
		}
		return len(ls.Windows) == 1 && !ls.Windows[0].LatestTime.Before(ts[total])
	})
	arch.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-archDone:
		if err != nil {
			t.Fatalf("archiver exited with %v after SIGTERM:\n%s", err, archErr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("archiver did not stop after SIGTERM:\n%s", archErr.String())
	}
	if err := json.Unmarshal([]byte(a.run("ls", "--json")), &ls); err != nil {
		t.Fatal(err)
	}
	if len(ls.Windows) != 1 || len(ls.Windows[0].Gaps) != 0 {
		t.Fatalf("recoverable window %+v: want one window without gaps across the failover", ls.Windows)
	}
	t.Logf("window %s .. %s (%s), promoted at %s", ls.Windows[0].EarliestTime.Format(time.RFC3339Nano),
		ls.Windows[0].LatestTime.Format(time.RFC3339Nano), ls.Windows[0].LatestPosition, promotedAt.Format(time.RFC3339Nano))
	if ls.Windows[0].LatestPosition == "" || ls.Windows[0].LatestPosition[0] != '2' {
		t.Fatalf("window ends at %q, want a position on timeline 2", ls.Windows[0].LatestPosition)
	}

	// Before the promotion (timeline 1), right across it (the target is the
	// first commit on timeline 2), and well after it.
	for _, k := range []int{150, onOld, onOld + 150, total - 1} {
		checkPITR(t, a, ts, k)
	}
}

type lsWindows struct {
	Windows []struct {
		EarliestTime   time.Time `json:"earliest_time"`
		LatestTime     time.Time `json:"latest_time"`
		LatestPosition string    `json:"latest_position"`
		Gaps           []any     `json:"gaps"`
	} `json:"windows"`
}

func pollUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
