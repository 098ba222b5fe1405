package testbed

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MariaDB test servers.
//
// Every server is a private mariadbd started with --no-defaults (so the
// machine's /etc/mysql config and its own server on 3306 are never used),
// on 127.0.0.1 and a random port, with a temporary data directory, the
// binary log on in ROW format, GTIDs, UTC, and a superuser with a
// password. It runs as root (--user=root), which mariadbd allows. Servers
// are tuned for speed, not durability. Never use one for anything but a test.

// MariaDB superuser created in every test server.
const (
	MariaDBSuperuser     = "amber"
	mariadbTestPassword  = "amber-test-pw"
	mariadbReadyTimeout  = 60 * time.Second
	mariadbStopTimeout   = 60 * time.Second
	mariadbDefaultDBName = "app"
)

// MariaDBOptions configure StartMariaDB.
type MariaDBOptions struct {
	// ServerID is --server-id; 0 picks one from the port.
	ServerID int
	// NoBinlog starts the server without --log-bin (for health tests).
	NoBinlog bool
	// BinlogFormat is --binlog-format; default ROW.
	BinlogFormat string
	// Args are extra mariadbd arguments ("--max-binlog-size=4096").
	Args []string
}

// MariaDB is a MariaDB server started for one test.
type MariaDB struct {
	t        testing.TB
	Bin      string // mariadbd
	Client   string // mariadb
	Root     string // temp dir; removed in cleanup
	DataDir  string
	Socket   string
	Port     int
	ServerID int
	LogFile  string

	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// MariaDBBin returns the paths of mariadbd, mariadb-install-db and the
// mariadb client, or skips the test when one is missing.
func MariaDBBin(t testing.TB) (server, installDB, client string) {
	t.Helper()
	find := func(name string, dirs ...string) string {
		for _, d := range dirs {
			p := filepath.Join(d, name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p
			}
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		return ""
	}
	server = find("mariadbd", "/usr/sbin", "/usr/bin")
	installDB = find("mariadb-install-db", "/usr/bin")
	client = find("mariadb", "/usr/bin")
	if server == "" || installDB == "" || client == "" {
		Skip(t, "MariaDB binaries (mariadbd, mariadb-install-db, mariadb) not found: install the Debian packages mariadb-server and mariadb-client")
	}
	return server, installDB, client
}

// StartMariaDB initializes a data directory and starts a server on it.
func StartMariaDB(t testing.TB, o MariaDBOptions) *MariaDB {
	t.Helper()
	_, installDB, _ := MariaDBBin(t)
	m, tmp := newMariaDB(t, "", o)
	cmd := exec.Command(installDB, "--no-defaults", "--user=root", "--datadir="+m.DataDir,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--tmpdir="+tmp)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, b)
	}
	m.start()
	// Setup stays out of the binlog, so a replica started from the
	// current GTID position never replays it over its own.
	m.rootSQL(t, fmt.Sprintf(`SET sql_log_bin = 0;
CREATE USER '%s'@'%%' IDENTIFIED BY '%s';
GRANT ALL PRIVILEGES ON *.* TO '%s'@'%%' WITH GRANT OPTION;
CREATE DATABASE %s;`, MariaDBSuperuser, mariadbTestPassword, MariaDBSuperuser, mariadbDefaultDBName))
	return m
}

// StartMariaDBOn starts a server on an existing data directory, such as
// one a physical restore filled: its users, and so DSN's superuser, are
// the ones the directory holds. The directory is left in place.
func StartMariaDBOn(t testing.TB, dataDir string, o MariaDBOptions) *MariaDB {
	t.Helper()
	m, _ := newMariaDB(t, dataDir, o)
	m.start()
	return m
}

// newMariaDB prepares a server's temporary root and arguments: the data
// directory is dataDir, or <root>/data when empty. It returns the server's
// own temporary directory.
func newMariaDB(t testing.TB, dataDir string, o MariaDBOptions) (*MariaDB, string) {
	t.Helper()
	server, _, client := MariaDBBin(t)
	root, err := os.MkdirTemp(os.TempDir(), "amber-my-")
	if err != nil {
		t.Fatal(err)
	}
	if dataDir == "" {
		dataDir = filepath.Join(root, "data")
	}
	m := &MariaDB{t: t, Bin: server, Client: client, Root: root, DataDir: dataDir,
		Socket: filepath.Join(root, "mysqld.sock"), Port: FreePort(t), LogFile: filepath.Join(root, "mariadbd.log")}
	m.ServerID = o.ServerID
	if m.ServerID == 0 {
		m.ServerID = m.Port
	}
	t.Cleanup(func() {
		m.Stop()
		os.RemoveAll(root)
	})
	// Each server has a temporary directory of its own: mariadb-install-db's
	// bootstrap names its temporary tables after the process, and servers
	// installed at the same time in one /tmp collide.
	tmp := filepath.Join(root, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	format := o.BinlogFormat
	if format == "" {
		format = "ROW"
	}
	m.args = []string{"--no-defaults", "--user=root", "--datadir=" + m.DataDir, "--socket=" + m.Socket,
		"--port=" + strconv.Itoa(m.Port), "--bind-address=127.0.0.1", "--server-id=" + strconv.Itoa(m.ServerID),
		"--binlog-format=" + format, "--default-time-zone=+00:00", "--log-error=" + m.LogFile,
		"--pid-file=" + filepath.Join(root, "mariadbd.pid"), "--skip-name-resolve",
		"--gtid-strict-mode=ON", "--log-slave-updates=ON", "--max-allowed-packet=256M",
		"--innodb-buffer-pool-size=128M", "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0",
		"--innodb-doublewrite=0", "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
		"--tmpdir=" + tmp, "--skip-log-bin"}
	if !o.NoBinlog {
		m.args[len(m.args)-1] = "--log-bin=" + filepath.Join(m.DataDir, "mysql-bin")
	}
	m.args = append(m.args, o.Args...)
	return m, tmp
}

func (m *MariaDB) start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	cmd := exec.Command(m.Bin, m.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("start mariadbd: %v", err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	done := m.done
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(mariadbReadyTimeout)
	for {
		c := exec.Command(m.Client, "--no-defaults", "--socket="+m.Socket, "-uroot", "-e", "SELECT 1")
		if err := c.Run(); err == nil {
			return
		}
		select {
		case <-done:
			b, _ := os.ReadFile(m.LogFile)
			m.t.Fatalf("mariadbd exited while starting:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(m.LogFile)
			m.t.Fatalf("mariadbd not ready after %v:\n%s", mariadbReadyTimeout, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rootSQL runs sql as root over the socket and returns its output (tab
// separated, no headers).
func (m *MariaDB) rootSQL(t testing.TB, sql string) string {
	t.Helper()
	out, err := m.SQLErr(sql)
	if err != nil {
		t.Fatalf("mariadb: %v", err)
	}
	return out
}

// SQL runs statements as root in the default database and returns the output.
func (m *MariaDB) SQL(t testing.TB, sql string) string {
	t.Helper()
	return m.rootSQL(t, sql)
}

// SQLErr runs statements as root and returns the output or an error holding it.
func (m *MariaDB) SQLErr(sql string) (string, error) {
	var out, errb bytes.Buffer
	c := exec.Command(m.Client, "--no-defaults", "--socket="+m.Socket, "-uroot", "-N", "-B", "-e", sql)
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("%.200s: %v: %s", sql, err, errb.String())
	}
	return strings.TrimSpace(out.String()), nil
}

// DSN connects as the superuser to the default database "app".
func (m *MariaDB) DSN() string { return m.DSNDB(mariadbDefaultDBName) }

// DSNDB connects as the superuser to database db.
func (m *MariaDB) DSNDB(db string) string {
	return m.DSNFor(MariaDBSuperuser, mariadbTestPassword, db)
}

// DSNFor connects as user with password to db, as a mysql:// URL.
func (m *MariaDB) DSNFor(user, password, db string) string {
	u := url.URL{Scheme: "mysql", User: url.UserPassword(user, password), Host: "127.0.0.1:" + strconv.Itoa(m.Port), Path: "/" + db}
	return u.String()
}

// Stop shuts the server down and waits for it.
func (m *MariaDB) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	select {
	case <-m.done:
	default:
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(mariadbStopTimeout):
			syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
			<-m.done
		}
	}
	m.cmd = nil
}

// Restart stops the server cleanly and starts it again on the same data
// directory and port.
func (m *MariaDB) Restart(t testing.TB) {
	t.Helper()
	m.Stop()
	m.start()
}

// Kill stops the server at once, as a crash would.
func (m *MariaDB) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	<-m.done
	m.cmd = nil
}

// StartMariaDBReplica starts a new server replicating from primary with
// GTIDs (MASTER_USE_GTID=slave_pos), read-only, and returns once it
// replicates.
func StartMariaDBReplica(t testing.TB, primary *MariaDB) *MariaDB {
	t.Helper()
	r := StartMariaDB(t, MariaDBOptions{Args: []string{"--read-only=ON"}})
	r.SQL(t, fmt.Sprintf(`SET GLOBAL gtid_slave_pos = '%s';
CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos;
START SLAVE;`, primary.SQL(t, "SELECT @@gtid_binlog_pos"), primary.Port, MariaDBSuperuser, mariadbTestPassword))
	// The replica starts at the primary's current GTID position: what the
	// primary held before is not copied.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := r.SQLErr("SHOW GLOBAL STATUS LIKE 'Slave_running'")
		if err == nil && strings.HasSuffix(out, "ON") {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica does not replicate after 30 s:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitCaughtUp waits until the replica has applied everything primary had
// in its binlog when called.
func (m *MariaDB) WaitCaughtUp(t testing.TB, primary *MariaDB) {
	t.Helper()
	pos := primary.SQL(t, "SELECT @@gtid_binlog_pos")
	out := m.SQL(t, fmt.Sprintf("SELECT MASTER_GTID_WAIT('%s', 30)", pos))
	if out != "0" {
		t.Fatalf("replica did not reach GTID %s within 30 s (MASTER_GTID_WAIT returned %s)", pos, out)
	}
}

// Promote stops replication on m and makes it writable.
func (m *MariaDB) Promote(t testing.TB) {
	t.Helper()
	m.SQL(t, "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF")
}
