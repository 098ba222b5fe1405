package myengine

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/amber-backup/amber/conformance/testbed"
)

// TestRecoverFromBinlog: a copy of a running server's data directory
// taken under the freeze, right after a commit, can hold that transaction
// prepared in InnoDB with its commit only in the binlog (the server's
// default innodb_flush_log_at_trx_commit=1, as in a pod; the test bed's
// usual 2 writes InnoDB's commit at once). A server without the binlog
// refuses such a copy; after RecoverFromBinlog one starts and holds every
// row committed before the freeze. The source names its binlog by an
// absolute path: the copy's index is rewritten to its own files.
func TestRecoverFromBinlog(t *testing.T) {
	src := testbed.StartMariaDB(t, testbed.MariaDBOptions{Args: []string{"--innodb-flush-log-at-trx-commit=1"}})
	src.SQL(t, "CREATE TABLE app.rb (id int PRIMARY KEY)")
	ctx := context.Background()
	db, _, err := Open(ctx, DSN(src.DSN()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dir := t.TempDir()
	srcIndex, err := os.ReadFile(filepath.Join(src.DataDir, "mysql-bin.index"))
	if err != nil {
		t.Fatal(err)
	}
	copyDir := func(from, to string) {
		t.Helper()
		if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
			t.Fatalf("cp -a %s %s: %v\n%s", from, to, err, out)
		}
	}
	const attempts = 10
	for n := 1; n <= attempts; n++ {
		if _, err := db.ExecContext(ctx, "INSERT INTO app.rb VALUES (?)", n); err != nil {
			t.Fatal(err)
		}
		fr, err := Freeze(ctx, DSN(src.DSN()), FreezeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		snap := filepath.Join(dir, fmt.Sprint("snap", n))
		copyDir(src.DataDir, snap)
		if err := fr.Thaw(ctx); err != nil {
			t.Fatal(err)
		}
		probe := snap + "-probe"
		copyDir(snap, probe)
		srv, err := StartLocalServer(ctx, probe, LocalServerOptions{})
		if err == nil {
			if err := srv.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			os.RemoveAll(snap)
			os.RemoveAll(probe)
			continue
		}
		if !strings.Contains(err.Error(), "prepared transaction") {
			t.Fatalf("a server without the binlog on snapshot %d: %v", n, err)
		}
		t.Logf("snapshot %d holds a prepared transaction; a server without the binlog refuses it", n)

		base, ok := SourceBinlog(snap, fr.Pos.File)
		if !ok || base != "mysql-bin" {
			t.Fatalf("SourceBinlog(%s) = %q, %v; want mysql-bin, true", fr.Pos.File, base, ok)
		}
		if err := RecoverFromBinlog(ctx, snap, base, ""); err != nil {
			t.Fatal(err)
		}
		srv, err = StartLocalServer(ctx, snap, LocalServerOptions{})
		if err != nil {
			t.Fatalf("a server without the binlog after RecoverFromBinlog: %v", err)
		}
		rdb, _, err := Open(ctx, srv.DSN())
		if err != nil {
			t.Fatal(err)
		}
		var count, max int
		err = rdb.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM app.rb").Scan(&count, &max)
		rdb.Close()
		if serr := srv.Stop(ctx); err == nil {
			err = serr
		}
		if err != nil {
			t.Fatal(err)
		}
		if count != n || max != n {
			t.Fatalf("the recovered copy holds %d rows, highest %d; want 1..%d, all committed before the freeze", count, max, n)
		}
		idx, err := os.ReadFile(filepath.Join(snap, "mysql-bin.index"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(idx), src.DataDir) || !strings.HasPrefix(string(idx), "./mysql-bin.") {
			t.Errorf("the copy's binlog index names other files than its own:\n%s", idx)
		}
		if now, err := os.ReadFile(filepath.Join(src.DataDir, "mysql-bin.index")); err != nil || !strings.HasPrefix(string(now), string(srcIndex)) {
			t.Errorf("the source's binlog index changed: %v\n%s", err, now)
		}
		t.Logf("after RecoverFromBinlog the copy starts without the binlog and holds rows 1..%d", n)
		return
	}
	t.Fatalf("none of %d copies taken right after a commit held a prepared transaction, so the recovery was not exercised; the server wrote its commits to InnoDB's log sooner than the copy was taken", attempts)
}
