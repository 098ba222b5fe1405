package pgengine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// memDump collects a dump's entries in memory, checking that one is
// closed before the next starts.
type memDump struct {
	entries []DumpEntry
	bodies  []*bytes.Buffer
	open    bool
}

type memWriter struct {
	*bytes.Buffer
	d *memDump
}

func (w memWriter) Close() error { w.d.open = false; return nil }

func (d *memDump) Create(_ context.Context, e DumpEntry) (io.WriteCloser, error) {
	if d.open {
		panic("entry " + e.Name + " created while another is open")
	}
	d.open = true
	d.entries = append(d.entries, e)
	b := &bytes.Buffer{}
	d.bodies = append(d.bodies, b)
	return memWriter{b, d}, nil
}

// failingDump refuses its failAt-th entry.
type failingDump struct {
	memDump
	failAt int
}

func (f *failingDump) Create(ctx context.Context, e DumpEntry) (io.WriteCloser, error) {
	if len(f.entries)+1 == f.failAt {
		return nil, errors.New("sink refused " + e.Name)
	}
	return f.memDump.Create(ctx, e)
}

func (d *memDump) next() NextDumpEntry {
	i := 0
	return func(context.Context) (DumpEntry, io.Reader, error) {
		if i == len(d.entries) {
			return DumpEntry{}, nil, io.EOF
		}
		i++
		e := d.entries[i-1]
		e.Size = int64(d.bodies[i-1].Len()) // as the host sends it
		return e, bytes.NewReader(d.bodies[i-1].Bytes()), nil
	}
}

