package myengine

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
)

// fileOpener is a PhysicalBackup opener writing to a file, recording
// whether it was called.
type fileOpener struct {
	path   string
	opened atomic.Bool
}

func (o *fileOpener) open() (io.WriteCloser, error) {
	o.opened.Store(true)
	return os.Create(o.path)
}

// sharedDir is a directory the server's OS user can traverse, for data
// directories a server runs on as that user.
func sharedDir(t *testing.T) string {
	dir, err := os.MkdirTemp(os.TempDir(), "amber-myphys-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// tableSums describes every table of the app database: row count and
// CHECKSUM TABLE.
func tableSums(t *testing.T, m *testbed.MariaDB) string {
	t.Helper()
	tables := strings.Fields(m.SQL(t, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app' AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME"))
	var b strings.Builder
	for _, tb := range tables {
		fmt.Fprintf(&b, "%s %s %s\n", tb, m.SQL(t, "SELECT COUNT(*) FROM app."+tb), m.SQL(t, "CHECKSUM TABLE app."+tb+" EXTENDED"))
	}
	return b.String()
}

func masterPos(t *testing.T, m *testbed.MariaDB) Pos {
	t.Helper()
	f := strings.Fields(m.SQL(t, "SHOW MASTER STATUS"))
	p, err := ParseText(f[0] + ":" + f[1])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// restorePhysical unpacks and prepares the backup file into a new data
// directory and returns it.
func restorePhysical(t *testing.T, backup, parent string) string {
	t.Helper()
	dataDir := filepath.Join(parent, fmt.Sprintf("data%d", rand.IntN(1e9)))
	f, err := os.Open(backup)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	files, n, err := ExtractXBStream(context.Background(), dataDir, f, ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	extracted := time.Since(start)
	if err := Prepare(context.Background(), dataDir, PrepareOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("restore: %d files, %d MiB extracted in %v (%.0f MiB/s), prepared in %v", files, n>>20, extracted.Round(time.Millisecond),
		float64(n)/(1<<20)/extracted.Seconds(), (time.Since(start) - extracted).Round(time.Millisecond))
	return dataDir
}

// TestPhysicalBackupArchiveReplay: a physical backup taken while transfers
// commit restores to a server whose balances add up; with the archived
// binlog applied (ReplayDataDir) it holds exactly the markers committed up
// to the target position, or, to the latest, every table equal to the
// source's.
func TestPhysicalBackupArchiveReplay(t *testing.T) {
	if _, err := BackupTool("", true); err != nil {
		testbed.Skip(t, "%v", err)
	}
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var segs []Segment
	done := make(chan error, 1)
	go func() {
		done <- Archive(ctx, DSN(srv.DSN()), ArchiveOptions{FlushInterval: 100 * time.Millisecond}, func(_ context.Context, s Segment) error {
			mu.Lock()
			segs = append(segs, s)
			mu.Unlock()
			return nil
		})
	}()
	const accounts, balance = 50, 1000
	srv.SQL(t, fmt.Sprintf(`CREATE TABLE app.m (id int PRIMARY KEY);
		CREATE TABLE app.accounts (id int PRIMARY KEY, balance bigint NOT NULL);
		INSERT INTO app.accounts SELECT seq, %d FROM app.seq_1_to_%d;
		CREATE TABLE app.bulk (id int PRIMARY KEY, payload varbinary(1000) NOT NULL);
		INSERT INTO app.bulk SELECT seq, RANDOM_BYTES(1000) FROM app.seq_1_to_60000;
		CREATE TABLE app.aria (id int PRIMARY KEY, v text) ENGINE=Aria;
		INSERT INTO app.aria SELECT seq, MD5(seq) FROM app.seq_1_to_1000;
		CREATE TABLE app.isam (id int PRIMARY KEY, v text) ENGINE=MyISAM;
		INSERT INTO app.isam SELECT seq, MD5(seq) FROM app.seq_1_to_1000;`, balance, accounts))

	// Transfers, two sessions, while the backup runs.
	db, _, err := Open(context.Background(), DSN(srv.DSN()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var transfers atomic.Int64
	lctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for lctx.Err() == nil {
				if transfer(lctx, db, 1+rng.IntN(accounts), 1+rng.IntN(accounts), 1+rng.Int64N(50)) == nil {
					transfers.Add(1)
				}
			}
		}()
	}
	dir := sharedDir(t)
	out := &fileOpener{path: filepath.Join(dir, "backup.xbstream")}
	// The data directory as a sidecar sees it: the same files at another
	// path than the server's @@datadir.
	mount := filepath.Join(t.TempDir(), "mnt")
	if err := os.Symlink(srv.DataDir, mount); err != nil {
		t.Fatal(err)
	}
	before := transfers.Load()
	start := time.Now()
	res, err := PhysicalBackup(context.Background(), DSN(srv.DSN()), out.open, PhysicalOptions{DataDir: mount})
	took := time.Since(start)
	during := transfers.Load() - before
	stopLoad()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup: %d MiB in %v (%.0f MiB/s), %d transfers committed meanwhile, consistent at %s (started at %s)",
		res.Bytes>>20, took.Round(time.Millisecond), float64(res.Bytes)/(1<<20)/took.Seconds(), during, res.Consistent.Text(), res.Start.Text())
	if during == 0 {
		t.Fatal("no transfer committed during the backup; the test proves nothing")
	}
	if res.Tool != "mariadb-backup" && res.Tool != "mariabackup" || res.Consistent.Offset() < res.Start.Offset() ||
		res.Consistent.GTID == "" || len(res.Meta[CheckpointsFile]) == 0 || res.ConsistentTime.Before(res.StartTime) ||
		filepath.Clean(res.DataDir) != filepath.Clean(srv.DataDir) { // the server's, where a restore lays the copy out; not the mount
		t.Fatalf("result %+v", res)
	}

	// Markers after the backup, across a rotation.
	for i := 1; i <= 40; i++ {
		srv.SQL(t, fmt.Sprintf("INSERT INTO app.m VALUES (%d)", i))
		if i == 15 {
			srv.SQL(t, "FLUSH BINARY LOGS")
		}
	}
	target := masterPos(t, srv) // after marker 40
	srv.SQL(t, "INSERT INTO app.m SELECT seq FROM app.seq_41_to_60; UPDATE app.aria SET v = 'changed' WHERE id < 10; DELETE FROM app.isam WHERE id > 990; DELETE FROM app.bulk WHERE id % 7 = 0")
	end := masterPos(t, srv)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		ok := len(segs) > 0 && segs[len(segs)-1].End.Offset() >= end.Offset()
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the archive did not reach the end of the binlog in 30 s")
		}
	}
	cancel()
	<-done
	fetch := func(_ context.Context, after Pos) (Pos, Pos, io.ReadCloser, error) {
		for _, s := range segs {
			if s.End.Offset() > after.Offset() {
				return s.Start, s.End, io.NopCloser(bytes.NewReader(s.Data)), nil
			}
		}
		return Pos{}, Pos{}, nil, ErrNoMoreLog
	}
	want := tableSums(t, srv)

	totals := func(m *testbed.MariaDB) string {
		return m.SQL(t, "SELECT COUNT(*), SUM(balance) FROM app.accounts")
	}
	wantTotals := fmt.Sprintf("%d\t%d", accounts, accounts*balance)
	t.Run("backup alone", func(t *testing.T) {
		dataDir := restorePhysical(t, out.path, dir)
		r := testbed.StartMariaDBOn(t, dataDir, testbed.MariaDBOptions{})
		if got := totals(r); got != wantTotals {
			t.Errorf("restored balances %q, want %q: the copy is not consistent", got, wantTotals)
		}
		if got := r.SQL(t, "SELECT COUNT(*) FROM app.m"); got != "0" {
			t.Errorf("the copy holds %s markers committed after the backup", got)
		}
	})
	t.Run("to a position", func(t *testing.T) {
		dataDir := restorePhysical(t, out.path, dir)
		rep, err := ReplayDataDir(context.Background(), dataDir, ReplayOptions{From: res.Consistent, StopPos: target}, fetch)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("replayed %d segments to %s", rep.Segments, rep.Pos.Text())
		r := testbed.StartMariaDBOn(t, dataDir, testbed.MariaDBOptions{})
		if got := r.SQL(t, "SELECT COUNT(*), MAX(id) FROM app.m"); got != "40\t40" {
			t.Errorf("markers after replay to %s: %q, want 40 up to 40", target.Text(), got)
		}
		if got := totals(r); got != wantTotals {
			t.Errorf("balances %q, want %q", got, wantTotals)
		}
		// The copy can follow the source from exactly there.
		wantGTID := srv.SQL(t, fmt.Sprintf("SELECT BINLOG_GTID_POS('%s', %d)", target.File, target.Pos))
		if got := r.SQL(t, "SELECT @@gtid_slave_pos"); got != wantGTID || rep.Pos.GTID != wantGTID {
			t.Errorf("after replay to %s: gtid_slave_pos %q, reported %q; want the source's GTID position there, %q", target.Text(), got, rep.Pos.GTID, wantGTID)
		}
	})
	t.Run("latest as the mysql user", func(t *testing.T) {
		mysqlUser, err := user.Lookup("mysql")
		if err != nil {
			testbed.Skip(t, "no mysql OS user: install mariadb-server")
		}
		dataDir := restorePhysical(t, out.path, dir)
		uid, _ := strconv.Atoi(mysqlUser.Uid)
		gid, _ := strconv.Atoi(mysqlUser.Gid)
		if err := Chown(dataDir, Owner{UID: uid, GID: gid}); err != nil {
			t.Fatal(err)
		}
		rep, err := ReplayDataDir(context.Background(), dataDir, ReplayOptions{From: res.Consistent}, fetch)
		if err != nil {
			t.Fatal(err)
		}
		r := testbed.StartMariaDBOn(t, dataDir, testbed.MariaDBOptions{})
		if got := tableSums(t, r); got != want {
			t.Errorf("after replay to the latest:\n%s\nsource:\n%s", got, want)
		}
		if got := r.SQL(t, "SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'amber_replay%'"); got != "0" {
			t.Errorf("the replay's administrator is left in the copy (%s)", got)
		}
		wantGTID := srv.SQL(t, "SELECT @@gtid_binlog_pos")
		if got := r.SQL(t, "SELECT @@gtid_slave_pos"); got != wantGTID || rep.Pos.GTID != wantGTID {
			t.Errorf("after replay to the latest: gtid_slave_pos %q, reported %q; want the source's %q", got, rep.Pos.GTID, wantGTID)
		}
	})
}

// transfer moves amount between two accounts in one transaction.
func transfer(ctx context.Context, db *sql.DB, from, to int, amount int64) error {
	if from == to {
		return errors.New("same account")
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	a, b, d := from, to, -amount
	if to < from {
		a, b, d = to, from, amount
	}
	if _, err := tx.ExecContext(ctx, "UPDATE app.accounts SET balance = balance + ? WHERE id = ?", d, a); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE app.accounts SET balance = balance - ? WHERE id = ?", d, b); err != nil {
		return err
	}
	return tx.Commit()
}

// TestPhysicalBackupRefuses: a missing tool, a wrong password and missing
// privileges fail with an error naming the fix, before a byte is written.
func TestPhysicalBackupRefuses(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	srv.SQL(t, `CREATE USER plain IDENTIFIED BY 'plain-Pw-7731'; GRANT SELECT ON *.* TO plain;
		CREATE USER noproc IDENTIFIED BY 'noproc-Pw-5521'; GRANT RELOAD, REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO noproc`)
	for _, c := range []struct {
		name   string
		dsn    string
		o      PhysicalOptions
		want   string
		secret string
	}{
		{"no backup tool", srv.DSN(), PhysicalOptions{BinDir: t.TempDir()}, "install mariadb-backup", ""},
		{"wrong password", srv.DSNFor(testbed.MariaDBSuperuser, "Wr0ng-Pw-9182", "app"), PhysicalOptions{}, "check the DSN", "Wr0ng-Pw-9182"},
		{"no privileges", srv.DSNFor("plain", "plain-Pw-7731", "app"), PhysicalOptions{}, "GRANT RELOAD", "plain-Pw-7731"},
		{"no PROCESS", srv.DSNFor("noproc", "noproc-Pw-5521", ""), PhysicalOptions{}, "GRANT PROCESS ON *.* TO 'noproc'@'%'", "noproc-Pw-5521"},
		{"data directory not here", srv.DSN(), PhysicalOptions{DataDir: filepath.Join(t.TempDir(), "absent")}, "give --data-dir", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := &fileOpener{path: filepath.Join(t.TempDir(), "b")}
			_, err := PhysicalBackup(context.Background(), DSN(c.dsn), out.open, c.o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, c.want)
			}
			if c.secret != "" && strings.Contains(err.Error(), c.secret) {
				t.Errorf("the error shows the password: %v", err)
			}
			if out.opened.Load() {
				t.Error("the backup's entry was opened although the backup was refused")
			}
			t.Log(err)
		})
	}
}

// TestSecretFile: the password reaches a tool only in a 0600 memory file
// that a child reads at SecretFilePath; the stock client connects with it,
// and nothing of it is on disk or in the child's environment.
func TestSecretFile(t *testing.T) {
	srv := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	cmd, cleanup, err := ClientCommand(context.Background(), DSN(srv.DSN()), RestoreOptions{}, "-e", "SELECT CURRENT_USER()")
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), testbed.MariaDBSuperuser+"@") {
		t.Fatalf("client with the memory option file: %v\n%s", err, out)
	}
	for _, a := range append(cmd.Args, cmd.Env...) {
		if strings.Contains(a, "amber-test-pw") {
			t.Errorf("the password is in the child's arguments or environment: %q", a)
		}
	}
	f, err := secretFile("test", []byte("[client]\npassword=x\n"), -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if st.Mode().Perm() != 0o600 {
		t.Errorf("memory file mode %v, want 0600 (the tools ignore option files others can write)", st.Mode())
	}
	if link, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd())); !strings.HasPrefix(link, "/memfd:") {
		t.Errorf("the secret file is %s, not an anonymous memory file", link)
	}
}
