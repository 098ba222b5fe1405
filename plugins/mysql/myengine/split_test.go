package myengine

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

func TestCutPoints(t *testing.T) {
	for _, c := range []struct {
		lo, hi string
		n      int64
		want   []string
	}{
		{"1", "100", 4, []string{"26", "51", "76"}},
		{"5", "7", 10, []string{"6", "7"}},
		{"3", "3", 4, nil},
		{"-9223372036854775808", "9223372036854775807", 2, []string{"0"}},
		{"0", "18446744073709551615", 2, []string{"9223372036854775808"}},
	} {
		got, err := cutPoints(c.lo, c.hi, c.n)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("cutPoints(%s, %s, %d) = %v, %v; want %v", c.lo, c.hi, c.n, got, err, c.want)
		}
	}
}

// TestDumpSplitsLargeTable: a large table with an integer primary key is
// dumped as key ranges that the workers share; the restore has every row
// once, the rows on both sides of every cut point included. Tables that
// cannot be split stay whole.
func TestDumpSplitsLargeTable(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	runClient(t, srv, "app", `
CREATE TABLE big (id bigint PRIMARY KEY, v varchar(100), n int) ENGINE=InnoDB;
INSERT INTO big SELECT seq * 3, REPEAT(CHAR(65 + seq % 26), 40 + seq % 60), seq % 1000 FROM seq_1_to_20000;
INSERT INTO big VALUES (-7, 'negative', 0);
CREATE TABLE pair (a int, b int, v varchar(100), PRIMARY KEY (a, b)) ENGINE=InnoDB;
INSERT INTO pair SELECT seq, seq, REPEAT('x', 80) FROM seq_1_to_20000;
CREATE TABLE aria (id int PRIMARY KEY, v varchar(100)) ENGINE=Aria;
INSERT INTO aria SELECT seq, REPEAT('y', 80) FROM seq_1_to_20000;
CREATE TABLE small (id int PRIMARY KEY) ENGINE=InnoDB;
INSERT INTO small VALUES (1), (2);
ANALYZE TABLE big, pair, aria, small;
`)
	ctx := context.Background()
	sink := &memSink{}
	res, err := LogicalDump(ctx, DSN(srv.DSN()), sink, DumpOptions{Workers: 3, SplitSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, n := range sink.names {
		if strings.HasPrefix(n, "data/big.part-") {
			parts = append(parts, n)
		}
	}
	t.Logf("entries %v, ranges %d", sink.names, res.Ranges)
	if len(parts) < 6 || res.Ranges != len(parts) {
		t.Fatalf("big was dumped as %d range entries (result says %d), want at least 6 (3 workers)", len(parts), res.Ranges)
	}
	for _, whole := range []string{"data/pair.sql", "data/aria.sql", "data/small.sql"} {
		if !slices.Contains(sink.names, whole) {
			t.Errorf("no whole-table entry %s in %v", whole, sink.names)
		}
	}
	if slices.Contains(sink.names, "data/big.sql") || sink.names[0] != SchemaEntry || sink.names[len(sink.names)-1] != PostEntry {
		t.Fatalf("entries %v", sink.names)
	}
	// The cut points, planned again on the unchanged data.
	db, _, err := Open(ctx, DSN(srv.DSN()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tables, err := listTables(ctx, c, "app")
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := planJobs(ctx, c, tables, 256<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	var bounds []string
	lower := regexp.MustCompile("^`id` >= (-?[0-9]+)")
	for _, j := range jobs {
		if m := lower.FindStringSubmatch(j.where); j.t.name == "big" && m != nil {
			bounds = append(bounds, m[1])
		}
	}
	if len(bounds) != len(parts)-1 {
		t.Fatalf("cut points %v for %d ranges", bounds, len(parts))
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
		t.Fatal(err) // a row in two ranges fails here: duplicate key
	}
	for _, tb := range []string{"big", "pair", "aria", "small"} {
		c := strings.Fields(srv.SQL(t, fmt.Sprintf("CHECKSUM TABLE app.%s, restored.%s EXTENDED", tb, tb)))
		if len(c) != 4 || c[1] != c[3] {
			t.Errorf("%s: checksums differ: %v", tb, c)
		}
	}
	if got := srv.SQL(t, "SELECT COUNT(*), MIN(id), MAX(id) FROM restored.big"); got != "20001\t-7\t60000" {
		t.Errorf("restored big: %q", got)
	}
	// The rows on both sides of every cut point.
	for _, b := range bounds {
		q := fmt.Sprintf("SELECT GROUP_CONCAT(id ORDER BY id), COUNT(*) FROM %%s.big WHERE id BETWEEN %s - 3 AND %s + 3", b, b)
		src, got := srv.SQL(t, fmt.Sprintf(q, "app")), srv.SQL(t, fmt.Sprintf(q, "restored"))
		if src != got || strings.HasSuffix(src, "\t0") || strings.HasSuffix(src, "\t1") {
			t.Errorf("around cut point %s: source %q, restored %q", b, src, got)
		}
	}
	t.Logf("cut points %v", bounds)
}

// TestDumpSplitUnderWrites: while the dump runs, rows move from the
// lowest key range to above the highest (their key changes). Every range
// reads the one snapshot, so each row is dumped once, at its key as of
// the snapshot: the restore loads (no duplicate key) with all 20,000 rows.
func TestDumpSplitUnderWrites(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	runClient(t, srv, "app", `
CREATE TABLE big (id bigint PRIMARY KEY, v varchar(100), n int) ENGINE=InnoDB;
INSERT INTO big SELECT seq, REPEAT('m', 60 + seq % 40), seq % 7 FROM seq_1_to_20000;
ANALYZE TABLE big;
`)
	ctx := context.Background()
	db, _, err := Open(ctx, DSN(srv.DSN()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var moved atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for k := int64(1); ; k++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := db.ExecContext(ctx, "UPDATE big SET id = id + 1000000 WHERE id = ?", k); err != nil {
				done <- err
				return
			}
			moved.Add(1)
		}
	}()
	for moved.Load() < 20 {
		time.Sleep(5 * time.Millisecond)
	}
	before := moved.Load()
	sink := &memSink{}
	res, err := LogicalDump(ctx, DSN(srv.DSN()), sink, DumpOptions{Workers: 2, SplitSize: 64 << 10})
	during := moved.Load() - before
	close(stop)
	if werr := <-done; werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d ranges, %d keys moved during the dump", res.Ranges, during)
	if res.Ranges < 4 || during == 0 {
		t.Fatalf("ranges %d, keys moved during the dump %d: the test proves nothing", res.Ranges, during)
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
	if got := srv.SQL(t, "SELECT COUNT(*), SUM(n), COUNT(DISTINCT n, v) FROM restored.big"); got != srv.SQL(t, "SELECT 20000, SUM(seq % 7), COUNT(DISTINCT seq % 7, REPEAT('m', 60 + seq % 40)) FROM app.seq_1_to_20000") {
		t.Errorf("restored big: %q", got)
	}
}
