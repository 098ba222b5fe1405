package pgengine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
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

// SectionedRestoreOptions tune RestoreSections.
type SectionedRestoreOptions struct {
	LogicalRestoreOptions
	// Workers is how many pg_restore sessions load data entries at once,
	// and the -j of the post-data restore; default 2.
	Workers int
	// SpoolDir is where a data entry waits for a free session, and the
	// post-data entry for its parallel restore; default os.TempDir().
	SpoolDir string
	// SkipGlobals leaves out the globals entry.
	SkipGlobals bool
	// Databases: the dump holds several databases (ParallelDumpOptions.Create).
	// Each entry goes to the database it names on the DSN's server; a
	// database that does not exist is created by its pre-data entry
	// (pg_restore --create), one that exists is restored into.
	Databases bool
}

// NextDumpEntry returns the next entry of a dump and its bytes, or io.EOF.
type NextDumpEntry func(ctx context.Context) (DumpEntry, io.Reader, error)

// RestoreStats counts what a restore loaded.
type RestoreStats struct {
	Entries, DataEntries int
	Bytes                int64
}

// RestoreSections loads a dump's entries into the DSN's database. An entry
// without a section (a whole pg_dump custom-format dump, as LogicalDump
// writes) is restored by LogicalRestore. Of a sectioned dump, globals.sql
// runs through psql (roles and tablespaces that exist already are kept;
// the statements about the role the restore logs in as are left out, so
// its password stays), pre-data through one pg_restore in one
// transaction, the data entries through opts.Workers pg_restore sessions
// at once (each entry in its own transaction, spooled to a 0600 file until
// a session is free), and post-data, spooled, by pg_restore -j Workers
// once every data entry is in. The first error stops everything.
func RestoreSections(ctx context.Context, dsn DSN, next NextDumpEntry, opts SectionedRestoreOptions) (RestoreStats, error) {
	var st RestoreStats
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	info, err := Probe(ctx, dsn)
	if info == nil {
		return st, err
	}
	pgRestore, err := findTool("pg_restore", opts.BinDir, info.Major)
	if err != nil {
		return st, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	target := func(e DumpEntry) DSN {
		if opts.Databases && e.Database != "" {
			return WithDatabase(dsn, e.Database)
		}
		return dsn
	}
	var pool *restorePool
	fail := func(err error) (RestoreStats, error) {
		cancel()
		if pool != nil {
			if perr := pool.close(); perr != nil && !errors.Is(perr, context.Canceled) {
				err = perr
			}
		}
		return st, err
	}
	for {
		e, r, err := next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(err)
		}
		st.Entries++
		cr := &countingReader{r: r}
		if e.Section == SectionData && opts.Workers > 1 {
			if pool == nil {
				pool = newRestorePool(ctx, cancel, opts.Workers, opts.SpoolDir, func(ctx context.Context, path string, dsn DSN) error {
					return restoreData(ctx, pgRestore, dsn, path)
				})
			}
			err := pool.submit(ctx, e.Name, target(e), cr)
			st.Bytes += cr.n
			st.DataEntries++
			if err != nil {
				return fail(err)
			}
			continue
		}
		if pool != nil {
			if err := pool.wait(); err != nil {
				return fail(err)
			}
		}
		switch e.Section {
		case "":
			err = LogicalRestore(ctx, dsn, cr, opts.LogicalRestoreOptions)
		case SectionGlobals:
			if opts.SkipGlobals {
				_, err = io.Copy(io.Discard, cr)
				break
			}
			err = restoreGlobals(ctx, dsn, info, opts.BinDir, cr)
		case SectionPreData:
			if opts.Clean {
				err = errors.New("option clean is not supported for a backup of several entries (taken with workers); restore into an empty database")
				break
			}
			err = restorePreData(ctx, pgRestore, dsn, e, cr, opts)
		case SectionData:
			st.DataEntries++
			err = withSpool(ctx, opts.SpoolDir, cr, func(path string) error { return restoreData(ctx, pgRestore, target(e), path) })
		case SectionPostData:
			err = restorePostData(ctx, pgRestore, target(e), cr, opts)
		default:
			err = fmt.Errorf("unknown section %q", e.Section)
		}
		st.Bytes += cr.n
		if err != nil {
			return fail(fmt.Errorf("restore %s: %w", e.Name, err))
		}
	}
	if pool != nil {
		if err := pool.close(); err != nil {
			return fail(err)
		}
	}
	return st, nil
}

