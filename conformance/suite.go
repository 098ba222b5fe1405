package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The contract between Run and an engine's test. Run drives the real
// `amber` binary; the Driver knows the engine: how to start a server, what
// to put in it, and how to describe its contents so that a restore can be
// compared with its source.

// Server is a running database server started for one test.
type Server interface {
	// DSN connects as a superuser to the server's default database, the
	// one LoadFixture, LoadBulk and BankSetup fill and `amber backup` reads.
	DSN() string
	// Stop shuts the server down. Servers are stopped in t.Cleanup anyway;
	// Run stops restored servers early to spare memory.
	Stop()
}

// Capabilities are the backup modes an engine offers through amber.
type Capabilities struct {
	Physical    bool // `amber backup --mode physical`, restored with --data-dir
	Logical     bool // `amber backup --mode logical`, restored with --dsn
	PointInTime bool // physical restores take --to-time (requires Physical)

	// TimeResolution is the granularity of the commit times the engine's
	// log records (MariaDB's binlog: whole seconds); zero means exact. A
	// time target then recovers every transaction of its unit, so the
	// archiving cases restore only to markers that were the last of their
	// unit (archive_suite.go).
	TimeResolution time.Duration
	// ReplayedByRestore: `amber restore --data-dir` applies the archived
	// log itself before it returns (MariaDB, through a private server), so
	// the restored server never fetches log and gets no credential for it;
	// otherwise (PostgreSQL's restore_command) the restored server fetches
	// log while it recovers.
	ReplayedByRestore bool
	// ArchiverMoves: an archiver stopped on the primary and started again
	// on the promoted replica after a failover continues the same stream
	// (MariaDB: a new epoch in the promoted server's binlog, branching at
	// the archived end), so the suite's ArchiverMoves case runs.
	ArchiverMoves bool
}

// Bank is a running bank-transfer workload's client.
type Bank interface {
	// Transfer moves amount from one account to another in one transaction
	// (several statements). It is safe for concurrent use; on error nothing
	// moved.
	Transfer(ctx context.Context, from, to int, amount int64) error
}

// BadInput is a command line that must fail with a clear error.
type BadInput struct {
	Name string
	Args []string // amber's arguments
	// Want: each must appear in amber's output (case-insensitive), so the
	// message names the fix.
	Want []string
	// Secret must never appear in the output (a password in the DSN).
	Secret string
}

// Driver is what an engine's test implements to run the suite.
type Driver interface {
	// Engine is the name given to --engine; amber finds the plugin
	// amber-plugin-<Engine> beside itself.
	Engine() string
	Capabilities() Capabilities

	// Start starts a fresh, empty server, stopped in t.Cleanup.
	Start(t testing.TB) Server
	// TempDir is an empty directory that amber and the server's OS user can
	// write: repositories and physical restores go there.
	TempDir(t testing.TB) string
	// StartRestored starts a server on a data directory that `amber restore
	// --data-dir` filled, and returns once recovery has finished and the
	// server accepts writes.
	StartRestored(t testing.TB, dataDir string) Server
	// CreateEmptyDB creates an empty database on s and returns its DSN, for
	// a logical restore.
	CreateEmptyDB(t testing.TB, s Server) string

	// LoadFixture fills s's default database with the round-trip fixture:
	// every common type and its edge values, a row of 20 MB, 500 tables,
	// quoted and reserved identifiers, a sequence, a view and indexes.
	LoadFixture(t testing.TB, s Server)
	// LoadBulk adds about size bytes of hard-to-compress rows to s's
	// default database, quickly.
	LoadBulk(t testing.TB, s Server, size int64)
	// Checksums describe the database at dsn, one entry per object: every
	// table's definition, row count and a checksum of its rows in a
	// canonical order; every sequence's state; every view's definition and
	// every index's definition and validity. Two databases hold the same
	// data when their Checksums are equal.
	Checksums(t testing.TB, dsn string) map[string]string

	// BankSetup creates accounts accounts of balance each in dsn's database.
	BankSetup(t testing.TB, dsn string, accounts int, balance int64) Bank
	// BankTotals returns the number of accounts and the sum of balances.
	BankTotals(t testing.TB, dsn string) (accounts int, total int64)

	// BadInputs are the engine's wrong inputs against s: a wrong password,
	// a role without the privileges a backup needs, a server configured so
	// that a backup is impossible... Run adds the engine-independent ones.
	BadInputs(t testing.TB, s Server) []BadInput
}

