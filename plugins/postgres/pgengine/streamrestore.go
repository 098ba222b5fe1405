package pgengine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
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
func streamRestore(ctx context.Context, pgRestore string, dsn DSN, r *countingReader, size int64, opts SectionedRestoreOptions) (rest io.Reader, err error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, raw, err := readArchiveHead(br, maxArchiveHead)
	if errors.Is(err, errArchiveShape) {
		return io.MultiReader(bytes.NewReader(raw), br), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the dump's table of contents: %w", unexpectedEOF(err))
	}
	tables := map[int]string{} // dump ID of a TABLE DATA entry: its COPY statement
	var dataDefs []int         // data-section entries without a block (sequence values)
	section := sectionPreData
	for _, e := range head.entries {
		if e.section != sectionNone {
			section = e.section // pg_restore files an entry of no section under the one before
		}
		switch {
		case e.hadDumper && e.desc == "TABLE DATA" && copyFromStdin.MatchString(e.copyStmt):
			tables[e.dumpID] = strings.TrimSuffix(e.copyStmt, ";\n")
		case e.hadDumper: // large objects, INSERT-style data
			return io.MultiReader(bytes.NewReader(raw), br), nil
		case section == sectionData:
			dataDefs = append(dataDefs, e.dumpID)
		}
	}

	toc, err := writeSpool(opts.SpoolDir, "amber-pgrestore-toc-", raw)
	if err != nil {
		return nil, err
	}
	defer os.Remove(toc)
	// The session settings pg_restore starts every session with
	// (encoding, standard_conforming_strings, search_path...), from the
	// script of an empty selection of the archive.
	var preamble bytes.Buffer
	if err := runTool(ctx, pgRestore, []string{"--file=-", "--use-list=" + os.DevNull, toc}, nil, &preamble); err != nil {
		return nil, err
	}
	var settings strings.Builder
	for _, line := range strings.SplitAfter(preamble.String(), "\n") {
		switch {
		case line == "", line == "\n", strings.HasPrefix(line, "--"), restrictKey.MatchString(line):
		case sessionSetting.MatchString(line):
			settings.WriteString(line)
		default:
			return io.MultiReader(bytes.NewReader(raw), br), nil
		}
	}

	args := restoreArgs(opts.LogicalRestoreOptions)
	if err := runPGTool(ctx, pgRestore, dsn, append(args, "--section=pre-data", "--single-transaction", toc), nil, io.Discard); err != nil {
		return nil, fmt.Errorf("pre-data: %w", err)
	}
	// From here on a failure leaves the schema in the database.
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w (the database now holds the backup's schema, and its rows if the failure came after them: drop and create the database before restoring again; --option restore_workers=1 restores in one transaction instead)", err)
		}
	}()
	a := &archiveReader{br: br, intSize: head.intSize}
	// The rows are committed only once the whole entry has come: a stream
	// that ends early, even between two tables' data, loads nothing.
	whole := func() error {
		if r.n != size {
			return fmt.Errorf("the dump ended after %d of its %d bytes: %w", r.n, size, io.ErrUnexpectedEOF)
		}
		return nil
	}
	if err = loadTableData(ctx, dsn, settings.String(), a, tables, opts.Workers, whole); err != nil {
		return nil, err
	}
	if len(dataDefs) > 0 {
		var list strings.Builder
		for _, id := range dataDefs {
			fmt.Fprintf(&list, "%d;\n", id)
		}
		path, werr := writeSpool(opts.SpoolDir, "amber-pgrestore-list-", []byte(list.String()))
		if werr != nil {
			return nil, werr
		}
		defer os.Remove(path)
		if err = runPGTool(ctx, pgRestore, dsn, append(args, "--section=data", "--use-list="+path, "--single-transaction", toc), nil, io.Discard); err != nil {
			return nil, fmt.Errorf("sequence values: %w", err)
		}
	}
	if err = runPGTool(ctx, pgRestore, dsn, append(args, "--section=post-data", "--jobs="+strconv.Itoa(opts.Workers), toc), nil, io.Discard); err != nil {
		return nil, fmt.Errorf("post-data: %w", err)
	}
	return nil, nil
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

