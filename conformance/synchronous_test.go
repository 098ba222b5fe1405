package conformance_test

import (
	"context"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// TestPostgresSynchronousArchive: with `amber archive --synchronous` named
// in synchronous_standby_names, a commit is acknowledged only once its WAL
// is in the repository. The archiver (and its plugin) are killed with
// SIGKILL right after a commit returns; a restore of the latest log has
// that row. A commit made while no archiver runs is not acknowledged.
func TestPostgresSynchronousArchive(t *testing.T) {
	bin := bins(t)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	dir := testbed.PostgresDir(t)
	a := &amberEnv{t: t, bin: bin, repo: filepath.Join(dir, "repo")}
	a.run("repo", "init")
	db := open(t, pg.DSN())
	if _, err := db.Exec(`CREATE TABLE markers (id int PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	a.run("backup", "--engine", "postgres", "--dsn", pg.DSN(), "--mode", "physical")

	arch := a.cmd("archive", "--engine", "postgres", "--dsn", pg.ReplicationDSN(), "--synchronous")
	if arch.SysProcAttr == nil {
		arch.SysProcAttr = &syscall.SysProcAttr{}
	}
	arch.SysProcAttr.Setpgid = true // the plugin dies with it
	if err := arch.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- arch.Wait() }()
	t.Cleanup(func() { syscall.Kill(-arch.Process.Pid, syscall.SIGKILL) })
	for _, q := range []string{`ALTER SYSTEM SET synchronous_standby_names = 'amber'`, `SELECT pg_reload_conf()`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var state string
		err := db.QueryRow(`SELECT sync_state FROM pg_stat_replication WHERE application_name = 'amber'`).Scan(&state)
		if err == nil && state == "sync" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the archiver is not a synchronous standby after 30 s (state %q, %v)", state, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	const n = 200
	var lat []time.Duration
	for i := 1; i <= n; i++ {
		start := time.Now()
		if _, err := db.Exec(`INSERT INTO markers (id) VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	// Right after the last commit returned: no time to flush anything more.
	if err := syscall.Kill(-arch.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	slices.Sort(lat)
	t.Logf("commit latency with amber archive --synchronous: median %v, p99 %v, max %v",
		lat[n/2].Round(time.Microsecond), lat[n*99/100].Round(time.Microsecond), lat[n-1].Round(time.Microsecond))

	// No archiver: a commit waits for it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	returned := make(chan error, 1)
	go func() { _, err := conn.ExecContext(ctx, `INSERT INTO markers (id) VALUES ($1)`, n+1); returned <- err }()
	select {
	case err := <-returned:
		if err == nil {
			t.Fatal("a commit was acknowledged while no synchronous archiver ran")
		}
	case <-time.After(2 * time.Second):
	}
	pg.Kill()

	restored := filepath.Join(testbed.PostgresDir(t), "data")
	a.run("restore", "--engine", "postgres", "--data-dir", restored)
	got := countAfterRecovery(t, restored)
	if got[0] < n || got[1] < n {
		t.Fatalf("restored %d markers, highest %d; every acknowledged commit (1..%d) must be there", got[0], got[1], n)
	}
}