// AmberRunner makes an unstarted `amber args...` command against the
// repository at repo, with the repository password set and the plugins
// beside the binary; Run sets its output streams.
type AmberRunner func(repo string, args ...string) *exec.Cmd

// Run runs the conformance suite against d, each subtest on servers of its
// own and each asserting what a user relies on:
//
//   - RoundTrip: a backup of the fixture, in every mode, restores to a
//     database whose Checksums equal the source's, object by object.
//   - ConsistentUnderLoad: backups taken while concurrent transfers commit
//     restore to the same number of accounts and exactly the same total.
//   - BadInput: wrong DSNs, missing privileges, unusable server settings,
//     an unknown engine and a restore target before the first backup each
//     fail with a message naming the fix, without printing the password,
//     and leave the repository byte for byte as it was.
//   - CrashDuringBackup: amber, then its plugin, killed with SIGKILL in the
//     middle of a backup: `amber ls` lists no backup, `amber verify`
//     passes, the next backup succeeds and restores equal, and `amber prune
//     --grace 0` removes every pack and partial upload the killed backups
//     left behind.
//
// Engines with PointInTime also run the archiving cases (archive_suite.go,
// through the driver's LogDriver methods):
//
//   - PointInTime: markers commit every ~10 ms while `amber archive` runs; it
//     is killed with SIGKILL at marker 400; a restore to an instant 1.2-2 s
//     before the kill holds exactly the markers committed before it; a
//     restarted archiver resumes with no gap; more targets are exact; the
//     latest log restores everything; a target past the window is refused
//     with nothing written.
//   - ArchivePluginCrash: the plugin is killed twice while archiving; amber
//     restarts it and the window has no gap.
//   - Failover: archiving from a replica that is promoted while it runs
//     follows the promotion without exiting; restores before, at and after
//     it are exact and the window has no gap.
//   - Gaps: log the server discarded before it was archived makes the next
//     archiver stop with an error saying so; a segment deleted from the
//     repository is named as a gap by `amber ls`, a restore across it is
//     refused naming it, and points before it restore exactly.
//   - ArchiverMoves (engines with Capabilities.ArchiverMoves): the archiver
//     stopped on the primary and started on the replica promoted after it
//     continues the stream; `amber ls` shows one window without a gap, and
//     restores before the failover, across it from a backup taken before
//     it, and after a backup of the promoted server are exact.
//
// With a coarse Capabilities.TimeResolution (MariaDB's whole-second binlog
// times) each restore goes to the marker nearest the one named that was the
// last of its unit, and the range before the kill widens by one unit.
func Run(t *testing.T, d Driver, amber AmberRunner) {
	caps := d.Capabilities()
	var modes []string
	if caps.Physical {
		modes = append(modes, "physical")
	}
	if caps.Logical {
		modes = append(modes, "logical")
	}
	if len(modes) == 0 {
		t.Fatalf("%s: the driver declares no backup mode", d.Engine())
	}
	t.Run("RoundTrip", func(t *testing.T) { roundTrip(t, d, amber, modes) })
	t.Run("ConsistentUnderLoad", func(t *testing.T) { consistentUnderLoad(t, d, amber, modes) })
	t.Run("BadInput", func(t *testing.T) { badInput(t, d, amber, modes[0]) })
	t.Run("CrashDuringBackup", func(t *testing.T) { crashDuringBackup(t, d, amber, modes[0]) })
	if caps.PointInTime {
		runLog(t, d, amber)
	}
}

// RunMajor is the lean subset of Run for an engine's further server
// versions, when Run itself covers one: the physical RoundTrip, then
// PointInTime and Failover (a timeline or term switch while archiving).
// The driver must declare Physical and PointInTime.
func RunMajor(t *testing.T, d Driver, amber AmberRunner) {
	caps := d.Capabilities()
	if !caps.Physical || !caps.PointInTime {
		t.Fatalf("%s: RunMajor needs a driver with Physical and PointInTime", d.Engine())
	}
	ld, ok := d.(LogDriver)
	if !ok {
		t.Fatalf("%s declares PointInTime but its driver is not a LogDriver", d.Engine())
	}
	t.Run("RoundTrip", func(t *testing.T) { roundTrip(t, d, amber, []string{"physical"}) })
	t.Run("PointInTime", func(t *testing.T) { pointInTime(t, d, ld, amber) })
	t.Run("Failover", func(t *testing.T) { failover(t, d, ld, amber) })
}

