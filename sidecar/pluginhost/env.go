package pluginhost

import "strings"

// pluginEnv returns the environment a plugin process starts with: the
// entries of environ that childEnvAllowed passes, then extra. go-plugin adds
// its own handshake variables (PLUGIN_*, the magic cookie) after these.
func pluginEnv(environ []string, extra ...string) []string {
	var out []string
	for _, kv := range environ {
		name, _, ok := strings.Cut(kv, "=")
		if ok && childEnvAllowed(name) {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// childEnvAllowed says whether a host environment variable may reach a plugin
// (and, through the plugin, the tools it runs, such as pg_dump). It is an
// allowlist: PATH, HOME, USER, LANG, LC_*, TZ, TMPDIR, SSL_CERT_FILE and
// SSL_CERT_DIR (where TLS finds CA certificates), the plugin protocol's
// own AMBER_PLUGIN_* variables, and libpq's PG* variables. Credentials for
// the repository (AMBER_PASSWORD, AMBER_DSN*, AWS_*, B2_*) and anything named
// like a secret (*SECRET*, *TOKEN*, *PASSWORD*, *PASSWD*, *CREDENTIAL*,
// *_KEY) never pass, whatever its prefix, with one exception: PGPASSWORD,
// which libpq reads and which a user may rely on to give the database
// password outside the DSN. (PGPASSFILE, naming a file, passes as a PG*
// variable.) The database credentials belong to the plugin anyway: the DSN
// reaches it through the protocol.
func childEnvAllowed(name string) bool {
	n := strings.ToUpper(name)
	if n == "PGPASSWORD" {
		return true
	}
	for _, bad := range []string{"SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL"} {
		if strings.Contains(n, bad) {
			return false
		}
	}
	if strings.HasSuffix(n, "_KEY") || strings.HasPrefix(n, "AWS_") || strings.HasPrefix(n, "B2_") {
		return false
	}
	switch n {
	case "PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR":
		return true
	}
	return strings.HasPrefix(n, "LC_") || strings.HasPrefix(n, "AMBER_PLUGIN_") || strings.HasPrefix(n, "PG")
}
