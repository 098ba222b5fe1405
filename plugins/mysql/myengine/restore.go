package myengine

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/amber-backup/amber/plugins/internal/spool"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// RestoreOptions configure LogicalRestore.
type RestoreOptions struct {
	// BinDir holds the mariadb (or mysql) client; empty: PATH.
	BinDir string
	// AllDatabases opens the session in no database, for SQL that names
	// its databases (the binlog of a whole server); by default the DSN
	// must name one.
	AllDatabases bool
	// Threads is how many client sessions LogicalRestore loads data
	// entries through at once; default DefaultRestoreThreads; 1 loads
	// every entry through one session, in order.
	Threads int
	// SpoolDir is where LogicalRestore keeps a data entry until a session
	// is free to load it; default os.TempDir().
	SpoolDir string
}

// DefaultRestoreThreads is RestoreOptions.Threads' default.
const DefaultRestoreThreads = 2

// Client finds the command-line client: mariadb, else mysql.
func Client(binDir string) (string, error) {
	for _, name := range []string{"mariadb", "mysql"} {
		if binDir != "" {
			p := filepath.Join(binDir, name)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	where := "on PATH"
	if binDir != "" {
		where = "in " + binDir
	}
	return "", fmt.Errorf("no mariadb or mysql client %s: install mariadb-client (or set the bin_dir setting)", where)
}

// ClientCommand returns a client command connected to d's database. Its
// password is in an anonymous memory file (secretFile), never on the
// command line, in the environment or on disk; cleanup releases it. Start
// the command before cleanup.
func ClientCommand(ctx context.Context, d DSN, o RestoreOptions, extra ...string) (*exec.Cmd, func(), error) {
	cfg, err := d.Config()
	if err != nil {
		return nil, nil, err
	}
	if cfg.DBName == "" && !o.AllDatabases {
		return nil, nil, errors.New("the DSN names no database to restore into; create an empty database and name it in the DSN")
	}
	client, err := Client(o.BinDir)
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "amber-mysql-client-")
	if err != nil {
		return nil, nil, err
	}
	opts, err := clientOptions(d)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	secret, err := secretFile("client-cnf", opts, -1, -1)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	cleanup := func() { secret.Close(); os.RemoveAll(dir) }
	args := []string{"--defaults-file=" + SecretFilePath}
	args = append(args, "--default-character-set=utf8mb4", "--max-allowed-packet=1G", "--batch", "--silent")
	args = append(args, extra...)
	if cfg.DBName != "" {
		args = append(args, "--database="+cfg.DBName)
	}
	cmd := exec.CommandContext(ctx, client, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	cmd.ExtraFiles = []*os.File{secret}
	return cmd, cleanup, nil
}

// optQuote quotes a value for an option file.
func optQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// Loader feeds SQL to one client session. Load sends an entry; Sync
// waits until the server has run everything sent so far, so an error is
// charged to the entry that caused it.
type Loader struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	lines   int64 // newlines sent, to turn the client's "at line N" into the entry's
	start   int64 // lines before the entry being loaded
	entry   string
	stderr  lockedBuffer
	cleanup func()

	token string        // the marker Sync asks the server to print
	sent  int64         // markers sent
	seen  atomic.Int64  // the highest marker printed back
	note  chan struct{} // a marker was printed
	ended chan struct{} // the client's output ended

	waitOnce sync.Once
	waitErr  error
}

// lockedBuffer is the client's stderr, written by exec's copier and read
// while the client may still run. It keeps the first and the last
// stderrKeep bytes: the client echoes a failed statement (up to a whole
// multi-row INSERT) before its ERROR line, which must not be cut off.
type lockedBuffer struct {
	mu         sync.Mutex
	head, tail []byte
	dropped    bool
}

const stderrKeep = 32 << 10

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if room := stderrKeep - len(b.head); room > 0 {
		k := min(room, len(p))
		b.head = append(b.head, p[:k]...)
		p = p[k:]
	}
	b.tail = append(b.tail, p...)
	if over := len(b.tail) - stderrKeep; over > 0 {
		b.tail = append(b.tail[:0], b.tail[over:]...)
		b.dropped = true
	}
	return n, nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped {
		return string(b.head) + "\n[...]\n" + string(b.tail)
	}
	return string(b.head) + string(b.tail)
}

// NewLoader starts the client against d's database.
func NewLoader(ctx context.Context, d DSN, o RestoreOptions) (*Loader, error) {
	// Unbuffered: the client prints Sync's marker as soon as it has run
	// it, not when its output buffer fills.
	cmd, cleanup, err := ClientCommand(ctx, d, o, "--unbuffered", "--skip-column-names")
	if err != nil {
		return nil, err
	}
	var tok [12]byte
	rand.Read(tok[:])
	l := &Loader{cmd: cmd, cleanup: cleanup, token: "amber-loaded-" + hex.EncodeToString(tok[:]) + "-",
		note: make(chan struct{}, 1), ended: make(chan struct{})}
	cmd.Stderr = &l.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		cleanup()
		return nil, err
	}
	if l.in, err = cmd.StdinPipe(); err != nil {
		cleanup()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cleanup()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	go l.watch(out)
	return l, nil
}