// roundTrip: what comes back from a backup equals what went in, object by
// object, for every mode.
func roundTrip(t *testing.T, d Driver, amber AmberRunner, modes []string) {
	src := d.Start(t)
	start := time.Now()
	d.LoadFixture(t, src)
	want := d.Checksums(t, src.DSN())
	t.Logf("fixture: %d objects in %v", len(want), time.Since(start).Round(time.Millisecond))
	if len(want) < 500 {
		t.Fatalf("the fixture has %d objects, want at least 500 tables", len(want))
	}
	r := newRepo(t, d, amber)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			start := time.Now()
			id := r.backup(t, src, mode)
			restored := r.restore(t, id, mode, src)
			compare(t, want, d.Checksums(t, restored.DSN()))
			restored.Stop()
			t.Logf("%s backup, restore and compare: %v", mode, time.Since(start).Round(time.Millisecond))
		})
	}
}

// consistentUnderLoad: a backup taken while transfers run restores to a
// state where money was neither created nor destroyed.
func consistentUnderLoad(t *testing.T, d Driver, amber AmberRunner, modes []string) {
	const accounts, balance, workers = 100, 1000, 4
	src := d.Start(t)
	bank := d.BankSetup(t, src.DSN(), accounts, balance)
	r := newRepo(t, d, amber)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			var done, failed atomic.Int64
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
					for ctx.Err() == nil {
						from, to := 1+rng.IntN(accounts), 1+rng.IntN(accounts-1)
						if to >= from {
							to++
						}
						switch err := bank.Transfer(ctx, from, to, 1+rng.Int64N(100)); {
						case err == nil:
							done.Add(1)
						case ctx.Err() == nil:
							failed.Add(1)
						}
					}
				}()
			}
			stop := func() { cancel(); wg.Wait() }
			defer stop()
			for deadline := time.Now().Add(30 * time.Second); done.Load() < 100; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("workload made %d transfers in 30 s (%d failed)", done.Load(), failed.Load())
				}
			}
			before := done.Load()
			id := r.backup(t, src, mode)
			during := done.Load() - before
			stop()
			if during == 0 {
				t.Fatalf("no transfer committed while the %s backup ran; the test proves nothing", mode)
			}
			restored := r.restore(t, id, mode, src)
			n, sum := d.BankTotals(t, restored.DSN())
			if n != accounts || sum != accounts*balance {
				t.Errorf("restored %s backup has %d accounts holding %d, want %d holding %d", mode, n, sum, accounts, accounts*balance)
			}
			if n, sum := d.BankTotals(t, src.DSN()); n != accounts || sum != accounts*balance {
				t.Errorf("source has %d accounts holding %d after the workload: the workload itself is broken", n, sum)
			}
			t.Logf("%s: %d transfers committed during the backup (%d in all, %d failed)", mode, during, done.Load(), failed.Load())
			restored.Stop()
		})
	}
}

