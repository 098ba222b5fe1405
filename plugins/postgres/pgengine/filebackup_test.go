package pgengine

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// TestFileBackupRestore backs up a cluster with a tablespace and an
// unlogged table by reading its data directory while rows are committed,
// and checks that the restored copy is consistent: every committed batch
// whole or absent, static data exact, the unlogged table empty.
func TestFileBackupRestore(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	tbsDir := filepath.Join(testbed.PostgresDir(t), "tbs")
	os.Mkdir(tbsDir, 0o700)
	testbed.ChownPostgres(tbsDir)
	pg.Psql(t, "postgres", "CREATE TABLESPACE extra LOCATION '"+tbsDir+"'")
	pg.Psql(t, "postgres", `CREATE TABLE t (id int PRIMARY KEY, v text);
		INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g;
		CREATE TABLE u (id int) TABLESPACE extra; INSERT INTO u SELECT generate_series(1, 777);
		CREATE UNLOGGED TABLE scratch AS SELECT generate_series(1, 1000) id;
		CREATE TABLE batches (batch int, n int);`)
	const q = "SELECT count(*), sum(id), md5(string_agg(v, ',' ORDER BY id)) FROM t"
	want, wantU := pg.Psql(t, "postgres", q), pg.Psql(t, "postgres", "SELECT count(*) FROM u")

	// Batches of 500 rows commit throughout the backup.
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; !stop.Load(); i++ {
			if _, err := pg.PsqlErr("postgres", "INSERT INTO batches SELECT "+strconv.Itoa(i)+", g FROM generate_series(1, 500) g"); err != nil {
				return
			}
		}
	}()
	// The sink reads the files itself, as amber's host does.
	sending := &sendingSink{DirSink: DirSink(t.TempDir())}
	store := sending.DirSink
	time.Sleep(200 * time.Millisecond)
	res, err := FileBackup(ctx, DSN(pg.DSN()), pg.DataDir, sending, FileBackupOptions{Workers: 3})
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.StartLSN == 0 || res.StopLSN <= res.StartLSN || res.StartTimeline != 1 || !res.WALIncluded ||
		len(res.Tablespaces) != 1 || res.Tablespaces[0].Location != tbsDir {
		t.Fatalf("unexpected result %+v", res)
	}
	if sending.sent.Load() < 100 {
		t.Fatalf("%d files passed to the sink; want every non-empty file", sending.sent.Load())
	}
	if _, err := FileBackup(ctx, DSN(pg.DSN()), t.TempDir(), store, FileBackupOptions{}); err == nil {
		t.Fatal("a directory that is not the server's was backed up")
	}

	dataDir := filepath.Join(testbed.PostgresDir(t), "data")
	newTbs := filepath.Join(testbed.PostgresDir(t), "tbs2")
	opts := RestoreOptions{Owner: postgresOwner(), TablespaceMapping: map[uint32]string{res.Tablespaces[0].OID: newTbs}}
	if err := PhysicalRestore(ctx, dataDir, store, opts); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"postmaster.pid", "pg_replslot"} {
		if gone == "pg_replslot" {
			if ents, _ := os.ReadDir(filepath.Join(dataDir, gone)); len(ents) != 0 {
				t.Fatalf("pg_replslot restored with %d entries", len(ents))
			}
		} else if _, err := os.Stat(filepath.Join(dataDir, gone)); err == nil {
			t.Fatalf("%s was backed up", gone)
		}
	}
	restored := testbed.StartPostgresDataDir(t, dataDir, testbed.PostgresOptions{})
	if got := restored.Psql(t, "postgres", q); got != want {
		t.Fatalf("restored rows %q, want %q", got, want)
	}
	if got := restored.Psql(t, "postgres", "SELECT count(*) FROM u"); got != wantU {
		t.Fatalf("restored tablespace rows %q, want %q", got, wantU)
	}
	if got := restored.Psql(t, "postgres", "SELECT count(*) FROM scratch"); got != "0" {
		t.Fatalf("unlogged table restored with %s rows", got)
	}
	got := restored.Psql(t, "postgres", "SELECT count(DISTINCT batch), coalesce(max(batch), 0), count(*) FROM batches")
	var nb, maxb, rows int
	if _, err := fmt.Sscanf(strings.ReplaceAll(got, "|", " "), "%d %d %d", &nb, &maxb, &rows); err != nil || nb != maxb || rows != 500*nb || nb == 0 {
		t.Fatalf("batches after restore: %q (want every batch up to the last whole, and at least one)", got)
	}
	t.Logf("restored %d batches committed under the backup", nb)
}

