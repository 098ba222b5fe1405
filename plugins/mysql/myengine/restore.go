package myengine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// RestoreOptions configure LogicalRestore.
type RestoreOptions struct {
	// BinDir holds the mariadb (or mysql) client; empty: PATH.
	BinDir string
	// AllDatabases opens the session in no database, for SQL that names
	// its databases (the binlog of a whole server); by default the DSN
	// must name one.
	AllDatabases bool
}

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

// Loader feeds SQL to one client session.
type Loader struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	stderr  bytes.Buffer
	cleanup func()
}

// NewLoader starts the client against d's database.
func NewLoader(ctx context.Context, d DSN, o RestoreOptions) (*Loader, error) {
	cmd, cleanup, err := ClientCommand(ctx, d, o)
	if err != nil {
		return nil, err
	}
	l := &Loader{cmd: cmd, cleanup: cleanup}
	cmd.Stdout = io.Discard
	cmd.Stderr = &l.stderr
	l.in, err = cmd.StdinPipe()
	if err != nil {
		cleanup()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cleanup()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return l, nil
}

// Load sends one entry's SQL.
func (l *Loader) Load(name string, r io.Reader) error {
	if _, err := io.Copy(l.in, r); err != nil {
		return fmt.Errorf("load %s: %w%s", name, err, l.detail())
	}
	// Entries end with a newline; make sure the next starts on its own line.
	_, err := l.in.Write([]byte("\n"))
	return err
}

func (l *Loader) detail() string {
	if s := strings.TrimSpace(l.stderr.String()); s != "" {
		return ": " + s
	}
	return ""
}

// Close ends the session and reports the client's failure.
func (l *Loader) Close() error {
	defer l.cleanup()
	l.in.Close()
	if err := l.cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w%s", filepath.Base(l.cmd.Path), err, l.detail())
	}
	return nil
}
