package pgengine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/amber-backup/amber/plugins/api"
)

// DumpOptions tune LogicalDump.
type DumpOptions struct {
	// BinDir holds pg_dump; default: /usr/lib/postgresql/<server major>/bin,
	// then PATH.
	BinDir string
	// ExtraArgs are appended to pg_dump's arguments (e.g. --schema=app).
	ExtraArgs []string
}

// LogicalDump writes a consistent logical copy of the DSN's database to w in
// pg_dump's custom format (-Fc), streamed as pg_dump produces it. The
// pg_dump used matches the server's major version when installed.
func LogicalDump(ctx context.Context, dsn DSN, w io.Writer, opts DumpOptions) error {
	info, err := Probe(ctx, dsn)
	if info == nil {
		return err
	}
	bin, err := findTool("pg_dump", opts.BinDir, info.Major)
	if err != nil {
		return err
	}
	// No pg_dump compression: zlib would cap the dump at ~40 MB/s and hide the
	// data from the repository's own faster compression and deduplication.
	args := append([]string{"--format=custom", "--compress=0", "--no-password"}, opts.ExtraArgs...)
	return runPGTool(ctx, bin, dsn, args, nil, w)
}

// LogicalRestoreOptions tune LogicalRestore.
type LogicalRestoreOptions struct {
	BinDir string
	// NoOwner skips ALTER OWNER, for restoring where the original roles
	// do not exist. NoPrivileges skips GRANT/REVOKE.
	NoOwner, NoPrivileges bool
	// Clean drops objects before recreating them (with IF EXISTS).
	Clean     bool
	ExtraArgs []string
}

// LogicalRestore feeds a custom-format dump from r to pg_restore into the
// DSN's database, stopping at the first error.
func LogicalRestore(ctx context.Context, dsn DSN, r io.Reader, opts LogicalRestoreOptions) error {
	info, err := Probe(ctx, dsn)
	if info == nil {
		return err
	}
	bin, err := findTool("pg_restore", opts.BinDir, info.Major)
	if err != nil {
		return err
	}
	args := []string{"--exit-on-error", "--no-password", "--single-transaction"}
	if opts.NoOwner {
		args = append(args, "--no-owner")
	}
	if opts.NoPrivileges {
		args = append(args, "--no-privileges")
	}
	if opts.Clean {
		args = append(args, "--clean", "--if-exists")
	}
	args = append(args, opts.ExtraArgs...)
	return runPGTool(ctx, bin, dsn, args, r, io.Discard)
}

// findTool finds a client tool of the server's major version (newer tools
// read older servers; pg_dump refuses newer ones).
func findTool(name, binDir string, major int) (string, error) {
	if binDir != "" {
		p := filepath.Join(binDir, name)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s not found in %s", name, binDir)
		}
		return p, nil
	}
	for m := major; m <= major+10; m++ {
		p := filepath.Join("/usr/lib/postgresql", strconv.Itoa(m), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s for PostgreSQL %d not found in /usr/lib/postgresql/%d/bin or on PATH; install the PostgreSQL %d client", name, major, major, major)
}

// runPGTool runs a libpq tool against dsn; the password travels in a
// password file in memory (toolCommand), never on the command line or in
// the environment. The tool gets an allowlisted environment (toolEnv),
// never the plugin's whole one.
func runPGTool(ctx context.Context, bin string, dsn DSN, args []string, stdin io.Reader, stdout io.Writer) error {
	conn, password := splitPassword(string(dsn))
	cmd, done, err := toolCommand(ctx, bin, append(args, "--dbname="+conn), password)
	if err != nil {
		return err
	}
	defer done()
	cmd.Stdin = stdin
	cmd.Stdout = stdout
	// An entry's pipe from or to the host: the tool reads or writes it
	// directly.
	if p, ok := stdin.(api.PipeFile); ok {
		cmd.Stdin = p.PipeFile()
	}
	if p, ok := stdout.(api.PipeFile); ok {
		cmd.Stdout = p.PipeFile()
	}
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{buf: &stderr, max: 16 << 10}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if password != "" {
			msg = strings.ReplaceAll(msg, password, "***")
		}
		return fmt.Errorf("%s on %s: %v: %s", filepath.Base(bin), dsn, err, msg)
	}
	return nil
}

type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
		} else {
			l.buf.Write(p)
		}
	}
	return len(p), nil
}
