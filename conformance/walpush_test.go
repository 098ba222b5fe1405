package conformance_test

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// walPushServer starts a PostgreSQL server whose archive_command is
// `amber wal-push` into a's new repository (the password in a file the
// server can read) and creates the markers table.
func walPushServer(t *testing.T) (pg *testbed.Postgres, dir string, a *amberEnv, db *sql.DB, sysid string) {
	bin := bins(t)
	pg = testbed.StartPostgres(t, testbed.PostgresOptions{Conf: map[string]string{"archive_mode": "on", "archive_command": "''"}})
	dir = testbed.PostgresDir(t)
	a = &amberEnv{t: t, bin: bin, repo: filepath.Join(dir, "repo")}
	a.run("repo", "init")
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("conformance"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := testbed.ChownPostgres(pwFile); err != nil {
		t.Fatal(err)
	}

	db = open(t, pg.DSN())
	if err := db.QueryRow(`SELECT system_identifier::text FROM pg_control_system()`).Scan(&sysid); err != nil {
		t.Fatal(err)
	}
	cmd := fmt.Sprintf(`'%s' wal-push --repo '%s' --password-file '%s' --cache-dir - --stream postgres-%s %%p`,
		filepath.Join(bin, "amber"), a.repo, pwFile, sysid)
	for _, q := range []string{`ALTER SYSTEM SET archive_command = '` + strings.ReplaceAll(cmd, "'", "''") + `'`, `SELECT pg_reload_conf()`,
		`CREATE TABLE markers (id int PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp())`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return pg, dir, a, db, sysid
}

// TestPostgresWalPush: users who prefer archive_command get the same
// point-in-time recovery with `amber wal-push` (archive_command) and
// `amber wal-fetch` (restore_command, set up by amber restore).
func TestPostgresWalPush(t *testing.T) {
	pg, _, a, db, _ := walPushServer(t)
	a.run("backup", "--engine", "postgres", "--dsn", pg.DSN(), "--mode", "physical", "--name", "walpush")
	var lsnAfter45, xid70 string
	for i := 1; i <= 100; i++ {
		var xid string
		if err := db.QueryRow(`INSERT INTO markers (id) VALUES ($1) RETURNING pg_current_xact_id()::text`, i).Scan(&xid); err != nil {
			t.Fatal(err)
		}
		switch i {
		case 30:
			if _, err := db.Exec(`SELECT pg_create_restore_point('after-30')`); err != nil {
				t.Fatal(err)
			}
		case 45:
			if err := db.QueryRow(`SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsnAfter45); err != nil {
				t.Fatal(err)
			}
		case 70:
			xid70 = xid
		}
		time.Sleep(5 * time.Millisecond)
	}
	var last string
	if err := db.QueryRow(`SELECT pg_walfile_name(pg_switch_wal())`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var archived, failed string
		db.QueryRow(`SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver`).Scan(&archived, &failed)
		if archived >= last {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(pg.LogFile)
			t.Fatalf("WAL %s not archived by wal-push (last archived %q, last failed %q):\n%s", last, archived, failed, tail(b))
		}
		time.Sleep(100 * time.Millisecond)
	}
	ts := markerTimes(t, db)
	// Every kind of target: a named restore point, an LSN, a transaction id.
	for _, c := range []struct {
		k    int
		args []string
	}{{30, []string{"--to-name", "after-30"}}, {45, []string{"--to-lsn", lsnAfter45}}, {70, []string{"--to-xid", xid70}},
		{69, []string{"--to-xid", xid70, "--exclusive"}}} {
		dir := filepath.Join(testbed.PostgresDir(t), "data")
		a.run(append([]string{"restore", "--engine", "postgres", "--data-dir", dir}, c.args...)...)
		if got := countAfterRecovery(t, dir); got != [2]int{c.k, c.k} {
			t.Fatalf("recovered with %v: count and max = %v, want markers 1..%d", c.args, got, c.k)
		}
	}
	for _, k := range []int{10, 60, 100} {
		target := ts[k+1]
		if k == 100 {
			target = time.Time{} // no target: everything archived
		}
		dir := filepath.Join(testbed.PostgresDir(t), "data")
		args := []string{"restore", "--engine", "postgres", "--data-dir", dir}
		if !target.IsZero() {
			args = append(args, "--to-time", target.UTC().Format(time.RFC3339Nano))
		}
		a.run(args...)
		if got := countAfterRecovery(t, dir); got != [2]int{k, k} {
			t.Fatalf("recovered with wal-push'd WAL to %v: count and max = %v, want markers 1..%d", target, got, k)
		}
	}
}

func tail(b []byte) []byte {
	if len(b) > 3000 {
		return b[len(b)-3000:]
	}
	return b
}
