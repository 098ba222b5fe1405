package testbed

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PostgreSQL test servers.
//
// initdb and postgres refuse to run as root, so when the tests run as root
// every PostgreSQL process runs as the `postgres` OS user, in a directory
// under os.TempDir() that this user owns (t.TempDir() is 0700 root and not
// traversable by it). Servers are tuned for speed, not durability: fsync=off
// and initdb --no-sync. Never use such a server for anything but a test.

// Postgres superuser and replication role created in every test cluster.
const (
	PostgresSuperuser     = "amber"
	PostgresReplUser      = "amber_repl"
	postgresTestPassword  = "amber-test-pw"
	postgresReplPassword  = "amber-repl-pw"
	defaultPostgresMajor  = "15"
	postgresReadyTimeout  = 60 * time.Second
	postgresStopTimeout   = 60 * time.Second
	postgresDebianBinRoot = "/usr/lib/postgresql"
)

// PostgresOptions configure StartPostgres.
type PostgresOptions struct {
	// WALLevel is "replica" (default), "logical" or "minimal". minimal also
	// sets max_wal_senders=0, as PostgreSQL requires.
	WALLevel string
	// Conf holds extra postgresql.conf settings (name -> value).
	Conf map[string]string
	// Major selects the server's major version: Debian's
	// /usr/lib/postgresql/<Major>/bin, else .deps/postgresql/<Major>/bin
	// (`make deps` installs 13, 14, 16, 17 and 18 there); default 15, then
	// PATH. Client tools (psql, pg_isready, pg_basebackup) are always
	// Debian's 15.
	Major string
}

// Postgres is a PostgreSQL server started for one test.
type Postgres struct {
	t       testing.TB
	Bin     string // directory holding initdb and postgres (and pg_dump for 15)
	Client  string // directory holding psql, pg_isready, pg_basebackup (Debian's 15)
	Major   string // the server's major version, e.g. "15"
	Root    string // temp dir owned by the postgres user; removed in cleanup
	DataDir string
	Socket  string // unix socket directory
	Port    int
	LogFile string

	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// PostgresMajors are the major versions the test bed runs besides the
// default 15: `make deps` installs their server binaries into
// .deps/postgresql/<major> (conformance/tools/postgres/build.sh).
var PostgresMajors = []string{"13", "14", "16", "17", "18"}

// PostgresBin returns the directory with the PostgreSQL server binaries of
// major ("" is 15), or skips the test when there is none.
func PostgresBin(t testing.TB, major string) string {
	t.Helper()
	if major == "" {
		major = defaultPostgresMajor
	}
	dir := filepath.Join(postgresDebianBinRoot, major, "bin")
	if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
		return dir
	}
	deps := filepath.Join(DepsDir(), "postgresql", major, "bin")
	if _, err := os.Stat(filepath.Join(deps, "initdb")); err == nil {
		return deps
	}
	if p, err := exec.LookPath("initdb"); err == nil && major == defaultPostgresMajor {
		return filepath.Dir(p)
	}
	Skip(t, "PostgreSQL %s server binaries (initdb) not found in %s, %s or on PATH (make deps installs them)", major, dir, deps)
	return ""
}

// postgresClientBin is where psql, pg_isready and pg_basebackup come from,
// whatever the server's major: the npm server packages carry none.
func postgresClientBin(t testing.TB) string {
	t.Helper()
	return PostgresBin(t, defaultPostgresMajor)
}

