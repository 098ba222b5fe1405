package pgengine

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// TestToolEnvironment runs LogicalDump with bin_dir pointing at a fake
// pg_dump that records its environment and arguments, with credentials in
// the plugin's environment: none of them may reach the tool, and the DSN's
// password must travel in the password file PGPASSFILE names (a 0600 file
// in memory), never in the environment or the arguments.
func TestToolEnvironment(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	secrets := map[string]string{
		"AMBER_PASSWORD":        "repo-pw-1",
		"AMBER_DSN":             "postgres://u:dsn-pw-2@h/db",
		"B2_APPLICATION_KEY":    "b2-key-3",
		"AWS_SECRET_ACCESS_KEY": "aws-secret-5",
		"AWS_SESSION_TOKEN":     "aws-token-6",
		"SOME_API_TOKEN":        "token-7",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}

	dir := t.TempDir()
	out := filepath.Join(dir, "env.txt")
	t.Setenv("PGPASSWORD", "user-pw-8") // the DSN's own password replaces it
	script := "#!/bin/sh\nenv > '" + out + "'\necho \"ARGS $*\" >> '" + out + "'\n" +
		"echo \"PASSFILE $(stat -L -c %a \"$PGPASSFILE\") $(cat \"$PGPASSFILE\")\" >> '" + out + "'\nprintf PGDMP\n"
	if err := os.WriteFile(filepath.Join(dir, "pg_dump"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var dump bytes.Buffer
	if err := LogicalDump(ctx, DSN(pg.DSN()), &dump, DumpOptions{BinDir: dir}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := string(raw)
	for k, v := range secrets {
		if strings.Contains(env, k+"=") || strings.Contains(env, v) {
			t.Errorf("pg_dump's environment has %s", k)
		}
	}
	_, password := splitPassword(pg.DSN())
	if password == "" {
		t.Fatal("test DSN has no password")
	}
	args, passfile, _ := strings.Cut(env[strings.Index(env, "ARGS "):], "\nPASSFILE ")
	if strings.Contains(env[:strings.Index(env, "ARGS ")], password) || strings.Contains(env, "PGPASSWORD") {
		t.Errorf("pg_dump's environment holds a password:\n%s", env)
	}
	if strings.Contains(args, password) {
		t.Errorf("the password is on pg_dump's command line")
	}
	if want := "600 *:*:*:*:" + strings.NewReplacer(`\`, `\\`, ":", `\:`).Replace(password) + "\n"; passfile != want {
		t.Errorf("pg_dump's password file (mode, content) = %q, want %q", passfile, want)
	}
	if !strings.Contains(env, "PATH=") {
		t.Errorf("pg_dump got no PATH")
	}
}
