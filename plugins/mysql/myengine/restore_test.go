package myengine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/amber-backup/amber/conformance/testbed"
)

// entries replays a dump held in memory as LogicalRestore's source.
func (s *memSink) entries() NextEntry {
	k := 0
	return func(context.Context) (string, string, io.Reader, error) {
		if k == len(s.names) {
			return "", "", nil, io.EOF
		}
		k++
		return s.names[k-1], "", bytes.NewReader(s.data[k-1].Bytes()), nil
	}
}

// TestParallelRestore: a dump of several tables, one split into key
// ranges, with a view on a view, a trigger, a routine and a sequence,
// restored by three data sessions (and by one, the sequential path),
// holds the same rows (CHECKSUM TABLE) and objects as the source; every
// spool file is gone afterwards. A failing data entry stops the restore
// with its own error (parallelRestoreFailure).
func TestParallelRestore(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	runClient(t, srv, "app", `
CREATE TABLE big (id bigint PRIMARY KEY, v varchar(100), n int, KEY (n)) ENGINE=InnoDB;
INSERT INTO big SELECT seq * 3, REPEAT(CHAR(65 + seq % 26), 40 + seq % 60), seq % 1000 FROM seq_1_to_20000;
CREATE TABLE parent (id int PRIMARY KEY, name varchar(20));
INSERT INTO parent SELECT seq, CONCAT('p', seq) FROM seq_1_to_300;
CREATE TABLE child (id int PRIMARY KEY AUTO_INCREMENT, p int, t text, FOREIGN KEY (p) REFERENCES parent (id));
INSERT INTO child (p, t) SELECT 1 + seq % 300, CONCAT('é ''q'' \\ ', seq) FROM seq_1_to_3000;
CREATE TABLE audit (id int PRIMARY KEY AUTO_INCREMENT, note varchar(40));
CREATE SEQUENCE seq START WITH 100 INCREMENT BY 7;
SELECT NEXTVAL(seq);
CREATE VIEW v1 AS SELECT p, COUNT(*) AS n FROM child GROUP BY p;
CREATE VIEW v2 AS SELECT * FROM v1 WHERE n > 5;
CREATE PROCEDURE total(OUT s bigint) BEGIN SELECT SUM(n) INTO s FROM big; END;
CREATE TRIGGER trg AFTER INSERT ON child FOR EACH ROW BEGIN INSERT INTO audit (note) VALUES (CONCAT('child ', NEW.id)); END;
ANALYZE TABLE big;
`)
	ctx := context.Background()
	sink := &memSink{}
	res, err := LogicalDump(ctx, DSN(srv.DSN()), sink, DumpOptions{SplitSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ranges < 2 {
		t.Fatalf("big was not split: entries %v", sink.names)
	}
	srcSeq := srv.SQL(t, "SELECT NEXTVAL(app.seq)") // once: NEXTVAL moves the source on
	for _, threads := range []int{3, 1} {
		db := fmt.Sprintf("restored%d", threads)
		srv.SQL(t, "CREATE DATABASE "+db)
		spool := t.TempDir()
		st, err := LogicalRestore(ctx, DSN(srv.DSNDB(db)), RestoreOptions{Threads: threads, SpoolDir: spool}, sink.entries())
		if err != nil {
			t.Fatalf("threads=%d: %v", threads, err)
		}
		wantData := len(sink.names) - 2
		if threads == 1 {
			wantData = 0
		}
		if st.Entries != len(sink.names) || st.DataEntries != wantData {
			t.Errorf("threads=%d: stats %+v for %d entries", threads, st, len(sink.names))
		}
		if left, _ := os.ReadDir(spool); len(left) != 0 {
			t.Errorf("threads=%d: spool files left: %v", threads, left)
		}
		for _, q := range []string{
			"CHECKSUM TABLE %s.big, %s.parent, %s.child, %s.audit EXTENDED",
			"SELECT * FROM %s.v2 ORDER BY p LIMIT 3",
			"SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = '%s' AND TABLE_NAME = 'child'",
			"SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '%s'",
			"SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '%s'",
		} {
			src := strings.ReplaceAll(srv.SQL(t, strings.ReplaceAll(q, "%s", "app")), "app.", "")
			got := strings.ReplaceAll(srv.SQL(t, strings.ReplaceAll(q, "%s", db)), db+".", "")
			if src != got {
				t.Errorf("threads=%d: %s:\nsource:   %q\nrestored: %q", threads, q, src, got)
			}
		}
		if got := srv.SQL(t, "SELECT NEXTVAL("+db+".seq)"); got != srcSeq {
			t.Errorf("threads=%d: the restored sequence gives %s, the source gave %s", threads, got, srcSeq)
		}
		// The trigger came after the data: loading child fired nothing.
		if n := srv.SQL(t, "SELECT COUNT(*) FROM "+db+".audit"); n != "0" {
			t.Errorf("threads=%d: the trigger fired during the restore (%s audit rows)", threads, n)
		}
	}
	t.Run("failure", func(t *testing.T) { parallelRestoreFailure(t, srv) })
}

// parallelRestoreFailure: one data entry fails while others load. The
// restore returns that entry's error alone, with the line in the entry,
// loads nothing after the data (post.sql), and leaves no spool file.
func parallelRestoreFailure(t *testing.T, srv *testbed.MariaDB) {
	srv.SQL(t, "CREATE DATABASE failed")
	var rows strings.Builder
	rows.WriteString(header + "INSERT INTO a VALUES ")
	for k := range 50000 {
		if k > 0 {
			rows.WriteString(",")
		}
		fmt.Fprintf(&rows, "(%d, '%s')", k, strings.Repeat("x", 50))
	}
	rows.WriteString(";\n")
	sink := &memSink{}
	for _, e := range [][2]string{
		{SchemaEntry, header + "CREATE TABLE a (id int PRIMARY KEY, v text);\nCREATE TABLE b (id int PRIMARY KEY);\n"},
		{"data/a.part-00000.sql", rows.String()},
		{"data/b.sql", header + "INSERT INTO b VALUES (1);\nINSERT INTO b VALUES (1);\n"},
		{"data/a.part-00001.sql", strings.ReplaceAll(rows.String(), "INSERT INTO a VALUES (", "INSERT INTO a VALUES (100000")},
		{PostEntry, header + "CREATE VIEW v AS SELECT * FROM b;\n"},
	} {
		w, _ := sink.Create(context.Background(), e[0], "")
		io.WriteString(w, e[1])
	}
	spool := t.TempDir()
	_, err := LogicalRestore(context.Background(), DSN(srv.DSNDB("failed")), RestoreOptions{Threads: 2, SpoolDir: spool}, sink.entries())
	if err == nil {
		t.Fatal("a restore with a duplicate key succeeded")
	}
	msg := err.Error()
	t.Logf("error: %s", msg)
	wantLine := strings.Count(header, "\n") + 2
	if !strings.Contains(msg, "load data/b.sql") || !strings.Contains(msg, "Duplicate entry '1'") ||
		!strings.Contains(msg, fmt.Sprintf("at line %d of data/b.sql", wantLine)) || strings.Contains(msg, "killed") {
		t.Errorf("error %q: want data/b.sql's duplicate key at its line %d, alone", msg, wantLine)
	}
	if n := srv.SQL(t, "SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'failed'"); n != "0" {
		t.Errorf("post.sql ran after a failed data entry")
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Errorf("spool files left: %v", left)
	}
}

// TestSourceBinlog: a copy holds the source's binlog when the index and
// every file it lists (by name, whatever directory it gives) are beside
// the data; a mariadb-backup copy (no index) or an index naming a missing
// file does not.
func TestSourceBinlog(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := SourceBinlog(dir, "mysql-bin.000001"); ok {
		t.Error("no index: the copy holds no binlog")
	}
	write("mysql-bin.000001", "binlog")
	write("mysql-bin.000002", "binlog")
	write("mysql-bin.index", "/var/lib/mysql/mysql-bin.000001\n./mysql-bin.000002\n")
	if base, ok := SourceBinlog(dir, "mysql-bin.000002"); !ok || base != "mysql-bin" {
		t.Errorf("SourceBinlog = %q, %v; want mysql-bin, true", base, ok)
	}
	for _, file := range []string{"", "mysql-bin", "../x/mysql-bin.000001", "other.000001"} {
		if base, ok := SourceBinlog(dir, file); ok {
			t.Errorf("SourceBinlog(%q) = %q, true; want false", file, base)
		}
	}
	write("mysql-bin.index", "./mysql-bin.000001\n./mysql-bin.000002\n./mysql-bin.000003\n")
	if _, ok := SourceBinlog(dir, "mysql-bin.000003"); ok {
		t.Error("an index naming a file the copy lacks: the copy's binlog is incomplete")
	}
}

// TestLoaderDetailKeepsTheError: the client echoes a failed statement, up
// to a whole multi-row INSERT of a megabyte, before its ERROR line; the
// error a failed load reports names that line, not the statement.
func TestLoaderDetailKeepsTheError(t *testing.T) {
	l := &Loader{entry: "data/big.part-00002.sql"}
	echo := "--------------\nINSERT INTO `big` VALUES\n" + strings.Repeat("(1,'XXXXXXXXXXXXXXXX',2),\n", 40000) + "--------------\n\n"
	for chunk := range slices.Chunk([]byte(echo), 4096) {
		l.stderr.Write(chunk)
	}
	l.stderr.Write([]byte("ERROR 1213 (40001) at line 7: Deadlock found when trying to get lock; try restarting transaction\n"))
	d := l.detail()
	if !strings.Contains(d, "ERROR 1213 (40001)") || strings.Contains(d, "XXXX") {
		t.Fatalf("detail %.300q; want the ERROR line alone", d)
	}
	if got := l.stderr.String(); len(got) > 2*stderrKeep+16 {
		t.Fatalf("kept %d bytes of stderr; want at most %d", len(got), 2*stderrKeep+16)
	}
}

// TestRangeEntriesLoadWithUniqueChecks: the ranges of a split table, which
// sessions load at once, load with unique checks on (MariaDB's bulk load
// under a table lock is for one session); the header's line keeps its
// length, the rest of the entry is unchanged, and other entries pass as
// they are.
func TestRangeEntriesLoadWithUniqueChecks(t *testing.T) {
	body := "INSERT INTO `big` VALUES (1,'a',2);\n" + strings.Repeat("x", 5000) + "\n"
	got, err := io.ReadAll(withUniqueChecks(strings.NewReader(header + body)))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(header, "unique_checks = 0;", "unique_checks = 1;", 1) + body
	if string(got) != want || len(got) != len(header+body) {
		t.Fatalf("entry after withUniqueChecks:\n%.400s\nwant:\n%.400s", got, want)
	}
	other := "SELECT 1;\n" + body
	if got, _ := io.ReadAll(withUniqueChecks(strings.NewReader(other))); string(got) != other {
		t.Fatalf("an entry without the header line changed: %.200q", got)
	}
	for name, want := range map[string]bool{
		"data/big.part-00002.sql": true, "data/a.b.part-00000.sql": true,
		"data/big.sql": false, "schema.sql": false, "data/big.part-2.sql": false,
	} {
		if isRangeEntry(name) != want {
			t.Errorf("isRangeEntry(%q) = %t, want %t", name, !want, want)
		}
	}
}