// rowsBlock is a block of whole COPY rows of one table.
type rowsBlock struct {
	copyStmt string
	rows     []byte
}

// loadTableData reads the archive's data blocks (each the COPY rows of a
// table listed in tables, in chunks) and has workers sessions load them,
// in blocks of about splitBlock bytes of whole rows, each session in one
// transaction committed once every block is loaded and whole says the
// stream was complete.
func loadTableData(ctx context.Context, dsn DSN, settings string, a *archiveReader, tables map[int]string, workers int, whole func() error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Every session is connected, set up and inside its transaction before
	// the first block is cut.
	sessions, err := openTxSessions(ctx, dsn, settings, workers)
	defer closeSessions(ctx, sessions)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	blocks := make(chan rowsBlock, workers)
	free := &sync.Pool{New: func() any { return make([]byte, 0, splitBlock) }}
	for _, s := range sessions {
		g.Go(func() error { return s.load(gctx, blocks, free) })
	}
	err = cutTableData(gctx, a, tables, blocks, free)
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
	return commitSessions(ctx, sessions)
}

// cutTableData reads the data blocks up to the archive's end and hands their
// rows to the sessions in blocks of whole rows (a row of COPY's text format
// is one line: newlines in values are escaped).
func cutTableData(ctx context.Context, a *archiveReader, tables map[int]string, blocks chan<- rowsBlock, free *sync.Pool) error {
	seen := make(map[int]bool, len(tables))
	send := func(stmt string, rows []byte) error {
		select {
		case blocks <- rowsBlock{stmt, rows}:
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
			if len(blk)+n > cap(blk) && len(blk) > 0 {
				// Send the whole rows so far; a row cut by the block's
				// end starts the next one.
				cut := bytes.LastIndexByte(blk, '\n') + 1
				if cut > 0 {
					next := append(free.Get().([]byte)[:0], blk[cut:]...)
					if err := send(stmt, blk[:cut]); err != nil {
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
			if err := send(stmt, blk); err != nil {
				return err
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

// openTxSessions opens workers rowsSessions at once, each with settings
// and inside a transaction, whose rows commit together (commitSessions).
// The sessions it returns, even with an error, are closed by
// closeSessions, which rolls back what was not committed.
func openTxSessions(ctx context.Context, dsn DSN, settings string, workers int) ([]*rowsSession, error) {
	sessions := make([]*rowsSession, workers)
	var open errgroup.Group
	for i := range sessions {
		open.Go(func() (err error) {
			sessions[i], err = openRowsSession(ctx, dsn, settings+"BEGIN;")
			return err
		})
	}
	return sessions, open.Wait()
}

// closeSessions closes the sessions opened; a transaction not committed
// is rolled back.
func closeSessions(ctx context.Context, sessions []*rowsSession) {
	for _, s := range sessions {
		if s != nil {
			s.conn.Close(context.WithoutCancel(ctx))
		}
	}
}

// commitSessions commits every session's transaction, in turn.
func commitSessions(ctx context.Context, sessions []*rowsSession) error {
	for _, s := range sessions {
		if _, err := s.conn.PgConn().Exec(ctx, "COMMIT").ReadAll(); err != nil {
			return fmt.Errorf("commit the loaded rows: %w", err)
		}
	}
	return nil
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
		if err := ctx.Err(); err != nil {
			// The load failed elsewhere (the stream, another session):
			// the COPY is aborted, never ended, so it cannot commit.
			pw.CloseWithError(err)
		} else {
			pw.Close()
		}
		pw = nil
		if err := <-done; err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
		return nil
	}
	for b := range blocks {
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
