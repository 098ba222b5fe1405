package myengine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/amber-backup/amber/plugins/api"
)

// Physical backups run the server's own backup tool beside the server:
// mariadb-backup (mariabackup) for MariaDB, xtrabackup for MySQL. The tool
// reads the data directory's files and takes its locks (BACKUP STAGE on
// MariaDB) through a session of its own; its --stream=xbstream output is
// passed through, as it arrives, to the caller's writer, and read on the
// way for the binlog position the copy is consistent at.

// The names of the metadata files the backup tool puts into its stream.
const (
	BinlogInfoFile  = "xtrabackup_binlog_info"
	CheckpointsFile = "xtrabackup_checkpoints"
	BackupInfoFile  = "xtrabackup_info"
	BackupConfFile  = "backup-my.cnf"
)

// PhysicalOptions configure PhysicalBackup.
type PhysicalOptions struct {
	// BinDir holds the backup tool; empty: PATH.
	BinDir string
	// TmpDir is where the tool spools the redo log it copies while the
	// data files stream (it sends that copy last); empty: the system's
	// temporary directory. A private directory is made inside it.
	TmpDir string
	// Parallel is the tool's --parallel (files copied at once); 0: 1.
	Parallel int
	// Lineage overrides the lineage Probe derives.
	Lineage string
	// DataDir is where this machine sees the server's data directory,
	// when that is not the path the server reports (@@datadir): a sidecar
	// that mounts the database's volume elsewhere. Empty: @@datadir.
	DataDir string
}

// PhysicalResult is where and when a physical backup is consistent.
type PhysicalResult struct {
	Info           *Info
	Start          Pos // the server's position before the tool started
	Consistent     Pos // xtrabackup_binlog_info: the position under the tool's commit block
	StartTime      time.Time
	ConsistentTime time.Time // when the stream carried the consistent position (no earlier than the block)
	Tool           string    // base name: mariadb-backup, mariabackup, xtrabackup
	DataDir        string    // the server's, as it reports it
	Bytes          int64     // stream bytes written
	// Meta holds the small metadata files seen in the stream by name
	// (xtrabackup_binlog_info, xtrabackup_checkpoints, xtrabackup_info,
	// backup-my.cnf).
	Meta map[string][]byte
}

// BackupTool finds the physical backup tool for a MariaDB or a MySQL
// server in binDir, or on PATH when binDir is empty.
func BackupTool(binDir string, mariadb bool) (string, error) {
	names := []string{"mariadb-backup", "mariabackup"}
	pkg := "mariadb-backup (the Debian/RPM package of the server's version)"
	if !mariadb {
		names, pkg = []string{"xtrabackup"}, "Percona XtraBackup of the server's version"
	}
	for _, n := range names {
		p := n
		if binDir != "" {
			p = filepath.Join(binDir, n)
		}
		if p, err := exec.LookPath(p); err == nil {
			return p, nil
		}
	}
	where := "on PATH"
	if binDir != "" {
		where = "in " + binDir
	}
	return "", fmt.Errorf("physical backups need %s, which is not installed %s: install %s beside the server (or set the bin_dir setting), or take a logical backup (--mode logical)",
		strings.Join(names, " or "), where, pkg)
}

// toolDir is a private directory (0700) for the tool's scratch space; it
// holds no secrets. Remove it with os.RemoveAll.
func toolDir(tmpRoot string) (string, error) {
	dir, err := os.MkdirTemp(tmpRoot, "amber-mysql-backup-")
	if err != nil {
		return "", fmt.Errorf("private directory for the backup tool: %w", err)
	}
	return dir, nil
}

// toolEnv is a child's whole environment: no credentials, no MYSQL_* or
// MARIADB_* variables, HOME at the private directory so no ~/.my.cnf is
// read.
func toolEnv(home string) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TZ=UTC", "LC_ALL=C"}
}

// tailBuffer keeps the last 16 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 16<<10 {
		t.b = append(t.b[:0], t.b[len(t.b)-16<<10:]...)
	}
	return len(p), nil
}

