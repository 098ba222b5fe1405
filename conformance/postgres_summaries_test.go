package conformance_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/amber-backup/amber/conformance/testbed"
)

// summaryReport is what `amber backup --json` says of a BASE_BACKUP, with
// what the plugin recorded (amber cat manifest).
type summaryReport struct {
	ID           string  `json:"id"`
	BytesIn      int64   `json:"bytes_in"`
	BytesAdded   int64   `json:"bytes_added"`
	FilesRead    int64   `json:"files_read"`
	FilesPatched int64   `json:"files_patched"`
	BytesReused  int64   `json:"bytes_reused"`
	Previous     string  `json:"previous"`
	DurationS    float64 `json:"duration_s"`
	meta         map[string]string
}

func (r summaryReport) serverBytes(t *testing.T) int64 {
	t.Helper()
	n, err := strconv.ParseInt(r.meta["server_bytes"], 10, 64)
	if err != nil {
		t.Fatalf("backup %s records no server_bytes: %v", r.ID, r.meta)
	}
	return n
}

func summaryBackup(t *testing.T, a *amberEnv, dsn string, args ...string) summaryReport {
	t.Helper()
	var r summaryReport
	out := a.run(append([]string{"backup", "--engine", "postgres", "--dsn", dsn, "--name", "pg", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("backup --json: %v: %s", err, out)
	}
	var m struct {
		Record struct {
			Metadata map[string]string `json:"metadata"`
		} `json:"engine_record"`
	}
	if err := json.Unmarshal([]byte(a.run("cat", "manifest", r.ID)), &m); err != nil {
		t.Fatal(err)
	}
	r.meta = m.Record.Metadata
	return r
}

// tableSums is a checksum of every row of every user table, by table.
func tableSums(t *testing.T, pg *testbed.Postgres) string {
	t.Helper()
	tables := strings.Fields(pg.Psql(t, "postgres", "SELECT string_agg(relname, ' ' ORDER BY relname) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"))
	var b strings.Builder
	for _, tb := range tables {
		fmt.Fprintf(&b, "%s %s\n", tb, pg.Psql(t, "postgres", fmt.Sprintf("SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM %s t", tb)))
	}
	return b.String()
}

// TestPostgresSummaryIncremental: on PostgreSQL 17 and 18 with
// summarize_wal=on, `--option incremental=summaries` after a full backup
// gets only the changed blocks from the server (an UPDATE of a few blocks
// of a big table, rows appended, a truncated, a dropped and a new table),
// applies them to the full backup's files in the repository, and the
// backup restores alone into an empty directory to a server whose every
// table equals the source's. A third backup is incremental on the second
// (whose manifest amber rewrote); once the first two are pruned it still
// restores alone.
func TestPostgresSummaryIncremental(t *testing.T) {
	bin := bins(t)
	for _, major := range []string{"17", "18"} {
		t.Run(major, func(t *testing.T) {
			pg := testbed.StartPostgres(t, testbed.PostgresOptions{Major: major, Conf: map[string]string{"summarize_wal": "on"}})
			a := &amberEnv{t: t, bin: bin, repo: filepath.Join(testbed.PostgresDir(t), "repo")}
			a.run("repo", "init")
			pg.Psql(t, "postgres", `CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g+1)::text) AS v FROM generate_series(1, 600000) g;
				ALTER TABLE big ADD PRIMARY KEY (id);
				CREATE TABLE to_truncate AS SELECT g AS id FROM generate_series(1, 50000) g;
				CREATE TABLE to_drop AS SELECT g AS id FROM generate_series(1, 50000) g;
				CREATE TABLE small (id int PRIMARY KEY, v text);
				INSERT INTO small SELECT g, 'before' FROM generate_series(1, 100) g;`)
			pg.Psql(t, "postgres", "VACUUM FREEZE")
			pg.Psql(t, "postgres", "CHECKPOINT")

			b1 := summaryBackup(t, a, pg.DSN(), "--option", "incremental=summaries")
			if b1.FilesPatched != 0 || b1.meta["incremental"] != "" {
				t.Fatalf("backup 1: %+v %v; want a full backup", b1, b1.meta)
			}

			pg.Psql(t, "postgres", `UPDATE big SET v = 'changed' WHERE id IN (10, 20, 300000, 599990);
				INSERT INTO big SELECT g, 'appended' FROM generate_series(600001, 601000) g;
				UPDATE small SET v = 'after' WHERE id = 7;
				TRUNCATE to_truncate;
				INSERT INTO to_truncate VALUES (1), (2);
				DROP TABLE to_drop;
				CREATE TABLE fresh AS SELECT g AS id, 'new' AS v FROM generate_series(1, 2000) g;`)
			b2 := summaryBackup(t, a, pg.DSN(), "--option", "incremental=summaries")
			want2 := tableSums(t, pg)
			s1, s2 := b1.serverBytes(t), b2.serverBytes(t)
			t.Logf("backup 1 (full): server sent %d bytes, stored %d bytes in %.1fs", s1, b1.BytesAdded, b1.DurationS)
			t.Logf("backup 2 (incremental): server sent %d bytes, stored %d bytes in %.1fs; %d files patched, %d sent whole, %d bytes of the full kept unread",
				s2, b2.BytesAdded, b2.DurationS, b2.FilesPatched, b2.FilesRead, b2.BytesReused)
			if b2.meta["incremental"] != "summaries" || b2.Previous != b1.ID || b2.FilesPatched == 0 {
				t.Fatalf("backup 2: %+v %v; want incremental on backup 1", b2, b2.meta)
			}
			// The big table (~75 MB) is not sent again: what the server
			// sends is mostly the backup's own WAL segment.
			if s2 > s1/3 || b2.BytesAdded > b1.BytesAdded/3 || b2.BytesReused < 50<<20 {
				t.Fatalf("incremental backup: server sent %d bytes (full: %d), stored %d (full: %d), kept %d", s2, s1, b2.BytesAdded, b1.BytesAdded, b2.BytesReused)
			}
			a.run("verify")

			restore := func(ref, want string) {
				t.Helper()
				dir := filepath.Join(testbed.PostgresDir(t), "data")
				a.run("restore", "--engine", "postgres", "--data-dir", dir, "--backup", ref)
				srv := testbed.StartPostgresDataDir(t, dir, testbed.PostgresOptions{Major: major})
				waitRecovered(t, srv)
				if got := tableSums(t, srv); got != want {
					t.Fatalf("backup %s restored as\n%s\nwant\n%s", ref, got, want)
				}
				srv.Stop()
			}
			restore(b2.ID, want2)

			// Backup 3 is incremental on backup 2 (the server accepts the
			// manifest amber rewrote), and restores alone once 1 and 2 are
			// pruned.
			pg.Psql(t, "postgres", `UPDATE big SET v = 'again' WHERE id BETWEEN 400000 AND 400050;
				DELETE FROM small WHERE id > 50;
				INSERT INTO fresh VALUES (2001, 'newer');`)
			b3 := summaryBackup(t, a, pg.DSN(), "--option", "incremental=summaries")
			want3 := tableSums(t, pg)
			if b3.meta["incremental"] != "summaries" || b3.Previous != b2.ID || b3.FilesPatched == 0 || b3.serverBytes(t) > s1/3 {
				t.Fatalf("backup 3: %+v %v; want incremental on backup 2", b3, b3.meta)
			}
			a.run("prune", "--keep-last", "1", "--grace", "0s")
			a.run("verify")
			restore(b3.ID, want3)
		})
	}
}

// TestPostgresSummaryFallback: an incremental backup falls back to a full
// one, saying why, when the server cannot take it: PostgreSQL 15,
// summarize_wal off, and WAL summaries that do not reach back to the
// previous backup (turned on after it and a checkpoint); the full backup
// taken instead restores.
func TestPostgresSummaryFallback(t *testing.T) {
	bin := bins(t)
	t.Run("15", func(t *testing.T) {
		pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
		a := &amberEnv{t: t, bin: bin, repo: filepath.Join(testbed.PostgresDir(t), "repo")}
		a.run("repo", "init")
		summaryBackup(t, a, pg.DSN())
		b := summaryBackup(t, a, pg.DSN(), "--option", "incremental=summaries")
		if b.meta["incremental"] != "" || !strings.Contains(b.meta["incremental_fallback"], "PostgreSQL 15 has no incremental backups") {
			t.Fatalf("backup on 15: %v", b.meta)
		}
	})
	t.Run("18", func(t *testing.T) {
		pg := testbed.StartPostgres(t, testbed.PostgresOptions{Major: "18"})
		a := &amberEnv{t: t, bin: bin, repo: filepath.Join(testbed.PostgresDir(t), "repo")}
		a.run("repo", "init")
		summaryBackup(t, a, pg.DSN())
		b := summaryBackup(t, a, pg.DSN(), "--option", "incremental=summaries")
		if !strings.Contains(b.meta["incremental_fallback"], "summarize_wal is off") {
			t.Fatalf("backup with summarize_wal off: %v", b.meta)
		}
		// Summaries start at the redo point of the last checkpoint when
		// summarize_wal is turned on: after this one, past the start of
		// the backup just taken.
		pg.Psql(t, "postgres", "CREATE TABLE t AS SELECT generate_series(1, 1000) id")
		pg.Psql(t, "postgres", "SELECT pg_switch_wal()")
		pg.Psql(t, "postgres", "CHECKPOINT")
		pg.Psql(t, "postgres", "ALTER SYSTEM SET summarize_wal = on")
		pg.Psql(t, "postgres", "SELECT pg_reload_conf()")
		b = summaryBackup(t, a, pg.DSN(), "--option", "incremental=summaries")
		if b.meta["incremental"] != "" || !strings.Contains(b.meta["incremental_fallback"], "refused") {
			t.Fatalf("backup with summaries from after the previous backup: %v", b.meta)
		}
		t.Logf("fell back: %s", b.meta["incremental_fallback"])
		dir := filepath.Join(testbed.PostgresDir(t), "data")
		a.run("restore", "--engine", "postgres", "--data-dir", dir, "--backup", b.ID)
		srv := testbed.StartPostgresDataDir(t, dir, testbed.PostgresOptions{Major: "18"})
		waitRecovered(t, srv)
		if got := srv.Psql(t, "postgres", "SELECT count(*) FROM t"); got != "1000" {
			t.Fatalf("restored full backup has %s rows", got)
		}
		srv.Stop()
	})
}
