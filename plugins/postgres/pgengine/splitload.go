package pgengine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
)

// DefaultSplitLoadBytes is the size from which a table's data entry is
// loaded by several sessions at once (splitLoad).
const DefaultSplitLoadBytes = 64 << 20

// splitBlock is how many bytes of whole rows a session is handed at a time.
const splitBlock = 1 << 20

// maxAfterRows bounds what splitLoad keeps of the script after the rows.
const maxAfterRows = 16 << 20

// errNotSplit: the script does not start as splitLoad expects; nothing
// was loaded, and the entry is loaded by pg_restore instead.
var errNotSplit = errors.New("the table's data script is not one splitLoad knows")

// Lines of a table's data script before its COPY block: the session
// settings pg_restore writes first.
var (
	sessionSetting = regexp.MustCompile(`^(SET [a-z_]+ = [^;]*|SELECT pg_catalog\.set_config\('search_path', '', false\));\n$`)
	copyFromStdin  = regexp.MustCompile(`^COPY [^\n]+ FROM stdin;\n$`)
	// psql's \restrict and \unrestrict (pg_dump and pg_restore since
	// 17.6, 16.10, 15.14, 14.19, 13.22) keep psql from running
	// meta-commands inside a script; what follows the rows runs through
	// psql behind the script's own \restrict line.
	restrictKey = regexp.MustCompile(`^\\(?:un)?restrict [A-Za-z0-9]+\n$`)
)

// splitLoad loads a data entry of one table (a custom-format archive
// read from archive) with workers sessions at once. pg_restore turns the
// archive into its script (--data-only --file=-, no server involved),
// which for such an entry is session settings, one COPY block, then
// whatever else the table's data holds (its owned sequences' values, say).
// The COPY's rows are cut into blocks of whole rows (a row of COPY's text
// format is one line: newlines in values are escaped) that the sessions
// take in turn, each loading them through its own COPY ... FROM STDIN
// with the script's settings; the rest of the script then runs through
// psql, in one transaction. One session loads a large table at about the
// speed the server parses and inserts its rows on one core; two load it
// about 1.4 times as fast (docs/benchmarks.md).
//
// Each session loads in its own transaction; they commit once every row
// is sent and every session has loaded its rows. A failure of the script
// or of any session aborts every session's COPY and commits nothing. A
// script that does not start with settings and a COPY is left to
// pg_restore (errNotSplit) before anything is loaded.
func splitLoad(ctx context.Context, pgRestore, psql string, dsn DSN, archive io.Reader, workers int) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgRestore, "--data-only", "--file=-")
	cmd.Env = toolEnv("")
	cmd.Stdin = archive
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{buf: &stderr, max: 16 << 10}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pg_restore: %w", err)
	}
	defer func() {
		if err != nil {
			cancel() // stop pg_restore before waiting for it
		}
		werr := cmd.Wait()
		switch msg := strings.TrimSpace(stderr.String()); {
		case err == nil && werr != nil:
			err = fmt.Errorf("pg_restore --file=-: %v: %s", werr, msg)
		case err != nil && msg != "":
			err = fmt.Errorf("%w (pg_restore: %s)", err, msg)
		}
	}()
	br := bufio.NewReaderSize(out, splitBlock)

	var settings strings.Builder // the script's SET lines, for every session
	restrict := ""               // the script's \restrict line, kept for psql below
	copyStmt := ""
	for copyStmt == "" {
		line, err := br.ReadString('\n')
		if err != nil && err != io.EOF {
			return fmt.Errorf("read pg_restore's script: %w", err)
		}
		switch {
		case line == "\n" || strings.HasPrefix(line, "--"):
		case restrictKey.MatchString(line):
			restrict = line
		case sessionSetting.MatchString(line):
			settings.WriteString(line)
		case copyFromStdin.MatchString(line):
			copyStmt = strings.TrimSuffix(line, ";\n")
		default:
			return errNotSplit // a line other than these, or no COPY
		}
	}

	// Every session loads inside its own transaction, and none commits
	// before all have loaded their rows: a session whose COPY fails late
	// must not leave the others' rows behind.
	sessions, err := openTxSessions(ctx, dsn, settings.String(), workers)
	defer closeSessions(ctx, sessions)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	blocks := make(chan rowsBlock, workers)
	free := sync.Pool{New: func() any { return make([]byte, 0, splitBlock) }}
	for _, s := range sessions {
		g.Go(func() error { return s.load(gctx, blocks, &free) })
	}
	trailer, err := cutRows(gctx, br, copyStmt, blocks, &free)
	if err != nil && gctx.Err() == nil {
		// The script failed (not a session): the sessions' COPYs are
		// aborted rather than ended.
		cancel()
		close(blocks)
		g.Wait()
		return err
	}
	close(blocks)
	if gerr := g.Wait(); gerr != nil {
		return gerr
	}
	if err != nil {
		return err
	}
	if err := commitSessions(ctx, sessions); err != nil {
		return err
	}

	// What follows the rows (the owned sequences' values, say) runs
	// through psql with the script's settings and its \restrict guard, as
	// psql would run the whole script. It is small; more than
	// maxAfterRows is refused.
	script := bytes.NewBufferString(restrict + settings.String())
	statements := false
	sc := bufio.NewReader(io.MultiReader(bytes.NewReader(trailer), br))
	for {
		line, err := sc.ReadString('\n')
		if err != nil && err != io.EOF {
			return fmt.Errorf("read pg_restore's script: %w", err)
		}
		switch {
		case line == "", line == "\n", strings.HasPrefix(line, "--"), sessionSetting.MatchString(line), restrictKey.MatchString(line):
		default:
			statements = true
		}
		script.WriteString(line)
		if script.Len() > maxAfterRows {
			return fmt.Errorf("the table's data script has more than %d bytes after its rows (restore with --option restore_split_bytes=0)", maxAfterRows)
		}
		if err == io.EOF {
			break
		}
	}
	if !statements {
		return nil
	}
	return runPGTool(ctx, psql, dsn, []string{"--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
		"--single-transaction", "--file=-"}, script, io.Discard)
}