// restorePreData restores a pre-data entry in one transaction, into the
// DSN's database or, for a dump of several databases, into the entry's,
// created first by pg_restore --create (connected to the DSN's database)
// when it does not exist.
func restorePreData(ctx context.Context, bin string, dsn DSN, e DumpEntry, r io.Reader, opts SectionedRestoreOptions) error {
	args := restoreArgs(opts.LogicalRestoreOptions)
	if !opts.Databases || e.Database == "" {
		return runPGTool(ctx, bin, dsn, append(args, "--single-transaction"), r, io.Discard)
	}
	exists, err := DatabaseExists(ctx, dsn, e.Database)
	if err != nil {
		return err
	}
	if exists {
		return runPGTool(ctx, bin, WithDatabase(dsn, e.Database), append(args, "--single-transaction"), r, io.Discard)
	}
	return runPGTool(ctx, bin, dsn, append(args, "--create"), r, io.Discard)
}

func restoreArgs(o LogicalRestoreOptions) []string {
	args := []string{"--exit-on-error", "--no-password"}
	if o.NoOwner {
		args = append(args, "--no-owner")
	}
	if o.NoPrivileges {
		args = append(args, "--no-privileges")
	}
	return append(args, o.ExtraArgs...)
}

// restoreData loads one data entry from the file at path, in one
// transaction. Large objects are created by pre-data (with their owners,
// privileges and comments) and only filled here: the BLOB entries that
// pg_dump --data-only adds to the entry of the rest are left out.
func restoreData(ctx context.Context, bin string, dsn DSN, path string) error {
	args := []string{"--exit-on-error", "--no-password", "--data-only", "--single-transaction"}
	list, err := withoutBlobDefs(ctx, bin, path)
	if err != nil {
		return err
	}
	if list != "" {
		defer os.Remove(list)
		args = append(args, "--use-list="+list)
	}
	return runPGTool(ctx, bin, dsn, append(args, path), nil, io.Discard)
}

