package cli

import (
	"os"
	"path/filepath"
	"testing"
)

// The sidecar reads storage credentials from the mounted Secret's files,
// one per variable, and falls back to the environment.
func TestCredentialsDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "AWS_ACCESS_KEY_ID"), []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "..hidden"), []byte("no"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "from-env")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	get := credentialsDir(dir)
	if v := get("AWS_ACCESS_KEY_ID"); v != "from-file" {
		t.Errorf("AWS_ACCESS_KEY_ID = %q, want the file's value without its newline", v)
	}
	if v := get("AWS_SECRET_ACCESS_KEY"); v != "env-secret" {
		t.Errorf("AWS_SECRET_ACCESS_KEY = %q, want the environment's value when no file has it", v)
	}
	if v := get("..hidden"); v != "" {
		t.Errorf("a dot name read %q from the directory", v)
	}
	if v := get("../" + filepath.Base(dir) + "/AWS_ACCESS_KEY_ID"); v != "" {
		t.Errorf("a path escaped the directory: %q", v)
	}
}
