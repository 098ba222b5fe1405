package cli

import (
	"os"
	"path/filepath"
	"testing"
)

// --skip-restored: a missing or empty directory is restored, a finished
// restore (or a recovered one) is left alone, a half-done one starts over.
func TestPrepareRestoreDir(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "pgdata")
	if done, err := prepareRestoreDir(dir); err != nil || done {
		t.Fatalf("absent: %v %v", done, err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(dir, 0o700))
	must(os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15"), 0o600))
	must(os.MkdirAll(dir+".amber", 0o700))
	if done, err := prepareRestoreDir(dir); err != nil || done {
		t.Fatalf("half-done: %v %v", done, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a half-done restore was not removed: %v", err)
	}
	must(os.MkdirAll(dir, 0o700))
	must(os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15"), 0o600))
	must(os.MkdirAll(dir+".amber", 0o700))
	must(os.WriteFile(filepath.Join(dir+".amber", restoredMark), nil, 0o600))
	if done, err := prepareRestoreDir(dir); err != nil || !done {
		t.Fatalf("restored, recovering: %v %v", done, err)
	}
	must(os.RemoveAll(dir + ".amber"))
	if done, err := prepareRestoreDir(dir); err != nil || !done {
		t.Fatalf("recovered: %v %v", done, err)
	}
}
