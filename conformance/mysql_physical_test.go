package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance"
	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/pluginhost"
)

// amberRun runs amber against repo and fails the test if it fails; it
// returns stdout.
func amberRun(t testing.TB, amber conformance.AmberRunner, repo string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	c := amber(repo, args...)
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		t.Fatalf("amber %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// mysqlPhysicalPointInTime: `amber archive` streams the binlog while
// markers commit in two databases; a physical backup taken in the middle,
// restored with --data-dir and --to-position, --to-txn (a GTID position),
// --to-time or no target (the latest), gives a server holding exactly the
// markers committed up to the target; a target past the archive, a GTID the
// backup already holds and one the archive does not reach are refused
// before anything is written.
func mysqlPhysicalPointInTime(t *testing.T, amber conformance.AmberRunner) {
	src := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	src.SQL(t, `CREATE TABLE app.m (id int PRIMARY KEY, at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
		CREATE TABLE app.aria (id int PRIMARY KEY) ENGINE=Aria;
		CREATE DATABASE second; CREATE TABLE second.s (id int PRIMARY KEY)`)
	repo := filepath.Join(myTempDir(t), "repo")
	run := func(t *testing.T, args ...string) string { t.Helper(); return amberRun(t, amber, repo, args...) }
	run(t, "repo", "init")
	pos, gtid, cut := mysqlArchiveMarkers(t, amber, repo, src, "physical", func(i int) string {
		return fmt.Sprintf("INSERT INTO app.m (id) VALUES (%d); INSERT INTO app.aria VALUES (%d); INSERT INTO second.s VALUES (%d)", i, i, i)
	})
	mysqlUser, err := user.Lookup("mysql")
	if err != nil {
		testbed.Skip(t, "no mysql OS user, which owns restored files: install mariadb-server")
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"position", []string{"--to-position", pos}, "60"},
		{"GTID", []string{"--to-txn", gtid}, "60"},
		{"time", []string{"--to-time", cut.Format(time.RFC3339)}, "80"},
		{"latest", nil, "100"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(myTempDir(t), "data")
			out := run(t, append([]string{"restore", "--engine", "mysql", "--data-dir", dir}, c.args...)...)
			t.Log(strings.TrimSpace(out))
			testbed.AssertDurable(t, dir)
			st, err := os.Stat(filepath.Join(dir, "app"))
			if err != nil {
				t.Fatal(err)
			}
			if uid := st.Sys().(*syscall.Stat_t).Uid; strconv.Itoa(int(uid)) != mysqlUser.Uid {
				t.Errorf("restored files belong to uid %d, want mysql (%s)", uid, mysqlUser.Uid)
			}
			dst := testbed.StartMariaDBOn(t, dir, testbed.MariaDBOptions{})
			want := c.want + "\t" + c.want
			for _, q := range []string{"SELECT COUNT(*), MAX(id) FROM app.m", "SELECT COUNT(*), MAX(id) FROM app.aria", "SELECT COUNT(*), MAX(id) FROM second.s"} {
				if got := dst.SQL(t, q); got != want {
					t.Errorf("restored to %s: %s = %q, want %s rows up to id %s", c.name, q, got, c.want, c.want)
				}
			}
			if got := dst.SQL(t, "SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'amber_replay%'"); got != "0" {
				t.Errorf("the replay's administrator is left in the copy")
			}
		})
	}
	for _, c := range append(mysqlRefusedTargets(),
		mysqlRefused{"MySQL GTID set", []string{"--to-txn", "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"}, "MySQL GTID sets are not supported"},
		mysqlRefused{"named target", []string{"--to-name", "before-upgrade"}, "no named restore points"}) {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(myTempDir(t), "data")
			cmd := amber(repo, append([]string{"restore", "--engine", "mysql", "--data-dir", dir}, c.args...)...)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), c.want) {
				t.Fatalf("amber restore %s: %v\n%s", strings.Join(c.args, " "), err, out)
			}
			if ents, _ := os.ReadDir(dir); len(ents) > 0 {
				t.Errorf("a refused restore wrote %d files into %s", len(ents), dir)
			}
			t.Log(lastLine(string(out)))
		})
	}
}

// mysqlRefused is a recovery target a restore refuses before it writes
// anything, and what its error says.
type mysqlRefused struct {
	name string
	args []string
	want string
}

