package conformance_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
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
	c.Env = append(c.Env, "AMBER_REPO="+a.repo, "AMBER_PASSWORD=conformance", "AMBER_KDF_TEST=1", "AMBER_CACHE_DIR=-")
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
	var bres struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(a.run("backup", "--engine", "postgres", "--dsn", pg.DSN(), "--mode", "physical", "--name", "pitr", "--json")), &bres); err != nil {
		t.Fatal(err)
	}

	arch := a.cmd("archive", "--engine", "postgres", "--dsn", pg.DSN(), "--flush-interval", "500ms")
	var archErr bytes.Buffer
	arch.Stderr = &archErr
	if err := arch.Start(); err != nil {
		t.Fatal(err)
	}
	archDone := make(chan error, 1)
	go func() { archDone <- arch.Wait() }()
	t.Cleanup(func() { arch.Process.Kill() })

	// Writer: one marker per transaction, every ~10 ms, for ~6 s.
	const n = 500
	for i := 1; i <= n; i++ {
		if _, err := db.Exec(`INSERT INTO markers (id) VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // the last partial segment becomes durable within the flush interval
	arch.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-archDone:
		if err != nil {
			t.Fatalf("archiver exited with %v after SIGTERM:\n%s", err, archErr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("archiver did not stop after SIGTERM:\n%s", archErr.String())
	}
	t.Logf("archiver: %s", strings.TrimSpace(archErr.String()))

	// Marker k+1's ts was taken after marker k committed and before k+1 did:
	// recovering to it must give exactly markers 1..k.
	ts := map[int]time.Time{}
	rows, err := db.Query(`SELECT id, ts FROM markers`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		var tm time.Time
		rows.Scan(&id, &tm)
		ts[id] = tm
	}
	rows.Close()
	lastTs := ts[n]
	var last int // a target within the last 2 s of writing
	for k := n - 1; k > 0; k-- {
		if lastTs.Sub(ts[k+1]) > 500*time.Millisecond {
			last = k
			break
		}
	}
	for _, k := range []int{1, 100, 250, 400, last} {
		t.Run(fmt.Sprintf("marker%d", k), func(t *testing.T) {
			target := ts[k+1]
			dir := filepath.Join(testbed.PostgresDir(t), "data")
			a.t = t
			a.run("restore", "--engine", "postgres", "--data-dir", dir, "--to-time", target.UTC().Format(time.RFC3339Nano))
			got := countAfterRecovery(t, dir)
			if got != [2]int{k, k} {
				t.Fatalf("recovered to %s: count and max(id) = %v, want exactly markers 1..%d", target.Format(time.RFC3339Nano), got, k)
			}
		})
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

var _ = strconv.Itoa
