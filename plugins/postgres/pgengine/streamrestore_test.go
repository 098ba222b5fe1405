package pgengine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// singleDump is a single-entry dump as LogicalDump writes it, in memory.
func singleDump(t *testing.T, pg *testbed.Postgres, db string, extra ...string) *memDump {
	t.Helper()
	var body bytes.Buffer
	if err := LogicalDump(testCtx(t, time.Minute), DSN(pg.DSNDB(db)), &body, DumpOptions{ExtraArgs: extra}); err != nil {
		t.Fatal(err)
	}
	return &memDump{entries: []DumpEntry{{Name: "dump"}}, bodies: []*bytes.Buffer{&body}}
}

// TestStreamRestore: a single-entry dump is restored in parallel as it
// streams, exactly; an archive it does not read goes to pg_restore whole;
// a stream cut inside the data leaves no row.
func TestStreamRestore(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 4*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	for _, db := range []string{"app", "par", "one", "cut", "gz", "lo", "lo_copy"} {
		pg.Psql(t, "postgres", "CREATE DATABASE "+db)
	}
	pg.Psql(t, "postgres", "CREATE ROLE stream_reader NOLOGIN")
	pg.Psql(t, "app", `CREATE TABLE t (id bigserial PRIMARY KEY, v text, b bytea, n numeric, g int GENERATED ALWAYS AS (length(v)) STORED);
		INSERT INTO t (v, b, n) SELECT 'row ' || g || E'\n\ttab\\back' || repeat('x', g % 300), decode(md5(g::text), 'hex'), g / 7.0
		FROM generate_series(1, 30000) g;
		INSERT INTO t (v, b, n) VALUES (E'\\.', NULL, NULL), (E'a\n\\.\nb', '\x00', -1), (NULL, NULL, NULL), ('🐘 ünïcödé', '\xff', 0),
			(repeat('long ', 600000), NULL, 1);
		SELECT setval('t_id_seq', 99999);
		CREATE SCHEMA "Odd ""Schema""";
		CREATE TABLE "Odd ""Schema"""."big*.T" (id int PRIMARY KEY, item bigint REFERENCES t, b bytea);
		INSERT INTO "Odd ""Schema"""."big*.T" SELECT g, g, decode(md5(g::text), 'hex') FROM generate_series(1, 20000) g;
		CREATE TABLE empty (k text PRIMARY KEY);
		CREATE INDEX ON t (n); CREATE VIEW wide AS SELECT id FROM t WHERE length(v) > 100;
		CREATE SEQUENCE lone START 50; SELECT setval('lone', 777);
		COMMENT ON TABLE t IS 'rows';
		GRANT SELECT ON t TO stream_reader;`)
	const q = `SELECT (SELECT count(*) || md5(string_agg(id || ':' || coalesce(v, 'NULL') || coalesce(encode(b, 'hex'), 'NULL') || coalesce(n::text, 'NULL') || coalesce(g::text, 'NULL'), ';' ORDER BY id)) FROM t),
		(SELECT count(*) || md5(string_agg(id || ':' || item || encode(b, 'hex'), ';' ORDER BY id)) FROM "Odd ""Schema"""."big*.T"),
		(SELECT count(*) FROM empty), (SELECT count(*) FROM wide),
		(SELECT last_value FROM t_id_seq), (SELECT last_value FROM lone),
		(SELECT count(*) FROM pg_constraint WHERE contype IN ('f', 'p')),
		(SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname NOT LIKE 'pg_%' AND i.indisvalid),
		obj_description('t'::regclass), has_table_privilege('stream_reader', 't', 'SELECT')`
	want := pg.Psql(t, "app", q)
	d := singleDump(t, pg, "app")
	spool := t.TempDir()
	txns := func(db string) string { return pg.Psql(t, db, "SELECT count(DISTINCT xmin::text) FROM t") }
	rows := func(db string) string {
		return pg.Psql(t, db, `SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM "Odd ""Schema"""."big*.T")`)
	}

	// In parallel: t's rows (about 8 MB) come in by several sessions, each
	// in its own transaction.
	st, err := RestoreSections(ctx, DSN(pg.DSNDB("par")), d.next(), SectionedRestoreOptions{Workers: 3, SplitBytes: 1, SpoolDir: spool})
	if err != nil {
		t.Fatal(err)
	}
	if got := pg.Psql(t, "par", q); got != want {
		t.Fatalf("restored %q, want %q", got, want)
	}
	if n := txns("par"); n == "1" {
		t.Fatalf("t's rows were committed by one transaction: not loaded by several sessions")
	}
	if st.Streamed != 1 || st.Bytes != int64(d.bodies[0].Len()) {
		t.Fatalf("restore streamed %d entries and read %d bytes of %d, want 1 and all", st.Streamed, st.Bytes, d.bodies[0].Len())
	}
	// A dump below SplitBytes (or with workers 1) goes to one pg_restore,
	// in one transaction.
	if st, err := RestoreSections(ctx, DSN(pg.DSNDB("one")), d.next(), SectionedRestoreOptions{Workers: 3, SpoolDir: spool}); err != nil || st.Streamed != 0 {
		t.Fatalf("restore of a dump under 64 MiB: %v, %d streamed", err, st.Streamed)
	}
	if got := pg.Psql(t, "one", q); got != want || txns("one") != "1" {
		t.Fatalf("one pg_restore: %q in %s transactions, want %q in 1", got, txns("one"), want)
	}

	// A stream cut inside the data fails the restore and leaves no row.
	cut := &memDump{entries: d.entries, bodies: []*bytes.Buffer{bytes.NewBuffer(d.bodies[0].Bytes()[:d.bodies[0].Len()*9/10])}}
	if _, err := RestoreSections(ctx, DSN(pg.DSNDB("cut")), cut.next(), SectionedRestoreOptions{Workers: 2, SplitBytes: 1, SpoolDir: spool}); err == nil ||
		!errors.Is(err, io.ErrUnexpectedEOF) || !contains(err.Error(), "drop and create the database") {
		t.Fatalf("a stream cut short: %v, want an unexpected end and what to do", err)
	} else {
		t.Logf("cut stream: %v", err)
	}
	if got := rows("cut"); got != "0" {
		t.Fatalf("%s rows left by a failed restore, want 0", got)
	}

	// Cut where a table's data block starts, the stream ends cleanly between
	// two tables' data: still refused, and still no row.
	body := d.bodies[0].Bytes()
	at := lastBlockAt(t, body)
	short := func(context.Context) (DumpEntry, io.Reader, error) { return DumpEntry{}, nil, io.EOF }
	first := true
	between := func(ctx context.Context) (DumpEntry, io.Reader, error) {
		if !first {
			return short(ctx)
		}
		first = false
		return DumpEntry{Name: "dump", Size: int64(len(body))}, bytes.NewReader(body[:at]), nil
	}
	pg.Psql(t, "postgres", "CREATE DATABASE between")
	if _, err := RestoreSections(ctx, DSN(pg.DSNDB("between")), between, SectionedRestoreOptions{Workers: 2, SplitBytes: 1, SpoolDir: spool}); err == nil ||
		!errors.Is(err, io.ErrUnexpectedEOF) || !contains(err.Error(), "ends before the data of") {
		t.Fatalf("a stream cut between two tables' data: %v, want the missing table named", err)
	} else {
		t.Logf("stream cut between tables: %v", err)
	}
	if got := rows("between"); got != "0" {
		t.Fatalf("%s rows left by a failed restore, want 0", got)
	}

	// Archives it does not read go to pg_restore whole: compressed data,
	// and large objects.
	gz := singleDump(t, pg, "app", "--compress=6")
	if st, err := RestoreSections(ctx, DSN(pg.DSNDB("gz")), gz.next(), SectionedRestoreOptions{Workers: 2, SplitBytes: 1, SpoolDir: spool}); err != nil || st.Streamed != 0 {
		t.Fatalf("compressed dump: %v, %d streamed", err, st.Streamed)
	}
	if got := pg.Psql(t, "gz", q); got != want || txns("gz") != "1" {
		t.Fatalf("compressed dump: %q in %s transactions, want %q in 1", got, txns("gz"), want)
	}
	pg.Psql(t, "lo", `CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000); SELECT lo_from_bytea(0, 'large object bytes')`)
	lo := singleDump(t, pg, "lo")
	if st, err := RestoreSections(ctx, DSN(pg.DSNDB("lo_copy")), lo.next(), SectionedRestoreOptions{Workers: 2, SplitBytes: 1, SpoolDir: spool}); err != nil || st.Streamed != 0 {
		t.Fatalf("dump with a large object: %v, %d streamed", err, st.Streamed)
	}
	if got := pg.Psql(t, "lo_copy", "SELECT (SELECT count(*) FROM t), (SELECT string_agg(convert_from(lo_get(oid), 'UTF8'), ',') FROM pg_largeobject_metadata)"); got != "1000|large object bytes" {
		t.Fatalf("dump with a large object restored %q", got)
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Fatalf("spool files left: %v", left)
	}
}

