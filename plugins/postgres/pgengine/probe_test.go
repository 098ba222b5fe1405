package pgengine

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

func TestDSNRedaction(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:s3cret@h:5432/db?sslmode=disable", "postgres://u:***@h:5432/db?sslmode=disable"},
		{"host=h user=u password=s3cret dbname=db", "host=h user=u password=*** dbname=db"},
		{"host=h password='s3 cret' user=u", "host=h password=*** user=u"},
		{"postgres://u@h/db?password=s3cret", "postgres://u@h/db?password=***"},
	} {
		d := DSN(tc.in)
		for _, got := range []string{d.String(), d.GoString(), d.LogValue().String()} {
			if got != tc.want || strings.Contains(got, "s3") {
				t.Errorf("redact(%q) = %q, want %q", tc.in, got, tc.want)
			}
		}
		rest, pw := splitPassword(tc.in)
		if !strings.HasPrefix(pw, "s3") || strings.Contains(rest, "s3") {
			t.Errorf("splitPassword(%q) = %q, %q", tc.in, rest, pw)
		}
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})

	info, err := Probe(ctx, DSN(pg.ReplicationDSN()))
	if err != nil {
		t.Fatal(err)
	}
	if info.Major != 15 || info.Standby || info.Timeline != 1 || info.WALLevel != "replica" ||
		!info.Replication || info.Superuser || info.CurrentLSN == 0 || info.WALSegmentSize != 16<<20 {
		t.Fatalf("unexpected info %+v", info)
	}

	const pw = "wrong-Pa55word"
	_, err = Probe(ctx, DSN(pg.DSNFor("amber", pw, "postgres")))
	wantErr(t, err, ErrConnect, "cannot connect to PostgreSQL at 127.0.0.1:", " as amber", "check the DSN")
	t.Logf("wrong password: %v", err)
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("error leaks the password: %v", err)
	}
	_, err = Probe(ctx, DSN("postgres://amber:"+pw+"@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2"))
	wantErr(t, err, ErrConnect, "cannot connect to PostgreSQL at 127.0.0.1:1 as amber", "check the DSN")
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("error leaks the password: %v", err)
	}
	_, err = Probe(ctx, DSN("postgres://amber:"+pw+"@127.0.0.1:notaport/x"))
	wantErr(t, err, ErrConnect)
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("error leaks the password: %v", err)
	}

	pg.Psql(t, "postgres", "CREATE ROLE plain LOGIN PASSWORD 'plain-pw'")
	plain := DSN(pg.DSNFor("plain", "plain-pw", "postgres"))
	info, err = Probe(ctx, plain)
	wantErr(t, err, ErrNoReplication, "role plain lacks REPLICATION; ALTER ROLE plain REPLICATION")
	t.Logf("no replication: %v", err)
	if info == nil || info.Replication {
		t.Fatalf("info %+v", info)
	}
	_, err = PhysicalBackup(ctx, plain, DirSink(t.TempDir()), BackupOptions{})
	wantErr(t, err, ErrNoReplication, "ALTER ROLE plain REPLICATION")
	_, err = connectReplication(ctx, plain)
	wantErr(t, err, ErrNoReplication, "ALTER ROLE plain REPLICATION")
}

func TestProbeWALLevelMinimal(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{WALLevel: "minimal"})
	info, err := Probe(ctx, DSN(pg.DSN()))
	wantErr(t, err, ErrWALLevelMinimal, "wal_level is minimal; set wal_level=replica and restart")
	if info == nil || info.WALLevel != "minimal" {
		t.Fatalf("info %+v", info)
	}
	_, err = PhysicalBackup(ctx, DSN(pg.DSN()), DirSink(t.TempDir()), BackupOptions{})
	wantErr(t, err, ErrWALLevelMinimal, "set wal_level=replica")
	err = NewArchiver(DSN(pg.DSN()), ArchiverOptions{}).Run(ctx)
	wantErr(t, err, ErrWALLevelMinimal, "set wal_level=replica")
}

func wantErr(t *testing.T, err, sentinel error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", sentinel)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %q is not %v", err, sentinel)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not say %q", err, p)
		}
	}
}

// TestProbeStandbyLag: a streaming standby that has replayed all it
// received reports no lag; with its replay paused behind a commit it
// received, the lag is the age of the last commit it replayed, and grows;
// resumed, it is 0 again. The primary reports none.
func TestProbeStandbyLag(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 3*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	sb := testbed.StartStandby(t, pg)
	pg.Psql(t, "postgres", "CREATE TABLE lag_probe (n int)")
	probe := func() *Info {
		t.Helper()
		info, err := Probe(ctx, DSN(sb.ReplicationDSN()))
		if err != nil {
			t.Fatal(err)
		}
		if !info.Standby {
			t.Fatalf("standby probe %+v", info)
		}
		return info
	}
	caughtUp := func() {
		t.Helper()
		waitFor(t, time.Minute, "the standby to stream and replay all it received", func() bool {
			info := probe()
			return (info.WALReceiver == "streaming" || info.WALReceiver == "running") && info.Lag == 0 && info.LagUnknown == "" &&
				sb.Psql(t, "postgres", "SELECT to_regclass('lag_probe') IS NOT NULL") == "t"
		})
	}
	caughtUp()

	sb.Psql(t, "postgres", "SELECT pg_wal_replay_pause()")
	pg.Psql(t, "postgres", "INSERT INTO lag_probe VALUES (1)")
	lsn := pg.Psql(t, "postgres", "SELECT pg_current_wal_flush_lsn()")
	waitFor(t, time.Minute, "the standby to receive the commit", func() bool {
		return sb.Psql(t, "postgres", "SELECT pg_last_wal_receive_lsn() >= '"+lsn+"'::pg_lsn") == "t"
	})
	time.Sleep(2 * time.Second)
	first := probe()
	if first.WALReceiver == "none" || first.LagUnknown != "" || first.Lag < 1500*time.Millisecond || first.Lag > time.Minute {
		t.Fatalf("probe with replay paused behind a received commit: %+v, want a lag of the last replayed commit's age (2 s or more)", first)
	}
	time.Sleep(time.Second)
	if second := probe(); second.Lag < first.Lag+500*time.Millisecond {
		t.Fatalf("lag did not grow while replay stayed paused: %v then %v", first.Lag, second.Lag)
	}
	if got := sb.Psql(t, "postgres", "SELECT count(*) FROM lag_probe"); got != "0" {
		t.Fatalf("the paused standby replayed the insert (%s rows)", got)
	}

	sb.Psql(t, "postgres", "SELECT pg_wal_replay_resume()")
	caughtUp()
	if got := sb.Psql(t, "postgres", "SELECT count(*) FROM lag_probe"); got != "1" {
		t.Fatalf("the resumed standby has %s rows, want 1", got)
	}
	info, err := Probe(ctx, DSN(pg.ReplicationDSN()))
	if err != nil || info.Standby || info.Lag != 0 || info.WALReceiver != "" {
		t.Fatalf("primary probe %+v, %v", info, err)
	}
}
