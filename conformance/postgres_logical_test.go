package conformance_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// TestPostgresLogicalParallel: a logical backup with workers=2 and
// globals=true, taken while transfers commit, dumps the accounts and the
// transfer log in entries of their own by different pg_dump processes, yet
// every restore of it is one consistent state: each account's balance is
// its opening balance plus the transfers the restored log holds. It
// restores with restore_workers=2 (and with each table's rows split between
// two sessions), and `amber restore --stdout` prints one
// SQL script that stock psql loads into an empty database, equal to the
// restore. A workers=1 backup (one pg_dump entry, the layout of earlier
// backups) still restores, through one pg_restore and loaded by two
// sessions as it streams alike.
func TestPostgresLogicalParallel(t *testing.T) {
	bin := bins(t)
	a := &amberEnv{t: t, bin: bin, repo: filepath.Join(testbed.PostgresDir(t), "repo")}
	a.run("repo", "init")
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	pg.Psql(t, "postgres", "CREATE DATABASE app")
	pg.Psql(t, "postgres", `CREATE ROLE app_reader NOLOGIN; CREATE ROLE "App Writer" LOGIN PASSWORD 'writer-Pw-8812'`)
	const accounts, opening = 1000, 1000
	// Both tables over 1 MiB, so each gets an entry (and a pg_dump) of its
	// own; the transfer log starts with zero-amount history.
	pg.Psql(t, "app", fmt.Sprintf(`CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, pad text NOT NULL);
		INSERT INTO accounts SELECT g, %d, repeat(md5(g::text), 50) FROM generate_series(1, %d) g;
		CREATE TABLE transfers (id bigserial PRIMARY KEY, src int NOT NULL REFERENCES accounts, dst int NOT NULL REFERENCES accounts,
			amount bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
		INSERT INTO transfers (src, dst, amount) SELECT 1 + g %% %d, 1 + (g * 7) %% %d, 0 FROM generate_series(1, 40000) g;
		CREATE INDEX ON transfers (src); GRANT SELECT ON accounts TO app_reader; ANALYZE`, opening, accounts, accounts, accounts))
	if got := pg.Psql(t, "app", `SELECT pg_table_size('accounts') >= 1048576 AND pg_table_size('transfers') >= 1048576`); got != "t" {
		t.Fatalf("the tables are smaller than 1 MiB: the test would not split them")
	}

	db := open(t, pg.DSNDB("app"))
	db.SetMaxOpenConns(8)
	ctx, cancel := context.WithCancel(context.Background())
	var done atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for ctx.Err() == nil {
				from, to := 1+rng.IntN(accounts), 1+rng.IntN(accounts)
				if from != to && pgTransfer(ctx, db, from, to, 1+rng.Int64N(100)) == nil {
					done.Add(1)
				}
			}
		}()
	}
	stop := func() { cancel(); wg.Wait() }
	defer stop()
	for deadline := time.Now().Add(30 * time.Second); done.Load() < 100; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("workload made %d transfers in 30 s", done.Load())
		}
	}
	before := done.Load()
	var bk struct {
		ID string `json:"id"`
	}
	out := a.run("backup", "--json", "--engine", "postgres", "--dsn", pg.DSNDB("app"), "--mode", "logical",
		"--option", "workers=2", "--option", "globals=true", "--name", "parallel")
	during := done.Load() - before
	stop()
	if err := json.Unmarshal([]byte(out), &bk); err != nil {
		t.Fatalf("backup --json: %v\n%s", err, out)
	}
	if during == 0 {
		t.Fatal("no transfer committed while the backup ran; the test proves nothing")
	}
	t.Logf("%d transfers committed during the backup", during)

	// The backup's layout: globals, pre-data, the two tables and the rest,
	// post-data.
	var m struct {
		Entries []struct {
			Name string            `json:"name"`
			Meta map[string]string `json:"meta"`
		} `json:"entries"`
		Record struct {
			Metadata map[string]string `json:"metadata"`
		} `json:"engine_record"`
	}
	out = a.run("cat", "manifest", bk.ID)
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("cat manifest: %v\n%s", err, out)
	}
	var layout []string
	for _, e := range m.Entries {
		layout = append(layout, e.Meta["section"]+":"+e.Meta["table"])
	}
	// Data entries come in the order their pg_dump finished.
	if len(layout) == 6 {
		slices.Sort(layout[2:5])
	}
	if got := strings.Join(layout, " "); got != `globals: pre-data: data: data:"public"."accounts" data:"public"."transfers" post-data:` ||
		m.Record.Metadata["format"] != "pg_dump-sections" {
		t.Fatalf("backup layout %s, metadata %v", got, m.Record.Metadata)
	}

	balanced := func(dsn string) {
		t.Helper()
		var n, off int
		var total int64
		if err := open(t, dsn).QueryRow(`SELECT count(*), coalesce(sum(balance), 0),
			count(*) FILTER (WHERE balance <> $1 + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
				- coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0))
			FROM accounts a`, opening).Scan(&n, &total, &off); err != nil {
			t.Fatal(err)
		}
		if n != accounts || total != accounts*opening || off != 0 {
			t.Fatalf("%d accounts hold %d (want %d holding %d); %d disagree with the transfer log", n, total, accounts, accounts*opening, off)
		}
	}

	pg.Psql(t, "postgres", "CREATE DATABASE restored")
	a.run("restore", "--engine", "postgres", "--dsn", pg.DSNDB("restored"), "--backup", "latest", "--option", "restore_workers=2")
	balanced(pg.DSNDB("restored"))
	// transfers' own sequence is dumped once, with its table (not again
	// with the rest, at another moment), and lies past every restored row.
	var seqOK bool
	if err := open(t, pg.DSNDB("restored")).QueryRow(`SELECT last_value >= (SELECT max(id) FROM transfers) FROM transfers_id_seq`).Scan(&seqOK); err != nil || !seqOK {
		t.Fatalf("restored transfers_id_seq is behind the restored rows (%v)", err)
	}
	d := &pgDriver{}
	want := d.Checksums(t, pg.DSNDB("restored"))

	// Each table's entry loaded by two sessions at once (its rows split
	// between two COPYs; the default does so from 64 MiB): the same state.
	pg.Psql(t, "postgres", "CREATE DATABASE split")
	a.run("restore", "--engine", "postgres", "--dsn", pg.DSNDB("split"), "--backup", "latest", "--option", "restore_split_bytes=1")
	balanced(pg.DSNDB("split"))
	if got := d.Checksums(t, pg.DSNDB("split")); !reflect.DeepEqual(got, want) {
		t.Fatalf("restore with split loads: checksums %v, want %v", got, want)
	}
	if err := open(t, pg.DSNDB("split")).QueryRow(`SELECT last_value >= (SELECT max(id) FROM transfers) FROM transfers_id_seq`).Scan(&seqOK); err != nil || !seqOK {
		t.Fatalf("split restore: transfers_id_seq is behind the restored rows (%v)", err)
	}

	// --stdout: one SQL script for psql.
	var script bytes.Buffer
	c := a.cmd("restore", "--engine", "postgres", "--backup", "latest", "--stdout")
	var errb bytes.Buffer
	c.Stdout, c.Stderr = &script, &errb
	if err := c.Run(); err != nil {
		t.Fatalf("amber restore --stdout: %v\n%s", err, errb.String())
	}
	if n := bytes.Count(script.Bytes(), []byte("-- PostgreSQL database dump complete")); n != 5 {
		t.Fatalf("the script holds %d pg_restore outputs, want 5 (pre-data, 3 data, post-data)", n)
	}
	if !bytes.Contains(script.Bytes(), []byte(`CREATE ROLE "App Writer";`)) {
		t.Fatal("the script has no roles (globals)")
	}
	pg.Psql(t, "postgres", "CREATE DATABASE fromstdout")
	f := filepath.Join(testbed.PostgresDir(t), "script.sql")
	if err := os.WriteFile(f, script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	psql := exec.Command(filepath.Join(pg.Client, "psql"), "-X", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(pg.Port),
		"-U", testbed.PostgresSuperuser, "-d", "fromstdout", "-f", f)
	psql.Env = append(os.Environ(), "PGPASSWORD="+pgPassword(pg.DSN()))
	b, err := psql.CombinedOutput()
	if err != nil {
		t.Fatalf("psql -f script: %v\n%s", err, b)
	}
	// The roles exist on this server: their CREATE ROLE fails, nothing else.
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "ERROR") && !strings.Contains(line, "already exists") {
			t.Fatalf("psql -f script: %s", line)
		}
	}
	balanced(pg.DSNDB("fromstdout"))
	sameSums(t, want, d.Checksums(t, pg.DSNDB("fromstdout")))

	// One worker: one pg_dump entry, as earlier backups have.
	a.run("backup", "--engine", "postgres", "--dsn", pg.DSNDB("app"), "--mode", "logical", "--option", "workers=1", "--name", "single")
	pg.Psql(t, "postgres", "CREATE DATABASE single")
	a.run("restore", "--engine", "postgres", "--dsn", pg.DSNDB("single"), "--backup", "latest")
	balanced(pg.DSNDB("single"))
	sameSums(t, d.Checksums(t, pg.DSNDB("app")), d.Checksums(t, pg.DSNDB("single")))
	// The same single-entry backup loaded by two sessions as it streams (the
	// default from 64 MiB): the same database.
	pg.Psql(t, "postgres", "CREATE DATABASE singlesplit")
	a.run("restore", "--engine", "postgres", "--dsn", pg.DSNDB("singlesplit"), "--backup", "latest", "--option", "restore_split_bytes=1")
	balanced(pg.DSNDB("singlesplit"))
	sameSums(t, d.Checksums(t, pg.DSNDB("single")), d.Checksums(t, pg.DSNDB("singlesplit")))
}

