package myengine

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
)

// Sink receives the entries of a dump one at a time.
type Sink interface {
	// Create starts entry name; Close ends it. Only one entry is open at a
	// time.
	Create(ctx context.Context, name, phase string) (io.WriteCloser, error)
}

// DumpOptions configure LogicalDump.
type DumpOptions struct {
	Workers  int    // sessions reading tables at once; default 2
	SpoolDir string // where a table read while another is being sent waits; default os.TempDir()
	// LockWait bounds the wait for the global read lock (lock_wait_timeout).
	LockWait time.Duration
	// Users adds users.sql: the server's accounts and roles (all but the
	// built-in ones) with their password hashes and every grant.
	Users bool
	// SplitSize: an InnoDB table whose primary key is one integer column
	// and whose data (information_schema.TABLES.DATA_LENGTH) is larger is
	// read as key ranges, each its own entry, that any worker takes;
	// default DefaultSplitSize, negative never.
	SplitSize int64
}

// DefaultSplitSize is DumpOptions.SplitSize's default.
const DefaultSplitSize = 64 << 20

// maxRanges bounds the ranges of one table.
const maxRanges = 1024

// DumpResult is where and when a dump is consistent.
type DumpResult struct {
	Pos      Pos
	Time     time.Time
	LockTime time.Duration // how long writes were blocked
	LockPlan string        // the lock strategy (lockPlan.Name)
	Database string
	Tables   int
	Ranges   int // data entries that hold a key range of a table
	Users    int // accounts and roles in users.sql
	Info     *Info
}

// Entry names and phases. A dump is, in this order: schema.sql (tables and
// sequences), data/<table>.sql for every table (or, for a table split into
// key ranges, data/<table>.part-NNNNN.sql per range, in any order among
// the other data entries), post.sql (views, routines,
// triggers, events). Each entry sets its own session state, so the entries
// concatenated in order are one script the mariadb/mysql client loads into
// an empty database.
const (
	SchemaEntry = "schema.sql"
	PostEntry   = "post.sql"
	UsersEntry  = "users.sql"
	PhaseSchema = "schema"
	PhaseData   = "data"
	PhasePost   = "post"
)

const header = "/*!40101 SET NAMES utf8mb4 */;\n" +
	"SET @@session.time_zone = '+00:00';\n" +
	"SET @@session.sql_mode = 'NO_AUTO_VALUE_ON_ZERO';\n" +
	"SET @@session.foreign_key_checks = 0;\n" +
	"SET @@session.unique_checks = 0;\n"

// statementSize is the size at which an INSERT is cut.
const statementSize = 1 << 20

type table struct {
	name     string
	sequence bool
	innodb   bool
	size     int64 // DATA_LENGTH, an estimate
}

// job is one data entry: a whole table, or the rows of a key range.
type job struct {
	t     table
	entry string // entry name
	where string // "" for the whole table, else a WHERE clause
}

