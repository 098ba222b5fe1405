package myengine

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/amber-backup/amber/conformance/testbed"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
)

// memSink keeps entries in memory, in order.
type memSink struct {
	names []string
	data  []*bytes.Buffer
}

type memEntry struct{ *bytes.Buffer }

func (memEntry) Close() error { return nil }

func (s *memSink) Create(_ context.Context, name, _ string) (io.WriteCloser, error) {
	b := &bytes.Buffer{}
	s.names = append(s.names, name)
	s.data = append(s.data, b)
	return memEntry{b}, nil
}

const fixture = `
CREATE TABLE types (id int PRIMARY KEY AUTO_INCREMENT, d decimal(40,10), f float, g double, bi bigint unsigned,
  t text, vc varchar(20) CHARACTER SET latin1, b blob, bt bit(10), e enum('a','b c'), s set('x','y'),
  j json, dt date, tm time(6), ts timestamp(6) NULL, dtt datetime, y year, u uuid, gen int AS (id * 2) VIRTUAL) AUTO_INCREMENT=1000;
INSERT INTO types (id, d, f, g, bi, t, vc, b, bt, e, s, j, dt, tm, ts, dtt, y, u) VALUES
 (1, -123456789012345678901234567890.0123456789, 3.4e38, 1.7976931348623157e308, 18446744073709551615,
  'héllo 😀 ''quote'' \\ back\nnl\0nul', 'café', 0x00FF0A0D275C, b'1010101010', 'b c', 'x,y', '{"a": [1, "ü"]}',
  '0001-01-01', '-838:59:59.000000', '2038-01-19 03:14:07.999999', '9999-12-31 23:59:59', 2155, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
 (2, NULL, NULL, NULL, NULL, '', '', '', NULL, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE ` + "`select`" + ` (` + "`Order`" + ` int PRIMARY KEY, ` + "`weird``name`" + ` text);
INSERT INTO ` + "`select`" + ` VALUES (1, 'x');
CREATE TABLE child (id int PRIMARY KEY, p int, FOREIGN KEY (p) REFERENCES types (id));
INSERT INTO child VALUES (1, 1);
CREATE SEQUENCE seq START WITH 100 INCREMENT BY 7;
SELECT NEXTVAL(seq); SELECT NEXTVAL(seq);
CREATE VIEW v2 AS SELECT * FROM v1;
`

