package pgengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Sections of a sectioned logical dump (ParallelDump), recorded with each
// entry.
const (
	SectionGlobals  = "globals"   // pg_dumpall --globals-only, an SQL script
	SectionPreData  = "pre-data"  // pg_dump --section=pre-data
	SectionData     = "data"      // pg_dump --data-only of one table, or of the rest
	SectionPostData = "post-data" // pg_dump --section=post-data
)

// DumpEntry describes one entry of a sectioned dump.
type DumpEntry struct {
	Name     string
	Kind     string // "pg_dump-custom" or "sql"
	Section  string
	Database string
	Table    string // data entries of one table: "schema.table" as quote_ident writes them
	Size     int64  // a restored entry's size as the host stored it (-1: unknown)
}

// EntryCreator receives the entries of a dump, one at a time: Close ends
// one before the next is created.
type EntryCreator interface {
	Create(ctx context.Context, e DumpEntry) (io.WriteCloser, error)
}

// ParallelDumpOptions tune ParallelDump.
type ParallelDumpOptions struct {
	// BinDir holds pg_dump and pg_dumpall; default as DumpOptions.BinDir.
	BinDir string
	// Workers is how many pg_dump processes read table data at once;
	// default 2.
	Workers int
	// SpoolDir is where a table read while another is being sent waits;
	// default os.TempDir().
	SpoolDir string
	// Globals adds pg_dumpall --globals-only (roles, tablespaces) as the
	// first entry.
	Globals bool
	// TableBytes: tables at least this large (pg_table_size) get an entry
	// of their own; the others share one. Default 1 MiB.
	TableBytes int64
	// MaxTables bounds the tables with an entry of their own (the
	// largest); default 16 per worker.
	MaxTables int
	// Create dumps pre-data with --create: the database itself (its
	// encoding, locale, settings and privileges) first, for dumps of
	// several databases.
	Create bool
}

// ParallelDumpResult is where a sectioned dump is consistent.
type ParallelDumpResult struct {
	Info     *Info
	Database string
	// LSN is the WAL position read in the snapshot's own transaction;
	// Time is the server's clock then.
	LSN  LSN
	Time time.Time
	// Tables counts the tables dumped in entries of their own; Entries
	// names every entry in order.
	Tables  int
	Entries []string
}

// dumpJob is one pg_dump --data-only run: one table, or every table not
// given an entry of its own (table == "").
type dumpJob struct {
	table   string // quote_ident form, for the entry's record
	pattern string // pg_dump -t pattern matching exactly this table
	size    int64
	entry   string
}