// badInput: a wrong command line fails with a message that names the fix,
// leaks no password, and writes nothing to the repository.
func badInput(t *testing.T, d Driver, amber AmberRunner, mode string) {
	src := d.Start(t)
	r := newRepo(t, d, amber)
	r.backup(t, src, mode)
	var ls lsJSON
	r.runJSON(t, &ls, "ls")
	first := ls.Backups[0]

	cases := d.BadInputs(t, src)
	cases = append(cases, BadInput{
		Name:   "unknown engine",
		Args:   []string{"backup", "--engine", "nosuchdb", "--dsn", src.DSN(), "--mode", mode},
		Want:   []string{"nosuchdb", "engines found", d.Engine()},
		Secret: password(src.DSN()),
	})
	var neverDir string
	if d.Capabilities().PointInTime {
		neverDir = filepath.Join(d.TempDir(t), "never")
		before := first.ConsistentTime.Add(-time.Hour).UTC().Format(time.RFC3339)
		cases = append(cases, BadInput{
			Name: "target before the recoverable window",
			Args: []string{"restore", "--engine", d.Engine(), "--data-dir", neverDir, "--to-time", before},
			Want: []string{"recoverable window"},
		})
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			snap := listRepo(t, r.dir)
			out, err := r.try(c.Args...)
			if err == nil {
				t.Fatalf("amber %s succeeded:\n%s", redact(c.Args, c.Secret), out)
			}
			for _, w := range c.Want {
				if !strings.Contains(strings.ToLower(out), strings.ToLower(w)) {
					t.Errorf("amber %s: the error should mention %q:\n%s", redact(c.Args, c.Secret), w, out)
				}
			}
			if c.Secret != "" && strings.Contains(out, c.Secret) {
				t.Errorf("amber %s printed the password:\n%s", redact(c.Args, c.Secret), out)
			}
			if diff := diffListing(snap, listRepo(t, r.dir)); diff != "" {
				t.Errorf("amber %s changed the repository:\n%s", redact(c.Args, c.Secret), diff)
			}
			t.Logf("%v: %s", err, lastLine(out))
		})
	}
	if neverDir != "" {
		if _, err := os.Stat(neverDir); !os.IsNotExist(err) {
			t.Errorf("a refused restore created %s", neverDir)
		}
	}
}

// crashDuringBackup: amber or its plugin killed with SIGKILL in the middle
// of a backup leaves a repository that lists no such backup, verifies,
// takes the next backup, and is cleaned by prune.
func crashDuringBackup(t *testing.T, d Driver, amber AmberRunner, mode string) {
	const size = 300 << 20
	src := d.Start(t)
	start := time.Now()
	d.LoadBulk(t, src, size)
	want := d.Checksums(t, src.DSN())
	t.Logf("loaded %d MiB in %v", size>>20, time.Since(start).Round(time.Millisecond))
	r := newRepo(t, d, amber)
	plugin := "amber-plugin-" + d.Engine()

	for _, victim := range []string{"amber", plugin} {
		t.Run("kill "+victim, func(t *testing.T) {
			var out bytes.Buffer
			cmd := amber(r.dir, "backup", "--engine", d.Engine(), "--dsn", src.DSN(), "--mode", mode)
			cmd.Stdout, cmd.Stderr = &out, &out
			// Its own process group, which the plugin inherits, so that
			// nothing outlives the test whatever happens.
			if cmd.SysProcAttr == nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{}
			}
			cmd.SysProcAttr.Setpgid = true
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })

			// Mid-backup and mid-upload: this backup stored a pack and is
			// writing the next one.
			// The state is checked with amber and its plugin stopped
			// (SIGSTOP to the group), so that the kill lands in exactly
			// the state checked: a pack upload that finishes between a
			// look and the kill would leave nothing partial behind.
			oldPacks, oldPartial := packs(t, r.dir)
			midUpload := func() bool {
				p, tmp := packs(t, r.dir)
				return len(p) > len(oldPacks) && len(tmp) > len(intersect(tmp, oldPartial))
			}
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Millisecond) {
				if midUpload() {
					syscall.Kill(-cmd.Process.Pid, syscall.SIGSTOP)
					waitStopped(cmd.Process.Pid)
					if midUpload() {
						break
					}
					syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
				}
				select {
				case err := <-exited:
					t.Fatalf("the backup ended (%v) before it was killed:\n%s", err, out.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("no pack stored after 60 s:\n%s", out.String())
				}
			}
			pluginPID := ChildNamed(cmd.Process.Pid, plugin)
			if pluginPID == 0 {
				t.Fatalf("no %s process under amber (pid %d)", plugin, cmd.Process.Pid)
			}

			// The group is stopped until the victim is dead.
			if victim == "amber" {
				cmd.Process.Kill()
				syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
				<-exited
				if !waitGone(pluginPID, 5*time.Second) {
					t.Errorf("%s (pid %d) still runs 5 s after amber was killed: a plugin must not outlive its host", plugin, pluginPID)
				}
			} else {
				syscall.Kill(pluginPID, syscall.SIGKILL)
				syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
				select {
				case err := <-exited:
					if err == nil {
						t.Fatalf("amber exited 0 although its plugin was killed mid-backup:\n%s", out.String())
					}
					if !strings.Contains(out.String(), plugin) {
						t.Errorf("amber's error does not name %s, which died:\n%s", plugin, out.String())
					}
					t.Logf("amber: %v: %s", err, lastLine(out.String()))
				case <-time.After(60 * time.Second):
					t.Fatalf("amber did not exit within 60 s after its plugin was killed:\n%s", out.String())
				}
			}
			var ls lsJSON
			r.runJSON(t, &ls, "ls")
			if len(ls.Backups) != 0 {
				t.Errorf("amber ls shows %d backups after a killed backup, want none", len(ls.Backups))
			}
			r.run(t, "verify")
		})
	}
	orphans, partial := packs(t, r.dir)
	if len(orphans) == 0 || len(partial) == 0 {
		t.Fatalf("the killed backups left %d packs and %d partial uploads: they were not killed mid-upload", len(orphans), len(partial))
	}

	start = time.Now()
	id := r.backup(t, src, mode)
	t.Logf("a complete %s backup of %d MiB took %v", mode, size>>20, time.Since(start).Round(time.Millisecond))

	var pr struct {
		Orphans int `json:"orphan_packs"`
	}
	r.runJSON(t, &pr, "prune", "--grace", "0")
	if pr.Orphans != len(orphans) {
		t.Errorf("prune --grace 0 removed %d orphaned packs; the killed backups left %d", pr.Orphans, len(orphans))
	}
	packsAfter, partialAfter := packs(t, r.dir)
	if left := intersect(orphans, packsAfter); len(left) > 0 {
		t.Errorf("prune --grace 0 left %d of the %d packs the killed backups stored: %v", len(left), len(orphans), left)
	}
	if left := intersect(partial, partialAfter); len(left) > 0 {
		t.Errorf("prune --grace 0 left %d partial uploads of the killed backups: %v", len(left), left)
	}
	r.run(t, "verify", "--read-data")
	restored := r.restore(t, id, mode, src)
	compare(t, want, d.Checksums(t, restored.DSN()))
}