func TestDumpRestoreRoundTrip(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	fix := strings.Replace(fixture, "CREATE VIEW v2 AS SELECT * FROM v1;", "CREATE VIEW v1 AS SELECT id, t FROM types; CREATE VIEW v2 AS SELECT * FROM v1;\n"+
		"CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END;\nCREATE TRIGGER trg BEFORE INSERT ON child FOR EACH ROW BEGIN SET NEW.p = NEW.p; END;", 1)
	runClient(t, srv, "app", fix)
	ctx := context.Background()
	sink := &memSink{}
	res, err := LogicalDump(ctx, DSN(srv.DSN()), sink, DumpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Pos.File == "" || res.Pos.GTID == "" || res.Tables != 4 {
		t.Fatalf("result %+v", res)
	}
	t.Logf("consistent at %s, lock held %v, entries %v", res.Pos.Text(), res.LockTime, sink.names)
	if sink.names[0] != SchemaEntry || sink.names[len(sink.names)-1] != PostEntry {
		t.Fatalf("entries %v", sink.names)
	}
	srv.SQL(t, "CREATE DATABASE restored")
	l, err := NewLoader(ctx, DSN(srv.DSNDB("restored")), RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, b := range sink.data {
		if err := l.Load(sink.names[k], b); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"CHECKSUM TABLE %s.types, %s.`select`, %s.child EXTENDED",
		"SELECT HEX(b), HEX(vc), t, bt+0, e, s, j, dt, tm, ts, dtt, y, u, gen, d, f, g, bi FROM %s.types ORDER BY id",
		"SELECT NEXTVAL(%s.seq)",
		"SELECT * FROM %s.v2 ORDER BY id",
		"SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = '%s' AND TABLE_NAME = 'types'",
		"SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '%s'",
		"SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '%s'",
	} {
		src := srv.SQL(t, strings.ReplaceAll(q, "%s", "app"))
		got := srv.SQL(t, strings.ReplaceAll(q, "%s", "restored"))
		src = strings.ReplaceAll(src, "app.", "")
		got = strings.ReplaceAll(got, "restored.", "")
		if src != got {
			t.Errorf("%s:\nsource:   %q\nrestored: %q", q, src, got)
		}
	}
}

func TestProbeHealth(t *testing.T) {
	ctx := context.Background()
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	info, err := Probe(ctx, DSN(srv.DSN()), "")
	if err != nil {
		t.Fatal(err)
	}
	if !info.MariaDB || info.Replica || info.Pos.File == "" || !strings.HasPrefix(info.Lineage, "mariadb-0-") {
		t.Fatalf("probe %+v", info)
	}
	srv.SQL(t, "CREATE USER plain IDENTIFIED BY 'plain-pw-1'; GRANT SELECT ON *.* TO plain")
	_, err = Probe(ctx, DSN(srv.DSNFor("plain", "plain-pw-1", "app")), "")
	if err == nil || !strings.Contains(err.Error(), "GRANT RELOAD, REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO 'plain'@'%'") {
		t.Fatalf("probe as plain: %v", err)
	}
	_, err = Probe(ctx, DSN(srv.DSNFor("amber", "wrong-pw", "app")), "")
	if err == nil || !strings.Contains(err.Error(), "check the DSN") || strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("probe with a wrong password: %v", err)
	}
	nobin := testbed.StartMariaDB(t, testbed.MariaDBOptions{NoBinlog: true})
	_, err = Probe(ctx, DSN(nobin.DSN()), "")
	if err == nil || !strings.Contains(err.Error(), "--log-bin") {
		t.Fatalf("probe without binlog: %v", err)
	}
	stmt := testbed.StartMariaDB(t, testbed.MariaDBOptions{BinlogFormat: "STATEMENT"})
	_, err = Probe(ctx, DSN(stmt.DSN()), "")
	if err == nil || !strings.Contains(err.Error(), "binlog_format=ROW") {
		t.Fatalf("probe with statement binlog: %v", err)
	}
	rep := testbed.StartMariaDBReplica(t, srv)
	rinfo, err := Probe(ctx, DSN(rep.DSN()), "")
	if err != nil {
		t.Fatal(err)
	}
	if !rinfo.Replica || rinfo.Lineage != info.Lineage {
		t.Fatalf("replica probe: replica=%v lineage %q, want the primary's %q", rinfo.Replica, rinfo.Lineage, info.Lineage)
	}
}

func runClient(t *testing.T, srv *testbed.MariaDB, db, sql string) {
	t.Helper()
	c := exec.Command(srv.Client, "--no-defaults", "--socket="+srv.Socket, "-uroot", "--default-character-set=utf8mb4", db)
	c.Stdin = strings.NewReader("DELIMITER $$\n" + strings.ReplaceAll(sql, ";\n", "$$\n"))
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("fixture: %v\n%s", err, b)
	}
}