// pgTransfer moves amount between two accounts and logs it, in one
// transaction, locking the lower account first.
func pgTransfer(ctx context.Context, db *sql.DB, from, to int, amount int64) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	first, second, delta := from, to, -amount
	if to < from {
		first, second, delta = to, from, amount
	}
	if _, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + $2 WHERE id = $1`, first, delta); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + $2 WHERE id = $1`, second, -delta); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO transfers (src, dst, amount) VALUES ($1, $2, $3)`, from, to, amount); err != nil {
		return err
	}
	return tx.Commit()
}

// sameSums fails on the first object whose checksum differs.
func sameSums(t *testing.T, want, got map[string]string) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%d objects, want %d", len(got), len(want))
	}
	for k, w := range want {
		if got[k] != w {
			t.Fatalf("%s:\n  want %.300s\n  got  %.300s", k, w, got[k])
		}
	}
}

// TestPostgresLogicalDatabases: `--option databases=all` backs up every
// database of a server; restored with --dsn naming another server's
// postgres database, each lands in a database of its name, created there
// with its settings, and so does the --stdout script run by psql against a
// third server.
func TestPostgresLogicalDatabases(t *testing.T) {
	bin := bins(t)
	a := &amberEnv{t: t, bin: bin, repo: filepath.Join(testbed.PostgresDir(t), "repo")}
	a.run("repo", "init")
	src := testbed.StartPostgres(t, testbed.PostgresOptions{})
	src.Psql(t, "postgres", "CREATE DATABASE shop")
	src.Psql(t, "postgres", `CREATE DATABASE "Blog Posts"`)
	src.Psql(t, "postgres", `ALTER DATABASE shop SET search_path = store, public`)
	src.Psql(t, "shop", `CREATE SCHEMA store; CREATE TABLE store.orders (id int PRIMARY KEY, total numeric);
		INSERT INTO store.orders SELECT g, g * 0.5 FROM generate_series(1, 30000) g`)
	src.Psql(t, "Blog Posts", `CREATE TABLE posts (id serial PRIMARY KEY, title text); INSERT INTO posts (title) VALUES ('hello'), ('world')`)
	src.Psql(t, "postgres", `CREATE TABLE notes (n text); INSERT INTO notes VALUES ('in postgres')`)
	const qShop = `SELECT count(*), sum(total), current_setting('search_path') FROM orders`
	const qBlog = `SELECT string_agg(title, ',' ORDER BY id), (SELECT last_value FROM posts_id_seq) FROM posts`
	wantShop, wantBlog := src.Psql(t, "shop", qShop), src.Psql(t, "Blog Posts", qBlog)

	a.run("backup", "--engine", "postgres", "--dsn", src.DSN(), "--mode", "logical", "--option", "databases=all")

	dst := testbed.StartPostgres(t, testbed.PostgresOptions{})
	a.run("restore", "--engine", "postgres", "--dsn", dst.DSN(), "--backup", "latest")
	if s, b, n := dst.Psql(t, "shop", qShop), dst.Psql(t, "Blog Posts", qBlog), dst.Psql(t, "postgres", "SELECT n FROM notes"); s != wantShop || b != wantBlog || n != "in postgres" {
		t.Fatalf("restored %q %q %q, want %q %q", s, b, n, wantShop, wantBlog)
	}

	third := testbed.StartPostgres(t, testbed.PostgresOptions{})
	var script, errb bytes.Buffer
	c := a.cmd("restore", "--engine", "postgres", "--backup", "latest", "--stdout")
	c.Stdout, c.Stderr = &script, &errb
	if err := c.Run(); err != nil {
		t.Fatalf("amber restore --stdout: %v\n%s", err, errb.String())
	}
	psql := exec.Command(filepath.Join(third.Client, "psql"), "-X", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(third.Port),
		"-U", testbed.PostgresSuperuser, "-d", "postgres")
	psql.Env = append(os.Environ(), "PGPASSWORD="+pgPassword(third.DSN()))
	psql.Stdin = &script
	b, err := psql.CombinedOutput()
	if err != nil {
		t.Fatalf("psql < script: %v\n%s", err, b)
	}
	// Only the postgres database exists there already.
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "ERROR") && !strings.Contains(line, `database "postgres" already exists`) {
			t.Fatalf("psql < script: %s", line)
		}
	}
	if s, b, n := third.Psql(t, "shop", qShop), third.Psql(t, "Blog Posts", qBlog), third.Psql(t, "postgres", "SELECT n FROM notes"); s != wantShop || b != wantBlog || n != "in postgres" {
		t.Fatalf("psql loaded %q %q %q, want %q %q", s, b, n, wantShop, wantBlog)
	}
}