// ParallelDump writes a consistent logical copy of the DSN's database as
// several pg_dump custom-format entries: <db>/pre-data.dump, data entries
// <db>/data-NNNN.dump (the largest tables one each, and one for all the
// rest, sequences and large objects included; started largest first by
// opts.Workers pg_dump processes at once, sent in the order they finish),
// and <db>/post-data.dump (dumped into a 0600 spool file meanwhile); with
// opts.Globals, globals.sql first. Every pg_dump reads the snapshot one
// session exports and holds open for the whole dump, so together they are
// one consistent copy. A worker streams its table into the sink when the
// sink is free, else into a spool file (0600, deleted after) that is sent
// when it is: at most Workers-1 tables wait on disk at once.
func ParallelDump(ctx context.Context, dsn DSN, database string, sink EntryCreator, opts ParallelDumpOptions) (*ParallelDumpResult, error) {
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.TableBytes <= 0 {
		opts.TableBytes = 1 << 20
	}
	if opts.MaxTables <= 0 {
		opts.MaxTables = 16 * opts.Workers
	}
	info, err := Probe(ctx, dsn)
	if info == nil {
		return nil, err
	}
	pgDump, err := findTool("pg_dump", opts.BinDir, info.Major)
	if err != nil {
		return nil, err
	}
	res := &ParallelDumpResult{Info: info, Database: database}
	create := func(e DumpEntry) (io.WriteCloser, error) {
		e.Database = database
		w, err := sink.Create(ctx, e)
		if err == nil {
			res.Entries = append(res.Entries, e.Name)
		}
		return w, err
	}

	if opts.Globals {
		err := DumpGlobals(ctx, dsn, info, opts.BinDir, func() (io.WriteCloser, error) {
			return create(DumpEntry{Name: "globals.sql", Kind: "sql", Section: SectionGlobals})
		})
		if err != nil {
			return nil, err
		}
	}

	// The snapshot's session: open until every pg_dump is done.
	conn, err := connectSQL(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"); err != nil {
		return nil, fmt.Errorf("dump: begin the snapshot's transaction: %w", err)
	}
	var snapshot, lsn string
	if err := conn.QueryRow(ctx, `SELECT pg_export_snapshot(),
		(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text,
		clock_timestamp()`).Scan(&snapshot, &lsn, &res.Time); err != nil {
		return nil, fmt.Errorf("dump: export a snapshot: %w", err)
	}
	if res.LSN, err = ParseLSN(lsn); err != nil {
		return nil, err
	}
	jobs, err := planDumpJobs(func(q string) ([][3]any, error) {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out [][3]any
		for rows.Next() {
			var s, n string
			var size int64
			if err := rows.Scan(&s, &n, &size); err != nil {
				return nil, err
			}
			out = append(out, [3]any{s, n, size})
		}
		return out, rows.Err()
	}, opts)
	if err != nil {
		return nil, err
	}
	for i := range jobs {
		jobs[i].entry = entryPrefix(database) + "/" + jobs[i].entry
	}
	// The tables dumped alone are locked now, as pg_dump would lock them,
	// so none is dropped or altered before its pg_dump reaches it.
	var lock []string
	for _, j := range jobs {
		if j.table != "" {
			lock = append(lock, j.table)
			res.Tables++
		}
	}
	for chunk := range slices.Chunk(lock, 500) {
		if _, err := conn.Exec(ctx, "LOCK TABLE "+strings.Join(chunk, ", ")+" IN ACCESS SHARE MODE"); err != nil {
			return nil, fmt.Errorf("dump: lock the tables: %w", err)
		}
	}

	base := []string{"--snapshot=" + snapshot, "--format=custom", "--compress=0", "--no-password"}
	section := func(name, sec string) error {
		w, err := create(DumpEntry{Name: entryPrefix(database) + "/" + name, Kind: "pg_dump-custom", Section: sec})
		if err != nil {
			return err
		}
		args := append(slices.Clone(base), "--section="+sec)
		if opts.Create {
			args = append(args, "--create")
		}
		if err := runPGTool(ctx, pgDump, dsn, args, nil, w); err != nil {
			return err
		}
		return w.Close()
	}
	// Post-data (definitions only, small) is read into a spool file while
	// pre-data and the data are dumped, and sent last.
	postCtx, stopPost := context.WithCancel(ctx)
	defer stopPost()
	post, err := os.CreateTemp(opts.SpoolDir, "amber-pgdump-post-")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer os.Remove(post.Name())
	defer post.Close()
	postDone := make(chan error, 1)
	go func() {
		postDone <- runPGTool(postCtx, pgDump, dsn, append(slices.Clone(base), "--section="+SectionPostData), nil, post)
	}()
	postWaited := false
	defer func() { // on failure: stop it before its file goes
		if !postWaited {
			stopPost()
			<-postDone
		}
	}()
	if err := section("pre-data.dump", SectionPreData); err != nil {
		return nil, err
	}

	var exclude []string
	for _, j := range jobs {
		if j.table != "" {
			exclude = append(exclude, "--exclude-table-data="+j.pattern)
		}
	}
	// pg_dump --table dumps the table's owned sequences (serial, identity)
	// with it; the rest's pg_dump must not dump them again: sequences are
	// outside the snapshot, so two pg_dumps would read two values and the
	// one a restore kept would depend on the order of the entries.
	owned, err := ownedSequences(ctx, conn, lock)
	if err != nil {
		return nil, err
	}
	for _, seq := range owned {
		exclude = append(exclude, "--exclude-table-data="+seq)
	}
	var sinkMu sync.Mutex
	send := func(ctx context.Context, j dumpJob, fill func(io.Writer) error) error {
		e := DumpEntry{Name: j.entry, Kind: "pg_dump-custom", Section: SectionData, Table: j.table}
		if sinkMu.TryLock() {
			defer sinkMu.Unlock()
			w, err := create(e)
			if err != nil {
				return err
			}
			if err := fill(w); err != nil {
				return err
			}
			return w.Close()
		}
		f, err := os.CreateTemp(opts.SpoolDir, "amber-pgdump-spool-")
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if err := fill(f); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		sinkMu.Lock()
		defer sinkMu.Unlock()
		if err := ctx.Err(); err != nil { // another table failed
			return err
		}
		w, err := create(e)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, f); err != nil {
			return err
		}
		return w.Close()
	}
	dumpData := func(ctx context.Context, j dumpJob) error {
		args := append(slices.Clone(base), "--data-only")
		if j.table != "" {
			args = append(args, "--table="+j.pattern, "--strict-names")
		} else {
			args = append(args, exclude...)
		}
		return send(ctx, j, func(w io.Writer) error { return runPGTool(ctx, pgDump, dsn, args, nil, w) })
	}
	if err := runPool(ctx, opts.Workers, jobs, dumpData); err != nil {
		return nil, err
	}
	postWaited = true
	if err := <-postDone; err != nil {
		return nil, err
	}
	if _, err := post.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	w, err := create(DumpEntry{Name: entryPrefix(database) + "/post-data.dump", Kind: "pg_dump-custom", Section: SectionPostData})
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, post); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return nil, fmt.Errorf("dump: end the snapshot's transaction: %w", err)
	}
	return res, nil
}

