package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/repo"
)

// Choice says which backup to restore.
type Choice struct {
	Ref    string // id, id prefix or "latest"; empty: the newest that fits
	Name   string // only backups of this name
	Engine string // only backups of this engine ("" for stream backups)
	Mode   string // only backups of this mode; empty: any
	// At most one of Before and BeforePos: only backups consistent at or
	// before this time or log position.
	Before    time.Time
	BeforePos api.Position
}

// PickBackup chooses the backup to restore: the one named by c.Ref, or the
// newest one of the engine, mode and name consistent at or before the
// target.
func PickBackup(ctx context.Context, r *repo.Repository, c Choice) (*repo.Manifest, error) {
	if c.Ref != "" && c.Ref != "latest" {
		m, err := r.FindBackup(ctx, c.Ref, "")
		if err != nil {
			return nil, err
		}
		if m.Mode == repo.ModeSnapshot && c.Mode != repo.ModeSnapshot {
			return nil, fmt.Errorf("backup %s is a volume snapshot backup: its data is in the VolumeSnapshots `amber ls` names; restore a volume from them, then run amber restore --snapshot-data on its data directory (docs/controller.md, \"Snapshot mode\")", m.ID.Short())
		}
		if m.Engine != c.Engine {
			what := m.Engine
			if what == "" {
				what = "stream"
			}
			return nil, fmt.Errorf("backup %s is a %s backup, not %s", m.ID.Short(), what, orStream(c.Engine))
		}
		if c.Mode != "" && m.Mode != c.Mode {
			return nil, fmt.Errorf("backup %s is a %s backup; this restore needs a %s one", m.ID.Short(), m.Mode, c.Mode)
		}
		return m, nil
	}
	all, err := r.Backups(ctx)
	if err != nil {
		return nil, err
	}
	var best *repo.Manifest
	for _, m := range all {
		if (m.Mode == repo.ModeSnapshot && c.Mode != repo.ModeSnapshot) || m.Engine != c.Engine || (c.Mode != "" && m.Mode != c.Mode) || (c.Name != "" && m.Name != c.Name) {
			continue
		}
		if !c.Before.IsZero() && m.ConsistentTime.After(c.Before) {
			continue
		}
		if !c.BeforePos.IsZero() && (m.Record == nil || !atOrBefore(posFromRecord(m.Record.Consistent), c.BeforePos)) {
			continue
		}
		if best == nil || newer(m, best) {
			best = m
		}
	}
	if best == nil {
		what := fmt.Sprintf("%s %s", orStream(c.Engine), c.Mode)
		switch {
		case !c.Before.IsZero():
			return nil, fmt.Errorf("no %s backup is consistent at or before %s: the target is before the recoverable window (see `amber ls`)", what, c.Before.UTC().Format(time.RFC3339))
		case !c.BeforePos.IsZero():
			return nil, fmt.Errorf("no %s backup is consistent at or before position %s: the target is before the recoverable window (see `amber ls`)", what, c.BeforePos)
		}
		return nil, fmt.Errorf("no %s backup in the repository: %w", what, repo.ErrBackupNotFound)
	}
	return best, nil
}

func orStream(engine string) string {
	if engine == "" {
		return "stream"
	}
	return engine
}

func newer(a, b *repo.Manifest) bool {
	if !a.ConsistentTime.Equal(b.ConsistentTime) {
		return a.ConsistentTime.After(b.ConsistentTime)
	}
	return a.End.After(b.End)
}

// atOrBefore compares a backup's position with a target; a target without
// an epoch compares by offset alone.
func atOrBefore(p, target api.Position) bool {
	if target.Epoch == 0 {
		return p.Offset <= target.Offset
	}
	return p.Compare(target) <= 0
}

