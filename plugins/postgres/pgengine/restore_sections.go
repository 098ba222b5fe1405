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
	"strconv"
	"strings"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/internal/spool"
)

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
	// SplitBytes: a table's data entry of at least this many bytes is
	// loaded by Workers sessions at once (splitLoad); 0 means
	// DefaultSplitLoadBytes, a negative value never.
	SplitBytes int64
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
	// Streamed counts the single-entry dumps loaded in parallel as they
	// streamed (streamRestore) rather than by one pg_restore.
	Streamed int
	Bytes    int64
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
	if opts.SplitBytes == 0 {
		opts.SplitBytes = DefaultSplitLoadBytes
	}
	info, err := Probe(ctx, dsn)
	if info == nil {
		return st, err
	}
	pgRestore, err := findTool("pg_restore", opts.BinDir, info.Major)
	if err != nil {
		return st, err
	}
	psql := "" // for what follows a split table's rows (splitLoad)
	if opts.Workers > 1 && opts.SplitBytes > 0 {
		if psql, err = findTool("psql", opts.BinDir, info.Major); err != nil {
			return st, err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	target := func(e DumpEntry) DSN {
		if opts.Databases && e.Database != "" {
			return WithDatabase(dsn, e.Database)
		}
		return dsn
	}
	var pool *spool.Pool
	fail := func(err error) (RestoreStats, error) {
		cancel()
		if pool != nil {
			if perr := pool.Close(); perr != nil && !errors.Is(perr, context.Canceled) {
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
				pool = spool.New(ctx, cancel, opts.Workers, opts.SpoolDir, "amber-pgrestore-data-",
					func(context.Context) (spool.Worker, error) { return dataSession{pgRestore, psql, opts.Workers}, nil })
			}
			// A table's entry is loaded as it is spooled; the entry of the
			// rest (large objects to leave out) once it is whole.
			// A large table's entry is loaded by several sessions at once.
			split := e.Table != "" && opts.SplitBytes > 0 && e.Size >= opts.SplitBytes
			_, err := pool.Submit(ctx, spool.Entry{Name: e.Name, Meta: dataTarget{target(e), split}}, cr, e.Table != "")
			st.Bytes += cr.n
			st.DataEntries++
			if err != nil {
				return fail(err)
			}
			continue
		}
		if pool != nil {
			if err := pool.Wait(); err != nil {
				return fail(err)
			}
		}
		switch e.Section {
		case "":
			var streamed bool
			if streamed, err = restoreSingle(ctx, pgRestore, dsn, e, cr, opts); streamed {
				st.Streamed++
			}
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
			err = restorePreData(ctx, pgRestore, dsn, e, cr.streamed(e), opts)
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
		if err := pool.Close(); err != nil {
			return fail(err)
		}
	}
	return st, nil
}

// restoreSingle restores a single-entry dump: in parallel as it streams
// (streamRestore) when it is at least opts.SplitBytes large and nothing
// asks for pg_restore's own way (workers 1, clean, extra arguments), else,
// or when the archive is not one streamRestore reads, by one pg_restore
// --single-transaction reading the stream.
func restoreSingle(ctx context.Context, pgRestore string, dsn DSN, e DumpEntry, cr *countingReader, opts SectionedRestoreOptions) (streamed bool, err error) {
	if opts.Workers <= 1 || opts.SplitBytes <= 0 || e.Size < opts.SplitBytes || opts.Clean || len(opts.ExtraArgs) > 0 {
		return false, LogicalRestore(ctx, dsn, cr.streamed(e), opts.LogicalRestoreOptions)
	}
	rest, err := streamRestore(ctx, pgRestore, dsn, cr, e.Size, opts)
	if rest != nil {
		return false, LogicalRestore(ctx, dsn, rest, opts.LogicalRestoreOptions)
	}
	return true, err
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
	return writeSpool(filepath.Dir(path), "amber-pgrestore-list-", kept.Bytes())
}

// withSpool copies r into a 0600 file in dir, runs do on it and removes it.
func withSpool(ctx context.Context, dir string, r io.Reader, do func(path string) error) error {
	f, err := os.CreateTemp(dir, "amber-pgrestore-data-")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, spool.WithContext(ctx, r))
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
	_, err = io.Copy(f, spool.WithContext(ctx, r))
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
	cmd, done, err := toolCommand(ctx, psql, []string{"--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=0", "--file=-", "--dbname=" + conn}, password)
	if err != nil {
		return err
	}
	defer done()
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

// dataSession loads data entries with pg_restore, one session each
// (spool.Worker), or a large table's with several (splitLoad); an entry's
// Meta is a dataTarget.
type dataSession struct {
	pgRestore, psql string
	workers         int
}

// dataTarget is where a data entry goes, and whether it is loaded by
// several sessions.
type dataTarget struct {
	dsn   DSN
	split bool
}

func (d dataSession) Load(ctx context.Context, e spool.Entry, f *spool.File) error {
	t := e.Meta.(dataTarget)
	dsn := t.dsn
	var err error
	if t.split {
		var r io.ReadCloser
		if r, err = f.Open(); err == nil {
			err = splitLoad(ctx, d.pgRestore, d.psql, dsn, r, d.workers)
			r.Close()
		}
		if errors.Is(err, errNotSplit) {
			// Nothing was loaded: the entry goes through pg_restore.
			t.split = false
			e.Meta = t
			return d.Load(ctx, e, f)
		}
	} else if f.Whole() {
		err = restoreData(ctx, d.pgRestore, dsn, f.Path)
	} else {
		var r io.ReadCloser
		if r, err = f.Open(); err == nil {
			err = runPGTool(ctx, d.pgRestore, dsn, []string{"--exit-on-error", "--no-password", "--data-only", "--single-transaction"}, r, io.Discard)
			r.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", e.Name, err)
	}
	return nil
}

func (dataSession) End(bool) error { return nil }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// streamed is what a pg_restore reading entry e on its stdin is given: the
// entry's pipe itself when it came through one (api.PipeFile), so its bytes
// go from the host to pg_restore without a copy through this process, and
// count as the size the host sent; else c.
func (c *countingReader) streamed(e DumpEntry) io.Reader {
	if _, ok := c.r.(api.PipeFile); ok && e.Size >= 0 {
		c.n = e.Size
		return c.r
	}
	return c
}
