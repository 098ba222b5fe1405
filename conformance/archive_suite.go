package conformance

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// LogDriver is what a Driver adds when its engine archives log and restores
// to a point in time (Capabilities.PointInTime). The suite then runs the
// archiving cases: markers committed one per transaction, restores to the
// instant between two of them, and faults injected around the archiver.
type LogDriver interface {
	// MarkerSetup creates the empty markers table in dsn's database.
	MarkerSetup(t testing.TB, dsn string)
	// Mark commits marker id in a transaction of its own.
	Mark(t testing.TB, dsn string, id int)
	// MarkerTimes returns, for every marker, a time after the marker before
	// it committed and before it committed itself (the server's clock as
	// the marker's transaction began).
	MarkerTimes(t testing.TB, dsn string) map[int]time.Time
	// Markers returns the number of markers and the highest id in dsn's
	// database.
	Markers(t testing.TB, dsn string) (count, max int)
	// StartReplica starts a replica of primary and returns once it has
	// replayed everything primary had committed.
	StartReplica(t testing.TB, primary Server) Server
	// FailOver stops primary as a failed node would go away (sending what
	// it can) and promotes replica; it returns once replica accepts writes.
	FailOver(t testing.TB, primary, replica Server)
	// LoseLog makes s discard log that was not archived (the archiver is
	// stopped when it is called) and writes some more, so the next
	// archiver finds its resume point gone.
	LoseLog(t testing.TB, s Server)
}

// runLog runs the archiving cases when d is a LogDriver.
func runLog(t *testing.T, d Driver, amber AmberRunner) {
	ld, ok := d.(LogDriver)
	if !ok {
		t.Fatalf("%s declares PointInTime but its driver is not a LogDriver", d.Engine())
	}
	t.Run("PointInTime", func(t *testing.T) { pointInTime(t, d, ld, amber) })
	t.Run("ArchivePluginCrash", func(t *testing.T) { archivePluginCrash(t, d, ld, amber) })
	t.Run("Failover", func(t *testing.T) { failover(t, d, ld, amber) })
	t.Run("Gaps", func(t *testing.T) { gaps(t, d, ld, amber) })
	if d.Capabilities().ArchiverMoves {
		t.Run("ArchiverMoves", func(t *testing.T) { archiverMoves(t, d, ld, amber) })
	}
}

// archiver is one running `amber archive`.
type archiver struct {
	cmd    *exec.Cmd
	done   chan error
	stderr *lockedBuffer
}

func (r *repository) startArchiver(t testing.TB, s Server) *archiver {
	t.Helper()
	c := r.amber(r.dir, "archive", "--engine", r.d.Engine(), "--dsn", s.DSN(), "--flush-interval", "500ms")
	a := &archiver{cmd: c, done: make(chan error, 1), stderr: &lockedBuffer{}}
	c.Stderr = a.stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.done <- c.Wait() }()
	t.Cleanup(func() { c.Process.Kill() })
	time.Sleep(500 * time.Millisecond) // connected and streaming
	return a
}