// RestoreStream writes the single entry of a backup (a stream backup or a
// one-entry logical dump) to out. A backup whose entries are all of kind
// "sql" is written whole, entry after entry in backup order: the plugin
// that marks them so promises that the concatenation is one script its
// engine's client loads.
func RestoreStream(ctx context.Context, r *repo.Repository, m *repo.Manifest, out io.Writer, progress Progress) error {
	if len(m.Entries) != 1 && !allSQL(m) {
		return fmt.Errorf("backup %s has %d entries; only single-stream backups and SQL dumps restore to a stream", m.ID.Short(), len(m.Entries))
	}
	cw := &countWriter{w: out}
	if progress != nil {
		progress(cw.n.Load)
	}
	for _, e := range m.Entries {
		if err := r.WriteEntry(ctx, e, cw); err != nil {
			return fmt.Errorf("restore %s: %s: %w", m.ID.Short(), e.Name, err)
		}
	}
	return nil
}

// allSQL reports whether every entry of m is an SQL script.
func allSQL(m *repo.Manifest) bool {
	for _, e := range m.Entries {
		if e.Meta["kind"] != "sql" {
			return false
		}
	}
	return len(m.Entries) > 0
}

// Target is a recovery target as a person gives it.
type Target struct {
	Time      time.Time
	Position  string // in the engine's words; the plugin parses it
	Txn       string
	Name      string
	Exclusive bool // stop just before the target instead of just after it
}

// IsZero reports whether t asks for nothing but the latest log.
func (t Target) IsZero() bool {
	return t.Time.IsZero() && t.Position == "" && t.Txn == "" && t.Name == ""
}

// resolve turns t into the contract's typed target, asking the plugin to
// parse a position.
func (t Target) resolve(ctx context.Context, eng api.Engine) (api.RecoveryTarget, error) {
	n := 0
	for _, set := range []bool{!t.Time.IsZero(), t.Position != "", t.Txn != "", t.Name != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return api.RecoveryTarget{}, usagef("give at most one recovery target: a time, a position, a transaction or a restore point")
	}
	rt := api.RecoveryTarget{Time: t.Time, Txn: t.Txn, Name: t.Name, Inclusive: !t.Exclusive}
	if t.Position != "" {
		p, err := eng.ParsePosition(ctx, t.Position)
		if err != nil {
			return rt, usagef("%v", err)
		}
		rt.Position = p
	}
	if n == 0 {
		rt.Latest, rt.Inclusive = true, true
	}
	return rt, nil
}

// EngineRestore asks for a restore through an engine plugin: physical into
// DataDir, or logical into the database at Target.DSN.
type EngineRestore struct {
	Engine string
	Choice Choice // Engine and Mode are filled in
	// Physical restores.
	DataDir       string
	To            Target
	KeepArchiving bool
	RunAs         string
	// Fetch says how the restored server fetches archived log; nil: the
	// copy recovers only to the backup's consistent point.
	Fetch *LogFetch
	// SnapshotData: DataDir already holds the files of a snapshot backup's
	// volume (a volume restored from its snapshot); the restore writes that
	// backup's record into it and configures recovery, and copies no data.
	SnapshotData bool
	// SkipRestored, with SnapshotData: do nothing when DataDir was already
	// restored from the same backup by an earlier run (its marker,
	// SnapshotRestoredMark, names the backup), because the server may
	// have recovered and run since, and a second backup record would make
	// it replay from the snapshot's start over newer data.
	SkipRestored bool
	// Target is the database a logical restore loads into; its Settings
	// reach the plugin in physical restores too.
	Target api.Target
	// Options are the engine's restore options (--option key=value).
	Options map[string]string
}

// RestoreReport says what was restored and where it will stand.
// CloneReportPrefix starts the line a restarted logical clone restore logs
// when it finds its clone marker: the marker's content, the report of the
// run that loaded the data, for a controller that missed that run's
// termination message (the Restore controller reads the container's log).
const CloneReportPrefix = "amber-restore-report: "

type RestoreReport struct {
	Backup   *repo.Manifest
	Mode     string
	DataDir  string
	To       api.RecoveryTarget
	Duration time.Duration
	// Reach is where archived log runs out on the way to the target
	// (physical restores with archived log).
	Reach *archive.Reach
	// Replayed is where the plugin's Replay left a physical copy, for
	// engines whose restored server does not fetch log itself; nil when
	// no log was applied.
	Replayed *api.ReplayResult
	Note     string
	// Skipped: an earlier run restored DataDir already (SkipRestored).
	Skipped bool
}

