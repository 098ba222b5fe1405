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
	"sync"
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
				pool = newRestorePool(ctx, cancel, opts.Workers, opts.SpoolDir, func(ctx context.Context, j spooled) error {
					if j.follow == nil {
						return restoreData(ctx, pgRestore, j.dsn, j.path)
					}
					f, err := os.Open(j.path)
					if err != nil {
						return err
					}
					defer f.Close()
					return runPGTool(ctx, pgRestore, j.dsn, []string{"--exit-on-error", "--no-password", "--data-only", "--single-transaction"},
						&followReader{f: f, g: j.follow}, io.Discard)
				})
			}
			// A table's entry is loaded as it is spooled; the entry of the
			// rest (large objects to leave out) once it is whole.
			err := pool.submit(ctx, e.Name, target(e), cr, e.Table != "")
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
	follow     *growing // set when the file is still being written
}

func newRestorePool(ctx context.Context, cancel context.CancelFunc, workers int, dir string, load func(ctx context.Context, j spooled) error) *restorePool {
	p := &restorePool{dir: dir, jobs: make(chan spooled, workers), cancel: cancel}
	for range workers {
		p.done.Add(1)
		go func() {
			defer p.done.Done()
			for j := range p.jobs {
				if p.failed() == nil && ctx.Err() == nil {
					if err := load(ctx, j); err != nil {
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
// the sessions. With follow, the entry is queued first and a session
// loads it while it is being written (followReader).
func (p *restorePool) submit(ctx context.Context, name string, dsn DSN, r io.Reader, follow bool) error {
	if err := p.failed(); err != nil {
		return err
	}
	f, err := os.CreateTemp(p.dir, "amber-pgrestore-data-")
	if err != nil {
		return fmt.Errorf("spool %s: %w", name, err)
	}
	queue := func(g *growing) error {
		p.pending.Add(1)
		select {
		case p.jobs <- spooled{name: name, path: f.Name(), dsn: dsn, follow: g}:
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
	var g *growing
	var w io.Writer = f
	if follow {
		g = newGrowing()
		if err := queue(g); err != nil {
			f.Close()
			return err
		}
		w = growingWriter{f, g}
	}
	_, err = io.Copy(w, ctxReader{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		err = fmt.Errorf("spool %s: %w", name, err)
		if perr := p.failed(); perr != nil {
			err = perr
		}
	}
	if follow {
		g.finish(err) // the session removes the file
		return err
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	return queue(nil)
}

// growing is the state of a spool file being written: how much is
// written, and whether (and how) writing ended.
type growing struct {
	mu      sync.Mutex
	cond    *sync.Cond
	written int64
	done    bool
	err     error
}

func newGrowing() *growing {
	g := &growing{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *growing) add(n int) {
	g.mu.Lock()
	g.written += int64(n)
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *growing) finish(err error) {
	g.mu.Lock()
	g.done, g.err = true, err
	g.mu.Unlock()
	g.cond.Broadcast()
}

// growingWriter writes to the spool file and tells its readers.
type growingWriter struct {
	f *os.File
	g *growing
}

func (w growingWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.g.add(n)
	return n, err
}

// followReader reads a spool file while it is written, up to what is
// written, until writing ends (then io.EOF, or the writer's error).
type followReader struct {
	f   *os.File
	g   *growing
	off int64
}

func (r *followReader) Read(b []byte) (int, error) {
	r.g.mu.Lock()
	for r.off >= r.g.written && !r.g.done {
		r.g.cond.Wait()
	}
	avail, done, werr := r.g.written-r.off, r.g.done, r.g.err
	r.g.mu.Unlock()
	if avail <= 0 {
		if done && werr != nil {
			return 0, werr
		}
		return 0, io.EOF
	}
	n, err := r.f.ReadAt(b[:min(int64(len(b)), avail)], r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
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
