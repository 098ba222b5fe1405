package conformance_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance"
	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/mysql"
	"github.com/amber-backup/amber/plugins/mysql/myengine"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/file"
)

// mysqlSnapshotRestore restores a MariaDB snapshot backup to a point in
// time: a copy (`cp -a`, what the test CSI driver does) of a running
// server's data directory taken under the freeze (BACKUP STAGE
// BLOCK_COMMIT), recorded in the repository as amber-controller records a
// snapshot backup (mode snapshot, the frozen position, the thaw's
// metadata), and the binlog `amber archive` streamed. `amber restore
// --snapshot-data` on a copy of it starts a private server there (InnoDB
// recovers the copy) and replays archived binlog from the frozen position
// to the target: the server started on it holds exactly the markers
// committed before the target. A rerun is refused, or with
// --skip-restored does nothing; a copy whose replay did not finish is
// refused with --skip-restored too.
func mysqlSnapshotRestore(t *testing.T, amber conformance.AmberRunner) {
	src := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	src.SQL(t, `CREATE TABLE app.m (id int PRIMARY KEY)`)
	dir := myTempDir(t)
	repoDir := filepath.Join(dir, "repo")
	run := func(t *testing.T, args ...string) string { t.Helper(); return amberRun(t, amber, repoDir, args...) }
	run(t, "repo", "init")
	var archErr bytes.Buffer
	arch := amber(repoDir, "archive", "--engine", "mysql", "--dsn", src.DSN(), "--flush-interval", "200ms")
	arch.Stderr = &archErr
	if err := arch.Start(); err != nil {
		t.Fatal(err)
	}
	archDone := make(chan error, 1)
	go func() { archDone <- arch.Wait() }()
	t.Cleanup(func() { arch.Process.Kill() })
	mark := func(from, to int) {
		for i := from; i <= to; i++ {
			src.SQL(t, fmt.Sprintf("INSERT INTO app.m VALUES (%d)", i))
			if i%25 == 0 {
				src.SQL(t, "FLUSH BINARY LOGS")
			}
		}
	}
	mark(1, 20)
	// A logical backup, for the lineage and epoch a recorded snapshot of
	// this server has (the controller takes them from the sidecar).
	run(t, "backup", "--engine", "mysql", "--dsn", src.DSN(), "--mode", "logical", "--name", "snap/db")
	mark(21, 30)

	ctx := context.Background()
	fr, err := myengine.Freeze(ctx, myengine.DSN(src.DSN()), myengine.FreezeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "snapshot")
	if out, err := exec.Command("cp", "-a", src.DataDir, snap).CombinedOutput(); err != nil {
		fr.Abort()
		t.Fatalf("copy the data directory: %v\n%s", err, out)
	}
	if err := fr.Thaw(ctx); err != nil {
		t.Fatal(err)
	}

	be, err := file.Open(repoDir, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, []byte("conformance"), repo.Options{CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	all, err := r.Backups(ctx)
	if err != nil || len(all) != 1 || all[0].Record == nil {
		t.Fatalf("the logical backup: %v %d", err, len(all))
	}
	lb := all[0].Record
	if lp, err := myengine.ParseToken(lb.Consistent.Epoch, lb.Consistent.Token); err == nil {
		fr.Pos.Epoch, fr.Pos.Server = lp.Epoch, lp.Server
	} else {
		t.Fatal(err)
	}
	p := mysql.Position(fr.Pos)
	pos := repo.LogPosition{Epoch: p.Epoch, Offset: p.Offset, Token: p.Token, Text: p.Text}
	w, err := r.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, err := w.Commit(ctx, &repo.Manifest{Name: "snap/db", Engine: "mysql", Mode: repo.ModeSnapshot, Start: fr.Time, Entries: []repo.Entry{},
		Position: pos.Text, ConsistentTime: fr.Time,
		Record: &repo.EngineRecord{SystemID: lb.SystemID, Start: pos, Consistent: pos, StartTime: fr.Time, ConsistentTime: fr.Time,
			Metadata: map[string]string{"method": fr.Method, "datadir": fr.DataDir}},
		Snapshots: []repo.VolumeSnapshot{{Volume: "data", Claim: "data-db-0", Namespace: "snap", Name: "snap1-data", Driver: testbed.CSIDriverName, Handle: "snap-test"}}})
	w.Close()
	r.Close()
	if err != nil {
		t.Fatal(err)
	}

	mark(31, 45)
	time.Sleep(1100 * time.Millisecond) // binlog times have whole seconds
	cut := time.Now().UTC().Truncate(time.Second)
	time.Sleep(1100 * time.Millisecond)
	mark(46, 60)
	src.SQL(t, "FLUSH BINARY LOGS")
	time.Sleep(2 * time.Second)
	arch.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-archDone:
		if err != nil {
			t.Fatalf("amber archive: %v\n%s", err, archErr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("amber archive did not stop within 60 s of SIGTERM:\n%s", archErr.String())
	}

	copyDir := filepath.Join(dir, "restored")
	if out, err := exec.Command("cp", "-a", snap, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("copy the snapshot: %v\n%s", err, out)
	}
	restore := []string{"restore", "--engine", "mysql", "--data-dir", copyDir, "--snapshot-data", "--backup", id.String()}
	out := run(t, append(restore, "--to-time", cut.Format(time.RFC3339))...)
	t.Log(strings.TrimSpace(out))
	dst := testbed.StartMariaDBOn(t, copyDir, testbed.MariaDBOptions{})
	if got := dst.SQL(t, "SELECT COUNT(*), MAX(id) FROM app.m"); got != "45\t45" {
		t.Fatalf("snapshot restored to %s: count and max %q; want markers 1..45", cut.Format(time.RFC3339), got)
	}
	if got := src.SQL(t, "SELECT COUNT(*) FROM app.m"); got != "60" {
		t.Errorf("the source holds %s markers; want 60", got)
	}
	dst.Stop()
	if out, err := amber(repoDir, restore...).CombinedOutput(); err == nil || !strings.Contains(string(out), "--skip-restored") {
		t.Fatalf("a second snapshot restore over the recovered copy: %v\n%s", err, out)
	}
	if out := run(t, append(restore, "--skip-restored")...); !strings.Contains(out, "nothing to do") {
		t.Fatalf("--skip-restored over the recovered copy: %s", out)
	}
	// A run that stopped while applying the log leaves its mark saying so:
	// a rerun refuses, with --skip-restored too.
	markFile := filepath.Join(copyDir, job.SnapshotRestoredMark)
	if err := os.WriteFile(markFile, []byte(id.String()+" replaying\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := amber(repoDir, append(restore, "--skip-restored")...).CombinedOutput(); err == nil || !strings.Contains(string(out), "stopped while applying archived log") {
		t.Fatalf("--skip-restored over a copy whose replay did not finish: %v\n%s", err, out)
	}
	t.Logf("snapshot backup %s restored to %s: exactly markers 1..45", id.Short(), cut.Format(time.RFC3339))
}
