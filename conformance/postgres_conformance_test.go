package conformance_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance"
	"github.com/amber-backup/amber/conformance/testbed"
)

// TestPostgresConformance runs the engine-independent suite against
// amber-plugin-postgres and real PostgreSQL servers.
func TestPostgresConformance(t *testing.T) {
	bin := bins(t)
	amber := func(repo string, args ...string) *exec.Cmd {
		return (&amberEnv{bin: bin, repo: repo}).cmd(args...)
	}
	conformance.Run(t, &pgDriver{}, amber)
}

// TestPostgresMajors runs the lean subset of the suite (physical RoundTrip,
// PointInTime, Failover) against every other supported major, whose server
// binaries `make deps` installs. Logical mode is tested on 15 only: the
// test bed has pg_dump 15 alone.
func TestPostgresMajors(t *testing.T) {
	bin := bins(t)
	amber := func(repo string, args ...string) *exec.Cmd {
		return (&amberEnv{bin: bin, repo: repo}).cmd(args...)
	}
	for _, major := range testbed.PostgresMajors {
		t.Run(major, func(t *testing.T) {
			testbed.PostgresBin(t, major)
			conformance.RunMajor(t, &pgDriver{major: major}, amber)
		})
	}
}

// pgDriver is the PostgreSQL driver of the conformance suite.
type pgDriver struct {
	major string // the server's major version; "" is 15
	dbs   atomic.Int64
	mu    sync.Mutex
	pools map[string]*sql.DB
}

var _ conformance.Driver = (*pgDriver)(nil)

func (*pgDriver) Engine() string { return "postgres" }

func (d *pgDriver) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{Physical: true, Logical: d.major == "", PointInTime: true}
}

func (d *pgDriver) Start(t testing.TB) conformance.Server {
	return testbed.StartPostgres(t, testbed.PostgresOptions{Major: d.major})
}

func (*pgDriver) TempDir(t testing.TB) string { return testbed.PostgresDir(t) }