// SnapshotRestoredMark is the file a snapshot restore leaves in the data
// directory, naming the backup it restored (see EngineRestore.SkipRestored).
const SnapshotRestoredMark = ".amber-snapshot-restored"

// markReplaying follows the backup's id in SnapshotRestoredMark while
// archived log is being applied to the directory.
const markReplaying = " replaying"

// RestoreEngine restores a backup through eng. A physical restore checks
// first that archived log covers everything from the backup to the
// target, and refuses, naming the gap, before it writes anything. The
// restored server then fetches archived log itself (engines that declare
// log files), or, for engines that declare Replay instead, the plugin
// applies it to the restored data directory before RestoreEngine returns.
func RestoreEngine(ctx context.Context, r *repo.Repository, eng api.Engine, o EngineRestore, clk clock.Clock) (*RestoreReport, error) {
	clk = clock.Or(clk)
	start := clk.Now()
	physical := o.DataDir != ""
	if physical == (o.Target.DSN != "") {
		return nil, usagef("an engine restore needs exactly one of a data directory (physical) or a connection string (logical)")
	}
	c := o.Choice
	c.Engine = o.Engine
	ctx = with(ctx, "engine", o.Engine)
	if !physical {
		return restoreLogical(ctx, r, eng, o, c, clk, start)
	}

	c.Mode = ModePhysical
	if o.SnapshotData {
		c.Mode = repo.ModeSnapshot
	}
	to, err := o.To.resolve(ctx, eng)
	if err != nil {
		return nil, err
	}
	c.Before, c.BeforePos = to.Time, to.Position
	m, err := PickBackup(ctx, r, c)
	if err != nil {
		return nil, err
	}
	res, err := engineResult(m)
	if err != nil {
		return nil, err
	}
	if o.SnapshotData {
		// A volume snapshot holds no log amber vouches for: archived log
		// must run from the freeze on.
		if res.Metadata == nil {
			res.Metadata = map[string]string{}
		}
		res.Metadata[api.MetaLogFromStart] = "true"
	}
	// A backup named with --backup may be newer than the target.
	if !to.Time.IsZero() && m.ConsistentTime.After(to.Time) {
		return nil, fmt.Errorf("backup %s is consistent only from %s, after the target %s: choose an earlier backup, or omit --backup to let amber choose",
			m.ID.Short(), m.ConsistentTime.UTC().Format(time.RFC3339Nano), to.Time.UTC().Format(time.RFC3339Nano))
	}
	if !to.Position.IsZero() && !atOrBefore(res.Consistent, to.Position) {
		return nil, fmt.Errorf("backup %s is consistent only from %s, after the target position %s: choose an earlier backup, or omit --backup to let amber choose",
			m.ID.Short(), res.Consistent, to.Position)
	}
	ctx = with(ctx, "backup", m.ID.Short())
	stream := StreamName(o.Engine, res.SystemID)
	rep := &RestoreReport{Backup: m, Mode: c.Mode, To: to}
	mark := filepath.Join(o.DataDir, SnapshotRestoredMark)
	if b, err := os.ReadFile(mark); o.SnapshotData && err == nil && strings.TrimSpace(string(b)) == m.ID.String()+markReplaying {
		return nil, fmt.Errorf("an earlier restore of backup %s into %s stopped while applying archived log to it: the directory is neither at the snapshot nor at the target; restore into a fresh volume made from the snapshot",
			m.ID.Short(), o.DataDir)
	}
	if b, err := os.ReadFile(mark); o.SnapshotData && err == nil && strings.TrimSpace(string(b)) == m.ID.String() {
		if !o.SkipRestored {
			return nil, fmt.Errorf("%s was restored from backup %s by an earlier run, and its server may have run since: restoring it again would have the server replay old log over newer data; pass --skip-restored to leave it as it is, or restore into a fresh volume made from the snapshot",
				o.DataDir, m.ID.Short())
		}
		rep.DataDir, rep.Skipped = o.DataDir, true
		rep.Note = "restored from this snapshot backup by an earlier run; nothing to do"
		return rep, nil
	}
	// An engine whose restored server cannot fetch log by itself (it
	// declares Replay, not log files) has the plugin apply archived log to
	// the restored data directory, through Replay, once it is laid out.
	hostReplay := false
	if o.Fetch != nil {
		info, err := eng.Info(ctx)
		if err != nil {
			return nil, err
		}
		hostReplay = info.Has(api.Replay) && !info.Has(api.LogFiles)
	}
	if o.Fetch == nil {
		if !to.IsLatest() {
			return nil, usagef("a recovery target needs archived log, and this restore fetches none")
		}
		rep.Note = "no archived log is fetched: the copy recovers to the backup's consistent point"
	} else {
		cov, err := archive.Cover(ctx, r, stream)
		if err != nil {
			return nil, err
		}
		reach, note, err := checkReach(cov, res, to)
		if err != nil {
			return nil, err
		}
		rep.Reach, rep.Note = reach, note
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, err
	}
	rep.DataDir = dataDir
	req := api.RestoreRequest{Target: api.Target{DataDir: dataDir, Settings: o.Target.Settings}, Backup: res, To: to,
		KeepArchiving: o.KeepArchiving, RunAs: o.RunAs, Options: o.Options}
	if o.SnapshotData {
		req.Options = maps.Clone(o.Options)
		if req.Options == nil {
			req.Options = map[string]string{}
		}
		req.Options[api.OptionSnapshotData] = "true"
	}
	if hostReplay && rep.Reach != nil && to.Txn != "" { // the only targets checkReplayTarget walks: list no segments for the others
		segs, err := newRepoSegments(ctx, r, stream)
		if err != nil {
			return nil, err
		}
		if err := checkReplayTarget(ctx, eng, req.Target, to, res, segs); err != nil {
			return nil, fmt.Errorf("restore %s: %w", m.ID.Short(), err)
		}
	}
	var access *logAccess
	if o.Fetch != nil && !hostReplay {
		access, err = o.Fetch.prepare(ctx, r, o.Engine, stream, dataDir, m, clk.Now())
		if err != nil {
			return nil, err
		}
		req.LogCommand, req.LogDoneCommand = access.command, access.done
	}
	src := &entrySource{r: r, m: m}
	defer src.close()
	out, err := eng.PhysicalRestore(ctx, req, src)
	if err != nil {
		if access != nil {
			access.revoke(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("restore %s into %s: %w", m.ID.Short(), dataDir, err)
	}
	if access != nil {
		if err := access.grant(ctx, out.Owner); err != nil {
			access.revoke(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("restore %s: give the restored server access to archived log: %w", m.ID.Short(), err)
		}
	}
	replay := hostReplay && rep.Reach != nil
	if o.SnapshotData {
		// A run killed before this line wrote only what a rerun writes
		// again, into a directory no server has started on. The replay
		// that may follow starts one: until it has finished the mark
		// says so, and a rerun refuses (a failed replay must not leave a
		// directory that a rerun with --skip-restored passes as restored).
		content := m.ID.String()
		if replay {
			content += markReplaying
		}
		if err := writeOwnedLike(mark, dataDir, []byte(content+"\n")); err != nil {
			return nil, fmt.Errorf("restore %s: mark %s restored: %w", m.ID.Short(), dataDir, err)
		}
	}
	if replay {
		segs, err := newRepoSegments(ctx, r, stream)
		if err != nil {
			return nil, err
		}
		req := api.ReplayRequest{Target: api.Target{DataDir: dataDir, Settings: o.Target.Settings}, To: to, From: res.Consistent, LogStart: logStart(res), Options: backupOptions(res)}
		out, err := eng.Replay(ctx, req, segs)
		if err != nil {
			return nil, fmt.Errorf("restore %s: replay archived log to %s into %s: %w", m.ID.Short(), to, dataDir, err)
		}
		rep.Replayed = &out
		if o.SnapshotData {
			if err := writeOwnedLike(mark, dataDir, []byte(m.ID.String()+"\n")); err != nil {
				return nil, fmt.Errorf("restore %s: mark %s restored: %w", m.ID.Short(), dataDir, err)
			}
		}
	}
	rep.Duration = clk.Now().Sub(start)
	return rep, nil
}

// backupOptions passes a backup's metadata to Replay as options
// "backup.<key>".
func backupOptions(res api.BackupResult) map[string]string {
	opts := map[string]string{}
	for k, v := range res.Metadata {
		opts["backup."+k] = v
	}
	return opts
}

// logStart is a backup's start when it is before its consistent point:
// where its own log begins (ReplayRequest.LogStart); else zero.
func logStart(res api.BackupResult) api.Position {
	if res.Start.IsZero() || res.Consistent.IsZero() || res.Start.Compare(res.Consistent) >= 0 {
		return api.Position{}
	}
	return res.Start
}

// restoreLogical loads a logical backup into the database at o.Target.
// With a recovery target, which only engines declaring Replay accept, it
// first checks that archived log covers everything from the backup to the
// target, then loads the dump and has the engine replay archived log up to
// the target. The backup's metadata travels to Replay as options
// "backup.<key>".
func restoreLogical(ctx context.Context, r *repo.Repository, eng api.Engine, o EngineRestore, c Choice, clk clock.Clock, start time.Time) (*RestoreReport, error) {
	var to api.RecoveryTarget
	replay := !o.To.IsZero()
	if replay {
		info, err := eng.Info(ctx)
		if err != nil {
			return nil, err
		}
		if !info.Has(api.Replay) {
			return nil, usagef("a logical restore has no point in time: drop the recovery target")
		}
		if to, err = o.To.resolve(ctx, eng); err != nil {
			return nil, err
		}
		c.Before, c.BeforePos = to.Time, to.Position
	}
	c.Mode = ModeLogical
	m, err := PickBackup(ctx, r, c)
	if err != nil {
		return nil, err
	}
	res, err := engineResult(m)
	if err != nil {
		return nil, err
	}
	ctx = with(ctx, "backup", m.ID.Short())
	rep := &RestoreReport{Backup: m, Mode: ModeLogical, To: to}
	var segs *repoSegments
	if replay {
		stream := StreamName(o.Engine, res.SystemID)
		cov, err := archive.Cover(ctx, r, stream)
		if err != nil {
			return nil, err
		}
		reach, note, err := checkReach(cov, res, to)
		if err != nil {
			return nil, err
		}
		rep.Reach, rep.Note = reach, note
		if segs, err = newRepoSegments(ctx, r, stream); err != nil {
			return nil, err
		}
		if err := checkReplayTarget(ctx, eng, o.Target, to, res, segs); err != nil {
			return nil, fmt.Errorf("restore %s: %w", m.ID.Short(), err)
		}
	}
	src := &entrySource{r: r, m: m}
	defer src.close()
	if _, err := eng.LogicalRestore(ctx, api.RestoreRequest{Target: o.Target, Backup: res, Options: o.Options}, src); err != nil {
		return nil, fmt.Errorf("restore %s into the database: %w", m.ID.Short(), err)
	}
	if replay {
		if _, err := eng.Replay(ctx, api.ReplayRequest{Target: o.Target, To: to, From: res.Consistent, LogStart: logStart(res), Options: backupOptions(res)}, segs); err != nil {
			return nil, fmt.Errorf("restore %s: replay archived log to %s: %w", m.ID.Short(), to, err)
		}
	}
	rep.Duration = clk.Now().Sub(start)
	return rep, nil
}

// checkReplayTarget has the engine walk archived log from the backup to a
// transaction target (api.OptionReplayCheck), which the host cannot place
// in the log itself, before anything is written: a target the log does
// not reach, one the backup is already past, or one the engine cannot
// recover to is refused here rather than after the load. Other targets
// checkReach has checked.
func checkReplayTarget(ctx context.Context, eng api.Engine, t api.Target, to api.RecoveryTarget, res api.BackupResult, segs api.SegmentSource) error {
	if to.Txn == "" {
		return nil
	}
	opts := backupOptions(res)
	opts[api.OptionReplayCheck] = "true"
	if _, err := eng.Replay(ctx, api.ReplayRequest{Target: t, To: to, From: res.Consistent, LogStart: logStart(res), Options: opts}, segs); err != nil {
		return fmt.Errorf("recovery to transaction %s: %w", to.Txn, err)
	}
	return nil
}

// checkReach refuses a target that archived log cannot reach from the
// backup's consistent point, naming the gap or the window's end.
func checkReach(cov *archive.Coverage, res api.BackupResult, to api.RecoveryTarget) (*archive.Reach, string, error) {
	from, fromStart := logFrom(res.Start, res.Consistent, res.Metadata)
	reach, ok := cov.ReachFrom(from)
	if ok && fromStart {
		if short := reachShort(reach, res.Consistent); short != "" {
			return nil, "", fmt.Errorf("the backup holds no log of its own and %s; choose a backup the archive covers (`amber ls`) or take a new one", short)
		}
	}
	if !ok && fromStart {
		return nil, "", fmt.Errorf("the backup holds no log of its own, and archived log does not start at or before its start %s, where its recovery begins; choose a backup the archive covers (`amber ls`) or take a new one", from)
	}
	if !ok {
		if len(cov.Ranges) == 0 && to.IsLatest() {
			return nil, "no archived log: the copy recovers to the backup's consistent point", nil
		}
		where := "the archive holds no log"
		if end, ok := cov.End(); ok {
			where = fmt.Sprintf("the archive's history runs from %s to %s", firstText(cov), end.EndText)
			if gaps := cov.Gaps(); len(gaps) > 0 {
				where += "; " + gaps[0].String()
			}
		}
		return nil, "", fmt.Errorf("archived log does not continue from the backup's consistent point %s (%s): the copy could reach %s only through log that is missing; choose a backup the archive covers (`amber ls`) or take a new one",
			from, where, to)
	}
	gapNote := func() string {
		if reach.Gap == nil {
			return ""
		}
		return "; " + reach.Gap.String()
	}
	switch {
	case !to.Time.IsZero():
		if reach.LastTime.Before(to.Time) {
			return nil, "", fmt.Errorf("target %s is after the recoverable window from the backup at %s, which ends at %s (%s)%s; choose an earlier time, or omit the target for the latest",
				to.Time.UTC().Format(time.RFC3339Nano), from, reach.LastTime.UTC().Format(time.RFC3339Nano), reach.EndText, gapNote())
		}
	case !to.Position.IsZero():
		// A position without an epoch (a bare LSN) is compared by offset:
		// epoch 0 would sort before every epoch of the log.
		past := !atOrBefore(to.Position, api.Position{Epoch: reach.Epoch, Offset: reach.End})
		if to.Position.Epoch == 0 {
			past = to.Position.Offset > reach.End
		}
		if past {
			return nil, "", fmt.Errorf("target position %s is after the recoverable window from the backup, which ends at %s%s; choose an earlier position",
				to.Position, reach.EndText, gapNote())
		}
	default: // latest, a transaction or a restore point: recovery replays until it runs out of log
		if reach.Gap != nil {
			return nil, "", fmt.Errorf("archived log has a gap after the backup: %s; recovery to %s would stop silently at %s. Restore to a point before the gap (at the latest %s) or from a backup taken after it",
				reach.Gap, to, reach.EndText, reach.LastTime.UTC().Format(time.RFC3339Nano))
		}
	}
	return &reach, "", nil
}

func firstText(cov *archive.Coverage) string {
	for _, rg := range cov.Ranges {
		if rg.StartText != "" {
			return rg.StartText
		}
		return strconv.FormatUint(rg.Start, 16)
	}
	return ""
}

// entrySource replays a backup's entries to a plugin, in order, streaming.
type entrySource struct {
	r       *repo.Repository
	m       *repo.Manifest
	next    int
	cur     *entryReader
	stopCur context.CancelFunc
}

func (s *entrySource) Next(ctx context.Context) (api.Entry, io.Reader, error) {
	s.close()
	if s.next >= len(s.m.Entries) {
		return api.Entry{}, nil, io.EOF
	}
	ent := s.m.Entries[s.next]
	s.next++
	cctx, cancel := context.WithCancel(ctx)
	s.cur, s.stopCur = &entryReader{ctx: cctx, r: s.r, ent: ent}, cancel
	ae := api.Entry{Name: ent.Name, Size: ent.Size, Kind: ent.Meta["kind"], Metadata: ent.Meta}
	if m := ent.Meta["mode"]; m != "" {
		mode, err := strconv.ParseUint(m, 8, 32)
		if err != nil {
			return api.Entry{}, nil, fmt.Errorf("entry %s: mode %q: %w", ent.Name, m, err)
		}
		ae.Mode = uint32(mode)
	}
	return ae, s.cur, nil
}

// close stops streaming the current entry, if any.
func (s *entrySource) close() {
	if s.cur != nil {
		s.stopCur()
		s.cur.close()
		s.cur = nil
	}
}

// entryReader is one entry's content. WriteTo writes it straight to a
// writer (the pipe to the plugin) from the buffers the repository decoded
// it into; Read, for a consumer that reads, has WriteEntry feed an
// io.Pipe, which costs a copy and a hand-off between goroutines per read.
// Only one of the two may be used.
type entryReader struct {
	ctx  context.Context
	r    *repo.Repository
	ent  repo.Entry
	pr   *io.PipeReader // once Read started the pipe
	done bool           // WriteTo ran
}

func (e *entryReader) Read(p []byte) (int, error) {
	if e.pr == nil {
		if e.done {
			return 0, io.EOF
		}
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(e.r.WriteEntry(e.ctx, e.ent, pw)) }()
		e.pr = pr
	}
	return e.pr.Read(p)
}

func (e *entryReader) WriteTo(w io.Writer) (int64, error) {
	if e.pr != nil || e.done {
		return io.Copy(w, struct{ io.Reader }{e})
	}
	e.done = true
	cw := &countWriter{w: w}
	err := e.r.WriteEntry(e.ctx, e.ent, cw)
	return cw.n.Load(), err
}

func (e *entryReader) close() {
	if e.pr != nil {
		e.pr.Close()
	}
}

var errNoLog = errors.New("not in the archive")

// logFrom is where a backup's recovery needs archived log from: its start
// when the plugin says the copy holds no log of its own
// (api.MetaLogFromStart), else its consistent point. fromStart says which.
func logFrom(start, consistent api.Position, meta map[string]string) (api.Position, bool) {
	if meta[api.MetaLogFromStart] == "true" && !start.IsZero() {
		return start, true
	}
	return consistent, false
}

// reachShort says, when log reached from a backup's start stops (or a gap
// cuts it) before the backup's consistent point, how; else "".
func reachShort(reach archive.Reach, consistent api.Position) string {
	end := api.Position{Epoch: reach.Epoch, Offset: reach.End}
	if atOrBefore(consistent, end) {
		return ""
	}
	s := fmt.Sprintf("archived log from its start stops at %s, before its consistent point %s", reach.EndText, consistent)
	if reach.Gap != nil {
		s += " (" + reach.Gap.String() + ")"
	}
	return s
}

// writeOwnedLike writes a 0600 file owned like dir, so that the server,
// which owns its data directory, can read every file in it (its own base
// backups read them all).
func writeOwnedLike(name, dir string, b []byte) error {
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if err := os.WriteFile(name, b, 0o600); err != nil {
		return err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		return os.Chown(name, int(sys.Uid), int(sys.Gid))
	}
	return nil
}
