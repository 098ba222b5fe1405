package myengine

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LocalServer is a private server started on a restored data directory,
// to apply archived binlog to it: no network (a socket in a private
// directory), no binary log of its own, no replication or scheduled
// events, and a one-time administrator with a random password that only
// the plugin knows (created by an init file in memory). Stop removes the administrator and shuts the server
// down cleanly.
type LocalServer struct {
	cmd     *exec.Cmd
	done    chan struct{}
	dir     string
	socket  string
	user    string
	pw      string
	logFile string
}

// LocalServerOptions configure StartLocalServer.
type LocalServerOptions struct {
	// BinDir holds mariadbd (mysqld); empty: PATH, then /usr/sbin.
	BinDir string
	// Ready bounds the wait for the server to accept connections; 0: 10 min.
	Ready time.Duration
	// LogBin, a binary log base name in the data directory (as the
	// source's --log-bin gave it, e.g. mysql-bin), starts the server with
	// that log instead of none: InnoDB's prepared transactions are then
	// resolved from it at start (see RecoverFromBinlog).
	LogBin string
}

// ServerBinary finds mariadbd (else mysqld).
func ServerBinary(binDir string) (string, error) {
	dirs := []string{binDir}
	if binDir == "" {
		dirs = []string{"", "/usr/sbin", "/usr/libexec", "/usr/local/mysql/bin"}
	}
	for _, d := range dirs {
		for _, n := range []string{"mariadbd", "mysqld"} {
			p := n
			if d != "" {
				p = filepath.Join(d, n)
			}
			if p, err := exec.LookPath(p); err == nil {
				return p, nil
			}
		}
	}
	return "", errors.New("applying archived binlog to a physical copy starts a server on it, and no mariadbd or mysqld was found (on PATH or in /usr/sbin): install the server of the backup's version (or set the bin_dir setting)")
}

// StartLocalServer starts a server on dataDir as the directory's owner and
// returns once it accepts connections.
func StartLocalServer(ctx context.Context, dataDir string, o LocalServerOptions) (*LocalServer, error) {
	bin, err := ServerBinary(o.BinDir)
	if err != nil {
		return nil, err
	}
	if o.Ready <= 0 {
		o.Ready = 10 * time.Minute
	}
	st, err := os.Stat(dataDir)
	if err != nil {
		return nil, err
	}
	sys := st.Sys().(*syscall.Stat_t)
	uid, gid := int(sys.Uid), int(sys.Gid)
	dir, err := os.MkdirTemp("", "amber-mysql-replay-")
	if err != nil {
		return nil, err
	}
	s := &LocalServer{dir: dir, socket: filepath.Join(dir, "mysqld.sock"), logFile: filepath.Join(dir, "error.log"), done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	var b [18]byte
	rand.Read(b[:])
	s.user, s.pw = "amber_replay_"+hex.EncodeToString(b[:4]), hex.EncodeToString(b[4:])
	// Never in a binary log, when the server writes one.
	init := fmt.Sprintf("SET SESSION sql_log_bin = 0;\nCREATE USER '%s'@'localhost' IDENTIFIED BY '%s';\nGRANT ALL PRIVILEGES ON *.* TO '%s'@'localhost' WITH GRANT OPTION;\n",
		s.user, s.pw, s.user)
	// The server runs as the data directory's owner: it must reach its
	// socket, scratch space and init file (in memory, never on disk).
	fileUID, fileGID := -1, -1
	if os.Geteuid() == 0 && uid != 0 {
		fileUID, fileGID = uid, gid
	}
	secret, err := secretFile("replay-init", []byte(init), fileUID, fileGID)
	if err != nil {
		return nil, err
	}
	defer secret.Close()
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, err
	}
	if fileUID != -1 {
		for _, p := range []string{dir, tmp} {
			if err := os.Lchown(p, uid, gid); err != nil {
				return nil, err
			}
		}
	}
	var args []string
	if _, err := os.Lstat(filepath.Join(dataDir, BackupConfFile)); err == nil {
		// The source's InnoDB layout (page size, data and log files).
		args = append(args, "--defaults-file="+filepath.Join(dataDir, BackupConfFile))
	} else {
		args = append(args, "--no-defaults")
	}
	args = append(args, "--datadir="+dataDir, "--socket="+s.socket, "--skip-networking",
		"--pid-file="+filepath.Join(dir, "mysqld.pid"), "--log-error="+s.logFile, "--tmpdir="+tmp,
		"--init-file="+SecretFilePath, "--skip-slave-start", "--event-scheduler=OFF",
		"--max-allowed-packet=1G", "--default-time-zone=+00:00")
	if o.LogBin != "" {
		args = append(args, "--log-bin="+o.LogBin)
	} else {
		args = append(args, "--skip-log-bin")
	}
	if os.Geteuid() == 0 {
		name := strconv.Itoa(uid)
		if u, err := user.LookupId(name); err == nil {
			name = u.Username
		}
		args = append(args, "--user="+name)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = toolEnv(dir)
	cmd.Dir = dir
	cmd.ExtraFiles = []*os.File{secret}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	secret.Close()
	s.cmd = cmd
	go func() { cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(o.Ready)
	for {
		db, _, err := Open(ctx, s.DSN())
		if err == nil {
			db.Close()
			break
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("%s exited while starting on %s:\n%s", filepath.Base(bin), dataDir, s.logTail())
		case <-ctx.Done():
			s.kill()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return nil, fmt.Errorf("%s on %s does not accept connections after %v:\n%s", filepath.Base(bin), dataDir, o.Ready, s.logTail())
		}
	}
	ok = true
	return s, nil
}

// DSN connects as the one-time administrator over the private socket.
func (s *LocalServer) DSN() DSN {
	return DSN(s.user + ":" + s.pw + "@unix(" + s.socket + ")/")
}

func (s *LocalServer) logTail() string {
	b, _ := os.ReadFile(s.logFile)
	t := &tailBuffer{}
	t.Write(b)
	return t.lines(20)
}

func (s *LocalServer) kill() {
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

// Stop drops the administrator, shuts the server down (SIGTERM: a clean
// shutdown) and removes the private directory.
func (s *LocalServer) Stop(ctx context.Context) error {
	defer os.RemoveAll(s.dir)
	var dropErr error
	if db, _, err := Open(ctx, s.DSN()); err == nil {
		dropErr = dropUnlogged(ctx, db, s.user)
		db.Close()
	} else {
		dropErr = err
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Minute):
		s.kill()
		return fmt.Errorf("the server on the restored copy did not shut down within 10 minutes; it was killed, and InnoDB recovers when the copy is next started")
	}
	if dropErr != nil {
		return fmt.Errorf("remove the replay administrator %s from the restored copy: %w; drop it by hand", s.user, dropErr)
	}
	if ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.ExitStatus() != 0 {
		return fmt.Errorf("the server on the restored copy exited with status %d while shutting down:\n%s", ws.ExitStatus(), s.logTail())
	}
	return nil
}

// dropUnlogged drops user@localhost in a session that writes no binary log.
func dropUnlogged(ctx context.Context, db *sql.DB, user string) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET SESSION sql_log_bin = 0"); err != nil {
		return err
	}
	_, err = conn.ExecContext(ctx, fmt.Sprintf("DROP USER '%s'@'localhost'", user))
	return err
}