// lines returns the last n lines.
func (t *tailBuffer) lines(n int) string {
	ls := strings.Split(strings.TrimSpace(string(t.b)), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// toolError explains a failed run of the backup tool from its last lines.
func toolError(tool string, err error, stderr *tailBuffer) error {
	tail := stderr.lines(12)
	hint := ""
	switch {
	case strings.Contains(tail, "missing required privilege"):
		hint = "; grant the backup user the privilege named below (GRANT <privilege> ON *.* TO <user>)"
	case strings.Contains(tail, "Access denied"):
		hint = "; the user or password is wrong, check the DSN"
	case strings.Contains(tail, "Permission denied") || strings.Contains(tail, "EACCES"):
		hint = "; the plugin must run beside the server as a user that can read its data directory (the server's OS user, or root)"
	case strings.Contains(tail, "version") && strings.Contains(tail, "not supported"):
		hint = "; install the backup tool of the server's exact version"
	}
	return fmt.Errorf("%s failed: %v%s\n%s", filepath.Base(tool), err, hint, tail)
}

// PhysicalBackup runs the backup tool against d's server and writes its
// xbstream to the writer open returns. open is called when the first byte
// of the stream arrives, so a backup the tool refuses before it starts
// (a version mismatch, an unreadable data directory) writes nothing.
// The server must run on this machine: the tool reads its files.
func PhysicalBackup(ctx context.Context, d DSN, open func() (io.WriteCloser, error), o PhysicalOptions) (*PhysicalResult, error) {
	db, _, err := Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	info, err := probeDB(ctx, db, o.Lineage)
	if err != nil {
		return nil, err
	}
	res := &PhysicalResult{Info: info, Meta: map[string][]byte{}}
	var process int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ? AND PRIVILEGE_TYPE = 'PROCESS'", info.User).Scan(&process); err != nil {
		return nil, fmt.Errorf("read the privileges of %s: %w", info.User, err)
	}
	if process == 0 {
		return nil, fmt.Errorf("user %s lacks the privilege PROCESS, which a physical backup needs: run GRANT PROCESS ON *.* TO %s", info.User, info.User)
	}
	if err := db.QueryRowContext(ctx, "SELECT @@datadir").Scan(&res.DataDir); err != nil {
		return nil, fmt.Errorf("read the server's data directory: %w", err)
	}
	// res.DataDir stays the server's (a restore lays the copy out
	// there); local is where this machine reads it.
	local := res.DataDir
	if o.DataDir != "" {
		local = o.DataDir
	}
	if st, err := os.Stat(local); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("the server's data directory %s is not on this machine (or not readable here): a physical backup reads the server's files, so the plugin must run beside the server, as a user that can read them (give --data-dir where this machine mounts it, if elsewhere)", local)
	}
	tool, err := BackupTool(o.BinDir, info.MariaDB)
	if err != nil {
		return nil, err
	}
	res.Tool = filepath.Base(tool)
	dir, err := toolDir(o.TmpDir)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	opts, err := clientOptions(d)
	if err != nil {
		return nil, err
	}
	secret, err := secretFile("client-cnf", opts, -1, -1)
	if err != nil {
		return nil, err
	}
	defer secret.Close()
	scratch := filepath.Join(dir, "tmp")
	if err := os.Mkdir(scratch, 0o700); err != nil {
		return nil, err
	}
	start, err := masterStatus(ctx, db, info.MariaDB)
	if err != nil {
		return nil, err
	}
	start.Epoch = 1
	res.Start, res.StartTime = start, time.Now().UTC()
	db.Close()

	// --defaults-file first (the tool requires it there): the option file,
	// in memory, replaces the machine's my.cnf, so nothing there redirects
	// the backup.
	args := []string{"--defaults-file=" + SecretFilePath, "--backup", "--stream=xbstream",
		"--target-dir=" + filepath.Join(dir, "target"), "--datadir=" + local, "--tmpdir=" + scratch}
	if o.Parallel > 1 {
		args = append(args, "--parallel="+strconv.Itoa(o.Parallel))
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, tool, args...)
	cmd.Env = toolEnv(dir)
	cmd.Dir = dir
	cmd.ExtraFiles = []*os.File{secret}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr tailBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", tool, err)
	}
	secret.Close() // the tool holds its own descriptor
	lw := &lazyWriter{open: open}
	streamErr := readBackupStream(stdout, lw, res)
	if streamErr != nil {
		cancel() // the tool stops (SIGKILL); its session ends and with it its locks
	}
	waitErr := cmd.Wait()
	res.Bytes = lw.n
	// On failure the entry is left unfinished: the backup fails with it.
	if streamErr != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if waitErr != nil && errors.Is(streamErr, errXB) {
			return nil, toolError(tool, waitErr, &stderr)
		}
		return nil, fmt.Errorf("backup stream: %w", streamErr)
	}
	if waitErr != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, toolError(tool, waitErr, &stderr)
	}
	if lw.w == nil {
		return nil, fmt.Errorf("%s wrote no backup stream\n%s", res.Tool, stderr.lines(12))
	}
	if err := lw.w.Close(); err != nil {
		return nil, err
	}
	info2, ok := res.Meta[BinlogInfoFile]
	if !ok {
		return nil, fmt.Errorf("%s's stream has no %s: the binlog position of the copy is unknown (is log_bin on?)", res.Tool, BinlogInfoFile)
	}
	pos, err := ParseBinlogInfo(info2)
	if err != nil {
		return nil, err
	}
	res.Consistent = pos
	return res, nil
}