// stop sends SIGTERM and requires a clean exit within a minute.
func (a *archiver) stop(t testing.TB) {
	t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.done:
		if err != nil {
			t.Fatalf("archiver exited with %v after SIGTERM:\n%s", err, a.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("archiver did not stop after SIGTERM:\n%s", a.stderr)
	}
}

// running fails the test if the archiver has exited.
func (a *archiver) running(t testing.TB, when string) {
	t.Helper()
	select {
	case err := <-a.done:
		t.Fatalf("amber archive exited %s: %v\n%s", when, err, a.stderr)
	default:
	}
}

type window struct {
	EarliestTime   time.Time `json:"earliest_time"`
	LatestTime     time.Time `json:"latest_time"`
	LatestPosition string    `json:"latest_position"`
	Gaps           []struct {
		FromPosition string `json:"from_position"`
		ToPosition   string `json:"to_position"`
		Reason       string `json:"reason"`
	} `json:"gaps"`
	Note string `json:"note"`
}

func (r *repository) windows(t testing.TB) []window {
	t.Helper()
	var ls struct {
		Windows []window `json:"windows"`
	}
	r.runJSON(t, &ls, "ls")
	return ls.Windows
}

// waitWindow polls `amber ls` until the window reaches until.
// a, when set, is the archiver whose log is shown if the window stalls.
func (r *repository) waitWindow(t testing.TB, until time.Time, a *archiver) window {
	t.Helper()
	until = until.Truncate(r.d.Capabilities().TimeResolution)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ws := r.windows(t)
		if len(ws) == 1 && !ws[0].LatestTime.Before(until) {
			return ws[0]
		}
		if time.Now().After(deadline) {
			log := ""
			if a != nil {
				log = "\namber archive's log:\n" + a.stderr.String()
			}
			t.Fatalf("the recoverable window %+v did not reach %s within 30 s%s", ws, until.Format(time.RFC3339Nano), log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// restoreTo restores the newest fitting backup to the instant marker k+1's
// transaction began and requires exactly markers 1..k. With a coarse
// TimeResolution the marker is the one nearest k that was the last of its
// unit (see point).
func (r *repository) restoreTo(t testing.TB, ld LogDriver, ts map[int]time.Time, k int) {
	t.Helper()
	j, target := r.point(t, ts, k)
	if j != k {
		t.Logf("restore point: marker %d, the last of its %v, instead of %d", j, r.d.Capabilities().TimeResolution, k)
		k = j
	}
	dir := filepath.Join(r.d.TempDir(t), "data")
	r.run(t, "restore", "--engine", r.d.Engine(), "--data-dir", dir, "--to-time", target.UTC().Format(time.RFC3339Nano))
	r.checkLogAccess(t, dir, !r.d.Capabilities().ReplayedByRestore)
	srv := r.d.StartRestored(t, dir)
	c, m := ld.Markers(t, srv.DSN())
	srv.Stop()
	if c != k || m != k {
		t.Fatalf("recovered to %s: %d markers, highest %d; want exactly markers 1..%d", target.Format(time.RFC3339Nano), c, m, k)
	}
	r.checkLogAccess(t, dir, false)
}

// point returns the marker to recover up to near k and the time target
// that recovers exactly markers 1..k. With exact commit times that is k
// itself and the instant marker k+1's transaction began. With a coarse
// TimeResolution (whole seconds) the log knows only the unit a transaction
// committed in, and a time target (inclusive, amber's default) recovers
// every transaction of its unit, so only a marker whose successor began in
// a later unit can be recovered up to exactly: point takes the nearest
// such marker (the next one on a tie) and the last microsecond of its
// unit, which is before its successor began. Markers ~10 ms apart leave
// one within a unit of k.
func (r *repository) point(t testing.TB, ts map[int]time.Time, k int) (int, time.Time) {
	t.Helper()
	res := r.d.Capabilities().TimeResolution
	if res <= 0 {
		return k, ts[k+1]
	}
	last := func(j int) bool {
		a, ok1 := ts[j]
		b, ok2 := ts[j+1]
		return ok1 && ok2 && a.Truncate(res).Before(b.Truncate(res))
	}
	for d := 0; d <= len(ts); d++ {
		for _, j := range []int{k + d, k - d} {
			if last(j) {
				return j, ts[j].Truncate(res).Add(res - time.Microsecond)
			}
		}
	}
	t.Fatalf("no marker near %d is the last of its %v", k, res)
	return 0, time.Time{}
}

// checkLogAccess: the restored server fetches log with a credential of its
// own beside the data directory — never the repository password — and once
// recovery has ended both the file and its key slot are gone.
func (r *repository) checkLogAccess(t testing.TB, dataDir string, during bool) {
	t.Helper()
	key := dataDir + ".amber/key"
	b, err := os.ReadFile(key)
	var keys []struct {
		Kind string `json:"kind"`
	}
	r.runJSON(t, &keys, "key", "list")
	random := 0
	for _, k := range keys {
		if k.Kind == "random" {
			random++
		}
	}
	if during {
		if err != nil {
			t.Fatalf("the restored server has no credential at %s: %v", key, err)
		}
		if pw := r.password(); pw == "" || bytes.Contains(b, []byte(pw)) {
			t.Fatalf("%s holds the repository password", key)
		}
		if random != 1 {
			t.Fatalf("want one random key slot for the restore, have %d", random)
		}
		return
	}
	if err == nil {
		t.Fatalf("%s still exists after recovery ended", key)
	}
	if random != 0 {
		t.Fatalf("%d random key slot(s) left after recovery ended", random)
	}
}

func mark(t testing.TB, ld LogDriver, s Server, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		ld.Mark(t, s.DSN(), i)
		time.Sleep(10 * time.Millisecond)
	}
}

// pointInTime: a physical backup, an archiver killed with SIGKILL while
// markers keep committing, and restores to instants between markers must
// give exactly the markers committed before each; a restarted archiver
// resumes with no gap; a target past the window is refused with nothing
// written.
func pointInTime(t *testing.T, d Driver, ld LogDriver, amber AmberRunner) {
	src := d.Start(t)
	ld.MarkerSetup(t, src.DSN())
	r := newRepo(t, d, amber)
	r.backup(t, src, "physical")
	a := r.startArchiver(t, src)
	var killedAt time.Time
	for i := 1; i <= 500; i++ {
		ld.Mark(t, src.DSN(), i)
		if i == 400 {
			killedAt = time.Now()
			a.cmd.Process.Kill()
			<-a.done
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts := ld.MarkerTimes(t, src.DSN())
	// The recovery point: with the archiver dead, a target 1.2-2 s before
	// the kill (2.4 flush intervals and more) is recoverable, exactly.
	// With a coarse TimeResolution the range widens by one unit, so that
	// it holds a marker that was the last of its unit.
	res := d.Capabilities().TimeResolution
	k := 0
	for id := 399; id > 0; id-- {
		if j, target := r.point(t, ts, id); j == id {
			if dt := killedAt.Sub(target); dt >= 1200*time.Millisecond && dt <= 2*time.Second+res {
				k = id
				break
			}
		}
	}
	if k == 0 {
		t.Fatal("no marker 1.2-2 s before the kill")
	}
	r.restoreTo(t, ld, ts, k)
	_, target := r.point(t, ts, k)
	t.Logf("archiver killed at marker 400; marker %d, committed %v before the kill, was recovered", k, killedAt.Sub(target).Round(time.Millisecond))

	// A restarted archiver resumes where the repository ends.
	a = r.startArchiver(t, src)
	mark(t, ld, src, 501, 600)
	ts = ld.MarkerTimes(t, src.DSN())
	w := r.waitWindow(t, ts[600], a)
	a.stop(t)
	if len(w.Gaps) != 0 {
		t.Fatalf("window %+v has gaps after the archiver was killed and restarted", w)
	}
	for _, k := range []int{1, 250, 401, 450, 599} {
		r.restoreTo(t, ld, ts, k)
	}
	// Past the window: refused, naming the window's end; nothing written.
	before := listRepo(t, r.dir)
	dir := filepath.Join(d.TempDir(t), "data")
	out, err := r.try("restore", "--engine", d.Engine(), "--data-dir", dir, "--to-time", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if err == nil || !strings.Contains(out, "after the recoverable window") {
		t.Fatalf("restore past the window: %v\n%s", err, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s behind", dir)
	}
	if diff := diffListing(before, listRepo(t, r.dir)); diff != "" {
		t.Fatalf("a refused restore changed the repository:\n%s", diff)
	}
	// The latest log: everything, up to the window's end.
	latest := filepath.Join(d.TempDir(t), "data")
	r.run(t, "restore", "--engine", d.Engine(), "--data-dir", latest)
	srv := d.StartRestored(t, latest)
	if c, m := ld.Markers(t, srv.DSN()); c != 600 || m != 600 {
		t.Fatalf("restore to the latest log: %d markers, highest %d; want all 600", c, m)
	}
	srv.Stop()

	// Retention: a second backup, then a prune that keeps only it. The
	// log before it goes; the window starts at it, with no gap; a point
	// after it restores exactly.
	a = r.startArchiver(t, src)
	r.backup(t, src, "physical")
	mark(t, ld, src, 601, 700)
	ts = ld.MarkerTimes(t, src.DSN())
	r.waitWindow(t, ts[700], a)
	a.stop(t)
	var pr struct {
		Forgotten          []string `json:"forgotten"`
		LogSegmentsRemoved int      `json:"log_segments_removed"`
		LogKept            string   `json:"log_kept"`
	}
	r.runJSON(t, &pr, "prune", "--keep-last", "1")
	if len(pr.Forgotten) != 1 || pr.LogSegmentsRemoved == 0 {
		t.Fatalf("prune --keep-last 1 after a second backup: %+v; want the first backup forgotten and the log before the second removed", pr)
	}
	if ws := r.windows(t); len(ws) != 1 || len(ws[0].Gaps) != 0 || ws[0].Note != "" {
		t.Fatalf("windows after pruning the log before the kept backup: %+v; want one window without gaps or notes", ws)
	}
	r.restoreTo(t, ld, ts, 650)
}

// archivePluginCrash: the plugin is killed with SIGKILL twice while
// archiving; amber restarts it, and the archive has no gap.
func archivePluginCrash(t *testing.T, d Driver, ld LogDriver, amber AmberRunner) {
	src := d.Start(t)
	ld.MarkerSetup(t, src.DSN())
	r := newRepo(t, d, amber)
	r.backup(t, src, "physical")
	a := r.startArchiver(t, src)
	plugin := "amber-plugin-" + d.Engine()
	for i := 1; i <= 300; i++ {
		ld.Mark(t, src.DSN(), i)
		if i == 100 || i == 200 {
			pid := ChildNamed(a.cmd.Process.Pid, plugin)
			if pid == 0 {
				t.Fatalf("no %s process under amber archive (pid %d)", plugin, a.cmd.Process.Pid)
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts := ld.MarkerTimes(t, src.DSN())
	w := r.waitWindow(t, ts[300], a)
	a.running(t, "after its plugin was killed")
	a.stop(t)
	if !strings.Contains(a.stderr.String(), "restarting it") {
		t.Fatalf("no plugin restart was logged:\n%s", a.stderr)
	}
	if len(w.Gaps) != 0 {
		t.Fatalf("window %+v has gaps after the plugin was killed", w)
	}
	for _, k := range []int{99, 150, 250} {
		r.restoreTo(t, ld, ts, k)
	}
}

// failover: amber archives from a replica; the primary goes away and the
// replica is promoted while archiving runs. The archiver must follow the
// promotion without exiting, the window must have no gap across it, and
// restores before, right at and after the promotion must be exact.
func failover(t *testing.T, d Driver, ld LogDriver, amber AmberRunner) {
	primary := d.Start(t)
	ld.MarkerSetup(t, primary.DSN())
	replica := ld.StartReplica(t, primary)
	r := newRepo(t, d, amber)
	a := r.startArchiver(t, replica)
	r.backup(t, replica, "physical")
	const onOld, total = 300, 600
	mark(t, ld, primary, 1, onOld)
	ld.FailOver(t, primary, replica)
	mark(t, ld, replica, onOld+1, total)
	a.running(t, "at the promotion (the archiver must follow it)")
	ts := ld.MarkerTimes(t, replica.DSN())
	if len(ts) != total {
		t.Fatalf("the promoted replica holds %d markers, want %d: the failover lost commits", len(ts), total)
	}
	w := r.waitWindow(t, ts[total], a)
	a.running(t, "after the promotion")
	a.stop(t)
	if w = r.windows(t)[0]; len(w.Gaps) != 0 {
		t.Fatalf("window %+v: want no gap across the failover", w)
	}
	for _, k := range []int{150, onOld, onOld + 150, total - 1} {
		r.restoreTo(t, ld, ts, k)
	}
}

// archiverMoves: archiving from the primary, a failover, and an archiver
// started again on the promoted replica: the stream goes on with no gap
// (one window), a backup of the promoted server belongs to it, and
// restores before the failover, after it from the backup taken before it
// (replaying across the switch) and after the second backup are exact.
func archiverMoves(t *testing.T, d Driver, ld LogDriver, amber AmberRunner) {
	primary := d.Start(t)
	ld.MarkerSetup(t, primary.DSN())
	replica := ld.StartReplica(t, primary)
	r := newRepo(t, d, amber)
	r.backup(t, primary, "physical")
	a := r.startArchiver(t, primary)
	const onOld, onNew, total = 150, 300, 360
	mark(t, ld, primary, 1, onOld)
	ts := ld.MarkerTimes(t, primary.DSN())
	r.waitWindow(t, ts[onOld], a)
	a.stop(t)
	ld.FailOver(t, primary, replica)
	a = r.startArchiver(t, replica)
	mark(t, ld, replica, onOld+1, onNew)
	ts = ld.MarkerTimes(t, replica.DSN())
	r.waitWindow(t, ts[onNew], a)
	a.running(t, "on the promoted replica")
	r.backup(t, replica, "physical")
	mark(t, ld, replica, onNew+1, total)
	ts = ld.MarkerTimes(t, replica.DSN())
	r.waitWindow(t, ts[total], a)
	a.stop(t)
	var ls struct {
		Backups []struct {
			Position string `json:"position"`
		} `json:"backups"`
		Windows []window `json:"windows"`
	}
	r.runJSON(t, &ls, "ls")
	if len(ls.Windows) != 1 || len(ls.Windows[0].Gaps) != 0 {
		t.Fatalf("windows %+v: want one stream without a gap across the move", ls.Windows)
	}
	t.Logf("backups at %+v; window up to %s", ls.Backups, ls.Windows[0].LatestPosition)
	for _, k := range []int{100, onOld + 50, onNew - 1, total - 20} {
		r.restoreTo(t, ld, ts, k)
	}
}

// gaps: log missing from the archive is found and named, by `amber ls` and
// by a restore that would need it, and points before it still restore.
// Two ways to lose log: the engine discards log that was never archived,
// and a segment is deleted from the repository.
func gaps(t *testing.T, d Driver, ld LogDriver, amber AmberRunner) {
	src := d.Start(t)
	ld.MarkerSetup(t, src.DSN())
	r := newRepo(t, d, amber)
	r.backup(t, src, "physical")
	a := r.startArchiver(t, src)
	mark(t, ld, src, 1, 100)
	d.LoadBulk(t, src, 80<<20) // several complete segments to lose one of
	mark(t, ld, src, 101, 110)
	ts := ld.MarkerTimes(t, src.DSN())
	r.waitWindow(t, ts[110], a)
	a.stop(t)

	// The engine discards log that was never archived: the next archiver
	// must say so and stop, never skip over the hole silently.
	ld.LoseLog(t, src)
	before := listRepo(t, r.dir)
	out, err := r.try("archive", "--engine", d.Engine(), "--dsn", src.DSN(), "--flush-interval", "500ms")
	if err == nil || !strings.Contains(strings.ToLower(out), "lost") || !strings.Contains(out, "new base backup") {
		t.Fatalf("archiving after the server discarded unarchived log: %v\n%s\nwant an error saying log was lost and a new base backup is needed", err, out)
	}
	if diff := diffListing(before, listRepo(t, r.dir)); diff != "" {
		t.Fatalf("the refused archiver changed the repository:\n%s", diff)
	}

	// A segment deleted from the repository: ls names the gap; a restore
	// past it is refused naming it; a point before it restores exactly.
	var segs []string
	filepath.WalkDir(filepath.Join(r.dir, "log"), func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && !strings.HasSuffix(p, ".partial") {
			segs = append(segs, p)
		}
		return nil
	})
	if len(segs) < 3 {
		t.Fatalf("want at least 3 complete log segments to delete one in the middle, have %d", len(segs))
	}
	var seg []string
	for _, s := range segs {
		if info, err := os.Stat(s); err == nil && info.Size() > 1024 { // skip metadata such as history files
			seg = append(seg, s)
		}
	}
	victim := seg[len(seg)/2]
	if err := os.Remove(victim); err != nil {
		t.Fatal(err)
	}
	ws := r.windows(t)
	if len(ws) != 1 || len(ws[0].Gaps) != 1 || ws[0].Gaps[0].FromPosition == "" || ws[0].Gaps[0].ToPosition == "" {
		t.Fatalf("after deleting %s, want one gap with positions in ls: %+v", victim, ws)
	}
	g := ws[0].Gaps[0]
	t.Logf("gap reported: %s .. %s (%s)", g.FromPosition, g.ToPosition, g.Reason)
	dir := filepath.Join(d.TempDir(t), "data")
	out, err = r.try("restore", "--engine", d.Engine(), "--data-dir", dir)
	if err == nil || !strings.Contains(out, g.FromPosition) || !strings.Contains(out, "gap") {
		t.Fatalf("restore to the latest log across a gap: %v\n%s\nwant a refusal naming the gap at %s", err, out, g.FromPosition)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s behind", dir)
	}
	r.restoreTo(t, ld, ts, 1)
}

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// password is the repository password the AmberRunner gives amber.
func (r *repository) password() string {
	for _, kv := range r.amber(r.dir).Env {
		if v, ok := strings.CutPrefix(kv, "AMBER_PASSWORD="); ok {
			return v
		}
	}
	return ""
}
