package pgengine

import (
	"os"
	"strings"
)

// toolEnv is the environment of a libpq tool (pg_dump, pg_restore) that the
// plugin runs: the allowlisted part of the plugin's own environment, with
// PGPASSWORD set to password when the DSN carried one.
func toolEnv(password string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || !toolEnvAllowed(name) || (password != "" && name == "PGPASSWORD") {
			continue
		}
		env = append(env, kv)
	}
	if password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	return env
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