// lazyWriter opens its writer at the first byte.
type lazyWriter struct {
	open func() (io.WriteCloser, error)
	w    io.WriteCloser
	n    int64
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if l.w == nil {
		w, err := l.open()
		if err != nil {
			return 0, err
		}
		l.w = w
	}
	n, err := l.w.Write(p)
	l.n += int64(n)
	return n, err
}

// readBackupStream copies the tool's stream to w while parsing it: it must
// be a well-formed xbstream, and its small metadata files are kept in
// res.Meta. The time the binlog position arrives is the consistent time:
// the tool read that position while commits were blocked, so every commit
// before it is in the copy and none after it.
func readBackupStream(stdout io.Reader, w io.Writer, res *PhysicalResult) error {
	x := newXBReader(io.TeeReader(stdout, w))
	for {
		c, err := x.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		// A stream that could not be restored fails the backup now.
		name, err := cleanStreamPath(c.Path)
		if err != nil {
			return err
		}
		switch name {
		case BinlogInfoFile, CheckpointsFile, BackupInfoFile, BackupConfFile:
			if c.EOF {
				if name == BinlogInfoFile {
					res.ConsistentTime = time.Now().UTC()
				}
				continue
			}
			if c.Offset+c.Length > 1<<20 {
				return fmt.Errorf("%w: %s is larger than 1 MiB", errXB, name)
			}
			b, err := io.ReadAll(x)
			if err != nil {
				return err
			}
			res.Meta[name] = append(res.Meta[name], b...)
		}
	}
}

// ParseBinlogInfo reads xtrabackup_binlog_info: "<file>\t<position>\t<GTID
// set>"; MySQL's GTID set may continue on further lines.
func ParseBinlogInfo(b []byte) (Pos, error) {
	s := strings.TrimSpace(string(b))
	f := strings.SplitN(s, "\t", 3)
	if len(f) < 2 {
		return Pos{}, fmt.Errorf("%s %q is not <binlog file>\\t<position>[\\t<GTID set>]", BinlogInfoFile, s)
	}
	p, err := ParseText(f[0] + ":" + strings.TrimSpace(f[1]))
	if err != nil {
		return Pos{}, fmt.Errorf("%s: %w", BinlogInfoFile, err)
	}
	if len(f) == 3 {
		p.GTID = strings.Join(strings.Fields(f[2]), "")
	}
	p.Epoch = 1
	return p, nil
}

// Owner is a numeric file owner.
type Owner struct{ UID, GID int }

// ExtractOptions configure ExtractXBStream.
type ExtractOptions struct {
	// MaxOpen bounds the files open at once (chunks of different files
	// interleave when the backup ran with --parallel); 0: 1024.
	MaxOpen int
}

