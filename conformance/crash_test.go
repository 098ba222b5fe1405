package conformance_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance"
	"github.com/amber-backup/amber/conformance/testbed"
)

// TestPostgresArchivePluginCrash: kill -9 of the engine plugin while
// archiving; amber restarts it and resumes, and nothing committed is missing
// from the recoverable window.
func TestPostgresArchivePluginCrash(t *testing.T) {
	bin := bins(t)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	a := &amberEnv{t: t, bin: bin, repo: filepath.Join(testbed.PostgresDir(t), "repo")}
	a.run("repo", "init")
	db := open(t, pg.DSN())
	if _, err := db.Exec(`CREATE TABLE markers (id int PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	a.run("backup", "--engine", "postgres", "--dsn", pg.DSN(), "--mode", "physical")
	arch, archDone, archErr := startArchiver(t, a, pg)
	killed := 0
	for i := 1; i <= 300; i++ {
		if _, err := db.Exec(`INSERT INTO markers (id) VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
		if i == 100 || i == 200 {
			pid := conformance.ChildNamed(arch.Process.Pid, "amber-plugin-postgres")
			if pid == 0 {
				t.Fatalf("no plugin process under amber archive (pid %d)", arch.Process.Pid)
			}
			syscall.Kill(pid, syscall.SIGKILL)
			killed++
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // restart backoff and the last partial
	select {
	case err := <-archDone:
		t.Fatalf("amber archive exited after its plugin was killed: %v\n%s", err, archErr.String())
	default:
	}
	arch.Process.Signal(syscall.SIGTERM)
	if err := <-archDone; err != nil {
		t.Fatalf("archiver after SIGTERM: %v\n%s", err, archErr.String())
	}
	if !strings.Contains(archErr.String(), "restarting it") {
		t.Fatalf("no restart was logged:\n%s", archErr.String())
	}
	var ls struct {
		Windows []struct {
			LatestTime time.Time `json:"latest_time"`
			Gaps       []any     `json:"gaps"`
		} `json:"windows"`
	}
	if err := json.Unmarshal([]byte(a.run("ls", "--json")), &ls); err != nil {
		t.Fatal(err)
	}
	ts := markerTimes(t, db)
	if len(ls.Windows) != 1 || len(ls.Windows[0].Gaps) != 0 || ls.Windows[0].LatestTime.Before(ts[300]) {
		t.Fatalf("after %d plugin kills the window %+v should reach marker 300 (%s) without gaps", killed, ls.Windows, ts[300])
	}
	for _, k := range []int{150, 299} {
		checkPITR(t, a, ts, k)
	}
}
