package pgengine

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// TestArchiverLastCommit: each segment the archiver emits names the time
// of the newest commit whose record ends in it, read from the WAL itself
// (across page and segment boundaries, after ~15 MB of other WAL), and no
// time for WAL without commits (a checkpoint, a segment switch), whose
// server time is later: a time target past the last commit cannot be
// reached, so the window must not reach past it.
func TestArchiverLastCommit(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	arch := newWALArchive(t)
	a, _ := startArchiver(t, ctx, pg.ReplicationDSN(), ArchiverOptions{Slot: "amber_commits", OnSegment: arch.onSegment,
		PartialInterval: 200 * time.Millisecond, StatusInterval: 200 * time.Millisecond})
	waitFor(t, 20*time.Second, "archiver streaming", func() bool {
		return pg.Psql(t, "postgres", "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'amber_commits' AND active") == "1"
	})
	pg.Psql(t, "postgres", "CREATE TABLE big (id int, pad text); INSERT INTO big SELECT g, repeat('x', 500) FROM generate_series(1, 30000) g")
	pg.Psql(t, "postgres", "CREATE TABLE marks (id int, at timestamptz)")
	var at time.Time
	for i := 1; i <= 3; i++ {
		// The commit's own time lies between these two.
		out := pg.Psql(t, "postgres", "INSERT INTO marks VALUES (1, clock_timestamp()) RETURNING extract(epoch FROM at)::numeric(20,6)")
		at = parseEpoch(t, out)
	}
	after := parseEpoch(t, pg.Psql(t, "postgres", "SELECT extract(epoch FROM clock_timestamp())::numeric(20,6)"))
	time.Sleep(time.Second) // the commit's piece is emitted before what follows
	pg.Psql(t, "postgres", "CHECKPOINT")
	pg.Psql(t, "postgres", "SELECT pg_switch_wal()")
	target := lsnOf(t, pg, "SELECT pg_current_wal_flush_lsn()")
	waitFor(t, 30*time.Second, "archiver to receive all WAL", func() bool {
		r, _, _ := a.Positions()
		return r >= target
	})
	time.Sleep(500 * time.Millisecond)
	var newest time.Time
	var lastWithCommit int
	ems := arch.emissions()
	for i, e := range ems {
		if e.LastCommit.After(newest) {
			newest, lastWithCommit = e.LastCommit, i
		}
	}
	if newest.Before(at) || newest.After(after) {
		t.Fatalf("newest commit time in the emitted WAL %s; want the last INSERT's, between %s and %s", newest, at, after)
	}
	tail := ems[lastWithCommit+1:]
	if len(tail) == 0 || !tail[len(tail)-1].ServerTime.After(after) {
		t.Fatalf("no WAL emitted after the last commit's (emissions %d, last with a commit %d)", len(ems), lastWithCommit)
	}
	for _, e := range tail {
		if !e.LastCommit.IsZero() {
			t.Errorf("emission %s %s-%s, after the last commit, names commit time %s", e.Name, e.StartLSN, e.EndLSN, e.LastCommit)
		}
	}
	// Each complete segment read alone gives the newest commit or abort
	// time pg_waldump finds in it.
	segs, checked := 0, 0
	for _, e := range ems {
		if e.Partial || e.History {
			continue
		}
		segs++
		path := filepath.Join(arch.dir, e.Name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var c commitScan
		c.reset(e.SegmentSize, e.StartLSN)
		c.feed(data)
		got := c.take()
		want := waldumpNewestCommit(t, filepath.Join(pg.Client, "pg_waldump"), path)
		if !got.Equal(want) {
			t.Errorf("segment %s: newest commit %s; pg_waldump says %s", e.Name, got, want)
		}
		if !want.IsZero() {
			checked++
		}
		t.Logf("segment %s: newest commit %s, as pg_waldump reads it", e.Name, got.Format(time.RFC3339Nano))
	}
	if checked == 0 {
		t.Errorf("no complete segment with a commit to compare with pg_waldump")
	}
	t.Logf("newest commit %s (INSERT at %s); %d emissions (%d complete segments), %d after it without commits, the last sent at %s",
		newest.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano), len(ems), segs, len(tail), tail[len(tail)-1].ServerTime.Format(time.RFC3339Nano))
}

func parseEpoch(t *testing.T, s string) time.Time {
	t.Helper()
	var sec, frac int64
	var fs string
	for i, c := range s {
		if c == '.' {
			fs = s[i+1:]
			s = s[:i]
			break
		}
	}
	for _, c := range s {
		sec = sec*10 + int64(c-'0')
	}
	for len(fs) < 6 {
		fs += "0"
	}
	for _, c := range fs[:6] {
		frac = frac*10 + int64(c-'0')
	}
	return time.Unix(sec, frac*1000).UTC()
}

var waldumpXact = regexp.MustCompile(`desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) UTC`)

// waldumpNewestCommit is the newest COMMIT or ABORT time pg_waldump shows
// in one WAL segment file.
func waldumpNewestCommit(t *testing.T, waldump, path string) time.Time {
	t.Helper()
	out, err := exec.Command(waldump, "--rmgr=Transaction", path).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "error in WAL record") && !strings.Contains(string(out), "invalid record length") {
		t.Fatalf("pg_waldump %s: %v\n%s", path, err, out)
	}
	var newest time.Time
	for _, m := range waldumpXact.FindAllStringSubmatch(string(out), -1) {
		at, err := time.Parse("2006-01-02 15:04:05.000000", m[1])
		if err != nil {
			t.Fatal(err)
		}
		if at.After(newest) {
			newest = at
		}
	}
	return newest
}