// ExtractXBStream unpacks an xbstream read from r into dataDir, which must
// be absent or empty. Every file is written strictly beneath dataDir:
// absolute names and ".." are refused, and nothing is ever opened through
// a symlink (os.Root). It returns the number of files and bytes written.
func ExtractXBStream(ctx context.Context, dataDir string, r io.Reader, o ExtractOptions) (files int, written int64, err error) {
	if o.MaxOpen <= 0 {
		o.MaxOpen = 1024
	}
	if err := checkEmptyDir(dataDir); err != nil {
		return 0, 0, err
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return 0, 0, fmt.Errorf("restore: %w", err)
	}
	root, err := os.OpenRoot(dataDir)
	if err != nil {
		return 0, 0, fmt.Errorf("restore: %w", err)
	}
	defer root.Close()
	type openFile struct {
		f    *os.File
		next int64
	}
	open := map[string]*openFile{}
	defer func() {
		for _, of := range open {
			of.f.Close()
		}
	}()
	create := func(name string) (*os.File, error) {
		if dir := filepath.Dir(name); dir != "." {
			if err := root.MkdirAll(dir, 0o750); err != nil {
				return nil, err
			}
		}
		return root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	}
	x := newXBReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return files, written, err
		}
		c, err := x.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return files, written, fmt.Errorf("restore: %w", err)
		}
		name, err := cleanStreamPath(c.Path)
		if err != nil {
			return files, written, fmt.Errorf("restore: %w", err)
		}
		of := open[name]
		if c.EOF {
			if of == nil { // an empty file: its EOF chunk alone
				f, err := create(name)
				if err != nil {
					return files, written, fmt.Errorf("restore %s: %w", name, err)
				}
				of = &openFile{f: f}
			}
			delete(open, name)
			if err := of.f.Close(); err != nil {
				return files, written, fmt.Errorf("restore %s: %w", name, err)
			}
			files++
			continue
		}
		if of == nil {
			if len(open) >= o.MaxOpen {
				return files, written, fmt.Errorf("restore: more than %d files open at once in the stream", o.MaxOpen)
			}
			f, err := create(name)
			if err != nil {
				return files, written, fmt.Errorf("restore %s: %w", name, err)
			}
			of = &openFile{f: f}
			open[name] = of
		}
		if c.Offset != of.next {
			return files, written, fmt.Errorf("restore: %w: chunk of %s at offset %d, expected %d", errXB, name, c.Offset, of.next)
		}
		n, err := io.Copy(of.f, x)
		written += n
		of.next += n
		if err != nil {
			return files, written, fmt.Errorf("restore %s: %w", name, err)
		}
	}
	if len(open) > 0 {
		for name := range open {
			return files, written, fmt.Errorf("restore: %w: the stream ends inside %s (a truncated backup)", errXB, name)
		}
	}
	return files, written, nil
}

func checkEmptyDir(dir string) error {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(2)
	if err != nil && err != io.EOF {
		return fmt.Errorf("restore: %s: %w", dir, err)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == api.RestoringMark })
	if len(names) > 0 {
		return fmt.Errorf("restore: %s is not empty; a physical restore needs an empty or absent directory", dir)
	}
	return nil
}

// PrepareOptions configure Prepare.
type PrepareOptions struct {
	BinDir string
	// Tool is the base name of the tool that made the backup; empty:
	// mariadb-backup.
	Tool string
	// UseMemory is the tool's --use-memory (e.g. "1G"); empty: its
	// default.
	UseMemory string
}

// Prepare makes an extracted backup in dataDir consistent, in place, with
// the backup tool's --prepare (it applies the redo log copied during the
// backup), so that a server started on dataDir holds exactly the data at
// the backup's consistent position.
func Prepare(ctx context.Context, dataDir string, o PrepareOptions) error {
	mariadb := o.Tool != "xtrabackup"
	tool, err := BackupTool(o.BinDir, mariadb)
	if err != nil {
		return err
	}
	home, err := os.MkdirTemp("", "amber-mysql-prepare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	// backup-my.cnf holds the source's InnoDB layout (page size, log and
	// data files); the tool reads it as its only option file.
	args := []string{"--no-defaults"}
	if _, err := os.Lstat(filepath.Join(dataDir, BackupConfFile)); err == nil {
		args = []string{"--defaults-file=" + filepath.Join(dataDir, BackupConfFile)}
	}
	args = append(args, "--prepare", "--target-dir="+dataDir)
	if o.UseMemory != "" {
		args = append(args, "--use-memory="+o.UseMemory)
	}
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = toolEnv(home)
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr tailBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return toolError(tool+" --prepare", err, &stderr)
	}
	if !bytes.Contains(stderr.b, []byte("completed OK!")) {
		return fmt.Errorf("%s --prepare did not report success\n%s", filepath.Base(tool), stderr.lines(12))
	}
	return nil
}

// Chown gives every file under root to o, never following symlinks.
func Chown(root string, o Owner) error {
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, o.UID, o.GID)
	})
}
