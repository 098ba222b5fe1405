package pgengine

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// maxArchiveHead bounds the header and TOC that streamRestore keeps in
// memory (a TOC is about a kilobyte per object: this is tens of thousands
// of tables); a larger one is restored by pg_restore on the stream.
const maxArchiveHead = 64 << 20

// streamRestore loads a single-entry dump (the uncompressed custom-format
// archive LogicalDump writes) in parallel, reading the stream once: the
// archive's header and TOC, which come first, are written to a 0600 file
// in opts.SpoolDir (definitions only, no data) that pg_restore restores
// pre-data from, in one transaction; the table data that follows is read
// here and its COPY rows, cut into blocks of whole rows, are loaded by
// opts.Workers sessions at once, a large table by all of them together;
// then pg_restore restores the rest of the data section (sequence values)
// and, with --jobs, post-data (indexes, constraints) from the file. This is
// what pg_restore -j does with a seekable file, which a stream is not.
//
// Each session loads everything it is given in one transaction, which it
// commits only once every row is sent and every session has succeeded: a
// failure of any (or a stream cut short) leaves no row, though pre-data
// has been restored.
//
// An archive this does not read (another version, compressed data, large
// objects, a TOC over maxArchiveHead) is returned as rest, whole, before
// anything is loaded: the caller gives it to pg_restore instead.
func streamRestore(ctx context.Context, pgRestore string, dsn DSN, r *countingReader, size int64, opts SectionedRestoreOptions) (rest io.Reader, nBuilt int, err error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, raw, err := readArchiveHead(br, maxArchiveHead)
	if errors.Is(err, errArchiveShape) {
		return io.MultiReader(bytes.NewReader(raw), br), 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read the dump's table of contents: %w", unexpectedEOF(err))
	}
	tables := map[int]string{} // dump ID of a TABLE DATA entry: its COPY statement
	var dataDefs []int         // data-section entries without a block (sequence values)
	sections := make(map[int]int, len(head.entries))
	section := sectionPreData
	for _, e := range head.entries {
		if e.section != sectionNone {
			section = e.section // pg_restore files an entry of no section under the one before
		}
		sections[e.dumpID] = section
		switch {
		case e.hadDumper && e.desc == "TABLE DATA" && copyFromStdin.MatchString(e.copyStmt):
			tables[e.dumpID] = strings.TrimSuffix(e.copyStmt, ";\n")
		case e.hadDumper: // large objects, INSERT-style data
			return io.MultiReader(bytes.NewReader(raw), br), 0, nil
		case section == sectionData:
			dataDefs = append(dataDefs, e.dumpID)
		}
	}
	early := earlyPostData(head.entries, sections, tables)

	toc, err := writeSpool(opts.SpoolDir, "amber-pgrestore-toc-", raw)
	if err != nil {
		return nil, 0, err
	}
	defer os.Remove(toc)
	// The session settings pg_restore starts every session with
	// (encoding, standard_conforming_strings, search_path...), from the
	// script of an empty selection of the archive.
	var preamble bytes.Buffer
	if err := runTool(ctx, pgRestore, []string{"--file=-", "--use-list=" + os.DevNull, toc}, nil, &preamble); err != nil {
		return nil, 0, err
	}
	var settings strings.Builder
	for _, line := range strings.SplitAfter(preamble.String(), "\n") {
		switch {
		case line == "", line == "\n", strings.HasPrefix(line, "--"), restrictKey.MatchString(line):
		case sessionSetting.MatchString(line):
			settings.WriteString(line)
		default:
			return io.MultiReader(bytes.NewReader(raw), br), 0, nil
		}
	}

	args := slices.Clip(restoreArgs(opts.LogicalRestoreOptions)) // appended to by goroutines
	if err := runPGTool(ctx, pgRestore, dsn, append(args, "--section=pre-data", "--single-transaction", toc), nil, io.Discard); err != nil {
		return nil, 0, fmt.Errorf("pre-data: %w", err)
	}
	// From here on a failure leaves the schema in the database.
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w (the database now holds the backup's schema, and the rows of the tables loaded before the failure: drop and create the database before restoring again; --option restore_workers=1 restores in one transaction instead)", err)
		}
	}()
	a := &archiveReader{br: br, intSize: head.intSize}
	// The last rows are committed only once the whole entry has come: a
	// stream that ends early, even between two tables' data, loads nothing
	// after the last table whose indexes were built early.
	whole := func() error {
		if r.n != size {
			return fmt.Errorf("the dump ended after %d of its %d bytes: %w", r.n, size, io.ErrUnexpectedEOF)
		}
		return nil
	}
	// writeList writes a --use-list file of the entries ids.
	writeList := func(ids []int) (string, error) {
		var list strings.Builder
		for _, id := range ids {
			fmt.Fprintf(&list, "%d;\n", id)
		}
		return writeSpool(opts.SpoolDir, "amber-pgrestore-list-", []byte(list.String()))
	}
	// runList restores the post-data entries ids from the TOC file.
	runList := func(ctx context.Context, ids []int, more ...string) error {
		path, err := writeList(ids)
		if err != nil {
			return err
		}
		defer os.Remove(path)
		a := append(args, "--section=post-data", "--use-list="+path)
		return runPGTool(ctx, pgRestore, dsn, append(append(a, more...), toc), nil, io.Discard)
	}
	// The indexes and keys of a large table are built as soon as its rows
	// are committed, while later tables load, as pg_restore -j does from a
	// file: one build at a time while rows load (the sessions loading them
	// take the cores), up to opts.Workers once they are loaded.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	ready := make(chan int, len(early)) // TABLE DATA dump IDs whose rows are committed
	loaded := make(chan struct{})
	var (
		mu    sync.Mutex
		built = map[int]bool{}
	)
	for i := range opts.Workers {
		g.Go(func() error {
			if i > 0 {
				select {
				case <-loaded:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			for id := range ready {
				if err := runList(gctx, early[id], "--single-transaction"); err != nil {
					return fmt.Errorf("indexes and keys of %s: %w", tables[id], err)
				}
				mu.Lock()
				for _, e := range early[id] {
					built[e] = true
				}
				mu.Unlock()
			}
			return nil
		})
	}
	least := cmp.Or(opts.earlyBytes, earlyPostDataBytes)
	load := tableLoad{
		tables: tables,
		commitAfter: func(id int, n int64) bool {
			return n >= least && len(early[id]) > 0
		},
		committed: func(id int) { ready <- id },
	}
	err = loadTableData(gctx, dsn, settings.String(), a, load, opts.Workers, whole)
	if err != nil {
		cancel() // no more builds
	}
	close(loaded)
	close(ready)
	// A build's failure stops the load with context.Canceled: report the
	// build's error then, else the load's.
	if gerr := g.Wait(); err == nil || gerr != nil && errors.Is(err, context.Canceled) && !errors.Is(gerr, context.Canceled) {
		err = gerr
	}
	if err != nil {
		return nil, 0, err
	}
	if len(dataDefs) > 0 {
		path, werr := writeList(dataDefs)
		if werr != nil {
			return nil, 0, werr
		}
		defer os.Remove(path)
		if err = runPGTool(ctx, pgRestore, dsn, append(args, "--section=data", "--use-list="+path, "--single-transaction", toc), nil, io.Discard); err != nil {
			return nil, 0, fmt.Errorf("sequence values: %w", err)
		}
	}
	jobs := "--jobs=" + strconv.Itoa(opts.Workers)
	if len(built) == 0 {
		err = runPGTool(ctx, pgRestore, dsn, append(args, "--section=post-data", jobs, toc), nil, io.Discard)
	} else {
		var rest []int
		for _, e := range head.entries {
			if !built[e.dumpID] {
				rest = append(rest, e.dumpID)
			}
		}
		err = runList(ctx, rest, jobs)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("post-data: %w", err)
	}
	return nil, len(built), nil
}

// earlyPostDataBytes is the least a table's rows take in the dump for its
// indexes and keys to be built while later tables load (it costs a commit
// of every session and a pg_restore run).
const earlyPostDataBytes = 32 << 20

// earlyPostData finds the post-data entries that can be restored as soon as
// one table's rows are committed: indexes and constraints other than
// foreign keys that depend on that table and on pre-data entries only. It
// maps the TABLE DATA dump ID of the table to them, in TOC order.
func earlyPostData(entries []tocEntry, sections map[int]int, tables map[int]string) map[int][]int {
	dataOf := map[int]int{} // a table's dump ID: its TABLE DATA entry's
	for _, e := range entries {
		if _, ok := tables[e.dumpID]; ok && len(e.deps) == 1 {
			dataOf[e.deps[0]] = e.dumpID
		}
	}
	early := map[int][]int{}
next:
	for _, e := range entries {
		if sections[e.dumpID] != sectionPostData || e.desc != "INDEX" && e.desc != "CONSTRAINT" {
			continue
		}
		data := 0
		for _, d := range e.deps {
			if id, ok := dataOf[d]; ok && (data == 0 || data == id) {
				data = id
			} else if ok || sections[d] != sectionPreData {
				continue next
			}
		}
		if data != 0 {
			early[data] = append(early[data], e.dumpID)
		}
	}
	return early
}

// writeSpool writes b to a new 0600 file in dir and returns its path.
func writeSpool(dir, prefix string, b []byte) (string, error) {
	f, err := os.CreateTemp(dir, prefix)
	if err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("spool: %w", err)
	}
	return f.Name(), nil
}

