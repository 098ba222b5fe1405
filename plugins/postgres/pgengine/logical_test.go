package pgengine

import (
	"bytes"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

func TestLogicalDumpRestore(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	pg.Psql(t, "postgres", "CREATE DATABASE app")
	pg.Psql(t, "postgres", "CREATE DATABASE copy")
	pg.Psql(t, "app", `CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric, tags text[]);
		INSERT INTO items (name, price, tags) SELECT 'item ' || g, g * 1.5, ARRAY['t' || (g % 7)] FROM generate_series(1, 3000) g;
		CREATE INDEX ON items (name); CREATE VIEW cheap AS SELECT * FROM items WHERE price < 100;`)
	const q = "SELECT count(*), md5(string_agg(id || name || price || tags::text, ';' ORDER BY id)), (SELECT count(*) FROM cheap), (SELECT last_value FROM items_id_seq) FROM items"
	want := pg.Psql(t, "app", q)

	var dump bytes.Buffer
	if err := LogicalDump(ctx, DSN(pg.DSNDB("app")), &dump, DumpOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(dump.Bytes(), []byte("PGDMP")) {
		t.Fatalf("not a custom-format dump: %q", dump.Bytes()[:min(16, dump.Len())])
	}
	if err := LogicalRestore(ctx, DSN(pg.DSNDB("copy")), bytes.NewReader(dump.Bytes()), LogicalRestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := pg.Psql(t, "copy", q); got != want {
		t.Fatalf("restored %q, want %q", got, want)
	}
	// A second restore into the same database fails loudly (objects exist),
	// and the error names the tool, not the password.
	err := LogicalRestore(ctx, DSN(pg.DSNDB("copy")), bytes.NewReader(dump.Bytes()), LogicalRestoreOptions{})
	if err == nil || !contains(err.Error(), "pg_restore") || contains(err.Error(), "amber-test-pw") {
		t.Fatalf("second restore: %v", err)
	}
	// Clean replaces what is there.
	if err := LogicalRestore(ctx, DSN(pg.DSNDB("copy")), bytes.NewReader(dump.Bytes()), LogicalRestoreOptions{Clean: true}); err != nil {
		t.Fatal(err)
	}
}
