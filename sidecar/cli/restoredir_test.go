package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/amber-backup/amber/sidecar/repo"
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
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Fatalf("a half-done restore was not removed: %v %v", entries, err)
	}
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

// A run killed while it wrote the data directory, before the log access
// directory existed (or after it finished but before it said so), leaves
// the in-progress mark: the next run starts over instead of taking a
// partial directory for a restored one. The mark is beside the data
// directory (inside it only when that is the root of a volume, which a
// test cannot mount).
func TestPrepareRestoreDirInProgress(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "pgdata")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(markRestoring(dir))
	if _, err := os.Stat(dir + api.RestoringMark); err != nil {
		t.Fatalf("no mark beside the data directory: %v", err)
	}
	must(os.WriteFile(filepath.Join(dir, "ibdata1"), []byte("partial"), 0o600))
	if done, err := prepareRestoreDir(dir); err != nil || done {
		t.Fatalf("killed while writing: %v %v", done, err)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Fatalf("the partial data directory was not emptied: %v %v", entries, err)
	}
	must(os.MkdirAll(dir+".amber", 0o700))
	must(os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15"), 0o600))
	must(os.WriteFile(filepath.Join(dir+".amber", restoredMark), nil, 0o600))
	if done, err := prepareRestoreDir(dir); err != nil || done {
		t.Fatalf("killed before the mark was removed: %v %v", done, err)
	}
	if _, err := os.Stat(dir + ".amber"); !os.IsNotExist(err) {
		t.Fatalf("the access directory was not removed: %v", err)
	}
	must(os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15"), 0o600))
	must(unmarkRestoring(dir))
	if done, err := prepareRestoreDir(dir); err != nil || !done {
		t.Fatalf("complete: %v %v", done, err)
	}

	// The mark inside (a volume's root): emptied around it, and taken
	// for an empty directory.
	in := filepath.Join(t.TempDir(), "mysql")
	must(os.MkdirAll(in, 0o700))
	must(os.WriteFile(filepath.Join(in, api.RestoringMark), nil, 0o600))
	must(os.MkdirAll(filepath.Join(in, "mysql"), 0o700))
	if done, err := prepareRestoreDir(in); err != nil || done {
		t.Fatalf("inside mark: %v %v", done, err)
	}
	entries, err := os.ReadDir(in)
	if err != nil || len(entries) != 1 || entries[0].Name() != api.RestoringMark {
		t.Fatalf("emptied around the inside mark: %v %v", entries, err)
	}
	must(unmarkRestoring(in))
	if entries, _ := os.ReadDir(in); len(entries) != 0 {
		t.Fatalf("the inside mark stayed: %v", entries)
	}
}

// A restarted logical clone restore logs the report its clone marker holds
// on one line after job.CloneReportPrefix (the controller reads it
// when the kubelet kept no last state); a marker without one line of JSON
// logs nothing.
func TestRepeatCloneReport(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, ".amber-restored")
	rep := restoreJSON(&job.RestoreReport{Backup: &repo.Manifest{}, Mode: "logical", Duration: 3 * time.Second})
	if err := os.WriteFile(marker, rep, 0o600); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	repeatCloneReport(&b, marker)
	if got, want := b.String(), job.CloneReportPrefix+string(rep)+"\n"; got != want {
		t.Fatalf("logged %q, want %q", got, want)
	}
	for _, bad := range []string{"", "not json", "{\"backup\":\n\"x\"}"} {
		if err := os.WriteFile(marker, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		if repeatCloneReport(&b, marker); b.Len() != 0 {
			t.Fatalf("marker %q: logged %q", bad, b.String())
		}
	}
	b.Reset()
	if repeatCloneReport(&b, filepath.Join(dir, "absent")); b.Len() != 0 {
		t.Fatalf("no marker: logged %q", b.String())
	}
}