// TestDumpTrickyStrings: text is dumped as escaped string literals, not
// hex, and every awkward value comes back byte-exact, loaded by the stock
// client into a server whose global sql_mode has NO_BACKSLASH_ESCAPES
// (the dump sets its own session sql_mode).
func TestDumpTrickyStrings(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	var all strings.Builder
	for c := 0; c < 256; c++ {
		fmt.Fprintf(&all, "%02X", c)
	}
	// Every value from hex, so no escaping in the fixture itself matters.
	tricky := hex.EncodeToString([]byte("it's \"q\" \\ back\\\\slash \\' \x00nul \x1a ctrl-z\nnl\r\rcr\ttab ; -- /* */ DELIMITER"))
	emoji := hex.EncodeToString([]byte("😀 héllo ü \u2028 \\0 end\\"))
	runClient(t, srv, "app", `
CREATE TABLE s (id int PRIMARY KEY, u text CHARACTER SET utf8mb4, m varchar(200) CHARACTER SET utf8mb3,
  l varchar(300) CHARACTER SET latin1, a varchar(100) CHARACTER SET ascii, w text CHARACTER SET ucs2,
  b blob, vb varbinary(300), c char(5), e enum('it''s', 'back\\slash', 'x'), j json) DEFAULT CHARSET=utf8mb4;
INSERT INTO s VALUES
 (1, CONVERT(UNHEX('`+tricky+`') USING utf8mb4), CONVERT(UNHEX('`+tricky+`') USING utf8mb3),
  CONVERT(UNHEX('`+tricky+`') USING latin1), CONVERT(UNHEX('`+tricky+`') USING ascii), CONVERT(UNHEX('`+tricky+`') USING utf8mb4),
  UNHEX('`+all.String()+`'), UNHEX('`+all.String()+`'), 'a''b', 'it''s', '{"k": "v\\"q\\\\ \\u0000"}'),
 (2, CONVERT(UNHEX('`+emoji+`') USING utf8mb4), 'héllo ü', UNHEX('E9FF80C3A95C27005C'), '', 'héllo ü \\0',
  '', '', '', 'back\\slash', '[]'),
 (3, '', '', '', '', '', NULL, NULL, NULL, NULL, NULL),
 (4, NULL, NULL, NULL, NULL, NULL, UNHEX('00'), UNHEX('5C'), '\\', 'x', NULL);
`)
	ctx := context.Background()
	sink := &memSink{}
	if _, err := LogicalDump(ctx, DSN(srv.DSN()), sink, DumpOptions{}); err != nil {
		t.Fatal(err)
	}
	var script bytes.Buffer
	for k, b := range sink.data {
		if sink.names[k] == "data/s.sql" {
			script.Write(b.Bytes())
		}
	}
	dump := script.String()
	for _, want := range []string{`'it\'s \"q\" \\ back\\\\slash \\\' \0nul \Z ctrl-z\nnl\r\rcr` + "\ttab", "'😀 héllo ü \u2028 \\\\0 end\\\\'",
		"0xe9ff80c3a95c27005c", "0x" + strings.ToLower(all.String()), `'a\'b'`, `'back\\slash'`} {
		if !strings.Contains(dump, want) {
			t.Errorf("the dump lacks %q:\n%s", want, dump)
		}
	}
	if !utf8.ValidString(dump) {
		t.Errorf("the data entry is not valid UTF-8")
	}

	srv.SQL(t, "SET GLOBAL sql_mode = CONCAT(@@global.sql_mode, ',NO_BACKSLASH_ESCAPES'); CREATE DATABASE restored")
	l, err := NewLoader(ctx, DSN(srv.DSNDB("restored")), RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, b := range sink.data {
		if err := l.Load(sink.names[k], b); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	q := "SELECT id, HEX(u), HEX(m), HEX(l), HEX(a), HEX(w), HEX(b), HEX(vb), HEX(c), HEX(e), HEX(j) FROM %s.s ORDER BY id"
	src, got := srv.SQL(t, fmt.Sprintf(q, "app")), srv.SQL(t, fmt.Sprintf(q, "restored"))
	if src != got || !strings.Contains(src, "E9FF80C3A95C27005C") {
		t.Errorf("restored values differ:\nsource:   %q\nrestored: %q", src, got)
	}
	if c := strings.Fields(srv.SQL(t, "CHECKSUM TABLE app.s, restored.s EXTENDED")); len(c) != 4 || c[1] != c[3] {
		t.Errorf("checksums differ: %s", c)
	}
}

func TestAppendValue(t *testing.T) {
	for _, c := range []struct {
		k    valueKind
		in   string
		want string
	}{
		{kindNumber, "-1.5e10", "-1.5e10"},
		{kindPlain, "2024-01-02 03:04:05", "'2024-01-02 03:04:05'"},
		{kindUTF8, "a'b\"c\\d\x00e\nf\rg\x1ah", `'a\'b\"c\\d\0e\nf\rg\Zh'`},
		{kindUTF8, "😀", "'😀'"},
		{kindUTF8, "\xff", "0xff"},
		{kindUTF8, "", "''"},
		{kindASCII, "é", "0xc3a9"},
		{kindASCII, "plain", "'plain'"},
		{kindBinary, "ab", "0x6162"},
		{kindBinary, "", "''"},
	} {
		if got := string(appendValue([]byte("x"), c.k, []byte(c.in))); got != "x"+c.want {
			t.Errorf("appendValue(%d, %q) = %q, want %q", c.k, c.in, got, "x"+c.want)
		}
	}
}

// discardSink counts what a dump writes.
type discardSink struct{ n int64 }

type discardEntry struct{ s *discardSink }

func (e discardEntry) Write(p []byte) (int, error) { e.s.n += int64(len(p)); return len(p), nil }
func (discardEntry) Close() error                  { return nil }

func (s *discardSink) Create(context.Context, string, string) (io.WriteCloser, error) {
	return discardEntry{s}, nil
}

// BenchmarkLogicalDump reads a table shaped like the benchmark's
// bench_mixed (200,000 rows) into a sink that discards it: the plugin's
// own cost per row, for `go test -bench LogicalDump -cpuprofile`.
func BenchmarkLogicalDump(b *testing.B) {
	srv := testbed.StartMariaDB(b, testbed.MariaDBOptions{})
	srv.SQL(b, `USE app; CREATE TABLE app.bench_mixed (id bigint PRIMARY KEY, ts timestamp NULL, amount decimal(12,2), email varchar(64), note varchar(80));
		INSERT INTO app.bench_mixed SELECT seq, TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq * 7 SECOND,
		  ROUND(RAND() * 100000, 2), CONCAT('user', FLOOR(RAND() * 1000000), '@example.com'),
		  CONCAT(MD5(seq), ' ', SUBSTR(MD5(RAND()), 1, FLOOR(RAND() * 32))) FROM seq_1_to_200000`)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		s := &discardSink{}
		if _, err := LogicalDump(ctx, DSN(srv.DSN()), s, DumpOptions{}); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(s.n)
	}
}

// mixedRows are rows shaped like the benchmark's bench_mixed (BIGINT,
// TIMESTAMP, DECIMAL, two VARCHARs) as the server sends them in text row
// packets, the fields that describe them, and their valueKinds.
func mixedRows(n int) ([]gomysql.RowData, []*gomysql.Field, []valueKind) {
	fields := []*gomysql.Field{{Type: gomysql.MYSQL_TYPE_LONGLONG}, {Type: gomysql.MYSQL_TYPE_TIMESTAMP},
		{Type: gomysql.MYSQL_TYPE_NEWDECIMAL}, {Type: gomysql.MYSQL_TYPE_VAR_STRING}, {Type: gomysql.MYSQL_TYPE_VAR_STRING}}
	kinds := []valueKind{kindNumber, kindPlain, kindNumber, kindUTF8, kindUTF8}
	rows := make([]gomysql.RowData, n)
	for i := range rows {
		var p []byte
		for _, v := range []string{fmt.Sprint(1000000 + i), "2024-01-03 11:22:33", fmt.Sprintf("%d.%02d", i*37%100000, i%100),
			fmt.Sprintf("user%d@example.com", i*7919%1000000), fmt.Sprintf("%032x %x", i*2654435761, i%4096)} {
			p = append(p, gomysql.PutLengthEncodedString([]byte(v))...)
		}
		rows[i] = p
	}
	return rows, fields, kinds
}

// BenchmarkAppendRow formats rows shaped like the benchmark's bench_mixed,
// as go-mysql's text rows give them, into INSERT text: the plugin's
// per-row formatting without a server.
func BenchmarkAppendRow(b *testing.B) {
	packets, fields, kinds := mixedRows(1024)
	rawFields(fields)
	rows := make([][]gomysql.FieldValue, len(packets))
	for i, p := range packets {
		var err error
		if rows[i], err = p.ParseText(fields, nil); err != nil {
			b.Fatal(err)
		}
	}
	var out []byte
	n := 0
	for b.Loop() {
		out = out[:0]
		for _, r := range rows {
			var err error
			if out, err = appendRow(out, kinds, r); err != nil {
				b.Fatal(err)
			}
			out = append(out, ",\n"...)
		}
		n = len(out)
	}
	b.SetBytes(int64(n))
}

// BenchmarkRowPath parses text row packets into one reused row, as a
// dump session's streaming read does (rawFields), and formats each: the plugin's
// whole per-row path after the socket. It must not allocate per row.
func BenchmarkRowPath(b *testing.B) {
	packets, fields, kinds := mixedRows(1024)
	rawFields(fields)
	var row []gomysql.FieldValue
	out := make([]byte, 0, 1<<20)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		out = out[:0]
		for _, p := range packets {
			var err error
			if row, err = p.ParseText(fields, row); err != nil {
				b.Fatal(err)
			}
			if out, err = appendRow(out, kinds, row); err != nil {
				b.Fatal(err)
			}
			out = append(out, ",\n"...)
		}
		n = len(out)
	}
	b.SetBytes(int64(n))
}

