package conformance_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// incrReport is what `amber backup --json` says of a file-level backup.
type incrReport struct {
	ID          string `json:"id"`
	BytesIn     int64  `json:"bytes_in"`
	BytesAdded  int64  `json:"bytes_added"`
	FilesRead   int64  `json:"files_read"`
	FilesReused int64  `json:"files_reused"`
	BytesReused int64  `json:"bytes_reused"`
	Previous    string `json:"previous"`
}

// TestPostgresDataDirIncremental: a second `amber backup --data-dir` after
// a small change reads only the files changed since the first (and those
// last written too close to the first's start), yet restores on its own to
// a server holding the change (the reused table file byte for byte); verify
// passes, and pruning the first backup
// leaves the second restorable. --full reads every file again.
func TestPostgresDataDirIncremental(t *testing.T) {
	bin := bins(t)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	a := &amberEnv{t: t, bin: bin, repo: filepath.Join(testbed.PostgresDir(t), "repo")}
	a.run("repo", "init")
	pg.Psql(t, "postgres", `CREATE TABLE static AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g;
		CREATE TABLE small (id int PRIMARY KEY, v text);
		INSERT INTO small SELECT g, 'before' FROM generate_series(1, 100) g;`)
	pg.Psql(t, "postgres", "VACUUM FREEZE")
	pg.Psql(t, "postgres", "CHECKPOINT")
	const qStatic = "SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM static"
	wantStatic := pg.Psql(t, "postgres", qStatic)
	staticFile := pg.Psql(t, "postgres", "SELECT pg_relation_filepath('static')")
	// Files last written more than the clock margin before backup 1.
	time.Sleep(3 * time.Second)
	// ... but this one is written just before it: backup 2 reads it again.
	pg.Psql(t, "postgres", "CREATE TABLE recent AS SELECT generate_series(1, 1000) id")
	pg.Psql(t, "postgres", "CHECKPOINT")

	backup := func(args ...string) incrReport {
		t.Helper()
		var r incrReport
		out := a.run(append([]string{"backup", "--engine", "postgres", "--dsn", pg.DSN(), "--data-dir", pg.DataDir,
			"--name", "files", "--json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("backup --json: %v: %s", err, out)
		}
		return r
	}
	b1 := backup()
	if b1.FilesRead < 500 || b1.FilesReused != 0 || b1.Previous != "" {
		t.Fatalf("backup 1: %+v; want every file read", b1)
	}

	pg.Psql(t, "postgres", "UPDATE small SET v = 'after' WHERE id = 7")
	pg.Psql(t, "postgres", "CHECKPOINT")
	b2 := backup()
	t.Logf("backup 1: %+v", b1)
	t.Logf("backup 2: %+v", b2)
	if b2.Previous != b1.ID || b2.FilesReused == 0 || b2.FilesRead+b2.FilesReused != b1.FilesRead {
		t.Fatalf("backup 2: %+v; want files reused from backup 1 (%d files)", b2, b1.FilesRead)
	}
	// Only the changed files are read: the small table, the catalog files
	// the checkpoint wrote, pg_control, the files written within the margin.
	if b2.FilesRead > b1.FilesRead/4 || b2.BytesIn > b1.BytesIn/2 || b2.BytesReused < 10<<20 {
		t.Fatalf("backup 2 read %d files, %d bytes (backup 1: %d, %d), reused %d bytes", b2.FilesRead, b2.BytesIn,
			b1.FilesRead, b1.BytesIn, b2.BytesReused)
	}
	if b2.BytesAdded > b1.BytesAdded/4 {
		t.Fatalf("backup 2 added %d bytes, backup 1 %d", b2.BytesAdded, b1.BytesAdded)
	}
	a.run("verify")

	// restore lays backup ref out and checks the copy.
	restore := func(ref string) {
		t.Helper()
		dir := filepath.Join(testbed.PostgresDir(t), "data")
		a.run("restore", "--engine", "postgres", "--data-dir", dir, "--backup", ref)
		// The reused file is restored byte for byte.
		orig, err1 := os.ReadFile(filepath.Join(pg.DataDir, staticFile))
		copied, err2 := os.ReadFile(filepath.Join(dir, staticFile))
		if err1 != nil || err2 != nil || len(orig) < 8<<20 || !bytes.Equal(orig, copied) {
			t.Fatalf("%s restored with %d bytes, the server's has %d (%v, %v)", staticFile, len(copied), len(orig), err1, err2)
		}
		srv := testbed.StartPostgresDataDir(t, dir, testbed.PostgresOptions{})
		waitRecovered(t, srv)
		if got := srv.Psql(t, "postgres", qStatic); got != wantStatic {
			t.Fatalf("static restored as %q, want %q", got, wantStatic)
		}
		if got := srv.Psql(t, "postgres", "SELECT v FROM small WHERE id = 7"); got != "after" {
			t.Fatalf("the change after backup 1 restored as %q", got)
		}
		if got := srv.Psql(t, "postgres", "SELECT count(*), sum(id) FROM recent"); got != "1000|500500" {
			t.Fatalf("recent restored as %q", got)
		}
		if got := srv.Psql(t, "postgres", "SELECT pg_relation_filepath('static')"); got != staticFile {
			t.Fatalf("static is %s, was %s", got, staticFile)
		}
		srv.Stop()
	}
	restore(b2.ID)

	// Pruning backup 1 keeps what backup 2 reuses.
	a.run("prune", "--keep-last", "1", "--grace", "0s")
	var ls struct {
		Backups []struct {
			ID string `json:"id"`
		} `json:"backups"`
	}
	if err := json.Unmarshal([]byte(a.run("ls", "--json")), &ls); err != nil || len(ls.Backups) != 1 || ls.Backups[0].ID != b2.ID {
		t.Fatalf("after prune: %v %+v", err, ls)
	}
	a.run("verify")
	restore(b2.ID)

	// Backup 3 reuses backup 2's records; --full reads everything.
	b3 := backup()
	if b3.Previous != b2.ID || b3.FilesReused < b2.FilesReused {
		t.Fatalf("backup 3: %+v; want at least backup 2's %d files reused", b3, b2.FilesReused)
	}
	b4 := backup("--full")
	if b4.FilesReused != 0 || b4.FilesRead != b3.FilesRead+b3.FilesReused || b4.Previous != "" {
		t.Fatalf("backup --full: %+v; want every file read (%d)", b4, b3.FilesRead+b3.FilesReused)
	}
	a.run("verify")
}