// lastBlockAt returns the offset in an archive of its last data block.
func lastBlockAt(t *testing.T, body []byte) int {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(body))
	head, raw, err := readArchiveHead(br, 1<<26)
	if err != nil {
		t.Fatal(err)
	}
	a := &archiveReader{br: br, intSize: head.intSize}
	off, last, intLen := len(raw), -1, 1+head.intSize
	for {
		if _, _, err := readBlockHeader(a); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		last = off
		off += 1 + intLen
		for {
			n, err := a.int()
			if err != nil {
				t.Fatal(err)
			}
			off += intLen
			if n == 0 {
				break
			}
			if _, err := a.full(n); err != nil {
				t.Fatal(err)
			}
			off += n
		}
	}
	if last < 0 || off != len(body) {
		t.Fatalf("blocks end at %d of %d bytes, last at %d", off, len(body), last)
	}
	return last
}

// TestReadArchiveHead: what is not an uncompressed custom-format archive is
// refused as such with the bytes read so far, which lead the stream again.
func TestReadArchiveHead(t *testing.T) {
	for name, in := range map[string]string{
		"text dump":  "--\n-- PostgreSQL database dump\n--\n",
		"tar":        strings.Repeat("\x00", 1024),
		"version 99": "PGDMP\x01\x63\x00\x04\x08\x01",
		"directory":  "PGDMP\x01\x0e\x00\x04\x08\x03",
	} {
		br := bufio.NewReader(strings.NewReader(in))
		_, raw, err := readArchiveHead(br, 1<<20)
		if !errors.Is(err, errArchiveShape) {
			t.Errorf("%s: %v, want errArchiveShape", name, err)
			continue
		}
		whole, _ := io.ReadAll(io.MultiReader(bytes.NewReader(raw), br))
		if string(whole) != in {
			t.Errorf("%s: the stream again is %q, want %q", name, whole, in)
		}
	}
	if _, _, err := readArchiveHead(bufio.NewReader(strings.NewReader("PGDMP\x01\x0e")), 1<<20); err == nil || errors.Is(err, errArchiveShape) {
		t.Errorf("a head cut short: %v, want a read error", err)
	}
}

