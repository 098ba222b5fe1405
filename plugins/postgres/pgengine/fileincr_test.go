package pgengine

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// markSink records the file marks of a file-level backup, discarding the
// bytes: which files were read, which reused, and each record's length.
type markSink struct {
	recs         map[string]map[string]PreviousRecord
	read, reused []string
}

func (s *markSink) Create(_ context.Context, name string) (io.WriteCloser, error) {
	if s.recs == nil {
		s.recs = map[string]map[string]PreviousRecord{}
	}
	s.recs[name] = map[string]PreviousRecord{}
	return &markWriter{s: s, entry: name}, nil
}

type markWriter struct {
	s          *markSink
	entry      string
	key, stamp string
	n, start   int64
}

func (w *markWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func (w *markWriter) end() {
	if w.key != "" {
		w.s.recs[w.entry][w.key] = PreviousRecord{Stamp: w.stamp, Length: w.n - w.start}
	}
	w.key = ""
}

func (w *markWriter) MarkFile(key, stamp string, length int64, reuse bool) error {
	w.end()
	if reuse {
		w.s.recs[w.entry][key] = PreviousRecord{Stamp: stamp, Length: length}
		w.s.reused = append(w.s.reused, key)
		return nil
	}
	if key != "" {
		w.s.read = append(w.s.read, key)
	}
	w.key, w.stamp, w.start = key, stamp, w.n
	return nil
}

func (w *markWriter) Close() error { w.end(); return nil }

// TestFileBackupReuse: with the previous backup's records, FileBackup
// reuses the files unchanged since well before that backup started, and
// reads the changed ones, those last written within ClockMargin of its
// start, and pg_control; records of another server are not reused.
func TestFileBackupReuse(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	tbsDir := filepath.Join(testbed.PostgresDir(t), "tbs")
	os.Mkdir(tbsDir, 0o700)
	testbed.ChownPostgres(tbsDir)
	pg.Psql(t, "postgres", "CREATE TABLESPACE extra LOCATION '"+tbsDir+"'")
	pg.Psql(t, "postgres", "CREATE TABLE elsewhere TABLESPACE extra AS SELECT generate_series(1, 10000) id")
	pg.Psql(t, "postgres", "CREATE TABLE static AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")
	pg.Psql(t, "postgres", "CREATE TABLE small (id int, v text)")
	pg.Psql(t, "postgres", "INSERT INTO small VALUES (1, 'a')")
	pg.Psql(t, "postgres", "VACUUM FREEZE")
	pg.Psql(t, "postgres", "CHECKPOINT")
	static := pg.Psql(t, "postgres", "SELECT pg_relation_filepath('static')")
	small := pg.Psql(t, "postgres", "SELECT pg_relation_filepath('small')")
	// pg_tblspc/<oid>/PG_15_.../<db>/<relfilenode>: named in its tablespace's tar from the version directory.
	parts := strings.SplitN(pg.Psql(t, "postgres", "SELECT pg_relation_filepath('elsewhere')"), "/", 3)
	elsewhere := parts[2]
	time.Sleep(ClockMargin + time.Second)
	pg.Psql(t, "postgres", "CREATE TABLE recent AS SELECT generate_series(1, 100) id")
	pg.Psql(t, "postgres", "CHECKPOINT")
	recent := pg.Psql(t, "postgres", "SELECT pg_relation_filepath('recent')")

	var s1 markSink
	res1, err := FileBackup(ctx, DSN(pg.DSN()), pg.DataDir, &s1, FileBackupOptions{Records: true})
	if err != nil {
		t.Fatal(err)
	}
	if res1.FileRef.IsZero() || res1.FileRef.After(time.Now()) || res1.FilesReused != 0 || res1.FilesRead != int64(len(s1.read)) ||
		!slices.Contains(s1.read, static) {
		t.Fatalf("backup 1: %+v, read %d files", res1, len(s1.read))
	}
	pg.Psql(t, "postgres", "UPDATE small SET v = 'b'")
	pg.Psql(t, "postgres", "CHECKPOINT")

	var s2 markSink
	prev := &PreviousFiles{SystemID: res1.SystemID, Ref: res1.FileRef, Records: s1.recs}
	res2, err := FileBackup(ctx, DSN(pg.DSN()), pg.DataDir, &s2, FileBackupOptions{Records: true, Previous: prev})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup 2 read %v", s2.read)
	for _, f := range []string{small, recent, "global/pg_control"} {
		if !slices.Contains(s2.read, f) {
			t.Errorf("backup 2 did not read %s", f)
		}
	}
	if !slices.Contains(s2.reused, elsewhere) {
		t.Errorf("backup 2 did not reuse %s of the tablespace (read: %v)", elsewhere, slices.Contains(s2.read, elsewhere))
	}
	if !slices.Contains(s2.reused, static) || res2.FilesReused != int64(len(s2.reused)) || res2.FilesRead != int64(len(s2.read)) ||
		len(s2.read) > len(s1.read)/4 {
		t.Fatalf("backup 2 reused %d files (static: %v), read %d; result %+v", len(s2.reused), slices.Contains(s2.reused, static), len(s2.read), res2)
	}
	for k, r := range s2.recs[BaseTar] {
		if r != s1.recs[BaseTar][k] && slices.Contains(s2.reused, k) {
			t.Fatalf("reused %s as %+v, recorded %+v", k, r, s1.recs[BaseTar][k])
		}
	}

	var s3 markSink
	prev.SystemID = "1"
	if _, err := FileBackup(ctx, DSN(pg.DSN()), pg.DataDir, &s3, FileBackupOptions{Records: true, Previous: prev}); err != nil {
		t.Fatal(err)
	}
	if len(s3.reused) != 0 {
		t.Fatalf("reused %d files of another server's backup", len(s3.reused))
	}
}

// TestFileBackupReuseFromStandby: on a standby, a second file-level backup
// reuses the files unchanged since the first and reads the changed ones.
func TestFileBackupReuseFromStandby(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	pg.Psql(t, "postgres", "CREATE TABLE static AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")
	pg.Psql(t, "postgres", "CREATE TABLE small (id int, v text)")
	pg.Psql(t, "postgres", "INSERT INTO small VALUES (1, 'a')")
	pg.Psql(t, "postgres", "CHECKPOINT")
	sb := testbed.StartStandby(t, pg)
	waitFor(t, 30*time.Second, "standby catch-up", func() bool {
		return sb.Psql(t, "postgres", "SELECT count(*) FROM small") == "1"
	})
	static := sb.Psql(t, "postgres", "SELECT pg_relation_filepath('static')")
	small := sb.Psql(t, "postgres", "SELECT pg_relation_filepath('small')")
	time.Sleep(ClockMargin + time.Second)
	// A checkpoint replayed lets the standby's backup start make a
	// restartpoint, which writes the changed pages to the files.
	checkpointReplayed(t, pg, sb)

	var s1 markSink
	res1, err := FileBackup(ctx, DSN(sb.DSN()), sb.DataDir, &s1, FileBackupOptions{Records: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res1.FromStandby || res1.FileRef.IsZero() || res1.FileRef.After(time.Now()) {
		t.Fatalf("backup 1: %+v", res1)
	}
	pg.Psql(t, "postgres", "UPDATE small SET v = 'b'")
	waitFor(t, 30*time.Second, "standby catch-up", func() bool {
		return sb.Psql(t, "postgres", "SELECT v FROM small") == "b"
	})
	checkpointReplayed(t, pg, sb)

	var s2 markSink
	prev := &PreviousFiles{SystemID: res1.SystemID, Ref: res1.FileRef, Records: s1.recs}
	res2, err := FileBackup(ctx, DSN(sb.DSN()), sb.DataDir, &s2, FileBackupOptions{Records: true, Previous: prev})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("standby backup 2 read %v", s2.read)
	if !slices.Contains(s2.reused, static) || !slices.Contains(s2.read, small) || !slices.Contains(s2.read, "global/pg_control") ||
		res2.FilesReused == 0 {
		t.Fatalf("standby backup 2 reused %d files (static: %v), read %v", len(s2.reused), slices.Contains(s2.reused, static), s2.read)
	}
}

// checkpointReplayed makes a checkpoint on the primary and waits until the
// standby has replayed past it.
func checkpointReplayed(t *testing.T, pg, sb *testbed.Postgres) {
	t.Helper()
	pg.Psql(t, "postgres", "CHECKPOINT")
	lsn := pg.Psql(t, "postgres", "SELECT pg_current_wal_insert_lsn()")
	waitFor(t, 30*time.Second, "standby replay of the checkpoint", func() bool {
		return sb.Psql(t, "postgres", "SELECT pg_last_wal_replay_lsn() >= '"+lsn+"'::pg_lsn") == "t"
	})
}