// SourceBinlog returns the base name of the source server's binary log
// when the data directory holds it: its index file and every binlog file
// the index lists, by name, beside the data (a volume snapshot; a
// mariadb-backup copy holds no binlog), given a binlog file name of the
// source such as mysql-bin.000001.
func SourceBinlog(dataDir, file string) (string, bool) {
	i := strings.LastIndexByte(file, '.')
	if i <= 0 || strings.ContainsRune(file, '/') {
		return "", false
	}
	base := file[:i]
	names, err := binlogIndex(dataDir, base)
	if err != nil || len(names) == 0 {
		return "", false
	}
	for _, n := range names {
		if st, err := os.Stat(filepath.Join(dataDir, n)); err != nil || !st.Mode().IsRegular() {
			return "", false
		}
	}
	return base, true
}

// binlogIndex reads the binlog index base.index in dataDir and returns the
// file names it lists (without their directories).
func binlogIndex(dataDir, base string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, base+".index"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			names = append(names, filepath.Base(line))
		}
	}
	return names, nil
}

// RecoverFromBinlog starts a server on dataDir with the source's binary
// log base (SourceBinlog) and shuts it down cleanly once it accepts
// connections. A volume snapshot can hold transactions InnoDB prepared but
// has no commit record of: with the binlog on, the binlog is the commit's
// record (InnoDB's own is not made durable at commit), and only a start
// that reads it commits those it holds and rolls back the rest. A start
// without it (the replay's) refuses to run: "Found 1 prepared
// transactions! ... --tc-heuristic-recover". The index is first rewritten
// to name the files in dataDir: a source started with an absolute
// --log-bin names its own directory there, and the server must not reach
// the source's files.
func RecoverFromBinlog(ctx context.Context, dataDir, base, binDir string) error {
	names, err := binlogIndex(dataDir, base)
	if err != nil {
		return err
	}
	var idx strings.Builder
	for _, n := range names {
		idx.WriteString("./" + n + "\n")
	}
	// WriteFile keeps the existing file's owner and mode.
	if err := os.WriteFile(filepath.Join(dataDir, base+".index"), []byte(idx.String()), 0o640); err != nil {
		return fmt.Errorf("rewrite the copy's binlog index: %w", err)
	}
	srv, err := StartLocalServer(ctx, dataDir, LocalServerOptions{BinDir: binDir, LogBin: base})
	if err != nil {
		return fmt.Errorf("recover the copy's transactions from its binary log %s: %w", base, err)
	}
	if err := srv.Stop(ctx); err != nil {
		return fmt.Errorf("recover the copy's transactions from its binary log %s: %w", base, err)
	}
	return nil
}
