package conformance_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance"
	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mysql/myengine"
)

// TestMySQLConformance runs the engine-independent suite against
// amber-plugin-mysql and real MariaDB servers.
func TestMySQLConformance(t *testing.T) {
	bin := mysqlBins(t)
	amber := mysqlAmberRunner(bin)
	t.Run("RestoreStdout", func(t *testing.T) { mysqlRestoreStdout(t, amber) })
	t.Run("LogicalPointInTime", func(t *testing.T) { mysqlLogicalPointInTime(t, amber) })
	t.Run("UsersAndGrants", func(t *testing.T) { mysqlUsersAndGrants(t, amber) })
	t.Run("PhysicalPointInTime", func(t *testing.T) { mysqlPhysicalPointInTime(t, amber) })
	t.Run("PhysicalWithoutTool", func(t *testing.T) { mysqlPhysicalWithoutTool(t, amber) })
	t.Run("PhysicalKilled", func(t *testing.T) { mysqlPhysicalKilled(t, amber) })
	t.Run("Freeze", func(t *testing.T) { mysqlFreeze(t, bin) })
	t.Run("SnapshotRestore", func(t *testing.T) { mysqlSnapshotRestore(t, amber) })
	t.Run("PhysicalThroughput", func(t *testing.T) { mysqlPhysicalThroughput(t, amber) })
	conformance.Run(t, &myDriver{}, amber)
}

// mysqlBins builds amber and amber-plugin-mysql side by side.
func mysqlBins(t *testing.T) string {
	t.Helper()
	testbed.MariaDBBin(t)
	dir := t.TempDir()
	testbed.BuildAmber(t, dir, "mysql")
	return dir
}

func mysqlAmber(bin, repo string, args ...string) *exec.Cmd {
	c := exec.Command(filepath.Join(bin, "amber"), args...)
	c.Env = append(os.Environ(), "AMBER_REPO="+repo, "AMBER_PASSWORD=conformance", "AMBER_CACHE_DIR=-")
	return c
}

// mysqlAmberRunner is mysqlAmber as the suite's runner.
func mysqlAmberRunner(bin string) func(repo string, args ...string) *exec.Cmd {
	return func(repo string, args ...string) *exec.Cmd { return mysqlAmber(bin, repo, args...) }
}

