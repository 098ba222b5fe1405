package conformance_test

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// bins builds amber and amber-plugin-postgres into a directory the postgres
// user can read (restore_command runs as that user).
func bins(t *testing.T) string {
	t.Helper()
	testbed.PostgresBin(t, "")
	dir := testbed.PostgresDir(t)
	testbed.BuildAmber(t, dir, "postgres")
	return dir
}

// amberEnv runs amber as the postgres user against one repository.
type amberEnv struct {
	t    *testing.T
	bin  string
	repo string
}

func (a *amberEnv) cmd(args ...string) *exec.Cmd {
	c := testbed.PostgresCommand(filepath.Join(a.bin, "amber"), args...)
	c.Env = append(c.Env, "AMBER_REPO="+a.repo, "AMBER_PASSWORD=conformance", "AMBER_CACHE_DIR=-")
	return c
}

func (a *amberEnv) run(args ...string) string {
	a.t.Helper()
	var out, errb bytes.Buffer
	c := a.cmd(args...)
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		a.t.Fatalf("amber %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func markerTimes(t *testing.T, db *sql.DB) map[int]time.Time {
	ts := map[int]time.Time{}
	rows, err := db.Query(`SELECT id, ts FROM markers`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int
		var tm time.Time
		rows.Scan(&id, &tm)
		ts[id] = tm
	}
	return ts
}

// countAfterRecovery starts a server on a restored data dir, waits for the
// end of recovery, and returns count(*) and max(id) of markers.
func countAfterRecovery(t *testing.T, dir string) [2]int {
	t.Helper()
	srv := testbed.StartPostgresDataDir(t, dir, testbed.PostgresOptions{})
	db := open(t, srv.DSN())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		var rec bool
		if err := db.QueryRowContext(ctx, `SELECT pg_is_in_recovery()`).Scan(&rec); err == nil && !rec {
			break
		}
		if ctx.Err() != nil {
			b, _ := os.ReadFile(srv.LogFile)
			t.Fatalf("restored server did not finish recovery:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var c, m int
	if err := db.QueryRow(`SELECT count(*), coalesce(max(id), 0) FROM markers`).Scan(&c, &m); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	return [2]int{c, m}
}