// TestAppendField: NULL, empty and binary values, integers and floats as
// go-mysql parses them from the server's text, and the same row kept as
// text (rawFields), as a dump reads it.
func TestAppendField(t *testing.T) {
	fields := []*gomysql.Field{{Type: gomysql.MYSQL_TYPE_VAR_STRING}, {Type: gomysql.MYSQL_TYPE_VAR_STRING}, {Type: gomysql.MYSQL_TYPE_BLOB},
		{Type: gomysql.MYSQL_TYPE_BIT}, {Type: gomysql.MYSQL_TYPE_LONGLONG, Flag: gomysql.UNSIGNED_FLAG}, {Type: gomysql.MYSQL_TYPE_LONG},
		{Type: gomysql.MYSQL_TYPE_FLOAT}, {Type: gomysql.MYSQL_TYPE_DOUBLE}, {Type: gomysql.MYSQL_TYPE_NEWDECIMAL}}
	kinds := []valueKind{kindUTF8, kindUTF8, kindBinary, kindBinary, kindNumber, kindNumber, kindNumber, kindNumber, kindNumber}
	p := []byte{0xfb} // NULL
	for _, v := range []string{"", "\x00\xff'", "\x05", "18446744073709551615", "-2147483648", "3.40282e38", "0.30000000000000004",
		"-99999999999999999999999999999999999.999999999999999999999999999999"} {
		p = append(p, gomysql.PutLengthEncodedString([]byte(v))...)
	}
	row, err := gomysql.RowData(p).ParseText(fields, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := appendRow(nil, kinds, row)
	if err != nil {
		t.Fatal(err)
	}
	want := "(NULL,'',0x00ff27,0x05,18446744073709551615,-2147483648,3.40282e+38,0.30000000000000004," +
		"-99999999999999999999999999999999999.999999999999999999999999999999)"
	if string(got) != want {
		t.Errorf("appendRow = %s\nwant        %s", got, want)
	}
	rawFields(fields)
	if row, err = gomysql.RowData(p).ParseText(fields, row); err != nil {
		t.Fatal(err)
	}
	if got, err = appendRow(nil, kinds, row); err != nil {
		t.Fatal(err)
	}
	want = "(NULL,'',0x00ff27,0x05,18446744073709551615,-2147483648,3.40282e38,0.30000000000000004," +
		"-99999999999999999999999999999999999.999999999999999999999999999999)"
	if string(got) != want {
		t.Errorf("appendRow of the raw row = %s\nwant                       %s", got, want)
	}
}