// cutRows reads COPY rows from br up to the end-of-data line (`\.`) and
// hands them to the sessions in blocks of whole rows. It returns what it
// read past that line. A row longer than a block grows the block.
func cutRows(ctx context.Context, br *bufio.Reader, copyStmt string, blocks chan<- rowsBlock, free *sync.Pool) ([]byte, error) {
	var carry []byte
	for {
		var blk []byte
		if len(carry) >= splitBlock {
			blk = slices.Grow(carry, len(carry)) // a row longer than a block so far: read on into a larger one
		} else {
			blk = append(free.Get().([]byte)[:0], carry...)
		}
		n, err := io.ReadFull(br, blk[len(blk):cap(blk)])
		blk = blk[:len(blk)+n]
		eof := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !eof {
			return nil, fmt.Errorf("read pg_restore's script: %w", err)
		}
		// The block starts at a row's start; `\.` alone on a line ends
		// the rows (a backslash in a value is written `\\`).
		end := -1
		if bytes.HasPrefix(blk, []byte("\\.\n")) {
			end = 0
		} else if i := bytes.Index(blk, []byte("\n\\.\n")); i >= 0 {
			end = i + 1
		}
		var rows []byte
		switch {
		case end >= 0:
			rows, carry = blk[:end], bytes.Clone(blk[end+3:])
		case eof:
			return nil, errors.New("the table's data script ends inside its COPY rows")
		default:
			cut := bytes.LastIndexByte(blk, '\n') + 1
			if cut == 0 { // no whole row in a full block
				carry = blk
				continue
			}
			rows, carry = blk[:cut], bytes.Clone(blk[cut:])
		}
		if len(rows) > 0 {
			select {
			case blocks <- rowsBlock{copyStmt, rows}:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if end >= 0 {
			return carry, nil
		}
	}
}