// repository is one amber repository in a directory.
type repository struct {
	d     Driver
	amber AmberRunner
	dir   string
}

func newRepo(t *testing.T, d Driver, amber AmberRunner) *repository {
	r := &repository{d: d, amber: amber, dir: filepath.Join(d.TempDir(t), "repo")}
	r.run(t, "repo", "init")
	return r
}

// try runs amber and returns its output (stdout and stderr together).
func (r *repository) try(args ...string) (string, error) {
	var out bytes.Buffer
	c := r.amber(r.dir, args...)
	c.Stdout, c.Stderr = &out, &out
	err := runLimited(c, commandLimit)
	return out.String(), err
}

// commandLimit bounds one amber command in the suites, so a command that
// hangs fails its test with its output instead of the whole package
// timing out.
const commandLimit = 10 * time.Minute

// runLimited runs c, killing it after limit.
func runLimited(c *exec.Cmd, limit time.Duration) error {
	if err := c.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		c.Process.Kill()
		<-done
		return fmt.Errorf("amber %s did not finish within %s and was killed", strings.Join(c.Args[1:], " "), limit)
	}
}

// run runs amber, failing the test if it fails, and returns its stdout.
func (r *repository) run(t testing.TB, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	c := r.amber(r.dir, args...)
	c.Stdout, c.Stderr = &out, &errb
	if err := runLimited(c, commandLimit); err != nil {
		t.Fatalf("amber %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func (r *repository) runJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	out := r.run(t, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("amber %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// backup backs up s's default database and returns the backup id.
func (r *repository) backup(t testing.TB, s Server, mode string) string {
	t.Helper()
	var res struct {
		ID string `json:"id"`
	}
	r.runJSON(t, &res, "backup", "--engine", r.d.Engine(), "--dsn", s.DSN(), "--mode", mode, "--name", "conformance-"+mode)
	return res.ID
}

// restore restores backup id and returns a server holding it: a new server
// on the restored data directory (physical) or a new database on src
// (logical).
func (r *repository) restore(t testing.TB, id, mode string, src Server) Server {
	t.Helper()
	if mode == "physical" {
		dir := filepath.Join(r.d.TempDir(t), "data")
		r.run(t, "restore", "--engine", r.d.Engine(), "--data-dir", dir, "--backup", id)
		return r.d.StartRestored(t, dir)
	}
	dsn := r.d.CreateEmptyDB(t, src)
	r.run(t, "restore", "--engine", r.d.Engine(), "--dsn", dsn, "--backup", id)
	return dsnServer(dsn)
}

// dsnServer is a database on a server someone else stops.
type dsnServer string

func (s dsnServer) DSN() string { return string(s) }
func (s dsnServer) Stop()       {}

type lsJSON struct {
	Backups []struct {
		ID             string    `json:"id"`
		ConsistentTime time.Time `json:"consistent_time"`
	} `json:"backups"`
}

// compare reports the objects whose checksums differ.
func compare(t testing.TB, want, got map[string]string) {
	t.Helper()
	var diffs []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("missing %s", k))
		} else if g != w {
			diffs = append(diffs, fmt.Sprintf("%s:\n    source:   %.300s\n    restored: %.300s", k, w, g))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("unexpected %s: %.300s", k, got[k]))
		}
	}
	if len(diffs) == 0 {
		return
	}
	sort.Strings(diffs)
	if len(diffs) > 20 {
		diffs = append(diffs[:20], fmt.Sprintf("... and %d more", len(diffs)-20))
	}
	t.Errorf("restored database differs from its source in %d of %d objects:\n  %s", len(diffs), len(want), strings.Join(diffs, "\n  "))
}

