package conformance_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
	root, err := testbed.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := testbed.PostgresDir(t)
	for pkg, out := range map[string]string{"./sidecar/cmd/amber": "amber", "./plugins/postgres/cmd/amber-plugin-postgres": "amber-plugin-postgres"} {
		cmd := exec.Command("go", "build", "-tags", "amber_testkdf", "-o", filepath.Join(dir, out), pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
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

// TestPostgresPITR: a physical backup, continuous archiving while a writer
// commits a marker every ~10 ms, then restores to times between markers
// must yield exactly the markers committed before each target.
func TestPostgresPITR(t *testing.T) {
	bin := bins(t)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	a := &amberEnv{t: t, bin: bin, repo: filepath.Join(testbed.PostgresDir(t), "repo")}
	a.run("repo", "init")

	db := open(t, pg.DSN())
	if _, err := db.Exec(`CREATE TABLE markers (id int PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	a.run("backup", "--engine", "postgres", "--dsn", pg.DSN(), "--mode", "physical", "--name", "pitr")

	// Writer: one marker per transaction, every ~10 ms. The archiver is
	// killed with SIGKILL at marker 400 while the writer goes on.
	arch, archDone, archErr := startArchiver(t, a, pg)
	var killedAt time.Time
	for i := 1; i <= 500; i++ {
		if _, err := db.Exec(`INSERT INTO markers (id) VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
		if i == 400 {
			killedAt = time.Now()
			arch.Process.Kill()
			<-archDone
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts := markerTimes(t, db)

	// Recovery point: with the archiver dead, a target 1.2-2 s before the
	// kill is recoverable, exactly.
	k := 0
	for id := 399; id > 0; id-- {
		if d := killedAt.Sub(ts[id+1]); d >= 1200*time.Millisecond && d <= 2*time.Second {
			k = id
			break
		}
	}
	if k == 0 {
		t.Fatal("no marker 1.2-2 s before the kill")
	}
	checkPITR(t, a, ts, k)
	t.Logf("archiver killed at marker 400 (%s); marker %d, committed %v before the kill, was recovered",
		killedAt.Format(time.RFC3339Nano), k, killedAt.Sub(ts[k+1]).Round(time.Millisecond))

	// A restarted archiver resumes where the repository ends: nothing
	// committed before the kill is missing.
	arch, archDone, archErr = startArchiver(t, a, pg)
	for i := 501; i <= 600; i++ {
		if _, err := db.Exec(`INSERT INTO markers (id) VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // let the last partial segment become durable
	arch.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-archDone:
		if err != nil {
			t.Fatalf("archiver exited with %v after SIGTERM:\n%s", err, archErr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("archiver did not stop after SIGTERM:\n%s", archErr.String())
	}
	ts = markerTimes(t, db)

	// The recoverable window reaches the last marker and has no gap.
	var ls struct {
		Windows []struct {
			LatestTime time.Time `json:"latest_time"`
			Gaps       []any     `json:"gaps"`
		} `json:"windows"`
	}
	if err := json.Unmarshal([]byte(a.run("ls", "--json")), &ls); err != nil {
		t.Fatal(err)
	}
	if len(ls.Windows) != 1 || len(ls.Windows[0].Gaps) != 0 || ls.Windows[0].LatestTime.Before(ts[600]) {
		t.Fatalf("recoverable window %+v should reach marker 600 (%s) without gaps", ls.Windows, ts[600])
	}
	for _, k := range []int{1, 250, 401, 450, 599} {
		checkPITR(t, a, ts, k)
	}
	// Outside the window: a clear error, nothing restored.
	dir := filepath.Join(testbed.PostgresDir(t), "data")
	out, err := a.cmd("restore", "--engine", "postgres", "--data-dir", dir, "--to-time", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "after the recoverable window") {
		t.Fatalf("restore past the window: %v\n%s", err, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s behind", dir)
	}
}

func startArchiver(t *testing.T, a *amberEnv, pg *testbed.Postgres) (*exec.Cmd, chan error, *bytes.Buffer) {
	arch := a.cmd("archive", "--engine", "postgres", "--dsn", pg.DSN(), "--flush-interval", "500ms")
	var stderr bytes.Buffer
	arch.Stderr = &stderr
	if err := arch.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- arch.Wait() }()
	t.Cleanup(func() { arch.Process.Kill() })
	time.Sleep(500 * time.Millisecond) // connected and streaming
	return arch, done, &stderr
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

// checkPITR restores to the start of marker k+1's transaction, which began
// after marker k committed: the result must hold exactly markers 1..k.
func checkPITR(t *testing.T, a *amberEnv, ts map[int]time.Time, k int) {
	t.Helper()
	target := ts[k+1]
	dir := filepath.Join(testbed.PostgresDir(t), "data")
	a.run("restore", "--engine", "postgres", "--data-dir", dir, "--to-time", target.UTC().Format(time.RFC3339Nano))
	if got := countAfterRecovery(t, dir); got != [2]int{k, k} {
		t.Fatalf("recovered to %s: count and max(id) = %v, want exactly markers 1..%d", target.Format(time.RFC3339Nano), got, k)
	}
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
