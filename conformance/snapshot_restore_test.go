package conformance_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/postgres"
	"github.com/amber-backup/amber/plugins/postgres/pgengine"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/file"
)

// TestPostgresSnapshotRestore restores a snapshot backup to a point in
// time: a copy of a running server's data directory taken between
// pg_backup_start and pg_backup_stop (what a CSI snapshot under the
// sidecar's Freeze is; `cp -a` is what the test CSI driver does), recorded
// in the repository as amber-controller records a snapshot backup (mode
// snapshot, the freeze and thaw positions, backup_label), and archived WAL
// (`amber wal-push`). `amber restore --snapshot-data` on the copy writes the
// backup label and configures recovery; the recovered server holds exactly
// the markers committed before the target, including those written while
// frozen after the copy was cut (archived WAL alone holds them). A plain
// physical restore never picks the snapshot backup.
func TestPostgresSnapshotRestore(t *testing.T) {
	pg, dir, a, db, sysid := walPushServer(t)
	mark := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := db.Exec(`INSERT INTO markers (id) VALUES ($1)`, i); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	mark(1, 20)

	// The freeze, the snapshot, the thaw.
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var startLSN string
	var startTime time.Time
	if err := conn.QueryRowContext(ctx, `SELECT pg_backup_start('amber snap/snap1', true)::text, clock_timestamp()`).Scan(&startLSN, &startTime); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "snapshot")
	if out, err := exec.Command("cp", "-a", pg.DataDir, snap).CombinedOutput(); err != nil {
		t.Fatalf("copy the data directory: %v\n%s", err, out)
	}
	mark(21, 30) // frozen, after the cut: only archived WAL brings these
	var stopLSN, label string
	var stopTime time.Time
	if err := conn.QueryRowContext(ctx, `SELECT lsn::text, labelfile, clock_timestamp() FROM pg_backup_stop(true)`).Scan(&stopLSN, &label, &stopTime); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	var tl uint32
	if err := db.QueryRow(`SELECT timeline_id FROM pg_control_checkpoint()`).Scan(&tl); err != nil {
		t.Fatal(err)
	}
	pos := func(s string) repo.LogPosition {
		lsn, err := pgengine.ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		p := postgres.Position(tl, lsn)
		return repo.LogPosition{Epoch: p.Epoch, Offset: p.Offset, Token: p.Token, Text: p.Text}
	}

	// The record, as amber-controller writes it after the thaw.
	be, err := file.Open(a.repo, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, []byte("conformance"), repo.Options{CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := r.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	consistent := pos(stopLSN)
	id, err := w.Commit(ctx, &repo.Manifest{Name: "snap/pg", Engine: "postgres", Mode: repo.ModeSnapshot, Start: startTime, Entries: []repo.Entry{},
		Position: consistent.Text, ConsistentTime: stopTime,
		Record: &repo.EngineRecord{SystemID: sysid, Start: pos(startLSN), Consistent: consistent, StartTime: startTime, ConsistentTime: stopTime,
			Metadata: map[string]string{postgres.SettingSegmentSize: "16777216"},
			Files:    []repo.EngineFile{{Name: "backup_label", Content: []byte(label), Mode: 0o600}}},
		Snapshots: []repo.VolumeSnapshot{{Volume: "data", Claim: "data-pg-0", Namespace: "snap", Name: "snap1-data", Driver: testbed.CSIDriverName, Handle: "snap-test"}}})
	w.Close()
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := testbed.ChownPostgres(a.repo); err != nil {
		t.Fatal(err)
	}

	mark(31, 60)
	ts := markerTimes(t, db)
	var last string
	if err := db.QueryRow(`SELECT pg_walfile_name(pg_switch_wal())`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var archived string
		db.QueryRow(`SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver`).Scan(&archived)
		if archived >= last {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(pg.LogFile)
			t.Fatalf("WAL %s not archived:\n%s", last, tail(b))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A plain restore never picks the snapshot backup; --snapshot-data does.
	if out, err := a.cmd("restore", "--engine", "postgres", "--data-dir", filepath.Join(dir, "plain")).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "no postgres physical backup") {
		t.Fatalf("a plain physical restore with only a snapshot backup: %v\n%s", err, out)
	}
	// A snapshot is consistent from its thaw on: targets after it. Markers
	// 21..30, written while frozen after the copy was cut, come from
	// archived WAL alone.
	for _, k := range []int{35, 50} {
		copyDir := filepath.Join(dir, fmt.Sprintf("restored-%d", k))
		if out, err := exec.Command("cp", "-a", snap, copyDir).CombinedOutput(); err != nil {
			t.Fatalf("copy the snapshot: %v\n%s", err, out)
		}
		target := ts[k+1]
		out := a.run("restore", "--engine", "postgres", "--data-dir", copyDir, "--snapshot-data", "--backup", id.String(),
			"--to-time", target.UTC().Format(time.RFC3339Nano))
		if got := countAfterRecovery(t, copyDir); got != [2]int{k, k} {
			t.Fatalf("snapshot restored to marker %d's time: count and max = %v, want markers 1..%d\n%s", k+1, got, k, out)
		}
		t.Logf("snapshot backup %s restored to %s: exactly markers 1..%d", id.Short(), target.Format(time.RFC3339Nano), k)
	}

	// The recovered copy has run: restoring the snapshot over it again is
	// refused, and with --skip-restored (a restarted clone pod) nothing
	// is done; the server starts on it as it was.
	copyDir := filepath.Join(dir, "restored-50")
	again := []string{"restore", "--engine", "postgres", "--data-dir", copyDir, "--snapshot-data", "--backup", id.String()}
	if out, err := a.cmd(again...).CombinedOutput(); err == nil || !strings.Contains(string(out), "by an earlier run") ||
		!strings.Contains(string(out), "--skip-restored") {
		t.Fatalf("a second snapshot restore over the recovered copy: %v\n%s", err, out)
	}
	if out := a.run(append(again, "--skip-restored")...); !strings.Contains(out, "nothing to do") {
		t.Fatalf("--skip-restored over the recovered copy: %s", out)
	}
	if got := countAfterRecovery(t, copyDir); got != [2]int{50, 50} {
		t.Fatalf("the recovered copy after a skipped rerun: count and max = %v, want markers 1..50", got)
	}
}