// mysqlRestoreStdout: `amber restore --stdout` of a logical backup is one
// script that the stock mariadb client loads into an empty database, also
// when a table was dumped as primary-key ranges (split_bytes lowered).
func mysqlRestoreStdout(t *testing.T, amber conformance.AmberRunner) {
	d := &myDriver{}
	src := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	src.SQL(t, `CREATE TABLE app.a (id int PRIMARY KEY, v text); INSERT INTO app.a VALUES (1, 'x'), (2, 'ü');
		CREATE TABLE app.b (id int PRIMARY KEY); INSERT INTO app.b VALUES (7);
		CREATE VIEW app.ab AS SELECT a.id, a.v FROM app.a JOIN app.b ON b.id > a.id;
		CREATE TABLE app.tricky (id int PRIMARY KEY, u text CHARACTER SET utf8mb4, l varchar(50) CHARACTER SET latin1, b blob);
		INSERT INTO app.tricky VALUES (1, CONVERT(UNHEX('27225C000A0D1A3BF09F9880') USING utf8mb4), UNHEX('E9FF80275C00'), UNHEX('00FF275C1A0A')),
			(2, CONVERT(UNHEX('5C') USING utf8mb4), '', '');
		CREATE TABLE app.big (id int PRIMARY KEY, v varchar(100)) ENGINE=InnoDB;
		INSERT INTO app.big SELECT seq, REPEAT('b', seq % 100) FROM app.seq_1_to_5000;
		ANALYZE TABLE app.big`)
	repo := filepath.Join(t.TempDir(), "repo")
	run := func(stdout *bytes.Buffer, args ...string) {
		t.Helper()
		var errb bytes.Buffer
		c := amber(repo, args...)
		c.Stdout, c.Stderr = stdout, &errb
		if err := c.Run(); err != nil {
			t.Fatalf("amber %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
	}
	run(&bytes.Buffer{}, "repo", "init")
	run(&bytes.Buffer{}, "backup", "--engine", "mysql", "--dsn", src.DSN(), "--mode", "logical", "--option", "split_bytes=16384")
	var script bytes.Buffer
	run(&script, "restore", "--engine", "mysql", "--backup", "latest", "--stdout")
	// Every entry opens with the session settings: schema, 4 tables and
	// post make 6, and app.big's ranges (at least 2 per worker) more.
	if n := bytes.Count(script.Bytes(), []byte("SET @@session.unique_checks = 0;")); n < 9 {
		t.Fatalf("the script holds %d entries: app.big was not split into key ranges", n)
	}
	src.SQL(t, "CREATE DATABASE fromstdout")
	c := exec.Command(src.Client, "--no-defaults", "--socket="+src.Socket, "-uroot", "fromstdout")
	c.Stdin = &script
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("mariadb fromstdout < (amber restore --stdout): %v\n%s", err, b)
	}
	want, got := d.Checksums(t, src.DSN()), d.Checksums(t, src.DSNDB("fromstdout"))
	if fmt.Sprint(want) != fmt.Sprint(got) {
		t.Fatalf("the database loaded from --stdout differs:\nsource:   %v\nrestored: %v", want, got)
	}
}

// mysqlUsersAndGrants: `amber backup --option users=true` adds the
// server's accounts and roles with their grants to a logical backup; a
// restore into another server recreates them (same password hashes, same
// SHOW GRANTS), and an account logs in there with its password. Without the
// option no account is in the backup.
func mysqlUsersAndGrants(t *testing.T, amber conformance.AmberRunner) {
	src := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	src.SQL(t, `CREATE TABLE app.t (id int PRIMARY KEY, v text); INSERT INTO app.t VALUES (1, 'one');
		CREATE ROLE app_reader; GRANT SELECT ON app.* TO app_reader;
		CREATE USER 'app_user'@'%' IDENTIFIED BY 'App-Pw-5521' WITH MAX_QUERIES_PER_HOUR 1000;
		GRANT INSERT, UPDATE (v) ON app.t TO 'app_user'@'%';
		GRANT app_reader TO 'app_user'@'%'; SET DEFAULT ROLE app_reader FOR 'app_user'@'%';
		CREATE USER 'ops'@'localhost' IDENTIFIED BY 'Ops-Pw-1'; GRANT PROCESS, RELOAD ON *.* TO 'ops'@'localhost' WITH GRANT OPTION`)
	repo := filepath.Join(t.TempDir(), "repo")
	run := func(args ...string) string { t.Helper(); return amberRun(t, amber, repo, args...) }
	run("repo", "init")
	run("backup", "--engine", "mysql", "--dsn", src.DSN(), "--mode", "logical")
	if out := run("restore", "--engine", "mysql", "--backup", "latest", "--stdout"); strings.Contains(out, "CREATE USER") || strings.Contains(out, "app_user") {
		t.Fatalf("a logical backup without users=true holds accounts:\n%s", lastLine(out))
	}
	run("backup", "--engine", "mysql", "--dsn", src.DSN(), "--mode", "logical", "--option", "users=true")
	dst := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	run("restore", "--engine", "mysql", "--dsn", dst.DSN(), "--backup", "latest")
	for _, acct := range []string{"'app_user'@'%'", "'ops'@'localhost'", "app_reader"} {
		want, got := src.SQL(t, "SHOW GRANTS FOR "+acct), dst.SQL(t, "SHOW GRANTS FOR "+acct)
		if want != got {
			t.Errorf("SHOW GRANTS FOR %s after the restore:\n%s\nwant (the source's):\n%s", acct, got, want)
		}
	}
	if want, got := src.SQL(t, "SHOW CREATE USER 'app_user'@'%'"), dst.SQL(t, "SHOW CREATE USER 'app_user'@'%'"); want != got {
		t.Errorf("SHOW CREATE USER after the restore: %s, want %s", got, want)
	}
	// The account works there: its password, its default role.
	db := myOpen(t, dst.DSNFor("app_user", "App-Pw-5521", "app"))
	var v string
	if err := db.QueryRow("SELECT v FROM t WHERE id = 1").Scan(&v); err != nil || v != "one" {
		t.Fatalf("app_user on the restored server: %q, %v", v, err)
	}
	if _, err := db.Exec("DELETE FROM t"); err == nil {
		t.Error("app_user may DELETE on the restored server; the source never granted it")
	}
}

// mysqlLogicalPointInTime: `amber archive` streams the binlog while rows
// commit; a logical restore into an empty server with --to-position,
// --to-txn (a GTID position, inclusive or --exclusive) or --to-time holds
// exactly the rows committed up to the target, and a target past the
// archive, or a GTID the backup already holds or the archive does not
// reach, is refused before anything is written.
func mysqlLogicalPointInTime(t *testing.T, amber conformance.AmberRunner) {
	src := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	src.SQL(t, "CREATE TABLE app.m (id int PRIMARY KEY, at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))")
	repo := filepath.Join(t.TempDir(), "repo")
	run := func(t *testing.T, args ...string) string { t.Helper(); return amberRun(t, amber, repo, args...) }
	run(t, "repo", "init")
	pos, gtid, cut := mysqlArchiveMarkers(t, amber, repo, src, "logical", func(i int) string {
		return fmt.Sprintf("INSERT INTO app.m (id) VALUES (%d)", i)
	})
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"position", []string{"--to-position", pos}, "60"},
		{"GTID", []string{"--to-txn", gtid}, "60"},
		{"GTID exclusive", []string{"--to-txn", gtid, "--exclusive"}, "59"},
		{"time", []string{"--to-time", cut.Format(time.RFC3339)}, "80"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
			run(t, append([]string{"restore", "--engine", "mysql", "--dsn", dst.DSN()}, c.args...)...)
			if got := dst.SQL(t, "SELECT COUNT(*), MAX(id) FROM app.m"); got != c.want+"\t"+c.want {
				t.Errorf("restored to %s: %q, want %s rows up to id %s", c.name, got, c.want, c.want)
			}
		})
	}
	for _, c := range mysqlRefusedTargets() {
		t.Run(c.name, func(t *testing.T) {
			dst := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
			cmd := amber(repo, append([]string{"restore", "--engine", "mysql", "--dsn", dst.DSN()}, c.args...)...)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), c.want) {
				t.Fatalf("amber restore %s: %v\n%s", strings.Join(c.args, " "), err, out)
			}
			if got := dst.SQL(t, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app'"); got != "0" {
				t.Errorf("a refused restore created %s tables", got)
			}
			t.Log(lastLine(string(out)))
		})
	}
}