// mysqlRefusedTargets are the targets every point-in-time restore of the
// archive mysqlArchiveMarkers leaves refuses: a time past the archive, a
// GTID the backup already holds, a GTID past the archive.
func mysqlRefusedTargets() []mysqlRefused {
	return []mysqlRefused{
		{"past the window", []string{"--to-time", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, "recoverable window"},
		{"GTID before the backup", []string{"--to-txn", "0-1-1"}, "restore an older backup"},
		{"GTID past the archive", []string{"--to-txn", "0-1-999999"}, "before the target GTID position 0-1-999999"},
	}
}

// mysqlArchiveMarkers runs `amber archive` on src while markers 1..100
// commit (insert(i) is marker i's SQL), rotating the binlog every 25: a
// backup in mode after marker 30, then markers up to 100 with a pause of a
// second on each side of cut, and stops the archiver once it has sent
// everything. It returns the binlog position after marker 60 and cut, a
// whole second after marker 80 and before marker 81.
func mysqlArchiveMarkers(t *testing.T, amber conformance.AmberRunner, repo string, src *testbed.MariaDB, mode string, insert func(i int) string) (pos, gtid string, cut time.Time) {
	t.Helper()
	var archErr bytes.Buffer
	arch := amber(repo, "archive", "--engine", "mysql", "--dsn", src.DSN(), "--flush-interval", "200ms")
	arch.Stderr = &archErr
	if err := arch.Start(); err != nil {
		t.Fatal(err)
	}
	archDone := make(chan error, 1)
	go func() { archDone <- arch.Wait() }()
	t.Cleanup(func() { arch.Process.Kill() })
	markers := func(from, to int) {
		for i := from; i <= to; i++ {
			src.SQL(t, insert(i))
			if i%25 == 0 {
				src.SQL(t, "FLUSH BINARY LOGS")
			}
		}
	}
	markers(1, 30)
	amberRun(t, amber, repo, "backup", "--engine", "mysql", "--dsn", src.DSN(), "--mode", mode)
	markers(31, 60)
	f := strings.Fields(src.SQL(t, "SHOW MASTER STATUS"))
	pos = f[0] + ":" + f[1]
	gtid = src.SQL(t, "SELECT @@gtid_binlog_pos")
	markers(61, 80)
	time.Sleep(1100 * time.Millisecond) // binlog times have whole seconds
	cut = time.Now().UTC().Truncate(time.Second)
	time.Sleep(1100 * time.Millisecond)
	markers(81, 100)
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
	return pos, gtid, cut
}

// repoListing names every file of a repository with its size.
func repoListing(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			fi, _ := d.Info()
			fmt.Fprintf(&b, "%s %d\n", p, fi.Size())
		}
		return nil
	})
	return b.String()
}