func (d *pgDriver) StartRestored(t testing.TB, dataDir string) conformance.Server {
	srv := testbed.StartPostgresDataDir(t, dataDir, testbed.PostgresOptions{Major: d.major})
	db := pgOpen(t, srv.DSN())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		var rec bool
		if err := db.QueryRowContext(ctx, `SELECT pg_is_in_recovery()`).Scan(&rec); err == nil && !rec {
			return srv
		}
		if ctx.Err() != nil {
			b, _ := os.ReadFile(srv.LogFile)
			t.Fatalf("restored server did not finish recovery:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *pgDriver) CreateEmptyDB(t testing.TB, s conformance.Server) string {
	p := s.(*testbed.Postgres)
	name := fmt.Sprintf("restored_%d", d.dbs.Add(1))
	p.Psql(t, "postgres", "CREATE DATABASE "+name)
	return p.DSNDB(name)
}

// pgFixture holds what users keep in PostgreSQL, edge values included. The
// 20 MB row is bytea that does not compress; the 500 tables are made in
// one DO block.
const pgFixture = `
CREATE TABLE types (
	id int PRIMARY KEY,
	n numeric, r real, d double precision, i8 bigint, i2 smallint,
	t text, vc varchar(20), c char(3),
	b bytea, j json, jb jsonb,
	ia int[], ta text[],
	ts timestamptz, tsn timestamp, dt date, tm time, iv interval,
	u uuid, flag boolean, ip inet
);
INSERT INTO types VALUES
 (1, 12345678901234567890123456789012345678901234567890.12345678901234567890123456789012345678901234567890,
  3.4028235e38, 1.7976931348623157e308, 9223372036854775807, -32768,
  'héllo wörld — ünïcödé 日本語 中文 한국어 עברית العربية 😀🎉👩‍👩‍👧‍👦 🏳️‍🌈 e' || chr(769) || ' z' || chr(8203) || 'w',
  'ascii', 'abc',
  (SELECT decode(string_agg(lpad(to_hex(i), 2, '0'), '' ORDER BY i), 'hex') FROM generate_series(0, 255) i),
  '{"b": 1,  "a": [1, 2.50, "x"], "a": 2}', '{"nested": {"k": [true, null, 1e-7, "ü😀"]}, "": ""}',
  '{1,NULL,-3,2147483647}', '{"a b","c,d","\"q\"","back\\slash",NULL,""}',
  '2000-01-01 00:00:00.123456+05:30', '1999-12-31 23:59:59.999999', '0001-01-01 BC', '24:00:00', '-1 year 2 mons 3 days 04:05:06.789',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, '2001:db8::1/64'),
 (2, -0.00000000000000000000000000000000000000000000000001, 'NaN', '-Infinity', -9223372036854775808, 32767,
  E'tab\there\nnewline\r\ncrlf \\ backslash '' quote " dquote \x01\x02\x1f\x7f controls',
  '', '',
  '\x', '[]', '[]', '{}', '{}',
  'infinity', '-infinity', 'infinity', '00:00:00', '0',
  '00000000-0000-0000-0000-000000000000', false, '0.0.0.0'),
 (3, 'NaN', '-0', 'Infinity', 0, 0,
  NULL, NULL, NULL, NULL, NULL, 'null', NULL, NULL,
  '-infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO types (id, n, t, ts)
  SELECT g, g * 1.5, repeat(chr(g + 100), g % 50), '2024-02-29 12:00:00+00'::timestamptz + g * interval '1 minute'
  FROM generate_series(4, 2000) g;
CREATE INDEX types_ts_idx ON types (ts);
CREATE INDEX types_jb_idx ON types USING gin (jb);

CREATE TABLE big (id int PRIMARY KEY, payload bytea NOT NULL);
INSERT INTO big SELECT 1, decode(string_agg(md5(i::text), '' ORDER BY i), 'hex') FROM generate_series(1, 1310720) i;

CREATE TABLE "select" ("Order" int PRIMARY KEY, "weird ""name""" text, "from" text, "ÜñîçødéCol" int);
INSERT INTO "select" VALUES (1, 'a', 'b', 1), (2, 'quote''s', 'x"y', NULL);
CREATE UNIQUE INDEX "select_weird ""name""_idx" ON "select" ("weird ""name""");
CREATE SCHEMA "Mixed Case";
CREATE TABLE "Mixed Case"."Table 😀" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
INSERT INTO "Mixed Case"."Table 😀" (v) SELECT md5(g::text) FROM generate_series(1, 100) g;

CREATE SEQUENCE odd_seq START 1000 INCREMENT 7;
SELECT setval('odd_seq', 123456789);
CREATE VIEW type_summary AS SELECT flag, count(*) AS n, sum(n) AS total FROM types GROUP BY flag;

CREATE SCHEMA many;
DO $$
BEGIN
	FOR i IN 1..500 LOOP
		EXECUTE format('CREATE TABLE many.t%s (id int PRIMARY KEY, v text); INSERT INTO many.t%s SELECT g, md5((g * %s)::text) FROM generate_series(1, 5) g', i, i, i);
	END LOOP;
END $$;
ANALYZE;
`

func (*pgDriver) LoadFixture(t testing.TB, s conformance.Server) {
	db := pgOpen(t, s.DSN())
	if _, err := db.Exec(pgFixture); err != nil {
		t.Fatalf("load fixture: %v", err)
	}
	// The index must be usable where it came from, or its validity after a
	// restore proves nothing.
	if plan := pgExplain(t, db, `SELECT * FROM types WHERE ts = '2024-03-01 00:00:00+00'`); !strings.Contains(plan, "types_ts_idx") {
		t.Fatalf("the fixture's index is not used:\n%s", plan)
	}
}

// LoadBulk: rows of 1000 bytes cut at varying offsets from 512 KiB of
// random bytes, so neither zstd nor deduplication shrinks them much, made
// by two sessions at once.
func (*pgDriver) LoadBulk(t testing.TB, s conformance.Server, size int64) {
	db := pgOpen(t, s.DSN())
	if _, err := db.Exec(`CREATE TABLE bulk (id int PRIMARY KEY, payload bytea NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	rows := size / 1060 // payload and tuple overhead
	const parts = 2
	errs := make(chan error, parts)
	for p := range int64(parts) {
		go func() {
			_, err := db.Exec(`
				WITH pool AS (SELECT decode(string_agg(md5(i || ':' || $3::int), ''), 'hex') AS p FROM generate_series(1, 32768) i)
				INSERT INTO bulk SELECT g, substring(p FROM (1 + g::bigint * 7919 % (524288 - 1000))::int FOR 1000)
				FROM pool, generate_series($1::int, $2::int) g`, 1+p*rows/parts, (p+1)*rows/parts, p)
			errs <- err
		}()
	}
	for range parts {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`CHECKPOINT`); err != nil {
		t.Fatal(err)
	}
}

func (*pgDriver) Checksums(t testing.TB, dsn string) map[string]string {
	db := pgOpen(t, dsn)
	sum := map[string]string{}
	query := func(q string, scan func(*sql.Rows) error) {
		t.Helper()
		rows, err := db.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				t.Fatal(err)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	const user = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'`

	// Tables and views: columns, then rows in primary-key order (views and
	// tables without one: ordered by the rows' own text).
	type rel struct{ name, kind, cols, order string }
	var rels []rel
	query(`SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind::text,
			string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod) ||
				CASE WHEN a.attnotnull THEN ' not null' ELSE '' END ||
				CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END, ', ' ORDER BY a.attnum),
			coalesce((SELECT string_agg('r_.' || quote_ident(k.attname), ', ' ORDER BY array_position(i.indkey::int2[], k.attnum))
				FROM pg_index i JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = ANY (i.indkey)
				WHERE i.indrelid = c.oid AND i.indisprimary), 'r_::text')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE c.relkind IN ('r', 'p', 'v', 'm') AND `+user+`
		GROUP BY 1, 2, c.oid`, func(r *sql.Rows) error {
		var x rel
		err := r.Scan(&x.name, &x.kind, &x.cols, &x.order)
		rels = append(rels, x)
		return err
	})
	for _, r := range rels {
		var n int64
		var md5 string
		q := fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(md5(r_::text), '' ORDER BY %s)), '') FROM %s r_`, r.order, r.name)
		if err := db.QueryRow(q).Scan(&n, &md5); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		kind := map[string]string{"r": "table", "p": "table", "v": "view", "m": "materialized view"}[r.kind]
		sum[kind+" "+r.name] = fmt.Sprintf("(%s) rows=%d md5=%s", r.cols, n, md5)
	}
	query(`SELECT quote_ident(schemaname) || '.' || quote_ident(viewname), definition FROM pg_views n
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`, func(r *sql.Rows) error {
		var name, def string
		err := r.Scan(&name, &def)
		sum["view "+name] += " definition: " + def
		return err
	})

	// Sequences: definition and state.
	var seqs []string
	query(`SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename) FROM pg_sequences`, func(r *sql.Rows) error {
		var s string
		err := r.Scan(&s)
		seqs = append(seqs, s)
		return err
	})
	for _, s := range seqs {
		var def, state string
		if err := db.QueryRow(`SELECT format('%s start %s increment %s min %s max %s cycle %s', data_type, start_value,
				increment_by, min_value, max_value, cycle) FROM pg_sequences
				WHERE quote_ident(schemaname) || '.' || quote_ident(sequencename) = $1`, s).Scan(&def); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(`SELECT format('last_value %s is_called %s', last_value, is_called) FROM ` + s).Scan(&state); err != nil {
			t.Fatal(err)
		}
		sum["sequence "+s] = def + "; " + state
	}

	// Indexes: definition, and whether the planner may use it.
	query(`SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_indexdef(i.indexrelid),
			i.indisvalid, i.indisready
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE `+user, func(r *sql.Rows) error {
		var name, def string
		var valid, ready bool
		err := r.Scan(&name, &def, &valid, &ready)
		sum["index "+name] = fmt.Sprintf("%s valid=%t ready=%t", def, valid, ready)
		return err
	})
	return sum
}

func (*pgDriver) BankSetup(t testing.TB, dsn string, accounts int, balance int64) conformance.Bank {
	db := pgOpen(t, dsn)
	db.SetMaxOpenConns(8)
	if _, err := db.Exec(`CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
		CREATE TABLE transfers (id bigserial PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount bigint NOT NULL,
			at timestamptz NOT NULL DEFAULT clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO accounts SELECT g, $2 FROM generate_series(1, $1::int) g`, accounts, balance); err != nil {
		t.Fatal(err)
	}
	return pgBank{db}
}

type pgBank struct{ db *sql.DB }

// Transfer debits and credits in two statements, locking the lower
// account first so that concurrent transfers never deadlock, and logs
// the transfer.
func (b pgBank) Transfer(ctx context.Context, from, to int, amount int64) error {
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	first, second, delta := from, to, -amount
	if to < from {
		first, second, delta = to, from, amount
	}
	for _, q := range []struct {
		id    int
		delta int64
	}{{first, delta}, {second, -delta}} {
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + $2 WHERE id = $1`, q.id, q.delta); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO transfers (src, dst, amount) VALUES ($1, $2, $3)`, from, to, amount); err != nil {
		return err
	}
	return tx.Commit()
}

func (*pgDriver) BankTotals(t testing.TB, dsn string) (int, int64) {
	var n int
	var total int64
	if err := pgOpen(t, dsn).QueryRow(`SELECT count(*), coalesce(sum(balance), 0) FROM accounts`).Scan(&n, &total); err != nil {
		t.Fatal(err)
	}
	return n, total
}

func (*pgDriver) BadInputs(t testing.TB, s conformance.Server) []conformance.BadInput {
	p := s.(*testbed.Postgres)
	p.Psql(t, "postgres", `CREATE ROLE plain LOGIN PASSWORD 'plain-Pw-7731'`)
	minimal := testbed.StartPostgres(t, testbed.PostgresOptions{WALLevel: "minimal"})
	physical := func(dsn string) []string {
		return []string{"backup", "--engine", "postgres", "--dsn", dsn, "--mode", "physical"}
	}
	return []conformance.BadInput{
		{Name: "wrong password", Args: physical(p.DSNFor(testbed.PostgresSuperuser, "Wr0ng-Pw-9182", "postgres")),
			Want: []string{"check the DSN"}, Secret: "Wr0ng-Pw-9182"},
		{Name: "role without REPLICATION", Args: physical(p.DSNFor("plain", "plain-Pw-7731", "postgres")),
			Want: []string{"REPLICATION", "ALTER ROLE plain"}, Secret: "plain-Pw-7731"},
		{Name: "wal_level minimal", Args: physical(minimal.DSN()),
			Want: []string{"wal_level", "replica"}, Secret: pgPassword(minimal.DSN())},
	}
}

// pgPassword is the password in a URL DSN.
func pgPassword(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return ""
	}
	pw, _ := u.User.Password()
	return pw
}

// pgExplain returns the plan of query with sequential scans disabled.
func pgExplain(t testing.TB, db *sql.DB, query string) string {
	t.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(context.Background(), `RESET enable_seqscan`)
	rows, err := conn.QueryContext(context.Background(), `EXPLAIN `+query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var line string
		rows.Scan(&line)
		plan = append(plan, line)
	}
	return strings.Join(plan, "\n")
}

func pgOpen(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// The LogDriver methods: markers, replicas, failover, lost WAL.

var _ conformance.LogDriver = (*pgDriver)(nil)

// db returns one pooled connection set per DSN for the whole test.
func (d *pgDriver) db(t testing.TB, dsn string) *sql.DB {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pools == nil {
		d.pools = map[string]*sql.DB{}
	}
	if db := d.pools[dsn]; db != nil {
		return db
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	d.pools[dsn] = db
	t.Cleanup(func() {
		d.mu.Lock()
		delete(d.pools, dsn)
		d.mu.Unlock()
		db.Close()
	})
	return db
}

func (d *pgDriver) MarkerSetup(t testing.TB, dsn string) {
	if _, err := d.db(t, dsn).Exec(`CREATE TABLE markers (id int PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
}

func (d *pgDriver) Mark(t testing.TB, dsn string, id int) {
	if _, err := d.db(t, dsn).Exec(`INSERT INTO markers (id) VALUES ($1)`, id); err != nil {
		t.Fatalf("marker %d: %v", id, err)
	}
}

func (d *pgDriver) MarkerTimes(t testing.TB, dsn string) map[int]time.Time {
	rows, err := d.db(t, dsn).Query(`SELECT id, ts FROM markers`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ts := map[int]time.Time{}
	for rows.Next() {
		var id int
		var tm time.Time
		if err := rows.Scan(&id, &tm); err != nil {
			t.Fatal(err)
		}
		ts[id] = tm
	}
	return ts
}

func (d *pgDriver) Markers(t testing.TB, dsn string) (int, int) {
	var c, m int
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(`SELECT count(*), coalesce(max(id), 0) FROM markers`).Scan(&c, &m); err != nil {
		t.Fatal(err)
	}
	return c, m
}

func (d *pgDriver) StartReplica(t testing.TB, primary conformance.Server) conformance.Server {
	p := primary.(*testbed.Postgres)
	lsn := p.Psql(t, "postgres", "SELECT pg_current_wal_lsn()")
	standby := testbed.StartStandby(t, p)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := standby.PsqlErr("postgres", "SELECT pg_last_wal_replay_lsn() >= '"+lsn+"'::pg_lsn")
		if err == nil && out == "t" {
			return standby
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby did not replay up to %s within 30 s", lsn)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FailOver stops the primary with a fast shutdown (which sends the standby
// everything committed) and promotes the standby.
func (d *pgDriver) FailOver(t testing.TB, primary, replica conformance.Server) {
	primary.Stop()
	r := replica.(*testbed.Postgres)
	r.Promote(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if out, err := r.PsqlErr("postgres", "SELECT pg_is_in_recovery()"); err == nil && out == "f" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("promoted standby still in recovery after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// LoseLog drops the archiver's replication slot, so nothing holds WAL for
// it, and moves the server to a later WAL segment.
func (d *pgDriver) LoseLog(t testing.TB, s conformance.Server) {
	p := s.(*testbed.Postgres)
	p.Psql(t, "postgres", "SELECT pg_drop_replication_slot('amber')")
	for range 3 {
		p.Psql(t, "postgres", "CREATE TABLE IF NOT EXISTS lost (x int); INSERT INTO lost SELECT generate_series(1, 1000)")
		p.Psql(t, "postgres", "SELECT pg_switch_wal()")
	}
	p.Psql(t, "postgres", "CHECKPOINT")
}