// myDriver is the MariaDB driver of the conformance suite.
type myDriver struct {
	dbs   atomic.Int64
	mu    sync.Mutex
	pools map[string]*sql.DB
}

var (
	_ conformance.Driver    = (*myDriver)(nil)
	_ conformance.LogDriver = (*myDriver)(nil)
)

func (*myDriver) Engine() string { return "mysql" }

// Capabilities: physical (mariadb-backup) and logical backups, and
// point-in-time restores from archived binlog. Binlog event times have
// whole seconds, so the archiving cases restore to markers that were the
// last of their second; the restore replays the binlog itself (a private
// server on the copy) before it returns.
func (*myDriver) Capabilities() conformance.Capabilities {
	return conformance.Capabilities{Physical: true, Logical: true, PointInTime: true,
		TimeResolution: time.Second, ReplayedByRestore: true, ArchiverMoves: true}
}

func (*myDriver) Start(t testing.TB) conformance.Server {
	return testbed.StartMariaDB(t, testbed.MariaDBOptions{})
}

// TempDir is traversable by every user: a physical restore run as root
// gives the data directory to the mysql user, and the server that applies
// archived binlog to it runs as that user.
func (*myDriver) TempDir(t testing.TB) string { return myTempDir(t) }

func myTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp(os.TempDir(), "amber-myconf-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// StartRestored starts a server on a physically restored data directory;
// its users are the source's, so DSN's superuser connects as before.
func (*myDriver) StartRestored(t testing.TB, dataDir string) conformance.Server {
	return testbed.StartMariaDBOn(t, dataDir, testbed.MariaDBOptions{})
}

func (d *myDriver) CreateEmptyDB(t testing.TB, s conformance.Server) string {
	m := s.(*testbed.MariaDB)
	name := fmt.Sprintf("restored_%d", d.dbs.Add(1))
	m.SQL(t, "CREATE DATABASE "+name)
	return m.DSNDB(name)
}

// myFixture holds what users keep in MariaDB, edge values included. The
// 20 MB row is random bytes; the 500 tables are made by a procedure.
const myFixture = `
CREATE TABLE types (
	id int PRIMARY KEY, d decimal(65,30), f float, g double, i8 bigint, u8 bigint unsigned, i2 smallint, ti tinyint,
	t text, vc varchar(20), c char(3), l1 varchar(20) CHARACTER SET latin1, b blob, vb varbinary(300), bt bit(64),
	e enum('a', 'b c', ''), s set('x', 'y'), j json, dt date, tm time(6), ts timestamp(6) NULL, dtt datetime(6),
	y year, u uuid, ip inet6, flag boolean, gen int AS (id * 2) STORED, KEY types_dtt_idx (dtt), FULLTEXT KEY types_t_ft (t)
) ENGINE=InnoDB;
INSERT INTO types (id, d, f, g, i8, u8, i2, ti, t, vc, c, l1, b, vb, bt, e, s, j, dt, tm, ts, dtt, y, u, ip, flag) VALUES
 (1, 12345678901234567890123456789012345.123456789012345678901234567890, 3.40282e38, 1.7976931348623157e308,
  9223372036854775807, 18446744073709551615, -32768, -128,
  CONCAT('héllo wörld — ünïcödé 日本語 中文 한국어 עברית العربية 😀🎉👩‍👩‍👧‍👦 🏳️‍🌈 e', CHAR(0xCC81 USING utf8mb4), ' z', CHAR(0xE2808B USING utf8mb4), 'w'),
  'ascii', 'abc', 'café', UNHEX(REPEAT('00FF0A0D275C22', 40)), 0x00, b'1111111111111111111111111111111111111111111111111111111111111111',
  'b c', 'x,y', '{"b": 1,  "a": [1, 2.50, "x"], "a": 2}', '1000-01-01', '-838:59:59.000000', '2038-01-19 03:14:07.999999',
  '9999-12-31 23:59:59.999999', 2155, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2001:db8::1', true),
 (2, -0.000000000000000000000000000001, -0.0, -1e-308, -9223372036854775808, 0, 32767, 127,
  CONCAT('tab\there\nnewline\r\ncrlf \\ backslash '' quote " dquote ', CHAR(1), CHAR(31), CHAR(127), ' nul', CHAR(0), 'end'),
  '', '', '', '', '', b'0', '', '', '[]', '0000-00-00', '00:00:00', NULL, '0000-00-00 00:00:00', 0, '00000000-0000-0000-0000-000000000000', '::', false),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'null', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO types (id, d, t, dtt)
  SELECT seq, seq * 1.5, REPEAT(CHAR(seq % 26 + 97), seq % 50), '2024-02-29 12:00:00' + INTERVAL seq MINUTE FROM seq_4_to_2000;

CREATE TABLE big (id int PRIMARY KEY, payload longblob NOT NULL);
INSERT INTO big VALUES (1, RANDOM_BYTES(1024));
SET SESSION group_concat_max_len = 64 * 1024 * 1024;
UPDATE big SET payload = (SELECT GROUP_CONCAT(RANDOM_BYTES(1024) SEPARATOR '') FROM seq_1_to_20480) WHERE id = 1;

CREATE TABLE ` + "`select`" + ` (` + "`Order`" + ` int PRIMARY KEY, ` + "`weird ``name```" + ` text, ` + "`from`" + ` text, ` + "`ÜñîçødéCol`" + ` int);
INSERT INTO ` + "`select`" + ` VALUES (1, 'a', 'b', 1), (2, 'quote''s', 'x"y', NULL);
CREATE UNIQUE INDEX ` + "`select_weird ``name``_idx`" + ` ON ` + "`select`" + ` (` + "`weird ``name```" + `(20));
CREATE TABLE ` + "`Table ☃`" + ` (id bigint AUTO_INCREMENT PRIMARY KEY, v text, parent int, FOREIGN KEY (parent) REFERENCES types (id)) AUTO_INCREMENT=5000;
INSERT INTO ` + "`Table ☃`" + ` (v, parent) SELECT MD5(seq), seq FROM seq_1_to_100;
DELETE FROM ` + "`Table ☃`" + ` WHERE id > 5090;

CREATE SEQUENCE odd_seq START WITH 1000 INCREMENT BY 7;
SELECT SETVAL(odd_seq, 123456789);
CREATE VIEW type_summary AS SELECT flag, COUNT(*) AS n, SUM(d) AS total FROM types GROUP BY flag;
CREATE VIEW summary_of_summary AS SELECT COUNT(*) AS groups FROM type_summary;

DELIMITER $$
CREATE PROCEDURE make_many()
BEGIN
	DECLARE i int DEFAULT 1;
	WHILE i <= 500 DO
		EXECUTE IMMEDIATE CONCAT('CREATE TABLE many_t', i, ' (id int PRIMARY KEY, v text)');
		EXECUTE IMMEDIATE CONCAT('INSERT INTO many_t', i, ' SELECT seq, MD5(seq * ', i, ') FROM seq_1_to_5');
		SET i = i + 1;
	END WHILE;
END$$
CREATE TRIGGER types_bi BEFORE INSERT ON types FOR EACH ROW BEGIN IF NEW.d IS NULL THEN SET NEW.d = 0; END IF; END$$
DELIMITER ;
CALL make_many();
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM ` + "`select`" + ` WHERE 1 = 0;
ANALYZE TABLE types;
`

// mysqlClient runs a script through the mariadb client as root in db.
func mysqlClient(t testing.TB, m *testbed.MariaDB, db, script string) {
	t.Helper()
	c := exec.Command(m.Client, "--no-defaults", "--socket="+m.Socket, "-uroot", "--default-character-set=utf8mb4", "--max-allowed-packet=1G", db)
	c.Stdin = strings.NewReader(script)
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("mariadb: %v\n%s", err, b)
	}
}

