package pgengine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

func postgresOwner() *Owner {
	uid, gid, _ := testbed.PostgresIDs()
	return &Owner{UID: uid, GID: gid}
}

func TestPhysicalBackupRestore(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	tbsDir := filepath.Join(testbed.PostgresDir(t), "tbs")
	os.Mkdir(tbsDir, 0o700)
	testbed.ChownPostgres(tbsDir)
	pg.Psql(t, "postgres", "CREATE TABLESPACE extra LOCATION '"+tbsDir+"'")
	pg.Psql(t, "postgres", `CREATE TABLE t (id int PRIMARY KEY, v text);
		INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g;
		CREATE TABLE u (id int) TABLESPACE extra; INSERT INTO u SELECT generate_series(1, 777);`)
	const q = "SELECT count(*), sum(id), md5(string_agg(v, ',' ORDER BY id)) FROM t"
	const qu = "SELECT count(*), sum(id) FROM u"
	want, wantU := pg.Psql(t, "postgres", q), pg.Psql(t, "postgres", qu)

	store := DirSink(t.TempDir())
	res, err := PhysicalBackup(ctx, DSN(pg.ReplicationDSN()), store, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the backup must not be in the restored copy.
	pg.Psql(t, "postgres", "INSERT INTO t VALUES (999999, 'later')")
	if res.StartLSN == 0 || res.StopLSN < res.StartLSN || res.StartTimeline != 1 || res.StopTimeline != 1 ||
		res.ConsistentTime.Before(res.StartTime) || !res.WALIncluded || res.FromStandby {
		t.Fatalf("unexpected result %+v", res)
	}
	if len(res.Tablespaces) != 1 || res.Tablespaces[0].Location != tbsDir {
		t.Fatalf("tablespaces %+v", res.Tablespaces)
	}
	names, _ := store.Entries(ctx)
	if strings.Join(names, ",") != strings.Join(sortedCopy(res.Entries), ",") || !contains(strings.Join(names, ","), "backup_manifest") ||
		len(names) != 3 {
		t.Fatalf("entries %v, result says %v", names, res.Entries)
	}

	dataDir := filepath.Join(testbed.PostgresDir(t), "data")
	newTbs := filepath.Join(testbed.PostgresDir(t), "tbs2")
	opts := RestoreOptions{Owner: postgresOwner(), TablespaceMapping: map[uint32]string{res.Tablespaces[0].OID: newTbs}}
	if err := PhysicalRestore(ctx, dataDir, store, opts); err != nil {
		t.Fatal(err)
	}
	// Every restored page is on disk once the restore returns.
	testbed.AssertDurable(t, dataDir)
	testbed.AssertDurable(t, newTbs)
	if err := PhysicalRestore(ctx, dataDir, store, opts); err == nil || !contains(err.Error(), "not empty") {
		t.Fatalf("restore into a non-empty dir: %v", err)
	}
	if st, err := os.Stat(dataDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode: %v %v", st.Mode(), err)
	}
	// pg_verifybackup checks the restored files against the manifest.
	verify := testbed.PostgresCommand(filepath.Join(pg.Bin, "pg_verifybackup"), "-n", "-i", "tablespace_map", dataDir)
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("pg_verifybackup: %v\n%s", err, out)
	}

	restored := testbed.StartPostgresDataDir(t, dataDir, testbed.PostgresOptions{})
	if got := restored.Psql(t, "postgres", q); got != want {
		t.Fatalf("restored rows %q, want %q", got, want)
	}
	if got := restored.Psql(t, "postgres", qu); got != wantU {
		t.Fatalf("restored tablespace rows %q, want %q", got, wantU)
	}
	if got := restored.Psql(t, "postgres", "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname='extra'"); got != newTbs {
		t.Fatalf("tablespace location %q, want %q", got, newTbs)
	}
}

func TestPhysicalBackupFromStandby(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	pg.Psql(t, "postgres", "CREATE TABLE t AS SELECT generate_series(1, 1000) id")
	sb := testbed.StartStandby(t, pg)
	waitFor(t, 30*time.Second, "standby catch-up", func() bool {
		return sb.Psql(t, "postgres", "SELECT count(*) FROM t") == "1000"
	})
	store := DirSink(t.TempDir())
	res, err := PhysicalBackup(ctx, DSN(sb.ReplicationDSN()), store, BackupOptions{})
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
	// The clone of a standby's clone carries primary_conninfo; it is not a
	// standby (no standby.signal), so it starts as a primary.
	restored := testbed.StartPostgresDataDir(t, dataDir, testbed.PostgresOptions{})
	if got := restored.Psql(t, "postgres", "SELECT count(*) FROM t"); got != "1000" {
		t.Fatalf("restored rows %q", got)
	}
	if got := restored.Psql(t, "postgres", "SELECT pg_is_in_recovery()"); got != "f" {
		t.Fatalf("restored copy in recovery: %q", got)
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}