// rowsBlock is a block of whole COPY rows of one table, or a gate every
// session passes after committing what it loaded.
type rowsBlock struct {
	copyStmt string
	rows     []byte
	gate     *commitGate
}

// commitGate holds each session that reaches it, once it has committed,
// until every session has: each takes one of the gate's blocks. The last
// to arrive calls then before it opens the gate.
type commitGate struct {
	mu   sync.Mutex
	left int
	open chan struct{}
	then func()
}

func (g *commitGate) pass(ctx context.Context) error {
	g.mu.Lock()
	g.left--
	last := g.left == 0
	g.mu.Unlock()
	if last {
		g.then()
		close(g.open)
		return nil
	}
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tableLoad is what loadTableData loads and when it commits.
type tableLoad struct {
	tables map[int]string // dump ID of a TABLE DATA entry: its COPY statement
	// commitAfter says whether the rows loaded so far are committed once
	// the table id's are (n bytes), before a block of the next; committed
	// is called with id once they are. The rows of the last table commit
	// at the end.
	commitAfter func(id int, n int64) bool
	committed   func(id int)
}

// loadTableData reads the archive's data blocks (each the COPY rows of a
// table in load.tables, in chunks) and has workers sessions load them, in
// blocks of about splitBlock bytes of whole rows, each session in one
// transaction committed where load.commitAfter says and at the end, once
// every block is loaded and whole says the stream was complete.
func loadTableData(ctx context.Context, dsn DSN, settings string, a *archiveReader, load tableLoad, workers int, whole func() error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sessions := make([]*rowsSession, workers)
	defer func() {
		for _, s := range sessions {
			if s != nil {
				s.conn.Close(context.WithoutCancel(ctx)) // rolls back what was not committed
			}
		}
	}()
	// Every session is connected, set up and inside its transaction before
	// the first block is cut.
	var open errgroup.Group
	for i := range sessions {
		open.Go(func() (err error) {
			sessions[i], err = openRowsSession(ctx, dsn, settings+"BEGIN;")
			return err
		})
	}
	if err := open.Wait(); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	blocks := make(chan rowsBlock, workers)
	free := &sync.Pool{New: func() any { return make([]byte, 0, splitBlock) }}
	for _, s := range sessions {
		g.Go(func() error { return s.load(gctx, blocks, free) })
	}
	err := cutTableData(gctx, a, load, workers, blocks, free)
	if err == nil {
		err = whole()
	}
	if err != nil {
		cancel() // no session commits
	}
	close(blocks)
	// A session's failure stops the cutter with context.Canceled: report
	// the session's error then, else the stream's.
	if gerr := g.Wait(); err == nil || gerr != nil && errors.Is(err, context.Canceled) && !errors.Is(gerr, context.Canceled) {
		err = gerr
	}
	if err != nil {
		return err
	}
	for _, s := range sessions {
		if _, err := s.conn.PgConn().Exec(ctx, "COMMIT").ReadAll(); err != nil {
			return fmt.Errorf("commit the loaded rows: %w", err)
		}
	}
	return nil
}

// cutTableData reads the data blocks up to the archive's end and hands their
// rows to the sessions in blocks of whole rows (a row of COPY's text format
// is one line: newlines in values are escaped), and a commit gate to each
// of the workers sessions after a table load.commitAfter names.
func cutTableData(ctx context.Context, a *archiveReader, load tableLoad, workers int, blocks chan<- rowsBlock, free *sync.Pool) error {
	tables := load.tables
	seen := make(map[int]bool, len(tables))
	send := func(b rowsBlock) error {
		select {
		case blocks <- b:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		typ, id, err := readBlockHeader(a)
		if err == io.EOF {
			// pg_dump writes the data of every entry that has some, as
			// pg_restore expects.
			for id, stmt := range tables {
				if !seen[id] {
					return fmt.Errorf("the dump ends before the data of %s: %w", stmt, io.ErrUnexpectedEOF)
				}
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the dump's data: %w", err)
		}
		stmt, ok := tables[id]
		if typ != blockData || !ok || seen[id] {
			return fmt.Errorf("the dump holds a data block (type %d) of entry %d, which its table of contents does not list as table data, or lists once", typ, id)
		}
		seen[id] = true
		var size int64
		blk := free.Get().([]byte)[:0]
		for {
			n, err := a.int()
			if err != nil {
				return fmt.Errorf("read the data of %s: %w", stmt, unexpectedEOF(err))
			}
			if n == 0 {
				break
			}
			if n < 0 {
				return fmt.Errorf("the data of %s holds a chunk of %d bytes", stmt, n)
			}
			size += int64(n)
			if len(blk)+n > cap(blk) && len(blk) > 0 {
				// Send the whole rows so far; a row cut by the block's
				// end starts the next one.
				cut := bytes.LastIndexByte(blk, '\n') + 1
				if cut > 0 {
					next := append(free.Get().([]byte)[:0], blk[cut:]...)
					if err := send(rowsBlock{copyStmt: stmt, rows: blk[:cut]}); err != nil {
						return err
					}
					blk = next
				}
			}
			blk = growTo(blk, len(blk)+n)
			if _, err := io.ReadFull(a.br, blk[len(blk)-n:]); err != nil {
				return fmt.Errorf("read the data of %s: %w", stmt, unexpectedEOF(err))
			}
		}
		if len(blk) > 0 && blk[len(blk)-1] != '\n' {
			return fmt.Errorf("the data of %s ends inside a row", stmt)
		}
		if len(blk) > 0 {
			if err := send(rowsBlock{copyStmt: stmt, rows: blk}); err != nil {
				return err
			}
		}
		if len(seen) < len(tables) && load.commitAfter != nil && load.commitAfter(id, size) {
			gate := &commitGate{left: workers, open: make(chan struct{}), then: func() { load.committed(id) }}
			for range workers {
				if err := send(rowsBlock{gate: gate}); err != nil {
					return err
				}
			}
		}
	}
}

// growTo returns b extended to length n, reallocated if it lacks the room.
func growTo(b []byte, n int) []byte {
	if n <= cap(b) {
		return b[:n]
	}
	nb := make([]byte, n, max(n, 2*cap(b)))
	copy(nb, b)
	return nb
}

// rowsSession is one connection loading blocks of rows inside its
// transaction: one COPY while the blocks it takes are of one table, a new
// one when a block of another table comes.
type rowsSession struct {
	conn *pgx.Conn
}

// openRowsSession connects and runs setup (the session's settings, and a
// BEGIN where its rows commit together). On an error the connection is
// closed and the session nil.
func openRowsSession(ctx context.Context, dsn DSN, setup string) (*rowsSession, error) {
	conn, err := connectSQL(ctx, dsn)
	if err != nil {
		return nil, err
	}
	if setup != "" {
		if _, err := conn.PgConn().Exec(ctx, setup).ReadAll(); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("session settings: %w", err)
		}
	}
	return &rowsSession{conn: conn}, nil
}

func (s *rowsSession) load(ctx context.Context, blocks <-chan rowsBlock, free *sync.Pool) error {
	var (
		stmt string
		pw   *io.PipeWriter
		done chan error
	)
	end := func() error {
		if pw == nil {
			return nil
		}
		pw.Close()
		pw = nil
		if err := <-done; err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
		return nil
	}
	for b := range blocks {
		if b.gate != nil {
			if err := end(); err != nil {
				return err
			}
			if _, err := s.conn.PgConn().Exec(ctx, "COMMIT; BEGIN").ReadAll(); err != nil {
				return fmt.Errorf("commit the loaded rows: %w", err)
			}
			if err := b.gate.pass(ctx); err != nil {
				return err
			}
			continue
		}
		if pw == nil || b.copyStmt != stmt {
			if err := end(); err != nil {
				return err
			}
			stmt = b.copyStmt
			pr, w := io.Pipe()
			pw, done = w, make(chan error, 1)
			go func(stmt string, done chan<- error) {
				_, err := s.conn.PgConn().CopyFrom(ctx, pr, stmt)
				pr.CloseWithError(err) // a failed COPY stops the writes below
				done <- err
			}(stmt, done)
		}
		_, werr := pw.Write(b.rows)
		free.Put(b.rows[:0])
		if werr != nil {
			if err := end(); err != nil {
				return err
			}
			return werr
		}
	}
	return end()
}