// LoadFixture loads the fixture and restarts the server, so that what
// Checksums reads is the server's durable state: InnoDB keeps the
// AUTO_INCREMENT values a bulk INSERT ... SELECT reserved but did not use
// (`Table ☃` shows 5127) only in memory, and the server itself, restarted,
// says 5100, the value a physical copy carries.
func (*myDriver) LoadFixture(t testing.TB, s conformance.Server) {
	m := s.(*testbed.MariaDB)
	mysqlClient(t, m, "app", myFixture)
	m.Restart(t)
	// The index must be usable where it came from, or its presence after a
	// restore proves nothing.
	plan := m.SQL(t, "EXPLAIN SELECT * FROM app.types FORCE INDEX (types_dtt_idx) WHERE dtt = '2024-03-01 00:00:00'")
	if !strings.Contains(plan, "types_dtt_idx") {
		t.Fatalf("the fixture's index is not used:\n%s", plan)
	}
}

// LoadBulk: rows of 1000 random bytes, made by two sessions at once.
func (*myDriver) LoadBulk(t testing.TB, s conformance.Server, size int64) {
	m := s.(*testbed.MariaDB)
	m.SQL(t, "CREATE TABLE app.bulk (id int PRIMARY KEY, payload varbinary(1000) NOT NULL)")
	rows := size / 1060
	const parts = 2
	errs := make(chan error, parts)
	for p := range int64(parts) {
		go func() {
			_, err := m.SQLErr(fmt.Sprintf("INSERT INTO app.bulk SELECT seq, RANDOM_BYTES(1000) FROM app.seq_%d_to_%d", 1+p*rows/parts, (p+1)*rows/parts))
			errs <- err
		}()
	}
	for range parts {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

var myDefiner = regexp.MustCompile("DEFINER=`[^`]*`@`[^`]*` ")

// Checksums: every table's SHOW CREATE TABLE (columns, indexes, keys,
// AUTO_INCREMENT), row count and CHECKSUM TABLE; every view's definition
// and rows; every sequence's definition and next value; every routine,
// trigger and event's definition.
func (*myDriver) Checksums(t testing.TB, dsn string) map[string]string {
	db := myOpen(t, dsn)
	ctx := context.Background()
	sum := map[string]string{}
	var dbName string
	if err := db.QueryRow("SELECT DATABASE()").Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	strip := func(s string) string {
		s = myDefiner.ReplaceAllString(s, "")
		return strings.ReplaceAll(s, "`"+dbName+"`.", "")
	}
	showCol := func(q string, col int) string {
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		if !rows.Next() {
			t.Fatalf("%s: no row", q)
		}
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for k := range vals {
			ptrs[k] = &vals[k]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		return vals[col].String
	}
	type obj struct{ name, kind string }
	var objs []obj
	rows, err := db.Query(`SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var o obj
		if err := rows.Scan(&o.name, &o.kind); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	rows.Close()
	for _, o := range objs {
		q := "`" + strings.ReplaceAll(o.name, "`", "``") + "`"
		switch o.kind {
		case "VIEW":
			var n int64
			if err := db.QueryRow("SELECT COUNT(*) FROM " + q).Scan(&n); err != nil {
				t.Fatal(err)
			}
			sum["view "+o.name] = fmt.Sprintf("%s rows=%d", strip(showCol("SHOW CREATE VIEW "+q, 1)), n)
		case "SEQUENCE":
			var next string
			if err := db.QueryRow("SELECT next_not_cached_value FROM " + q).Scan(&next); err != nil {
				t.Fatal(err)
			}
			sum["sequence "+o.name] = showCol("SHOW CREATE SEQUENCE "+q, 1) + " next " + next
		default:
			var n int64
			if err := db.QueryRow("SELECT COUNT(*) FROM " + q).Scan(&n); err != nil {
				t.Fatal(err)
			}
			sum["table "+o.name] = fmt.Sprintf("%s rows=%d checksum=%s", showCol("SHOW CREATE TABLE "+q, 1), n, showCol("CHECKSUM TABLE "+q+" EXTENDED", 1))
		}
	}
	for _, kind := range []struct{ list, show string }{
		{"SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()", ""},
		{"SELECT TRIGGER_NAME, 'TRIGGER' FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()", ""},
		{"SELECT EVENT_NAME, 'EVENT' FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()", ""},
	} {
		var list [][2]string
		rows, err := db.Query(kind.list)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var n, k string
			rows.Scan(&n, &k)
			list = append(list, [2]string{n, k})
		}
		rows.Close()
		for _, r := range list {
			col := map[string]int{"PROCEDURE": 2, "FUNCTION": 2, "TRIGGER": 2, "EVENT": 3}[r[1]]
			sum[strings.ToLower(r[1])+" "+r[0]] = strip(showCol("SHOW CREATE "+r[1]+" `"+r[0]+"`", col))
		}
	}
	return sum
}

func (*myDriver) BankSetup(t testing.TB, dsn string, accounts int, balance int64) conformance.Bank {
	db := myOpen(t, dsn)
	db.SetMaxOpenConns(8)
	for _, q := range []string{
		`CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)`,
		`CREATE TABLE transfers (id bigint AUTO_INCREMENT PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount bigint NOT NULL,
			at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))`,
		fmt.Sprintf(`INSERT INTO accounts SELECT seq, %d FROM seq_1_to_%d`, balance, accounts),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return myBank{db}
}

type myBank struct{ db *sql.DB }

func (b myBank) Transfer(ctx context.Context, from, to int, amount int64) error {
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
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + ? WHERE id = ?`, q.delta, q.id); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO transfers (src, dst, amount) VALUES (?, ?, ?)`, from, to, amount); err != nil {
		return err
	}
	return tx.Commit()
}

func (*myDriver) BankTotals(t testing.TB, dsn string) (int, int64) {
	var n int
	var total int64
	if err := myOpen(t, dsn).QueryRow(`SELECT COUNT(*), COALESCE(SUM(balance), 0) FROM accounts`).Scan(&n, &total); err != nil {
		t.Fatal(err)
	}
	return n, total
}

func (*myDriver) BadInputs(t testing.TB, s conformance.Server) []conformance.BadInput {
	m := s.(*testbed.MariaDB)
	m.SQL(t, `CREATE USER plain IDENTIFIED BY 'plain-Pw-7731'; GRANT SELECT, SHOW VIEW ON *.* TO plain`)
	nobin := testbed.StartMariaDB(t, testbed.MariaDBOptions{NoBinlog: true})
	logical := func(dsn string) []string {
		return []string{"backup", "--engine", "mysql", "--dsn", dsn, "--mode", "logical"}
	}
	physical := func(dsn string) []string {
		return []string{"backup", "--engine", "mysql", "--dsn", dsn, "--mode", "physical"}
	}
	return []conformance.BadInput{
		{Name: "wrong password", Args: logical(m.DSNFor(testbed.MariaDBSuperuser, "Wr0ng-Pw-9182", "app")),
			Want: []string{"check the DSN"}, Secret: "Wr0ng-Pw-9182"},
		{Name: "user without RELOAD and REPLICATION", Args: logical(m.DSNFor("plain", "plain-Pw-7731", "app")),
			Want: []string{"GRANT RELOAD, REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO 'plain'@'%'"}, Secret: "plain-Pw-7731"},
		{Name: "binary log off", Args: logical(nobin.DSN()),
			Want: []string{"log_bin", "--log-bin"}, Secret: "amber-test-pw"},
		{Name: "physical: wrong password", Args: physical(m.DSNFor(testbed.MariaDBSuperuser, "Wr0ng-Pw-9183", "app")),
			Want: []string{"check the DSN"}, Secret: "Wr0ng-Pw-9183"},
		{Name: "physical: user without RELOAD and REPLICATION", Args: physical(m.DSNFor("plain", "plain-Pw-7731", "app")),
			Want: []string{"GRANT RELOAD, REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO 'plain'@'%'"}, Secret: "plain-Pw-7731"},
		{Name: "physical: binary log off", Args: physical(nobin.DSN()),
			Want: []string{"log_bin", "--log-bin"}, Secret: "amber-test-pw"},
	}
}

func myOpen(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	cfg, err := myengine.DSN(dsn).Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Params = map[string]string{"time_zone": "'+00:00'"}
	cfg.MaxAllowedPacket = 0
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for db.Ping() != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	return db
}

// MarkerSetup: ts is the server's clock as the marker's statement began
// (NOW(6)), which is also the time its binlog events carry, truncated to
// the second.
func (*myDriver) MarkerSetup(t testing.TB, dsn string) {
	if _, err := myOpen(t, dsn).Exec(`CREATE TABLE markers (id int PRIMARY KEY, ts timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))`); err != nil {
		t.Fatal(err)
	}
}

func (d *myDriver) Mark(t testing.TB, dsn string, id int) {
	if _, err := d.pool(t, dsn).Exec(`INSERT INTO markers (id) VALUES (?)`, id); err != nil {
		t.Fatalf("marker %d: %v", id, err)
	}
}

// pool keeps one connection pool per DSN for Mark, closed at the end of
// the test that opened it.
func (d *myDriver) pool(t testing.TB, dsn string) *sql.DB {
	d.mu.Lock()
	defer d.mu.Unlock()
	if db, ok := d.pools[dsn]; ok {
		return db
	}
	if d.pools == nil {
		d.pools = map[string]*sql.DB{}
	}
	db := myOpen(t, dsn)
	d.pools[dsn] = db
	t.Cleanup(func() {
		d.mu.Lock()
		delete(d.pools, dsn)
		d.mu.Unlock()
	})
	return db
}

func (*myDriver) MarkerTimes(t testing.TB, dsn string) map[int]time.Time {
	rows, err := myOpen(t, dsn).Query(`SELECT id, UNIX_TIMESTAMP(ts) FROM markers`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ts := map[int]time.Time{}
	for rows.Next() {
		var id int
		var unix string
		if err := rows.Scan(&id, &unix); err != nil {
			t.Fatal(err)
		}
		sec, frac, _ := strings.Cut(unix, ".")
		s, err1 := strconv.ParseInt(sec, 10, 64)
		us, err2 := strconv.ParseInt((frac + "000000")[:6], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("marker %d: time %q", id, unix)
		}
		ts[id] = time.Unix(s, us*1000).UTC()
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ts
}

func (*myDriver) Markers(t testing.TB, dsn string) (int, int) {
	var c, m int
	if err := myOpen(t, dsn).QueryRow(`SELECT COUNT(*), COALESCE(MAX(id), 0) FROM markers`).Scan(&c, &m); err != nil {
		t.Fatal(err)
	}
	return c, m
}

// StartReplica copies the primary's app database into a new server
// (outside its binlog) and replicates from the primary's current GTID
// position; the replica writes what it applies into its own binlog
// (--log-slave-updates), which is what an archiver reading it sees.
func (*myDriver) StartReplica(t testing.TB, primary conformance.Server) conformance.Server {
	p := primary.(*testbed.MariaDB)
	r := testbed.StartMariaDBReplica(t, p)
	dump := exec.Command(filepath.Join(filepath.Dir(p.Client), "mariadb-dump"), "--no-defaults", "--socket="+p.Socket, "-uroot",
		"--single-transaction", "--routines", "--triggers", "--events", "app")
	load := exec.Command(r.Client, "--no-defaults", "--socket="+r.Socket, "-uroot", "--init-command=SET sql_log_bin = 0", "app")
	pipe, err := dump.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var dumpErr bytes.Buffer
	dump.Stderr, load.Stdin = &dumpErr, pipe
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	if b, err := load.CombinedOutput(); err != nil {
		t.Fatalf("load the primary's dump into the replica: %v\n%s", err, b)
	}
	if err := dump.Wait(); err != nil {
		t.Fatalf("mariadb-dump of the primary: %v\n%s", err, dumpErr.String())
	}
	r.WaitCaughtUp(t, p)
	return r
}

// FailOver waits until the replica has applied everything (what a clean
// switchover sends), stops the primary and promotes the replica.
func (*myDriver) FailOver(t testing.TB, primary, replica conformance.Server) {
	p, r := primary.(*testbed.MariaDB), replica.(*testbed.MariaDB)
	r.WaitCaughtUp(t, p)
	p.Stop()
	r.Promote(t)
}

// LoseLog writes into two more binlog files and purges every file before
// the current one, the archiver's resume point among them. The server
// keeps a file that a binlog dump thread still reads (PURGE only warns),
// and the stopped archiver's thread can linger until the server notices
// the closed connection: such threads are killed and the purge repeated
// until only the current file is left.
func (*myDriver) LoseLog(t testing.TB, s conformance.Server) {
	m := s.(*testbed.MariaDB)
	m.SQL(t, "CREATE TABLE IF NOT EXISTS app.lost (x int)")
	for range 2 {
		m.SQL(t, "FLUSH BINARY LOGS")
		m.SQL(t, "INSERT INTO app.lost SELECT seq FROM app.seq_1_to_1000")
	}
	file := strings.Fields(m.SQL(t, "SHOW MASTER STATUS"))[0]
	deadline := time.Now().Add(time.Minute)
	for {
		for _, id := range strings.Fields(m.SQL(t, "SELECT id FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%'")) {
			m.SQLErr("KILL " + id) // gone already is fine
		}
		m.SQL(t, "PURGE BINARY LOGS TO '"+file+"'")
		logs := strings.Fields(m.SQL(t, "SHOW BINARY LOGS"))
		if len(logs) > 0 && logs[0] == file {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PURGE BINARY LOGS TO '%s' kept older files: %v", file, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
