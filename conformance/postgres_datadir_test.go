package conformance_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// TestPostgresDataDirBackup: `amber backup --data-dir` reads the data
// directory itself while transactions commit; the backup restores to a
// consistent server holding exactly the transactions committed before its
// consistent point, and point-in-time recovery from it reaches exactly the
// marker targeted.
func TestPostgresDataDirBackup(t *testing.T) {
	bin := bins(t)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	a := &amberEnv{t: t, bin: bin, repo: filepath.Join(testbed.PostgresDir(t), "repo")}
	a.run("repo", "init")
	pg.Psql(t, "postgres", `CREATE TABLE static AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g;
		CREATE TABLE markers (id int PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp());
		CREATE TABLE churn (marker int, n int);`)
	const qStatic = "SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM static"
	wantStatic := pg.Psql(t, "postgres", qStatic)

	arch := a.cmd("archive", "--engine", "postgres", "--dsn", pg.DSN(), "--flush-interval", "500ms")
	if err := arch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { arch.Process.Kill(); arch.Wait() })
	time.Sleep(500 * time.Millisecond)

	// Each marker commits with its 200 churn rows, throughout the backup.
	db := open(t, pg.DSN())
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var last int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ctx.Err() == nil; i++ {
			tx, err := db.Begin()
			if err != nil {
				t.Error(err)
				return
			}
			_, err1 := tx.Exec(`INSERT INTO markers (id) VALUES ($1)`, i)
			_, err2 := tx.Exec(`INSERT INTO churn SELECT $1, g FROM generate_series(1, 200) g`, i)
			if err := tx.Commit(); err1 != nil || err2 != nil || err != nil {
				t.Error(err1, err2, err)
				return
			}
			last = i
			time.Sleep(5 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	a.run("backup", "--engine", "postgres", "--dsn", pg.DSN(), "--data-dir", pg.DataDir, "--option", "workers=3", "--name", "files")
	time.Sleep(time.Second)
	stop()
	wg.Wait()
	ts := markerTimes(t, db)

	// The archive must reach the last marker before the latest restore.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ls struct {
			Windows []struct {
				LatestTime time.Time `json:"latest_time"`
			} `json:"windows"`
		}
		if err := json.Unmarshal([]byte(a.run("ls", "--json")), &ls); err != nil {
			t.Fatal(err)
		}
		if len(ls.Windows) == 1 && !ls.Windows[0].LatestTime.Before(ts[last]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the archive did not reach marker %d: %+v", last, ls)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// check starts the restored dir and returns its markers, failing
	// unless they run 1..k with each one's churn rows and static is exact.
	check := func(dir string) int {
		t.Helper()
		srv := testbed.StartPostgresDataDir(t, dir, testbed.PostgresOptions{})
		waitRecovered(t, srv)
		var c, m, churn int
		got := srv.Psql(t, "postgres", "SELECT count(*), coalesce(max(id), 0), (SELECT count(*) FROM churn) FROM markers")
		if _, err := fmt.Sscanf(got, "%d|%d|%d", &c, &m, &churn); err != nil {
			t.Fatal(err)
		}
		if c != m || churn != 200*c {
			t.Fatalf("restored %s: %d markers, highest %d, %d churn rows; want markers 1..%d with %d churn rows", dir, c, m, churn, c, 200*c)
		}
		if s := srv.Psql(t, "postgres", qStatic); s != wantStatic {
			t.Fatalf("static table restored as %q, want %q", s, wantStatic)
		}
		srv.Stop()
		return c
	}
	// The backup's own consistent point: markers 1..k with nothing torn.
	var ls struct {
		Backups []struct {
			Position string `json:"position"`
		} `json:"backups"`
	}
	if err := json.Unmarshal([]byte(a.run("ls", "--json")), &ls); err != nil || len(ls.Backups) != 1 {
		t.Fatalf("ls: %v %+v", err, ls)
	}
	dir := filepath.Join(testbed.PostgresDir(t), "data")
	a.run("restore", "--engine", "postgres", "--data-dir", dir, "--to-position", ls.Backups[0].Position)
	if k := check(dir); k == 0 || k >= last {
		t.Fatalf("restored at the backup's position %s: %d markers of %d", ls.Backups[0].Position, k, last)
	}
	// Point in time: a marker committed after the backup.
	target := last - 20
	dir = filepath.Join(testbed.PostgresDir(t), "data")
	a.run("restore", "--engine", "postgres", "--data-dir", dir, "--to-time", ts[target+1].UTC().Format(time.RFC3339Nano), "--exclusive")
	if k := check(dir); k != target {
		t.Fatalf("recovered to marker %d, want %d", k, target)
	}
}

// waitRecovered waits until srv has left recovery.
func waitRecovered(t *testing.T, srv *testbed.Postgres) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for srv.Psql(t, "postgres", "SELECT pg_is_in_recovery()") != "f" {
		if time.Now().After(deadline) {
			t.Fatal("restored server did not finish recovery")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