// cancelledUnseen is a context already cancelled whose Done channel has
// not fired yet: the moment after a failure elsewhere cancelled the load
// and before the driver acted on it.
type cancelledUnseen struct{ context.Context }

func (cancelledUnseen) Err() error { return context.Canceled }

// TestRowsSessionAbortsWhenCancelled: a session whose blocks end after the
// load was cancelled aborts its COPY instead of ending it, so even in
// autocommit not a row of it is committed. (CI once saw a cut table's
// restore commit the rows of one session this way.)
func TestRowsSessionAbortsWhenCancelled(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	pg.Psql(t, "postgres", "CREATE TABLE t (id int, v text)")
	s, err := openRowsSession(ctx, DSN(pg.DSNDB("postgres")), "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close(context.WithoutCancel(ctx))
	const stmt = "COPY public.t (id, v) FROM stdin"
	blocks := make(chan rowsBlock, 2)
	blocks <- rowsBlock{stmt, []byte("1\tone\n2\ttwo\n")}
	blocks <- rowsBlock{stmt, []byte("3\tthree\n")}
	close(blocks)
	free := &sync.Pool{New: func() any { return []byte(nil) }}
	if err := s.load(cancelledUnseen{ctx}, blocks, free); err == nil {
		t.Fatal("load of a cancelled restore succeeded")
	}
	if got := pg.Psql(t, "postgres", "SELECT count(*) FROM t"); got != "0" {
		t.Fatalf("a cancelled load committed %s rows", got)
	}
}