// LogicalDump writes a consistent SQL dump of d's database to sink. It
// takes FLUSH TABLES WITH READ LOCK just long enough to read the binlog
// position and start a consistent snapshot in every worker session (on
// MySQL 8 with BACKUP_ADMIN inside LOCK INSTANCE FOR BACKUP, held to the
// end: see chooseLockPlan), then
// reads schema and tables inside those snapshots (InnoDB tables are
// consistent; other engines only as of their read).
func LogicalDump(ctx context.Context, d DSN, sink Sink, o DumpOptions) (*DumpResult, error) {
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.LockWait <= 0 {
		o.LockWait = 60 * time.Second
	}
	if o.SplitSize == 0 {
		o.SplitSize = DefaultSplitSize
	}
	db, cfg, err := Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if cfg.DBName == "" {
		return nil, errors.New("the DSN names no database: a logical dump reads the DSN's database (mysql://user:password@host:port/database)")
	}
	info, err := probeDB(ctx, db, "")
	if err != nil {
		return nil, err
	}
	res := &DumpResult{Database: cfg.DBName, Info: info}

	lock, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	// meta reads the schema and the rest of the metadata inside the
	// snapshot; the workers read the rows, each in a snapshot of its own
	// started under the same lock (rowSession).
	meta, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer meta.Close()
	for _, q := range []string{"SET SESSION character_set_results = binary", "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
		fmt.Sprintf("SET SESSION net_write_timeout = %d", 3600)} {
		if _, err := meta.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("prepare dump session: %w", err)
		}
	}
	workers := make([]*rowSession, o.Workers)
	for k := range workers {
		s, err := openRowSession(ctx, cfg)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		workers[k] = s
	}
	snapshots := []func(context.Context, string) error{func(ctx context.Context, q string) error {
		_, err := meta.ExecContext(ctx, q)
		return err
	}}
	for _, s := range workers {
		snapshots = append(snapshots, s.exec)
	}
	if _, err := lock.ExecContext(ctx, fmt.Sprintf("SET SESSION lock_wait_timeout = %d", int(o.LockWait.Seconds()))); err != nil {
		return nil, err
	}
	plan := chooseLockPlan(lockFacts{MariaDB: info.MariaDB, Version: info.Version, BackupAdmin: info.BackupAdmin})
	res.LockPlan = plan.Name
	pos, at, locked, err := startSnapshots(ctx, lock, snapshots, plan, info.MariaDB)
	if err != nil {
		return nil, err
	}
	if len(plan.Final) > 0 {
		defer func() {
			for _, q := range plan.Final {
				lock.ExecContext(context.WithoutCancel(ctx), q)
			}
		}()
	}
	pos.Epoch = 1
	res.Time = at
	res.LockTime = locked
	res.Pos = pos

	w := meta
	tables, err := listTables(ctx, w, cfg.DBName)
	if err != nil {
		return nil, err
	}
	res.Tables = len(tables)
	if err := dumpSchema(ctx, w, sink, tables); err != nil {
		return nil, err
	}
	jobs, err := planJobs(ctx, w, tables, o.SplitSize, len(workers))
	if err != nil {
		return nil, err
	}
	columns := map[string]tableColumns{}
	for _, j := range jobs {
		if j.where != "" {
			res.Ranges++
		}
		if _, ok := columns[j.t.name]; ok || j.t.sequence {
			continue
		}
		var tc tableColumns
		if tc.names, tc.kinds, err = insertableColumns(ctx, w, j.t.name); err != nil {
			return nil, fmt.Errorf("table %s: %w", j.t.name, err)
		}
		columns[j.t.name] = tc
	}

	// Data: workers take tables (and key ranges of large tables) in turn.
	// The one that holds the sink streams straight into it; the others
	// spool to a file and send it when the sink is free.
	var sinkMu sync.Mutex
	next := make(chan job)
	errc := make(chan error, len(workers))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, c := range workers {
		go func() {
			// Another worker's failure ends this one's read at once, even
			// one still waiting for the server's first row.
			defer context.AfterFunc(cctx, func() { c.c.Close() })()
			for j := range next {
				if err := dumpTableEntry(cctx, c, sink, &sinkMu, j, columns[j.t.name], o.SpoolDir); err != nil {
					cancel()
					errc <- fmt.Errorf("dump table %s: %w", j.t.name, err)
					for range next {
					}
					return
				}
			}
			errc <- nil
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case next <- j:
		case <-cctx.Done():
			break feed
		}
	}
	close(next)
	var firstErr error
	for range workers {
		if err := <-errc; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := dumpPost(ctx, w, sink, cfg.DBName, tables); err != nil {
		return nil, err
	}
	if o.Users {
		n, err := dumpUsers(ctx, w, sink)
		if err != nil {
			return nil, fmt.Errorf("dump users and grants: %w", err)
		}
		res.Users = n
	}
	meta.ExecContext(ctx, "COMMIT")
	for _, c := range workers {
		c.exec(ctx, "COMMIT")
	}
	return res, nil
}