// DumpGlobals writes pg_dumpall --globals-only (roles, role memberships
// and settings, tablespaces) into the entry create makes. A role that is
// not superuser cannot read passwords: its dump has none
// (--no-role-passwords).
func DumpGlobals(ctx context.Context, dsn DSN, info *Info, binDir string, create func() (io.WriteCloser, error)) error {
	pgDumpall, err := findTool("pg_dumpall", binDir, info.Major)
	if err != nil {
		return err
	}
	args := []string{"--globals-only", "--no-password"}
	if !info.Superuser {
		args = append(args, "--no-role-passwords")
	}
	w, err := create()
	if err != nil {
		return err
	}
	if err := runPGTool(ctx, pgDumpall, dsn, args, nil, w); err != nil {
		return err
	}
	return w.Close()
}

// planDumpJobs lists the ordinary tables of the snapshot with their sizes
// and plans the data entries: the largest tables (at least TableBytes, at
// most MaxTables of them) one each, the rest together, largest first.
func planDumpJobs(query func(string) ([][3]any, error), opts ParallelDumpOptions) ([]dumpJob, error) {
	rows, err := query(`SELECT n.nspname, c.relname, coalesce(pg_table_size(c.oid), 0)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence <> 't'
			AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
			AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
		ORDER BY 3 DESC, 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("dump: list the tables: %w", err)
	}
	var jobs []dumpJob
	var rest int64
	for _, r := range rows {
		schema, name, size := r[0].(string), r[1].(string), r[2].(int64)
		if size < opts.TableBytes || len(jobs) >= opts.MaxTables {
			rest += size
			continue
		}
		jobs = append(jobs, dumpJob{table: quoteIdent(schema) + "." + quoteIdent(name),
			pattern: dumpPattern(schema, name), size: size})
	}
	jobs = append(jobs, dumpJob{size: rest})
	slices.SortStableFunc(jobs, func(a, b dumpJob) int { return -cmpInt64(a.size, b.size) })
	for i := range jobs {
		jobs[i].entry = fmt.Sprintf("%s%04d.dump", dataEntryPrefix, i+1)
	}
	return jobs, nil
}

// dataEntryPrefix starts the name of a data entry, after "<db>/".
const dataEntryPrefix = "data-"

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ownedSequences lists, as pg_dump patterns, the sequences owned by the
// tables (SQL names), through a serial column or an identity (pg_depend
// deptype 'a' or 'i').
func ownedSequences(ctx context.Context, conn *pgx.Conn, tables []string) ([]string, error) {
	if len(tables) == 0 {
		return nil, nil
	}
	rows, err := conn.Query(ctx, `SELECT n.nspname, s.relname FROM pg_depend d
		JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
		JOIN pg_namespace n ON n.oid = s.relnamespace
		WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
		AND d.deptype IN ('a', 'i') AND d.refobjid = ANY($1::regclass[])`, tables)
	if err != nil {
		return nil, fmt.Errorf("dump: list the owned sequences: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var schema, name string
		if err := rows.Scan(&schema, &name); err != nil {
			return nil, err
		}
		out = append(out, dumpPattern(schema, name))
	}
	return out, rows.Err()
}

// dumpPattern is a pg_dump --table pattern that matches exactly
// schema.name: inside double quotes every character is literal.
func dumpPattern(schema, name string) string { return quoteIdent(schema) + "." + quoteIdent(name) }

// runPool runs do for each job on workers goroutines, in order of the
// jobs; the first error cancels the rest and is returned.
func runPool[J any](ctx context.Context, workers int, jobs []J, do func(context.Context, J) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan J)
	errc := make(chan error, workers)
	for range workers {
		go func() {
			var first error
			for j := range next {
				if first != nil {
					continue
				}
				if err := do(ctx, j); err != nil {
					first = err
					cancel()
				}
			}
			errc <- first
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case next <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	var firstErr error
	for range workers {
		if err := <-errc; err != nil && (firstErr == nil || errors.Is(firstErr, context.Canceled)) {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}
