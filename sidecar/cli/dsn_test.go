package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A restore's target connection string comes from --dsn-file or
// AMBER_RESTORE_DSN as well as --dsn (whose value shows in ps), and never
// from AMBER_DSN, the backup's source.
func TestRestoreDSNSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(file, []byte("postgres://amber:from-file@db/copy\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AMBER_DSN", "postgres://amber:source@db/app")
	t.Setenv("AMBER_RESTORE_DSN", "postgres://amber:from-env@db/copy")

	if d, err := dsn("", file, "AMBER_RESTORE_DSN"); err != nil || string(d) != "postgres://amber:from-file@db/copy" {
		t.Errorf("--dsn-file: %v, %v; want the file's line without its newline", string(d), err)
	}
	if d, err := dsn("", "", "AMBER_RESTORE_DSN"); err != nil || string(d) != "postgres://amber:from-env@db/copy" {
		t.Errorf("AMBER_RESTORE_DSN: %v, %v", string(d), err)
	}
	if d, err := dsn("postgres://x@db/y", "", "AMBER_RESTORE_DSN"); err != nil || string(d) != "postgres://x@db/y" {
		t.Errorf("--dsn: %v, %v", string(d), err)
	}
	if _, err := dsn("postgres://x@db/y", file, "AMBER_RESTORE_DSN"); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("--dsn with --dsn-file: %v, want a refusal", err)
	}
	if _, err := dsn("", filepath.Join(t.TempDir(), "missing"), "AMBER_RESTORE_DSN"); err == nil || !strings.Contains(err.Error(), "--dsn-file") {
		t.Errorf("a missing --dsn-file: %v, want an error naming the flag", err)
	}
	t.Setenv("AMBER_RESTORE_DSN", "")
	if d, err := dsn("", "", "AMBER_RESTORE_DSN"); err != nil || string(d) != "" {
		t.Errorf("restore with only AMBER_DSN set took %q, %v: it must never restore into the backup's source", string(d), err)
	}
}