// startSnapshots runs plan: it takes the locks on lock, starts a snapshot
// in every session (each a function running a statement in it), reads the position and releases what blocks writes. It
// returns the position, the time it was read and how long writes were
// blocked. On an error
// everything it took is released.
func startSnapshots(ctx context.Context, lock *sql.Conn, sessions []func(context.Context, string) error, plan lockPlan, mariadb bool) (Pos, time.Time, time.Duration, error) {
	release := func(qs []string) {
		for _, q := range qs {
			lock.ExecContext(context.WithoutCancel(ctx), q)
		}
	}
	fail := func(err error) (Pos, time.Time, time.Duration, error) {
		release(plan.Release)
		release(plan.Final)
		return Pos{}, time.Time{}, 0, err
	}
	var locked time.Time
	for k, q := range plan.Lock {
		if k == plan.Blocks {
			locked = time.Now()
		}
		if _, err := lock.ExecContext(ctx, q); err != nil {
			what, need := "global read lock", "RELOAD"
			if strings.HasPrefix(q, "LOCK INSTANCE") {
				what, need = "backup lock", "BACKUP_ADMIN"
			}
			return fail(fmt.Errorf("take the %s (%s; the user needs %s): %w", what, q, need, err))
		}
	}
	for _, exec := range sessions {
		if err := exec(ctx, plan.Snapshot); err != nil {
			return fail(fmt.Errorf("start a consistent snapshot: %w", err))
		}
	}
	var pos Pos
	var err error
	if plan.Position != "" {
		var local []byte
		if err = lock.QueryRowContext(ctx, plan.Position).Scan(&local); err == nil {
			pos, err = parseLogStatus(local)
		}
		if err != nil {
			// performance_schema off, or no row: the read lock is still
			// held, so SHOW MASTER STATUS is as consistent.
			pos, err = masterStatus(ctx, lock, mariadb)
		}
	} else {
		pos, err = masterStatus(ctx, lock, mariadb)
	}
	if err != nil {
		return fail(err)
	}
	at := time.Now().UTC()
	release(plan.Release)
	return pos, at, time.Since(locked), nil
}

func listTables(ctx context.Context, c *sql.Conn, dbName string) ([]table, error) {
	rows, err := c.QueryContext(ctx, `SELECT TABLE_NAME, TABLE_TYPE, COALESCE(ENGINE, ''), COALESCE(DATA_LENGTH, 0) FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = ? AND TABLE_TYPE IN ('BASE TABLE', 'SEQUENCE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME`, dbName)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var ts []table
	for rows.Next() {
		var n, kind, engine string
		var size int64
		if err := rows.Scan(&n, &kind, &engine, &size); err != nil {
			return nil, err
		}
		ts = append(ts, table{name: n, sequence: kind == "SEQUENCE",
			innodb: kind == "BASE TABLE" && strings.EqualFold(engine, "InnoDB"), size: size})
	}
	return ts, rows.Err()
}