// watch reads the client's output for Sync's markers; anything else the
// SQL prints (SELECT SETVAL of a sequence) is dropped.
func (l *Loader) watch(out io.Reader) {
	defer close(l.ended)
	br := bufio.NewReaderSize(out, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if rest, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte(l.token)); ok {
			if n, err := strconv.ParseInt(string(rest), 10, 64); err == nil && n > l.seen.Load() {
				l.seen.Store(n)
				select {
				case l.note <- struct{}{}:
				default:
				}
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func (l *Loader) write(p []byte) (int, error) {
	n, err := l.in.Write(p)
	l.lines += int64(bytes.Count(p[:n], []byte{'\n'}))
	return n, err
}

type loaderWriter struct{ l *Loader }

func (w loaderWriter) Write(p []byte) (int, error) { return w.l.write(p) }

// Load sends one entry's SQL. The server may still be running it when
// Load returns; Sync waits for it.
func (l *Loader) Load(name string, r io.Reader) error {
	l.entry, l.start = name, l.lines
	if _, err := io.Copy(loaderWriter{l}, r); err != nil {
		return fmt.Errorf("load %s: %w%s", name, err, l.failure())
	}
	// Entries end with a newline; make sure the next starts on its own line.
	if _, err := l.write([]byte("\n")); err != nil {
		return fmt.Errorf("load %s: %w%s", name, err, l.failure())
	}
	return nil
}

// Sync waits until the server has run everything sent so far, or reports
// why the client stopped.
func (l *Loader) Sync(ctx context.Context) error {
	l.sent++
	n := l.sent
	if _, err := l.write([]byte("SELECT '" + l.token + strconv.FormatInt(n, 10) + "';\n")); err != nil {
		return fmt.Errorf("load %s: %w%s", l.entry, err, l.failure())
	}
	for l.seen.Load() < n {
		select {
		case <-l.note:
		case <-l.ended:
			if l.seen.Load() >= n {
				return nil
			}
			err := l.wait()
			if err == nil {
				err = errors.New("the client ended early")
			}
			return fmt.Errorf("load %s: %s: %w%s", l.entry, filepath.Base(l.cmd.Path), err, l.detail())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// failure waits for a client whose input broke and says why it ended.
func (l *Loader) failure() string {
	if err := l.wait(); err != nil {
		return " (" + filepath.Base(l.cmd.Path) + ": " + err.Error() + ")" + l.detail()
	}
	return l.detail()
}

func (l *Loader) wait() error {
	l.waitOnce.Do(func() {
		l.in.Close()
		l.waitErr = l.cmd.Wait()
	})
	return l.waitErr
}

var atLine = regexp.MustCompile(`at line (\d+)`)

// detail is the client's error output, its "at line N" (counted from the
// start of the session) made the line of the entry being loaded.
func (l *Loader) detail() string {
	s := strings.TrimSpace(l.stderr.String())
	if s == "" {
		return ""
	}
	// The client echoes the failed statement around its ERROR line; the
	// ERROR line says it all.
	var errs []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "ERROR ") {
			errs = append(errs, line)
		}
	}
	if len(errs) > 0 {
		s = strings.Join(errs, "; ")
	}
	if l.entry != "" {
		s = atLine.ReplaceAllStringFunc(s, func(m string) string {
			n, err := strconv.ParseInt(atLine.FindStringSubmatch(m)[1], 10, 64)
			if err != nil || n <= l.start {
				return m
			}
			return fmt.Sprintf("at line %d of %s", n-l.start, l.entry)
		})
	}
	return ": " + s
}

// Close ends the session and reports the client's failure.
func (l *Loader) Close() error {
	defer l.cleanup()
	if err := l.wait(); err != nil {
		return fmt.Errorf("%s: %w%s", filepath.Base(l.cmd.Path), err, l.detail())
	}
	return nil
}

// Abort ends the session at once.
func (l *Loader) Abort() {
	if l.cmd.Process != nil {
		l.cmd.Process.Kill()
	}
	l.wait()
	l.cleanup()
}

// NextEntry yields the entries of a dump in order: a name, its phase
// (PhaseData for table data; "" when unknown) and its bytes, or io.EOF
// after the last.
type NextEntry func(ctx context.Context) (name, phase string, r io.Reader, err error)

// RestoreStats count what LogicalRestore loaded.
type RestoreStats struct {
	Entries     int   // all entries
	DataEntries int   // of which were loaded by the data sessions
	Bytes       int64 // SQL sent
}

// IsDataEntry says whether an entry holds table data only (rows of tables
// the schema entry created), which loads in any order and at the same
// time as other data entries: its phase is PhaseData, or, with no phase,
// its name is under data/.
func IsDataEntry(name, phase string) bool {
	if phase != "" {
		return phase == PhaseData
	}
	return strings.HasPrefix(name, "data/")
}

// LogicalRestore loads a dump's entries into d's database. Entries other
// than data (schema.sql, post.sql, users.sql) load through one session, in
// order, each after everything before it has been run; a run of data
// entries between them is spooled and loaded by o.Threads sessions at
// once (the pieces of a split table too), and the next other entry waits
// until all of them are in. Every entry sets its own session state
// (dump.go's header: foreign and unique checks off; the ranges of a split
// table load with unique checks on, see withUniqueChecks). The first
// error of any session stops the others and is the one returned.
func LogicalRestore(ctx context.Context, d DSN, o RestoreOptions, next NextEntry) (RestoreStats, error) {
	var st RestoreStats
	if o.Threads <= 0 {
		o.Threads = DefaultRestoreThreads
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	main, err := NewLoader(ctx, d, o)
	if err != nil {
		return st, err
	}
	var pool *spool.Pool
	fail := func(err error) (RestoreStats, error) {
		cancel()
		if pool != nil {
			if perr := pool.Close(); perr != nil {
				err = perr // the first failure; err followed from it
			}
		}
		main.Abort()
		return st, err
	}
	for {
		name, phase, r, err := next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(err)
		}
		st.Entries++
		if o.Threads > 1 && IsDataEntry(name, phase) {
			if pool == nil {
				pool = spool.New(ctx, cancel, o.Threads, o.SpoolDir, "amber-mysql-load-", func(ctx context.Context) (spool.Worker, error) {
					l, err := NewLoader(ctx, d, o)
					if err != nil {
						return nil, err
					}
					return loadSession{l}, nil
				})
			}
			n, err := pool.Submit(ctx, spool.Entry{Name: name}, r, false)
			st.Bytes += n
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
		cr := &countingReader{r: r}
		err = main.Load(name, cr)
		st.Bytes += cr.n
		if err == nil {
			err = main.Sync(ctx)
		}
		if err != nil {
			return fail(err)
		}
	}
	if pool != nil {
		if err := pool.Close(); err != nil {
			return fail(err)
		}
	}
	if err := main.Close(); err != nil {
		return st, fmt.Errorf("restore: %w", err)
	}
	return st, nil
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

// loadSession is one session of the pool that loads data entries
// (spool.Worker).
type loadSession struct{ l *Loader }

func (s loadSession) Load(ctx context.Context, e spool.Entry, f *spool.File) error {
	r, err := f.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	var in io.Reader = r
	if isRangeEntry(e.Name) {
		in = withUniqueChecks(r)
	}
	if err := s.l.Load(e.Name, in); err != nil {
		return err
	}
	return s.l.Sync(ctx)
}

// rangeEntry matches the entry of one key range of a split table
// (split.go): the sessions load a table's ranges at the same time.
var rangeEntry = regexp.MustCompile(`^data/.+\.part-\d{5}\.sql$`)

func isRangeEntry(name string) bool { return rangeEntry.MatchString(name) }

// uniqueChecksOff is the line of the dump's header (dump.go) that
// withUniqueChecks turns on again.
const uniqueChecksOff = "SET @@session.unique_checks = 0;\n"

// withUniqueChecks returns r with its header's unique_checks = 0 made
// unique_checks = 1 (a line of the same length, so the client's line
// numbers stay the entry's). With unique checks off, MariaDB (10.6 and
// later) loads an INSERT into an empty InnoDB table in bulk under a table
// lock: sessions loading ranges of one table at once then wait on each
// other and can deadlock (ERROR 1213) instead of loading in parallel.
// An entry without that line in its first KiB is passed on as it is.
func withUniqueChecks(r io.Reader) io.Reader {
	br := bufio.NewReaderSize(r, 1024)
	head, _ := br.Peek(1024) // an error comes back from the reads below
	i := bytes.Index(head, []byte(uniqueChecksOff))
	if i < 0 {
		return br
	}
	fixed := append([]byte(nil), head[:i+len(uniqueChecksOff)]...)
	fixed[len(fixed)-len("0;\n")] = '1'
	br.Discard(len(fixed))
	return io.MultiReader(bytes.NewReader(fixed), br)
}

func (s loadSession) End(failed bool) error {
	if failed {
		s.l.Abort()
		return nil
	}
	if err := s.l.Close(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}