// withoutBlobDefs returns the path of a pg_restore list of the archive at
// path without its BLOB (large object definition) entries, or "" when it
// has none.
func withoutBlobDefs(ctx context.Context, bin, path string) (string, error) {
	var out bytes.Buffer
	if err := runTool(ctx, bin, []string{"--list", path}, nil, &out); err != nil {
		return "", err
	}
	var kept bytes.Buffer
	dropped := false
	for _, line := range strings.SplitAfter(out.String(), "\n") {
		if f := strings.Fields(line); len(f) > 3 && !strings.HasPrefix(line, ";") && f[3] == "BLOB" {
			dropped = true
			continue
		}
		kept.WriteString(line)
	}
	if !dropped {
		return "", nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "amber-pgrestore-list-")
	if err != nil {
		return "", err
	}
	_, err = f.Write(kept.Bytes())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// withSpool copies r into a 0600 file in dir, runs do on it and removes it.
func withSpool(ctx context.Context, dir string, r io.Reader, do func(path string) error) error {
	f, err := os.CreateTemp(dir, "amber-pgrestore-data-")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, ctxReader{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return do(f.Name())
}

// runTool runs a client tool that needs no server (pg_restore --list,
// pg_restore --file).
func runTool(ctx context.Context, bin string, args []string, stdin io.Reader, stdout io.Writer) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = toolEnv("")
	cmd.Stdin = stdin
	cmd.Stdout = stdout
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{buf: &stderr, max: 16 << 10}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", filepath.Base(bin), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// restorePostData spools the post-data entry (indexes, constraints,
// triggers: definitions only, small) and restores it with pg_restore -j,
// which builds indexes in parallel; with one worker it streams it in one
// transaction.
func restorePostData(ctx context.Context, bin string, dsn DSN, r io.Reader, opts SectionedRestoreOptions) error {
	args := restoreArgs(opts.LogicalRestoreOptions)
	if opts.Workers <= 1 {
		return runPGTool(ctx, bin, dsn, append(args, "--single-transaction"), r, io.Discard)
	}
	f, err := os.CreateTemp(opts.SpoolDir, "amber-pgrestore-post-")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, ctxReader{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return runPGTool(ctx, bin, dsn, append(args, "--jobs="+strconv.Itoa(opts.Workers), f.Name()), nil, io.Discard)
}

// restoreGlobals runs pg_dumpall's globals script through psql. CREATE
// ROLE and CREATE TABLESPACE of what exists already fail, which is
// expected and ignored; any other error fails the restore. The lines
// about the role psql logs in as are left out (pg_dumpall writes one
// statement a line), so its attributes and password stay the target's.
func restoreGlobals(ctx context.Context, dsn DSN, info *Info, binDir string, r io.Reader) error {
	psql, err := findTool("psql", binDir, info.Major)
	if err != nil {
		return err
	}
	script := filterOwnRole(r, info.User)
	conn, password := splitPassword(string(dsn))
	cmd := exec.CommandContext(ctx, psql, "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=0", "--file=-", "--dbname="+conn)
	cmd.Env = toolEnv(password)
	cmd.Stdin = script
	cmd.Stdout = io.Discard
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{buf: &stderr, max: 1 << 20}
	runErr := cmd.Run()
	var bad []string
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, "ERROR:") && !strings.Contains(line, "already exists") {
			bad = append(bad, strings.TrimSpace(line))
		}
	}
	if runErr != nil || len(bad) > 0 {
		msg := strings.Join(bad, "; ")
		if runErr != nil {
			msg = strings.TrimSpace(stderr.String())
		}
		if password != "" {
			msg = strings.ReplaceAll(msg, password, "***")
		}
		return fmt.Errorf("psql on %s: restore roles and tablespaces: %s (restore with --option globals=false to leave them out)", dsn, msg)
	}
	return nil
}

// filterOwnRole drops pg_dumpall's CREATE ROLE and ALTER ROLE ... WITH
// lines of role (quoted or not).
func filterOwnRole(r io.Reader, role string) io.Reader {
	pr, pw := io.Pipe()
	names := []string{quoteIdent(role)}
	if role == strings.ToLower(role) && strings.Trim(role, "abcdefghijklmnopqrstuvwxyz0123456789_") == "" {
		names = append(names, role)
	}
	skip := func(line string) bool {
		for _, n := range names {
			if line == "CREATE ROLE "+n+";" || strings.HasPrefix(line, "ALTER ROLE "+n+" WITH ") {
				return true
			}
		}
		return false
	}
	go func() {
		br := bufio.NewReaderSize(r, 64<<10)
		bw := bufio.NewWriterSize(pw, 64<<10)
		for {
			line, err := br.ReadString('\n')
			if line != "" && !skip(strings.TrimRight(line, "\n")) {
				if _, werr := bw.WriteString(line); werr != nil {
					pw.CloseWithError(werr)
					return
				}
			}
			if err == io.EOF {
				pw.CloseWithError(bw.Flush())
				return
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
	}()
	return pr
}

// ExportSQL writes a dump's entries to w as one SQL script that psql
// loads: each pg_dump custom-format entry converted by pg_restore --file=-
// (no server involved), SQL entries as they are, in order. The data entry
// of the rest is spooled to a 0600 file in spoolDir to leave out the large
// object definitions pre-data already holds.
func ExportSQL(ctx context.Context, next NextDumpEntry, w io.Writer, binDir, spoolDir string, create bool) error {
	var pgRestore string
	for {
		e, r, err := next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if e.Kind == "sql" {
			if _, err := io.Copy(w, r); err != nil {
				return fmt.Errorf("export %s: %w", e.Name, err)
			}
			continue
		}
		if pgRestore == "" {
			if pgRestore, err = anyTool("pg_restore", binDir); err != nil {
				return err
			}
		}
		convert := func(path string) error {
			args := []string{"--file=-"}
			if create && e.Section == SectionPreData {
				// CREATE DATABASE and \connect to it: the entries of
				// this database that follow load there.
				args = append(args, "--create")
			}
			if path == "" {
				return runTool(ctx, pgRestore, args, r, w)
			}
			list, err := withoutBlobDefs(ctx, pgRestore, path)
			if err != nil {
				return err
			}
			if list != "" {
				defer os.Remove(list)
				args = append(args, "--use-list="+list)
			}
			return runTool(ctx, pgRestore, append(args, path), nil, w)
		}
		if e.Section == SectionData && e.Table == "" {
			// The entry of the rest may hold large objects, defined by
			// pre-data already: pg_restore --list needs a file.
			err = withSpool(ctx, spoolDir, r, convert)
		} else {
			err = convert("")
		}
		if err != nil {
			return fmt.Errorf("export %s: %w", e.Name, err)
		}
	}
}

// anyTool finds the newest installed client tool (pg_restore of any major
// reads dumps of its own and older majors).
func anyTool(name, binDir string) (string, error) {
	if binDir != "" {
		return findTool(name, binDir, 0)
	}
	matches, _ := filepath.Glob(filepath.Join("/usr/lib/postgresql", "*", "bin", name))
	best, bestMajor := "", -1
	for _, m := range matches {
		major, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m))))
		if err == nil && major > bestMajor {
			best, bestMajor = m, major
		}
	}
	if best != "" {
		return best, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found in /usr/lib/postgresql/*/bin or on PATH; install the PostgreSQL client", name)
}

// ctxReader fails once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// restorePool is the sessions that load data entries, each from its spool
// file.
type restorePool struct {
	dir     string
	jobs    chan spooled
	pending sync.WaitGroup // entries submitted and not yet loaded
	done    sync.WaitGroup // the sessions
	cancel  context.CancelFunc
	closed  sync.Once

	mu  sync.Mutex
	err error // the first failure
}

type spooled struct {
	name, path string
	dsn        DSN
}

func newRestorePool(ctx context.Context, cancel context.CancelFunc, workers int, dir string, load func(ctx context.Context, path string, dsn DSN) error) *restorePool {
	p := &restorePool{dir: dir, jobs: make(chan spooled, workers), cancel: cancel}
	for range workers {
		p.done.Add(1)
		go func() {
			defer p.done.Done()
			for j := range p.jobs {
				if p.failed() == nil && ctx.Err() == nil {
					if err := load(ctx, j.path, j.dsn); err != nil {
						p.fail(fmt.Errorf("restore %s: %w", j.name, err))
					}
				}
				os.Remove(j.path)
				p.pending.Done()
			}
		}()
	}
	return p
}

func (p *restorePool) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.cancel()
}

func (p *restorePool) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// submit spools an entry and queues it; it waits while every session is
// busy and the queue is full, which bounds the spooled entries to twice
// the sessions.
func (p *restorePool) submit(ctx context.Context, name string, dsn DSN, r io.Reader) error {
	if err := p.failed(); err != nil {
		return err
	}
	f, err := os.CreateTemp(p.dir, "amber-pgrestore-data-")
	if err != nil {
		return fmt.Errorf("spool %s: %w", name, err)
	}
	_, err = io.Copy(f, ctxReader{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		if perr := p.failed(); perr != nil {
			return perr
		}
		return fmt.Errorf("spool %s: %w", name, err)
	}
	p.pending.Add(1)
	select {
	case p.jobs <- spooled{name: name, path: f.Name(), dsn: dsn}:
		return nil
	case <-ctx.Done():
		p.pending.Done()
		os.Remove(f.Name())
		if err := p.failed(); err != nil {
			return err
		}
		return ctx.Err()
	}
}

// wait returns when every entry submitted is loaded, or the first failure.
func (p *restorePool) wait() error {
	p.pending.Wait()
	return p.failed()
}

// close ends the sessions and returns the first failure.
func (p *restorePool) close() error {
	p.closed.Do(func() { close(p.jobs) })
	p.done.Wait()
	return p.failed()
}