// listRepo describes every file under dir: name, size and modification time.
func listRepo(t testing.TB, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		m[rel] = fmt.Sprintf("%v %d %s", fi.Mode(), fi.Size(), fi.ModTime().Format(time.RFC3339Nano))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func diffListing(before, after map[string]string) string {
	var d []string
	for k, v := range after {
		if w, ok := before[k]; !ok {
			d = append(d, "added "+k)
		} else if v != w {
			d = append(d, "changed "+k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			d = append(d, "removed "+k)
		}
	}
	sort.Strings(d)
	return strings.Join(d, "\n")
}

// packs returns the complete packs in the repository and the partial
// uploads (temporary files) beside them.
// A backup may be running: files that vanish during the walk (a temporary
// upload renamed into place) are skipped.
func packs(t testing.TB, dir string) (complete, partial []string) {
	root := filepath.Join(dir, "data")
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() {
			return nil
		}
		k, _ := filepath.Rel(root, p)
		if strings.HasPrefix(filepath.Base(k), ".") {
			partial = append(partial, k)
		} else {
			complete = append(complete, k)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return complete, partial
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		for _, y := range b {
			if x == y {
				out = append(out, x)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// ChildNamed returns the pid of parent's child process whose executable is
// named name, or 0.
func ChildNamed(parent int, name string) int {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		dirs, _ := os.ReadDir("/proc")
		for _, e := range dirs {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
			fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
			if len(fields) < 2 || fields[1] != strconv.Itoa(parent) {
				continue
			}
			cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if argv0, _, _ := bytes.Cut(cmdline, []byte{0}); filepath.Base(string(argv0)) == name {
				return pid
			}
		}
	}
	return 0
}

// waitStopped waits (2 s at most) until every thread of pid is stopped:
// kill(2) returns before a thread busy on another CPU has stopped.
func waitStopped(pid int) {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "stat"))
		stopped := len(tasks) > 0
		for _, f := range tasks {
			stat, err := os.ReadFile(f)
			if err != nil {
				continue // a thread that exited
			}
			if fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(fields) == 0 || (fields[0] != "T" && fields[0] != "t") {
				stopped = false
			}
		}
		if stopped {
			return
		}
	}
}

// waitGone waits until pid has exited (or is a zombie nobody reaped).
func waitGone(pid int, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			return true
		}
		if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return true
		}
	}
	return false
}

// password returns the password in a URL DSN, if any.
func password(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}

func redact(args []string, secret string) string {
	s := strings.Join(args, " ")
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "***")
	}
	return s
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}