// mysqlPhysicalWithoutTool: without mariadb-backup on PATH a physical
// backup fails saying what to install, and the repository is untouched.
func mysqlPhysicalWithoutTool(t *testing.T, amber conformance.AmberRunner) {
	src := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	repo := filepath.Join(myTempDir(t), "repo")
	amberRun(t, amber, repo, "repo", "init")
	before := repoListing(t, repo)
	c := amber(repo, "backup", "--engine", "mysql", "--dsn", src.DSN(), "--mode", "physical")
	c.Env = append(c.Env, "PATH="+t.TempDir())
	out, err := c.CombinedOutput()
	if err == nil {
		t.Fatalf("a physical backup without mariadb-backup succeeded:\n%s", out)
	}
	for _, w := range []string{"mariadb-backup", "install", "--mode logical"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("the error does not mention %q:\n%s", w, out)
		}
	}
	if strings.Contains(string(out), "amber-test-pw") {
		t.Errorf("the error shows the password:\n%s", out)
	}
	if after := repoListing(t, repo); after != before {
		t.Errorf("the refused backup changed the repository:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	t.Log(lastLine(string(out)))
}

// mysqlPhysicalKilled: the plugin killed with SIGKILL in the middle of a
// physical backup takes mariadb-backup with it, the server's backup lock
// goes with the tool's session, and no file anywhere in the temporary
// directory holds the password.
func mysqlPhysicalKilled(t *testing.T, amber conformance.AmberRunner) {
	src := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	(&myDriver{}).LoadBulk(t, src, 200<<20)
	src.SQL(t, "CREATE TABLE app.after (id int PRIMARY KEY)")
	repo := filepath.Join(myTempDir(t), "repo")
	amberRun(t, amber, repo, "repo", "init")
	var out bytes.Buffer
	cmd := amber(repo, "backup", "--engine", "mysql", "--dsn", src.DSN(), "--mode", "physical")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	plugin := conformance.ChildNamed(cmd.Process.Pid, "amber-plugin-mysql")
	if plugin == 0 {
		t.Fatalf("no plugin under amber:\n%s", out.String())
	}
	tool := conformance.ChildNamed(plugin, "mariadb-backup")
	if tool == 0 {
		t.Fatalf("no mariadb-backup under the plugin:\n%s", out.String())
	}
	time.Sleep(300 * time.Millisecond) // streaming
	syscall.Kill(plugin, syscall.SIGKILL)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", tool)); err != nil {
			break
		}
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", tool)); strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("mariadb-backup still runs 10 s after its plugin was killed")
		}
	}
	if err := cmd.Wait(); err == nil {
		t.Fatalf("amber succeeded although its plugin was killed:\n%s", out.String())
	}
	done := make(chan error, 1)
	go func() {
		_, err := src.SQLErr("INSERT INTO app.after VALUES (1); CREATE TABLE app.after2 (id int)")
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("writes are blocked 10 s after the backup's tool died: its backup lock was not released")
	}
	private, _ := filepath.Glob(filepath.Join(os.TempDir(), "amber-mysql-*"))
	for _, dir := range private {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte("amber-test-pw")) {
				t.Errorf("%s holds the password after the plugin was killed", p)
			}
			return nil
		})
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// mysqlFreeze drives Freeze/Thaw through the real plugin process, as the
// agent does: a freeze blocks commits until Thaw; a lease nobody renews
// releases them by itself and Thaw then refuses; a plugin killed while
// frozen releases them too.
func mysqlFreeze(t *testing.T, bin string) {
	src := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	src.SQL(t, "CREATE TABLE app.f (id int PRIMARY KEY)")
	host := pluginhost.New(pluginhost.Options{Dirs: []string{bin}})
	defer host.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p, err := host.Engine(ctx, "mysql")
	if err != nil {
		t.Fatal(err)
	}
	target := api.Target{DSN: api.Secret(src.DSN())}
	write := func(id int) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := src.SQLErr(fmt.Sprintf("INSERT INTO app.f VALUES (%d)", id))
			done <- err
		}()
		return done
	}
	blocked := func(t *testing.T, w <-chan error) {
		t.Helper()
		select {
		case err := <-w:
			t.Fatalf("a write committed while frozen (%v)", err)
		case <-time.After(1500 * time.Millisecond):
		}
	}
	released := func(t *testing.T, w <-chan error, within time.Duration, what string) time.Duration {
		t.Helper()
		start := time.Now()
		select {
		case err := <-w:
			if err != nil {
				t.Fatalf("the blocked write failed after %s: %v", what, err)
			}
		case <-time.After(within):
			t.Fatalf("writes are still blocked %v after %s", within, what)
		}
		return time.Since(start)
	}

	t.Run("thaw", func(t *testing.T) {
		fr, err := p.Freeze(ctx, api.FreezeRequest{Target: target, Lease: time.Minute, Label: "snapshot"})
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(src.SQL(t, "SHOW MASTER STATUS"))
		if want := f[0] + ":" + f[1]; !strings.HasPrefix(fr.Position.Text, want+" ") {
			t.Errorf("frozen at %s, the binlog stands at %s", fr.Position.Text, want)
		}
		w := write(1)
		blocked(t, w)
		th, err := p.Thaw(ctx, fr.LeaseID)
		if err != nil {
			t.Fatal(err)
		}
		released(t, w, 10*time.Second, "Thaw")
		if th.Consistent.Offset != fr.Position.Offset || th.Metadata["method"] != "BACKUP STAGE BLOCK_COMMIT" {
			t.Errorf("thawed %+v, frozen at %s", th, fr.Position.Text)
		}
		// Where a restore finds the server's files in the snapshot.
		if dd := strings.TrimSpace(src.SQL(t, "SELECT @@datadir")); th.Metadata["datadir"] != dd {
			t.Errorf("thaw metadata datadir %q; the server's is %q", th.Metadata["datadir"], dd)
		}
	})
	t.Run("lease expiry", func(t *testing.T) {
		fr, err := p.Freeze(ctx, api.FreezeRequest{Target: target, Lease: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		w := write(2)
		blocked(t, w)
		d := released(t, w, 15*time.Second, "the lease ran out")
		t.Logf("released %v after the write was found blocked (lease 3 s)", d.Round(100*time.Millisecond))
		if _, err := p.Thaw(ctx, fr.LeaseID); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("Thaw after the lease: %v", err)
		}
	})
	t.Run("plugin killed", func(t *testing.T) {
		if _, err := p.Freeze(ctx, api.FreezeRequest{Target: target, Lease: time.Minute}); err != nil {
			t.Fatal(err)
		}
		w := write(3)
		blocked(t, w)
		pid := conformance.ChildNamed(os.Getpid(), "amber-plugin-mysql")
		if pid == 0 {
			t.Fatal("no amber-plugin-mysql process under the test")
		}
		syscall.Kill(pid, syscall.SIGKILL)
		released(t, w, 10*time.Second, "the plugin was killed")
		// The host starts a new plugin on the next call; a call that
		// races the old one's death reports it (ErrExited) instead.
		fr, err := p.Freeze(ctx, api.FreezeRequest{Target: target, Lease: time.Minute})
		if errors.Is(err, pluginhost.ErrExited) {
			fr, err = p.Freeze(ctx, api.FreezeRequest{Target: target, Lease: time.Minute})
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Thaw(ctx, fr.LeaseID); err != nil {
			t.Fatal(err)
		}
	})
	if got := src.SQL(t, "SELECT COUNT(*) FROM app.f"); got != "3" {
		t.Errorf("the blocked writes committed %s rows, want 3", got)
	}
}

// mysqlPhysicalThroughput backs up and restores 256 MiB of incompressible
// rows through amber, and, side by side in the same run, with
// mariadb-backup and mbstream alone; the restore must hold the same data.
// It logs the figures and fails only if amber is several times slower
// than the tool it runs.
func mysqlPhysicalThroughput(t *testing.T, amber conformance.AmberRunner) {
	const size = 256 << 20
	d := &myDriver{}
	src := testbed.StartMariaDB(t, testbed.MariaDBOptions{})
	d.LoadBulk(t, src, size)
	want := d.Checksums(t, src.DSN())
	tool, err := exec.LookPath("mariadb-backup")
	if err != nil {
		testbed.Skip(t, "mariadb-backup is not installed: install the Debian package mariadb-backup")
	}
	work := myTempDir(t)

	// The tool alone: stream to a file, then mbstream -x and --prepare.
	cnf := filepath.Join(work, "client.cnf")
	os.WriteFile(cnf, []byte(fmt.Sprintf("[client]\nuser=%s\npassword=amber-test-pw\nsocket=%s\n", testbed.MariaDBSuperuser, src.Socket)), 0o600)
	stream := filepath.Join(work, "raw.xbstream")
	f, _ := os.Create(stream)
	start := time.Now()
	c := exec.Command(tool, "--defaults-file="+cnf, "--backup", "--stream=xbstream", "--target-dir="+filepath.Join(work, "t"), "--datadir="+src.DataDir)
	var errb bytes.Buffer
	c.Stdout, c.Stderr = f, &errb
	if err := c.Run(); err != nil {
		t.Fatalf("mariadb-backup: %v\n%s", err, errb.String())
	}
	rawBackup := time.Since(start)
	f.Close()
	st, _ := os.Stat(stream)
	raw := filepath.Join(work, "raw")
	os.Mkdir(raw, 0o750)
	start = time.Now()
	in, _ := os.Open(stream)
	x := exec.Command("mbstream", "-x", "-C", raw)
	x.Stdin = in
	if out, err := x.CombinedOutput(); err != nil {
		t.Fatalf("mbstream -x: %v\n%s", err, out)
	}
	in.Close()
	if out, err := exec.Command(tool, "--prepare", "--target-dir="+raw).CombinedOutput(); err != nil {
		t.Fatalf("mariadb-backup --prepare: %v\n%s", err, out)
	}
	rawRestore := time.Since(start)
	os.RemoveAll(raw)
	os.Remove(stream)

	repo := filepath.Join(work, "repo")
	amberRun(t, amber, repo, "repo", "init")
	start = time.Now()
	var rep struct {
		BytesIn int64 `json:"bytes_in"`
	}
	out := amberRun(t, amber, repo, "backup", "--engine", "mysql", "--dsn", src.DSN(), "--mode", "physical", "--json")
	backup := time.Since(start)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	dir := filepath.Join(work, "data")
	start = time.Now()
	amberRun(t, amber, repo, "restore", "--engine", "mysql", "--data-dir", dir)
	restore := time.Since(start)
	dst := testbed.StartMariaDBOn(t, dir, testbed.MariaDBOptions{})
	if got := d.Checksums(t, dst.DSN()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the restored copy differs from its source:\n%v\n%v", got, want)
	}
	mibs := func(n int64, d time.Duration) string {
		return fmt.Sprintf("%.0f MiB/s", float64(n)/(1<<20)/d.Seconds())
	}
	t.Logf("stream of %d MiB: mariadb-backup alone %v (%s), amber backup %v (%s); mbstream -x + --prepare %v (%s), amber restore %v (%s)",
		st.Size()>>20, rawBackup.Round(time.Millisecond), mibs(st.Size(), rawBackup), backup.Round(time.Millisecond), mibs(rep.BytesIn, backup),
		rawRestore.Round(time.Millisecond), mibs(st.Size(), rawRestore), restore.Round(time.Millisecond), mibs(rep.BytesIn, restore))
	if backup > 6*rawBackup+10*time.Second {
		t.Errorf("amber backup took %v, mariadb-backup alone %v", backup, rawBackup)
	}
	if restore > 6*rawRestore+10*time.Second {
		t.Errorf("amber restore took %v, mbstream and --prepare alone %v", restore, rawRestore)
	}
}