// TestListDataDir checks what a file-level backup leaves out, on a
// directory laid out like a data directory.
func TestListDataDir(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"PG_VERSION", "postmaster.pid", "postmaster.opts", "backup_label", "global/pg_control",
		"global/1262", "global/pg_internal.init", "base/5/1259", "base/5/1259_fsm", "base/5/16384", "base/5/16384.1",
		"base/5/16384_vm", "base/5/16384_init", "base/5/t3_16390", "base/5/pgsql_tmp/pgsql_tmp1.0", "pg_wal/000000010000000000000001",
		"pg_wal/archive_status/000000010000000000000001.done", "pg_replslot/amber/state", "pg_stat_tmp/x", "pg_subtrans/0000",
		"pg_xact/0000", "pg_tblspc/.keep"} {
		p := filepath.Join(dir, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(dir, "pg_tblspc", ".keep"))
	items, err := listDataDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.rel)
	}
	want := []string{"PG_VERSION", "base", "base/5", "base/5/1259", "base/5/1259_fsm", "base/5/16384_init", "global", "global/1262",
		"pg_replslot", "pg_stat_tmp", "pg_subtrans", "pg_tblspc", "pg_wal", "pg_wal/archive_status", "pg_xact", "pg_xact/0000",
		"global/pg_control"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("listed\n%v\nwant\n%v", got, want)
	}
}

func TestFileBackupFromStandby(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	pg.Psql(t, "postgres", "CREATE TABLE t AS SELECT generate_series(1, 1000) id")
	sb := testbed.StartStandby(t, pg)
	waitFor(t, 30*time.Second, "standby catch-up", func() bool {
		return sb.Psql(t, "postgres", "SELECT count(*) FROM t") == "1000"
	})
	store := DirSink(t.TempDir())
	res, err := FileBackup(ctx, DSN(sb.DSN()), sb.DataDir, store, FileBackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.FromStandby {
		t.Fatalf("result %+v", res)
	}
	dataDir := filepath.Join(testbed.PostgresDir(t), "data")
	if err := PhysicalRestore(ctx, dataDir, store, RestoreOptions{Owner: postgresOwner()}); err != nil {
		t.Fatal(err)
	}
	restored := testbed.StartPostgresDataDir(t, dataDir, testbed.PostgresOptions{})
	waitFor(t, 30*time.Second, "end of recovery", func() bool {
		return restored.Psql(t, "postgres", "SELECT pg_is_in_recovery()") == "f"
	})
	if got := restored.Psql(t, "postgres", "SELECT count(*) FROM t"); got != "1000" {
		t.Fatalf("restored rows %q", got)
	}
}

// sendingSink is a DirSink whose entry writers take files by descriptor
// (FileSender), as amber's host does: it reads them itself, zeros past a
// file's end, so FileBackup's tar members go out as header, passed file,
// padding.
type sendingSink struct {
	DirSink
	sent atomic.Int64 // files passed
}

func (s *sendingSink) Create(ctx context.Context, name string) (io.WriteCloser, error) {
	w, err := s.DirSink.Create(ctx, name)
	if err != nil {
		return nil, err
	}
	return &sendingWriter{WriteCloser: w, s: s}, nil
}

type sendingWriter struct {
	io.WriteCloser
	s *sendingSink
}

func (w *sendingWriter) SendFile(f *os.File, off, length int64) error {
	w.s.sent.Add(1)
	n, err := io.Copy(w, io.NewSectionReader(f, off, length))
	if err != nil {
		return err
	}
	_, err = w.Write(make([]byte, length-n))
	return err
}