func TestParallelDumpRestore(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 4*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	pg.Psql(t, "postgres", "CREATE DATABASE app")
	pg.Psql(t, "postgres", "CREATE DATABASE copy")
	pg.Psql(t, "postgres", "CREATE DATABASE script")
	pg.Psql(t, "postgres", "CREATE ROLE app_reader NOLOGIN; CREATE ROLE \"Odd Role\" LOGIN PASSWORD 'odd-Pw-551'")
	pg.Psql(t, "app", `CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric, tags text[]);
		INSERT INTO items (name, price, tags) SELECT 'item ' || g, g * 1.5, ARRAY['t' || (g % 7)] FROM generate_series(1, 40000) g;
		CREATE INDEX ON items (name); CREATE VIEW cheap AS SELECT * FROM items WHERE price < 100;
		CREATE SCHEMA "Odd ""Schema""";
		CREATE TABLE "Odd ""Schema"""."big*.T" (id int PRIMARY KEY, item int REFERENCES items, b bytea);
		INSERT INTO "Odd ""Schema"""."big*.T" SELECT g, g, decode(md5(g::text), 'hex') FROM generate_series(1, 30000) g;
		CREATE TABLE small (k text PRIMARY KEY); INSERT INTO small VALUES ('a'), ('b');
		CREATE SEQUENCE lone START 50; SELECT setval('lone', 777);
		SELECT lo_from_bytea(0, 'large object bytes');
		GRANT SELECT ON items TO app_reader;`)
	const q = `SELECT (SELECT count(*) || md5(string_agg(id || name || price || tags::text, ';' ORDER BY id)) FROM items),
		(SELECT count(*) FROM cheap), (SELECT last_value FROM items_id_seq), (SELECT last_value FROM lone),
		(SELECT count(*) || md5(string_agg(id || ':' || item || encode(b, 'hex'), ';' ORDER BY id)) FROM "Odd ""Schema"""."big*.T"),
		(SELECT string_agg(k, ',' ORDER BY k) FROM small),
		(SELECT string_agg(convert_from(lo_get(oid), 'UTF8'), ',') FROM pg_largeobject_metadata),
		(SELECT count(*) FROM pg_constraint WHERE contype = 'f'),
		has_table_privilege('app_reader', 'items', 'SELECT')`
	want := pg.Psql(t, "app", q)

	var d memDump
	res, err := ParallelDump(ctx, DSN(pg.DSNDB("app")), "app", &d, ParallelDumpOptions{Workers: 2, Globals: true, TableBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var sections []string
	for _, e := range d.entries {
		sections = append(sections, e.Section+" "+e.Table)
	}
	t.Logf("entries: %q, lsn %s", sections, res.LSN)
	if len(d.entries) != 6 || d.entries[0].Section != SectionGlobals || d.entries[1].Section != SectionPreData ||
		d.entries[5].Section != SectionPostData || res.Tables != 2 || res.LSN == 0 {
		t.Fatalf("entries %q, %d tables alone, lsn %s", sections, res.Tables, res.LSN)
	}
	for _, e := range d.entries[1:] {
		if !strings.HasPrefix(e.Name, "app/") || e.Database != "app" {
			t.Fatalf("entry %+v outside app/", e)
		}
	}
	if !strings.Contains(d.bodies[0].String(), "CREATE ROLE app_reader;") {
		t.Fatalf("globals without the role:\n%s", d.bodies[0])
	}

	// A sink that fails on a data entry fails the dump and leaves no spool
	// file behind.
	spoolDump := t.TempDir()
	failing := &failingDump{failAt: 3}
	if _, err := ParallelDump(ctx, DSN(pg.DSNDB("app")), "app", failing, ParallelDumpOptions{Workers: 2, TableBytes: 256 << 10, SpoolDir: spoolDump}); err == nil || !contains(err.Error(), "sink refused") {
		t.Fatalf("dump into a failing sink: %v", err)
	}
	if left, _ := os.ReadDir(spoolDump); len(left) != 0 {
		t.Fatalf("spool files left: %v", left)
	}

	// Restore: the roles exist on this server (kept), the login role's own
	// lines are left out.
	st, err := RestoreSections(ctx, DSN(pg.DSNDB("copy")), d.next(), SectionedRestoreOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 6 || st.DataEntries != 3 {
		t.Fatalf("stats %+v", st)
	}
	if got := pg.Psql(t, "copy", q); got != want {
		t.Fatalf("restored %q, want %q", got, want)
	}
	// The indexes are valid.
	if got := pg.Psql(t, "copy", "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT LIKE 'pg_%' AND i.indisvalid"); got != "4" {
		t.Fatalf("valid indexes: %s", got)
	}

	// A second restore fails loudly, and clean is refused with a reason.
	if _, err := RestoreSections(ctx, DSN(pg.DSNDB("copy")), d.next(), SectionedRestoreOptions{Workers: 2, SkipGlobals: true}); err == nil || contains(err.Error(), "amber-test-pw") {
		t.Fatalf("second restore: %v", err)
	}
	if _, err := RestoreSections(ctx, DSN(pg.DSNDB("copy")), d.next(), SectionedRestoreOptions{Workers: 2, SkipGlobals: true,
		LogicalRestoreOptions: LogicalRestoreOptions{Clean: true}}); err == nil || !contains(err.Error(), "clean") {
		t.Fatalf("clean: %v", err)
	}

	// A data entry cut short fails the restore, naming it, and leaves no
	// spool file behind.
	pg.Psql(t, "postgres", "CREATE DATABASE cut")
	spool := t.TempDir()
	cut := d
	cut.bodies = append([]*bytes.Buffer(nil), d.bodies...)
	for i, e := range cut.entries {
		if e.Section == SectionData && e.Table != "" {
			cut.bodies[i] = bytes.NewBuffer(d.bodies[i].Bytes()[:d.bodies[i].Len()/2])
			_, err := RestoreSections(ctx, DSN(pg.DSNDB("cut")), cut.next(), SectionedRestoreOptions{Workers: 2, SkipGlobals: true, SpoolDir: spool})
			if err == nil || !contains(err.Error(), e.Name) {
				t.Fatalf("restore of a cut entry: %v", err)
			}
			break
		}
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Fatalf("spool files left: %v", left)
	}

	// Export: one SQL script that stock psql loads into an empty database.
	var script bytes.Buffer
	if err := ExportSQL(ctx, d.next(), &script, "", "", false); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(testbed.PostgresDir(t), "dump.sql")
	if err := os.WriteFile(f, script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(pg.Client, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=0", "-h", "127.0.0.1",
		"-p", strconv.Itoa(pg.Port), "-U", testbed.PostgresSuperuser, "-d", "script", "-f", f)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+passwordOf(pg.DSN()))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	// Only the globals' CREATE ROLE of roles that exist may fail.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "ERROR") && !strings.Contains(line, "already exists") {
			t.Fatalf("psql: %s", line)
		}
	}
	if got := pg.Psql(t, "script", q); got != want {
		t.Fatalf("psql loaded %q, want %q", got, want)
	}
}

// TestRestoreGlobalsNewServer: roles the target lacks are created with
// their passwords; the restoring role keeps its own.
func TestRestoreGlobalsNewServer(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	src := testbed.StartPostgres(t, testbed.PostgresOptions{})
	dst := testbed.StartPostgres(t, testbed.PostgresOptions{})
	src.Psql(t, "postgres", "CREATE ROLE \"Odd Role\" LOGIN PASSWORD 'odd-Pw-551'; CREATE ROLE app_reader NOLOGIN; GRANT app_reader TO \"Odd Role\"")
	var d memDump
	info, err := Probe(ctx, DSN(src.DSN()))
	if info == nil {
		t.Fatal(err)
	}
	if err := DumpGlobals(ctx, DSN(src.DSN()), info, "", func() (io.WriteCloser, error) {
		return d.Create(ctx, DumpEntry{Name: "globals.sql", Kind: "sql", Section: SectionGlobals})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreSections(ctx, DSN(dst.DSN()), d.next(), SectionedRestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := dst.Psql(t, "postgres", `SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('Odd Role', 'app_reader');
		SELECT pg_has_role('Odd Role', 'app_reader', 'MEMBER')`); got != "Odd Role,app_reader\nt" {
		t.Fatalf("roles: %q", got)
	}
	// The new role logs in with its password; the superuser still with its own.
	if out, err := exec.Command(filepath.Join(dst.Client, "psql"), "-X", "-A", "-t", "-c", "SELECT current_user",
		dst.DSNFor("Odd Role", "odd-Pw-551", "postgres")).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "Odd Role" {
		t.Fatalf("login as the restored role: %v %s", err, out)
	}
	dst.Psql(t, "postgres", "SELECT 1")
}

func passwordOf(dsn string) string {
	_, pw := splitPassword(dsn)
	return pw
}

// TestDumpDatabases: several databases dumped with Create restore into
// another server, each into the database of its name (created with the
// source's encoding and settings), and their SQL export loads through psql
// on a third, connected to its postgres database.
func TestDumpDatabases(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 4*time.Minute)
	src := testbed.StartPostgres(t, testbed.PostgresOptions{})
	dst := testbed.StartPostgres(t, testbed.PostgresOptions{})
	const odd = `Odd "DB"/x'y`
	src.Psql(t, "postgres", `CREATE DATABASE app`)
	src.Psql(t, "postgres", `CREATE DATABASE "Odd ""DB""/x'y" ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`)
	src.Psql(t, "postgres", `ALTER DATABASE app SET work_mem = '7MB'`)
	src.Psql(t, "app", `CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a SELECT g, md5(g::text) FROM generate_series(1, 20000) g`)
	src.Psql(t, odd, `CREATE TABLE b (id int PRIMARY KEY REFERENCES b); INSERT INTO b VALUES (1)`)
	qa := `SELECT count(*), md5(string_agg(id || v, ',' ORDER BY id)), current_setting('work_mem') FROM a`
	qb := `SELECT count(*), pg_encoding_to_char(encoding) FROM b, pg_database WHERE datname = current_database() GROUP BY 2`
	wantA, wantB := src.Psql(t, "app", qa), src.Psql(t, odd, qb)

	var d memDump
	for _, db := range []string{"app", odd} {
		if _, err := ParallelDump(ctx, WithDatabase(DSN(src.DSN()), db), db, &d, ParallelDumpOptions{Workers: 2, Create: true, TableBytes: 64 << 10}); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range d.entries {
		if strings.Contains(e.Name, `x'y/`) && !strings.HasPrefix(e.Name, `Odd "DB"_x'y/`) {
			t.Fatalf("entry name %q", e.Name)
		}
	}
	if _, err := RestoreSections(ctx, DSN(dst.DSN()), d.next(), SectionedRestoreOptions{Workers: 2, Databases: true}); err != nil {
		t.Fatal(err)
	}
	if a, b := dst.Psql(t, "app", qa), dst.Psql(t, odd, qb); a != wantA || b != wantB {
		t.Fatalf("restored %q %q, want %q %q", a, b, wantA, wantB)
	}

	third := testbed.StartPostgres(t, testbed.PostgresOptions{})
	var script bytes.Buffer
	if err := ExportSQL(ctx, d.next(), &script, "", "", true); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(third.Client, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
		"-p", strconv.Itoa(third.Port), "-U", testbed.PostgresSuperuser, "-d", "postgres")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+passwordOf(third.DSN()))
	cmd.Stdin = &script
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	if a, b := third.Psql(t, "app", qa), third.Psql(t, odd, qb); a != wantA || b != wantB {
		t.Fatalf("psql loaded %q %q, want %q %q", a, b, wantA, wantB)
	}
}

func TestWithDatabase(t *testing.T) {
	for _, c := range []struct{ in, db, want string }{
		{"postgres://u:p@h:5/old?sslmode=disable", "new db", "postgres://u:p@h:5/new%20db?sslmode=disable"},
		{"host=h port=5 dbname=old user=u", "it's", `host=h port=5 user=u dbname='it\'s'`},
		{"host=h dbname='a b' password='x y'", "n", `host=h password='x y' dbname='n'`},
		{"host=h", `back\slash`, `host=h dbname='back\\slash'`},
	} {
		if got := string(WithDatabase(DSN(c.in), c.db)); got != c.want {
			t.Errorf("WithDatabase(%q, %q) = %q, want %q", c.in, c.db, got, c.want)
		}
	}
}

// TestParallelDumpFromStandby: a standby exports the snapshot too; the
// position recorded is its replay position.
func TestParallelDumpFromStandby(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 3*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	pg.Psql(t, "postgres", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 30000) g`)
	want := pg.Psql(t, "postgres", "SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM t")
	lsn := pg.Psql(t, "postgres", "SELECT pg_current_wal_lsn()")
	standby := testbed.StartStandby(t, pg)
	waitFor(t, 30*time.Second, "the standby to replay", func() bool {
		out, err := standby.PsqlErr("postgres", "SELECT pg_last_wal_replay_lsn() >= '"+lsn+"'::pg_lsn")
		return err == nil && out == "t"
	})
	var d memDump
	res, err := ParallelDump(ctx, DSN(standby.DSN()), "postgres", &d, ParallelDumpOptions{Workers: 2, TableBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Info.Standby || res.LSN < mustLSN(t, lsn) || res.Tables != 1 {
		t.Fatalf("standby %v, lsn %s (primary was at %s), %d tables alone", res.Info.Standby, res.LSN, lsn, res.Tables)
	}
	pg.Psql(t, "postgres", "CREATE DATABASE copy")
	if _, err := RestoreSections(ctx, DSN(pg.DSNDB("copy")), d.next(), SectionedRestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := pg.Psql(t, "copy", "SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM t"); got != want {
		t.Fatalf("restored %q, want %q", got, want)
	}
}

func mustLSN(t *testing.T, s string) LSN {
	l, err := ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pipedEntry is a restored entry that came through a pipe (api.PipeFile),
// as the host sends entries to a plugin that reads pipes. Reading it
// through the plugin fails the test: pg_restore should read the pipe.
type pipedEntry struct {
	t *testing.T
	f *os.File
}

func (p pipedEntry) PipeFile() *os.File { return p.f }
func (p pipedEntry) Read([]byte) (int, error) {
	p.t.Error("the entry was read by the plugin, not handed to pg_restore")
	return 0, io.ErrUnexpectedEOF
}

// TestRestorePipeToPgRestore: a single-entry dump and a sectioned dump's
// pre-data arriving through pipes are read by pg_restore itself, not copied
// through the plugin, and count as the size the host sent.
func TestRestorePipeToPgRestore(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	pg.Psql(t, "postgres", "CREATE DATABASE app")
	pg.Psql(t, "postgres", "CREATE DATABASE copy")
	pg.Psql(t, "app", "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
	var dump bytes.Buffer
	if err := LogicalDump(ctx, DSN(pg.DSNDB("app")), &dump, DumpOptions{}); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	go func() {
		pw.Write(dump.Bytes())
		pw.Close()
	}()
	sent := false
	next := func(context.Context) (DumpEntry, io.Reader, error) {
		if sent {
			return DumpEntry{}, nil, io.EOF
		}
		sent = true
		return DumpEntry{Name: "dump", Kind: "pg_dump-custom", Size: int64(dump.Len())}, pipedEntry{t, pr}, nil
	}
	st, err := RestoreSections(ctx, DSN(pg.DSNDB("copy")), next, SectionedRestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != int64(dump.Len()) {
		t.Errorf("restored %d bytes, the host sent %d", st.Bytes, dump.Len())
	}
	if got, want := pg.Psql(t, "copy", "SELECT count(*), md5(string_agg(v, '' ORDER BY id)) FROM t"),
		pg.Psql(t, "app", "SELECT count(*), md5(string_agg(v, '' ORDER BY id)) FROM t"); got != want {
		t.Errorf("restored table %q, want %q", got, want)
	}
}

// TestSplitLoad: a large table's data entry is loaded by several sessions
// at once (splitLoad), and comes back exactly: values with newlines, tabs,
// backslashes, a value that is `\.` alone, NULLs, bytea, emoji, a row
// longer than a block, a generated column and the owned sequence's value.
// The rows were committed by several transactions (distinct xmin), and by
// one with splitting off. An entry cut short fails the restore.
func TestSplitLoad(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 4*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	for _, db := range []string{"app", "split", "whole", "cut"} {
		pg.Psql(t, "postgres", "CREATE DATABASE "+db)
	}
	pg.Psql(t, "app", `CREATE TABLE t (id bigserial PRIMARY KEY, v text, b bytea, n numeric, g int GENERATED ALWAYS AS (length(v)) STORED);
		INSERT INTO t (v, b, n) SELECT 'row ' || g || E'\n\ttab\\back' || repeat('x', g % 300), decode(md5(g::text), 'hex'), g / 7.0
		FROM generate_series(1, 30000) g;
		INSERT INTO t (v, b, n) VALUES (E'\\.', NULL, NULL), (E'a\n\\.\nb', '\x00', -1), (NULL, NULL, NULL), ('🐘 ünïcödé', '\xff', 0),
			(repeat('long ', 600000), NULL, 1);
		SELECT setval('t_id_seq', 99999);`)
	const q = `SELECT count(*), md5(string_agg(id || ':' || coalesce(v, 'NULL') || coalesce(encode(b, 'hex'), 'NULL') || coalesce(n::text, 'NULL') || coalesce(g::text, 'NULL'), ';' ORDER BY id)),
		(SELECT last_value FROM t_id_seq) FROM t`
	want := pg.Psql(t, "app", q)

	var d memDump
	if _, err := ParallelDump(ctx, DSN(pg.DSNDB("app")), "app", &d, ParallelDumpOptions{Workers: 2, TableBytes: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	tables := 0
	for _, e := range d.entries {
		if e.Table != "" {
			tables++
		}
	}
	if tables != 1 {
		t.Fatalf("%d entries of one table, want 1 (t)", tables)
	}
	for db, opts := range map[string]SectionedRestoreOptions{
		"split": {Workers: 3, SplitBytes: 1},
		"whole": {Workers: 3, SplitBytes: -1},
	} {
		if _, err := RestoreSections(ctx, DSN(pg.DSNDB(db)), d.next(), opts); err != nil {
			t.Fatalf("%s: %v", db, err)
		}
		if got := pg.Psql(t, db, q); got != want {
			t.Errorf("%s: restored %q, want %q", db, got, want)
		}
		txns := pg.Psql(t, db, "SELECT count(DISTINCT xmin::text) FROM t")
		t.Logf("%s: rows committed by %s transactions", db, txns)
		if split := txns != "1"; split != (db == "split") {
			t.Errorf("%s: rows committed by %s transactions", db, txns)
		}
	}

	cut := d
	cut.bodies = append([]*bytes.Buffer(nil), d.bodies...)
	for i, e := range cut.entries {
		if e.Table != "" {
			cut.bodies[i] = bytes.NewBuffer(d.bodies[i].Bytes()[:d.bodies[i].Len()/2])
		}
	}
	if _, err := RestoreSections(ctx, DSN(pg.DSNDB("cut")), cut.next(), SectionedRestoreOptions{Workers: 2, SplitBytes: 1}); err == nil ||
		!contains(err.Error(), "ends inside its COPY rows") || !contains(err.Error(), "pg_restore") {
		t.Fatalf("a table's entry cut in half: %v, want the script's end inside the rows and pg_restore's reason", err)
	} else {
		t.Logf("cut entry: %v", err)
	}
	if got := pg.Psql(t, "cut", "SELECT count(*) FROM t"); got != "0" {
		t.Errorf("the cut entry's restore committed %s rows", got)
	}
}

// TestSplitLoadOtherShapes: a data script that does not start with
// settings and a COPY is left to pg_restore (errNotSplit) before any
// session connects. A script that prints its input stands in for
// pg_restore --file=-.
func TestSplitLoadOtherShapes(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	fake := filepath.Join(t.TempDir(), "pg_restore")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexec cat\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, script := range []string{
		"SET client_encoding = 'UTF8';\nSELECT pg_catalog.lo_create('16400');\nCOPY public.t (a) FROM stdin;\n1\n\\.\n",
		"SET client_encoding = 'UTF8';\n",
		"",
	} {
		err := splitLoad(ctx, fake, "/bin/false", DSN("postgres://nobody@127.0.0.1:1/none"), strings.NewReader(script), 2)
		if !errors.Is(err, errNotSplit) {
			t.Errorf("script %q: %v, want errNotSplit", script, err)
		}
	}
	// The shape it knows goes on to connect its sessions (here: nowhere).
	err := splitLoad(ctx, fake, "/bin/false", DSN("postgres://nobody@127.0.0.1:1/none"),
		strings.NewReader("\\restrict abc\nSET client_encoding = 'UTF8';\nCOPY public.t (a) FROM stdin;\n1\n\\.\n"), 2)
	if err == nil || errors.Is(err, errNotSplit) {
		t.Errorf("a script of the known shape: %v, want a connection error", err)
	}
}
