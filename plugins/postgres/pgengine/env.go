package pgengine

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/amber-backup/amber/plugins/internal/secretfile"
)

// toolEnv is the environment of a libpq tool (pg_dump, pg_restore, psql)
// that the plugin runs: the allowlisted part of the plugin's own
// environment; when the DSN carried a password, without PGPASSWORD and
// PGPASSFILE, which toolCommand sets to a password file in memory.
func toolEnv(password string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || !toolEnvAllowed(name) || (password != "" && (name == "PGPASSWORD" || name == "PGPASSFILE")) {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// toolCommand prepares a libpq tool run with args. A password goes to it
// as a libpq password file (one line, "*:*:*:*:password") in an anonymous
// memory file, mode 0600, that the tool opens as secretfile.Path
// (PGPASSFILE): not in its arguments or environment, where other
// processes of the same user could read it, and not on disk. done closes
// the parent's copy of the file; call it after the tool has ended.
func toolCommand(ctx context.Context, bin string, args []string, password string) (cmd *exec.Cmd, done func(), err error) {
	cmd = exec.CommandContext(ctx, bin, args...)
	cmd.Env = toolEnv(password)
	// A tool never outlives the plugin: one writing into or reading from a
	// pipe to the host would otherwise go on without it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if password == "" {
		return cmd, func() {}, nil
	}
	esc := strings.NewReplacer(`\`, `\\`, ":", `\:`).Replace(password)
	f, err := secretfile.New("pgpass", []byte("*:*:*:*:"+esc+"\n"), -1, -1)
	if err != nil {
		return nil, nil, err
	}
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(cmd.Env, "PGPASSFILE="+secretfile.Path)
	return cmd, func() { f.Close() }, nil
}

// toolEnvAllowed says whether a variable of the plugin's environment may
// reach a child tool. It is an allowlist: PATH, HOME, USER, LANG, LC_*, TZ,
// TMPDIR, SSL_CERT_FILE, SSL_CERT_DIR and libpq's PG* variables. Anything named like a credential
// (*SECRET*, *TOKEN*, *PASSWORD*, *PASSWD*, *CREDENTIAL*, *_KEY, AWS_*,
// B2_*, and every AMBER_* variable such as AMBER_PASSWORD or AMBER_DSN) never
// passes, with one exception: PGPASSWORD, which libpq reads and which a user
// may rely on when the DSN has no password (a DSN's own password replaces
// it). The host applies the same rules when it starts the plugin.
func toolEnvAllowed(name string) bool {
	n := strings.ToUpper(name)
	if n == "PGPASSWORD" {
		return true
	}
	for _, bad := range []string{"SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL"} {
		if strings.Contains(n, bad) {
			return false
		}
	}
	if strings.HasSuffix(n, "_KEY") || strings.HasPrefix(n, "AWS_") || strings.HasPrefix(n, "B2_") || strings.HasPrefix(n, "AMBER_") {
		return false
	}
	switch n {
	case "PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR":
		return true
	}
	return strings.HasPrefix(n, "LC_") || strings.HasPrefix(n, "PG")
}