// PostgresDir makes an empty directory under os.TempDir() owned by the
// postgres user (when running as root) and traversable by it, removed when
// the test ends. Use it for data directories to restore into and for files
// that restore_command must read.
func PostgresDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp(os.TempDir(), "amber-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ChownPostgres(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ChownPostgres gives path and everything below it to the postgres user when
// running as root; otherwise it does nothing.
func ChownPostgres(path string) error {
	uid, gid, ok := postgresIDs()
	if !ok {
		return nil
	}
	return filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// PostgresIDs returns the uid and gid PostgreSQL processes run as, and
// whether they differ from the current user (i.e. we are root).
func PostgresIDs() (uid, gid int, asOther bool) { return postgresIDs() }

func postgresIDs() (int, int, bool) {
	if os.Geteuid() != 0 {
		return os.Geteuid(), os.Getegid(), false
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, false
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, true
}

// PostgresCommand returns a command that runs as the postgres user when the
// test runs as root, with a C locale and no inherited PG* settings.
func PostgresCommand(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "LC_") && !strings.HasPrefix(kv, "LANG") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "LC_ALL=C", "LANG=C")
	cmd.Dir = os.TempDir()
	if uid, gid, ok := postgresIDs(); ok {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Env = append(cmd.Env, "HOME="+os.TempDir(), "USER=postgres")
	}
	return cmd
}

// StartPostgres initdb's a fresh cluster and starts it on 127.0.0.1 and a free
// port. The cluster has a superuser `amber` and a role `amber_repl` with LOGIN
// REPLICATION (and EXECUTE on pg_backup_start/stop), both with passwords, and
// pg_hba allows normal and replication connections from 127.0.0.1 with
// scram-sha-256. The server is stopped and its files removed in t.Cleanup.
func StartPostgres(t testing.TB, opts PostgresOptions) *Postgres {
	t.Helper()
	bin := PostgresBin(t, opts.Major)
	root := PostgresDir(t)
	p := &Postgres{t: t, Bin: bin, Client: postgresClientBin(t), Major: major(opts.Major),
		Root: root, DataDir: filepath.Join(root, "data")}

	pwfile := filepath.Join(root, "pwfile")
	if err := os.WriteFile(pwfile, []byte(postgresTestPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ChownPostgres(pwfile); err != nil {
		t.Fatal(err)
	}
	args := []string{"-D", p.DataDir, "-U", PostgresSuperuser,
		"--pwfile=" + pwfile, "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
		"--encoding=UTF8", "--locale=C", "--no-sync"}
	if p.Major != "13" { // initdb 13 lacks it
		args = append(args, "--no-instructions")
	}
	out, err := PostgresCommand(filepath.Join(bin, "initdb"), args...).CombinedOutput()
	os.Remove(pwfile)
	if err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	hba := "local all all scram-sha-256\n" +
		"host all all 127.0.0.1/32 scram-sha-256\n" +
		"host replication all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(p.DataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}

	walLevel := opts.WALLevel
	if walLevel == "" {
		walLevel = "replica"
	}
	conf := map[string]string{
		"wal_level":             walLevel,
		"max_wal_senders":       "10",
		"max_replication_slots": "10",
		"fsync":                 "off", // test servers only: speed over durability
		"full_page_writes":      "on",
		"shared_buffers":        "32MB",
		"max_connections":       "40",
		"logging_collector":     "off",
		"log_line_prefix":       "'%m [%p] '",
		"hot_standby":           "on",
		"wal_sender_timeout":    "60s",
	}
	if walLevel == "minimal" {
		conf["max_wal_senders"] = "0"
	}
	for k, v := range opts.Conf {
		conf[k] = v
	}
	var b strings.Builder
	b.WriteString("\n# amber test bed\n")
	for k, v := range conf {
		fmt.Fprintf(&b, "%s = %s\n", k, v)
	}
	f, err := os.OpenFile(filepath.Join(p.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(b.String())
	f.Close()
	if err := ChownPostgres(p.DataDir); err != nil {
		t.Fatal(err)
	}

	p.setup()
	p.Start()
	grants := "GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO %[1]s; " +
		"GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO %[1]s;"
	if p.before15() { // the functions' names and arguments before 15
		grants = "GRANT EXECUTE ON FUNCTION pg_start_backup(text, boolean, boolean) TO %[1]s; " +
			"GRANT EXECUTE ON FUNCTION pg_stop_backup(boolean, boolean) TO %[1]s;"
	}
	p.Psql(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN REPLICATION PASSWORD '%s'; "+grants,
		PostgresReplUser, postgresReplPassword))
	return p
}

func major(m string) string {
	if m == "" {
		return defaultPostgresMajor
	}
	return m
}

// before15 says whether the server predates pg_backup_start/pg_backup_stop.
func (p *Postgres) before15() bool {
	n, _ := strconv.Atoi(p.Major)
	return n < 15
}

// StartPostgresDataDir starts a server on an existing data directory (a
// restored backup, say) owned by the postgres user, on a new port and socket
// directory given on the command line (they override the copied configuration).
func StartPostgresDataDir(t testing.TB, dataDir string, opts PostgresOptions) *Postgres {
	t.Helper()
	bin := PostgresBin(t, opts.Major)
	root := PostgresDir(t)
	p := &Postgres{t: t, Bin: bin, Client: postgresClientBin(t), Major: major(opts.Major), Root: root, DataDir: dataDir}
	for k, v := range opts.Conf {
		p.args = append(p.args, "-c", k+"="+v)
	}
	p.setup()
	p.Start()
	return p
}

func (p *Postgres) setup() {
	t := p.t
	p.Socket = filepath.Join(p.Root, "sock")
	if err := os.MkdirAll(p.Socket, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ChownPostgres(p.Socket); err != nil {
		t.Fatal(err)
	}
	p.LogFile = filepath.Join(p.Root, "postgres.log")
	p.Port = FreePort(t)
	p.args = append([]string{"-D", p.DataDir, "-p", strconv.Itoa(p.Port), "-k", p.Socket,
		"-c", "listen_addresses=127.0.0.1", "-c", "port=" + strconv.Itoa(p.Port)}, p.args...)
	t.Cleanup(func() {
		p.stop(syscall.SIGINT)
		if t.Failed() {
			if b, err := os.ReadFile(p.LogFile); err == nil {
				const max = 8000
				if len(b) > max {
					b = b[len(b)-max:]
				}
				t.Logf("postgres log (%s), tail:\n%s", p.DataDir, b)
			}
		}
	})
}

// Start starts the server (again) and waits until it accepts connections.
func (p *Postgres) Start() {
	t := p.t
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		t.Fatalf("postgres on port %d already running", p.Port)
	}
	log, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := PostgresCommand(filepath.Join(p.Bin, "postgres"), p.args...)
	cmd.Stdout, cmd.Stderr = log, log
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// An orphaned postmaster would outlive a crashed test binary.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start postgres: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); log.Close(); close(done) }()
	p.cmd, p.done = cmd, done

	deadline := time.Now().Add(postgresReadyTimeout)
	for {
		select {
		case <-done:
			p.cmd = nil
			b, _ := os.ReadFile(p.LogFile)
			t.Fatalf("postgres exited during startup:\n%s", tail(b, 4000))
		default:
		}
		err := PostgresCommand(filepath.Join(p.Client, "pg_isready"), "-q", "-h", "127.0.0.1",
			"-p", strconv.Itoa(p.Port), "-t", "1").Run()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(p.LogFile)
			t.Fatalf("postgres on port %d not ready after %v:\n%s", p.Port, postgresReadyTimeout, tail(b, 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop shuts the server down (fast mode) and waits for it to exit.
func (p *Postgres) Stop() { p.t.Helper(); p.stop(syscall.SIGINT) }

// Kill kills the postmaster without a shutdown checkpoint (immediate mode,
// like a crash: the next start runs crash recovery).
func (p *Postgres) Kill() { p.t.Helper(); p.stop(syscall.SIGQUIT) }

func (p *Postgres) stop(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(postgresStopTimeout):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// Running says whether the postmaster process is alive.
func (p *Postgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// DSN is a URL for the superuser to the postgres database over TCP.
func (p *Postgres) DSN() string { return p.DSNFor(PostgresSuperuser, postgresTestPassword, "postgres") }

// DSNDB is a URL for the superuser to database db over TCP.
func (p *Postgres) DSNDB(db string) string {
	return p.DSNFor(PostgresSuperuser, postgresTestPassword, db)
}

// ReplicationDSN is a URL for the non-superuser replication role
// (LOGIN REPLICATION). It has no `replication` parameter: tools add it.
func (p *Postgres) ReplicationDSN() string {
	return p.DSNFor(PostgresReplUser, postgresReplPassword, "postgres")
}

// DSNFor builds a URL for user/password and database on this server.
func (p *Postgres) DSNFor(user, password, db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password),
		Host: fmt.Sprintf("127.0.0.1:%d", p.Port), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Psql runs sql in db as the superuser and returns psql's unaligned,
// tuples-only output, failing the test on error.
func (p *Postgres) Psql(t testing.TB, db, sql string) string {
	t.Helper()
	out, err := p.PsqlErr(db, sql)
	if err != nil {
		t.Fatalf("psql %q: %v", sql, err)
	}
	return out
}

// PsqlErr is Psql returning the error instead of failing.
func (p *Postgres) PsqlErr(db, sql string) (string, error) {
	cmd := exec.Command(filepath.Join(p.Client, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", PostgresSuperuser, "-d", db, "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+postgresTestPassword, "PGCONNECT_TIMEOUT=10")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// StartStandby clones primary and starts the clone as a streaming standby
// on its own port: with `pg_basebackup -R -X stream` for 15, and for the
// other majors (Debian's pg_basebackup 15 refuses newer servers) by copying
// the data directory between pg_backup_start and pg_backup_stop, streaming
// through a replication slot that holds the WAL since the start.
func StartStandby(t testing.TB, primary *Postgres) *Postgres {
	t.Helper()
	root := PostgresDir(t)
	dataDir := filepath.Join(root, "data")
	if primary.Major == defaultPostgresMajor {
		cmd := PostgresCommand(filepath.Join(primary.Client, "pg_basebackup"), "-D", dataDir, "-R", "-X", "stream",
			"-c", "fast", "--no-sync", "-d", primary.ReplicationDSN())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pg_basebackup: %v\n%s", err, out)
		}
	} else {
		cloneByCopy(t, primary, dataDir)
	}
	p := &Postgres{t: t, Bin: primary.Bin, Client: primary.Client, Major: primary.Major, Root: root, DataDir: dataDir}
	p.setup()
	p.Start()
	return p
}

// Promote promotes a standby and waits until it accepts writes.
func (p *Postgres) Promote(t testing.TB) {
	t.Helper()
	if out := p.Psql(t, "postgres", "SELECT pg_promote(true, 60)"); out != "t" {
		t.Fatalf("pg_promote returned %q", out)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