func showCreate(ctx context.Context, c *sql.Conn, what, name string, col int) (string, error) {
	rows, err := c.QueryContext(ctx, "SHOW CREATE "+what+" "+quoteIdent(name))
	if err != nil {
		return "", fmt.Errorf("show create %s %s: %w", strings.ToLower(what), name, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		return "", fmt.Errorf("show create %s %s: no row", strings.ToLower(what), name)
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for k := range vals {
		ptrs[k] = &vals[k]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return "", err
	}
	return vals[col].String, rows.Err()
}

var definer = regexp.MustCompile("DEFINER=(`(?:[^`]|``)*`|'[^']*'|[^ @]+)@(`(?:[^`]|``)*`|'[^']*'|[^ ]+) ")

// stripDefiner drops DEFINER= clauses: restored objects belong to the user
// that loads them.
func stripDefiner(s string) string { return definer.ReplaceAllString(s, "") }

func dumpSchema(ctx context.Context, c *sql.Conn, sink Sink, tables []table) error {
	w, err := sink.Create(ctx, SchemaEntry, PhaseSchema)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(header)
	for _, t := range tables {
		what := "TABLE"
		if t.sequence {
			what = "SEQUENCE"
		}
		ddl, err := showCreate(ctx, c, what, t.name, 1)
		if err != nil {
			return err
		}
		fmt.Fprintf(bw, "\n%s;\n", ddl)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return w.Close()
}

// dumpTableEntry writes job j as its entry, straight into the sink when it
// is free, else through a spool file.
func dumpTableEntry(ctx context.Context, c *rowSession, sink Sink, mu *sync.Mutex, j job, cols tableColumns, spoolDir string) error {
	name, t := j.entry, j.t
	if mu.TryLock() {
		defer mu.Unlock()
		w, err := sink.Create(ctx, name, PhaseData)
		if err != nil {
			return err
		}
		if err := dumpTable(ctx, c, w, t, cols, j.where); err != nil {
			return err
		}
		return w.Close()
	}
	f, err := os.CreateTemp(spoolDir, "amber-mysql-spool-")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := dumpTable(ctx, c, f, t, cols, j.where); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	w, err := sink.Create(ctx, name, PhaseData)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, f); err != nil {
		return err
	}
	return w.Close()
}

// tableColumns are the columns of a table a dump writes values for, and
// how (insertableColumns).
type tableColumns struct {
	names []string
	kinds []valueKind
}

// dumpTable writes the rows of t as multi-row INSERT statements of about
// 1 MiB (as mariadb-dump's extended inserts). The session reads results
// unconverted (character_set_results = binary), so every value arrives as
// the bytes the server stores; appendField writes each as a literal that
// gives those bytes back (see valueKind). A non-empty where restricts the
// rows (a key range of the table).
func dumpTable(ctx context.Context, c *rowSession, out io.Writer, t table, tc tableColumns, where string) error {
	q := quoteIdent(t.name)
	if t.sequence {
		next, err := c.value(ctx, "SELECT next_not_cached_value FROM "+q, kindNumber)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%sSELECT SETVAL(%s, %s, 0);\n", header, q, next)
		return err
	}
	cols, kinds := tc.names, tc.kinds
	if len(cols) == 0 {
		_, err := io.WriteString(out, header)
		return err
	}
	quoted := make([]string, len(cols))
	for k, col := range cols {
		quoted[k] = quoteIdent(col)
	}
	list := strings.Join(quoted, ", ")
	prefix := "INSERT INTO " + q + " (" + list + ") VALUES\n"
	size, n := 0, 0
	// Rows are appended straight into one batch buffer, written to out
	// (the sink's entry, which frames it, or a spool file) every
	// batchSize bytes: one copy of each row on this side of the plugin
	// boundary.
	batch := make([]byte, 0, batchSize+64<<10)
	batch = append(batch, header...)
	query := "SELECT " + list + " FROM " + q
	if where != "" {
		query += " WHERE " + where
	}
	err := c.stream(ctx, query, func(vals []gomysql.FieldValue) error {
		at := len(batch)
		if size == 0 {
			batch = append(batch, prefix...)
		} else {
			batch = append(batch, ",\n"...)
		}
		var err error
		if batch, err = appendRow(batch, kinds, vals); err != nil {
			return fmt.Errorf("table %s: %w", t.name, err)
		}
		size += len(batch) - at
		if size >= statementSize {
			batch = append(batch, ";\n"...)
			size = 0
		}
		if len(batch) >= batchSize {
			if _, err := out.Write(batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
		if n++; n%4096 == 0 {
			return ctx.Err()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if size > 0 {
		batch = append(batch, ";\n"...)
	}
	_, err = out.Write(batch)
	return err
}

// batchSize is how much of a table's INSERT text dumpTable gathers before
// it writes.
const batchSize = 256 << 10

// valueKind is how a column's values are written.
type valueKind uint8

const (
	// kindNumber: integers, DECIMAL, FLOAT, DOUBLE, YEAR, as the server
	// prints them, unquoted.
	kindNumber valueKind = iota
	// kindPlain: temporal types, UUID, INET4/6: ASCII as printed, with no
	// quote or backslash in it, quoted.
	kindPlain
	// kindUTF8: text in utf8mb4, utf8mb3 (and MySQL's JSON): a quoted,
	// escaped string when the bytes are valid UTF-8 (they read the same in
	// the dump's utf8mb4 session), else hex.
	kindUTF8
	// kindASCII: text in a character set whose first 128 code points are
	// ASCII's (latin1, cp1251, ...): a quoted, escaped string when every
	// byte is ASCII, else hex.
	kindASCII
	// kindBinary: binary strings, BLOBs, BIT, spatial types, and text in
	// any other character set (ucs2, utf16, utf32, swe7, multi-byte Asian
	// sets): hex, the bytes as stored.
	kindBinary
)

// asciiCharsets are the single-byte character sets in which bytes below
// 0x80 mean what they mean in ASCII, so an ASCII string literal in the
// utf8mb4 session converts to the same bytes.
var asciiCharsets = map[string]bool{"latin1": true, "latin2": true, "latin5": true, "latin7": true, "ascii": true,
	"cp1250": true, "cp1251": true, "cp1256": true, "cp1257": true, "cp850": true, "cp852": true, "cp866": true,
	"koi8r": true, "koi8u": true, "greek": true, "hebrew": true, "armscii8": true, "geostd8": true, "keybcs2": true,
	"macce": true, "macroman": true, "tis620": true, "dec8": true, "hp8": true}

// columnKind is the valueKind of a column of DATA_TYPE typ and
// CHARACTER_SET_NAME charset ("" when it has none).
func columnKind(typ, charset string) valueKind {
	switch strings.ToLower(typ) {
	case "tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "float", "double", "year":
		return kindNumber
	case "date", "time", "datetime", "timestamp", "uuid", "inet4", "inet6":
		return kindPlain
	case "json":
		if charset == "" {
			return kindUTF8 // MySQL's JSON type: utf8mb4 text
		}
	}
	switch cs := strings.ToLower(charset); {
	case cs == "utf8mb4" || cs == "utf8mb3" || cs == "utf8":
		return kindUTF8
	case asciiCharsets[cs]:
		return kindASCII
	}
	return kindBinary
}

// escapes maps the bytes mariadb-dump escapes in a string literal
// (mysql_real_escape_string) to their escape letter; 0 for the rest.
var escapes = [256]byte{0: '0', '\n': 'n', '\r': 'r', '\\': '\\', '\'': '\'', '"': '"', 0x1a: 'Z'}

// appendValue appends v, a non-NULL value of a column of kind k as the
// server sent it, as an SQL literal. Quoted strings use backslash escapes:
// every dump entry's header sets a session sql_mode without
// NO_BACKSLASH_ESCAPES.
func appendValue(b []byte, k valueKind, v []byte) []byte {
	switch k {
	case kindNumber:
		return append(b, v...)
	case kindPlain:
		b = append(b, '\'')
		b = append(b, v...)
		return append(b, '\'')
	case kindUTF8:
		if utf8.Valid(v) {
			return appendQuoted(b, v)
		}
	case kindASCII:
		if isASCII(v) {
			return appendQuoted(b, v)
		}
	}
	if len(v) == 0 {
		return append(b, "''"...)
	}
	b = append(b, "0x"...)
	n := len(b)
	b = slices.Grow(b, 2*len(v))[:n+2*len(v)]
	hex.Encode(b[n:], v)
	return b
}

func appendQuoted(b, v []byte) []byte {
	b = slices.Grow(b, len(v)+2)
	b = append(b, '\'')
	for {
		i := 0
		for i < len(v) && escapes[v[i]] == 0 {
			i++
		}
		b = append(b, v[:i]...)
		if i == len(v) {
			break
		}
		b = append(b, '\\', escapes[v[i]])
		v = v[i+1:]
	}
	return append(b, '\'')
}

func isASCII(v []byte) bool {
	for _, c := range v {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// insertableColumns lists t's columns that take values (not generated)
// and how their values are written.
func insertableColumns(ctx context.Context, c *sql.Conn, t string) (cols []string, kinds []valueKind, err error) {
	rows, err := c.QueryContext(ctx, `SELECT COLUMN_NAME, DATA_TYPE, EXTRA, COALESCE(CHARACTER_SET_NAME, '') FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, t)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var n, typ, extra, charset string
		if err := rows.Scan(&n, &typ, &extra, &charset); err != nil {
			return nil, nil, err
		}
		if x := strings.ToUpper(extra); strings.Contains(x, "GENERATED") || strings.Contains(x, "VIRTUAL") {
			continue
		}
		cols, kinds = append(cols, n), append(kinds, columnKind(typ, charset))
	}
	return cols, kinds, rows.Err()
}

// dumpPost writes views (each after the views it reads), routines,
// triggers and events.
func dumpPost(ctx context.Context, c *sql.Conn, sink Sink, dbName string, tables []table) error {
	w, err := sink.Create(ctx, PostEntry, PhasePost)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(header)
	names := func(q string, args ...any) ([][2]string, error) {
		rows, err := c.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out [][2]string
		for rows.Next() {
			var a, b string
			if err := rows.Scan(&a, &b); err != nil {
				return nil, err
			}
			out = append(out, [2]string{a, b})
		}
		return out, rows.Err()
	}
	views, err := names(`SELECT TABLE_NAME, '' FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME`, dbName)
	if err != nil {
		return fmt.Errorf("list views: %w", err)
	}
	defs := map[string]string{}
	var order []string
	for _, v := range views {
		def, err := showCreate(ctx, c, "VIEW", v[0], 1)
		if err != nil {
			return err
		}
		defs[v[0]] = stripDefiner(def)
		order = append(order, v[0])
	}
	for _, v := range viewOrder(order, defs) {
		fmt.Fprintf(bw, "\n%s;\n", defs[v])
	}
	routines, err := names(`SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY ROUTINE_TYPE, ROUTINE_NAME`, dbName)
	if err != nil {
		return fmt.Errorf("list routines: %w", err)
	}
	block := func(ddl string) { fmt.Fprintf(bw, "\nDELIMITER ;;\n%s;;\nDELIMITER ;\n", stripDefiner(ddl)) }
	for _, r := range routines {
		ddl, err := showCreate(ctx, c, r[1], r[0], 2)
		if err != nil {
			return err
		}
		block(ddl)
	}
	triggers, err := names(`SELECT TRIGGER_NAME, '' FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER`, dbName)
	if err != nil {
		return fmt.Errorf("list triggers: %w", err)
	}
	for _, tr := range triggers {
		ddl, err := showCreate(ctx, c, "TRIGGER", tr[0], 2)
		if err != nil {
			return err
		}
		block(ddl)
	}
	events, err := names(`SELECT EVENT_NAME, '' FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY EVENT_NAME`, dbName)
	if err != nil {
		return fmt.Errorf("list events: %w", err)
	}
	for _, ev := range events {
		ddl, err := showCreate(ctx, c, "EVENT", ev[0], 3)
		if err != nil {
			return err
		}
		block(ddl)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return w.Close()
}

// viewOrder puts every view after the views its definition names.
func viewOrder(names []string, defs map[string]string) []string {
	var out []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string)
	visit = func(v string) {
		if state[v] != 0 {
			return
		}
		state[v] = 1
		for _, o := range names {
			if o != v && strings.Contains(defs[v][strings.Index(defs[v], " AS ")+1:], quoteIdent(o)) {
				visit(o)
			}
		}
		state[v] = 2
		out = append(out, v)
	}
	for _, v := range names {
		visit(v)
	}
	return out
}

// builtinAccounts are left out of users.sql: every server has its own.
var builtinAccounts = map[string]bool{"root": true, "mariadb.sys": true, "mysql.sys": true, "mysql.session": true,
	"mysql.infoschema": true, "mysql": true, "PUBLIC": true}

// dumpUsers writes users.sql: for every account and role but the built-in
// ones (and the anonymous user), CREATE ROLE or the server's own SHOW
// CREATE USER made IF NOT EXISTS (password hash, TLS and resource
// options), then every line of SHOW GRANTS FOR it (global, database,
// table, column and routine privileges, role grants, the default role).
// Roles come first, so that grants of them find them.
func dumpUsers(ctx context.Context, c *sql.Conn, sink Sink) (int, error) {
	type account struct {
		user, host string
		role       bool
	}
	rows, err := c.QueryContext(ctx, `SELECT User, Host, is_role FROM mysql.user ORDER BY is_role DESC, User, Host`)
	if err != nil {
		// MySQL has no is_role column.
		rows, err = c.QueryContext(ctx, `SELECT User, Host, 'N' FROM mysql.user ORDER BY User, Host`)
	}
	if err != nil {
		return 0, fmt.Errorf("list accounts (the user needs SELECT on mysql.user): %w", err)
	}
	var accounts []account
	for rows.Next() {
		var a account
		var role string
		if err := rows.Scan(&a.user, &a.host, &role); err != nil {
			rows.Close()
			return 0, err
		}
		a.role = role == "Y"
		if a.user == "" || builtinAccounts[a.user] {
			continue
		}
		accounts = append(accounts, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	w, err := sink.Create(ctx, UsersEntry, PhasePost)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(header)
	quote := func(s string) string {
		return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", "''") + "'"
	}
	var grants []string
	for _, a := range accounts {
		name := quote(a.user) + "@" + quote(a.host)
		if a.role {
			name = quote(a.user)
			fmt.Fprintf(bw, "CREATE ROLE IF NOT EXISTS %s;\n", name)
		} else {
			var create string
			if err := c.QueryRowContext(ctx, "SHOW CREATE USER "+name).Scan(&create); err != nil {
				return 0, fmt.Errorf("SHOW CREATE USER %s: %w", name, err)
			}
			if rest, ok := strings.CutPrefix(create, "CREATE USER "); ok {
				create = "CREATE USER IF NOT EXISTS " + rest
			}
			fmt.Fprintf(bw, "%s;\n", create)
		}
		rows, err := c.QueryContext(ctx, "SHOW GRANTS FOR "+name)
		if err != nil {
			return 0, fmt.Errorf("SHOW GRANTS FOR %s: %w", name, err)
		}
		for rows.Next() {
			var g string
			if err := rows.Scan(&g); err != nil {
				rows.Close()
				return 0, err
			}
			grants = append(grants, g)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, err
		}
	}
	// Grants after every CREATE: a grant may name a role or another
	// account created further down.
	for _, g := range grants {
		fmt.Fprintf(bw, "%s;\n", g)
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	return len(accounts), w.Close()
}
