package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/amber-backup/amber/sidecar/pluginhost"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/location"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// restoreFlags are the flags of `amber restore`.
type restoreFlags struct {
	backupRef, name, engine string
	toStdout                bool
	dataDir                 string
	dsn, dsnFile            string
	toTime, toPosition      string
	toTxn, toName           string
	exclusive, keepArchive  bool
	runAs                   string
	installTo, reportFile   string
	skipRestored            bool
	snapshotData            bool
	options, settings       []string
	cloneMarker             string
	serverWait              time.Duration
}

func (e *env) restoreCommand() *cobra.Command {
	var f restoreFlags
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Restore a backup, or a database to a point in time",
		Long: `Restore a backup.

With --stdout, write a stream backup's bytes, or a logical dump (its single
entry, or all its SQL entries in order) to standard output, for the engine's
stock tools (pg_restore, the mariadb client); a MongoDB dump is written in
mongodump's archive format, for 'mongorestore --archive'.

With --engine and --data-dir DIR, lay a physical backup out in the empty
directory DIR and configure recovery: the database server started on DIR
fetches the archived log it needs from the repository ('amber log-fetch', run
by the server) and stops at the target, then opens. Targets: --to-time,
--to-position (the engine's own notation: a PostgreSQL LSN), --to-txn (a
transaction: a PostgreSQL transaction id, a MariaDB GTID position), --to-name (a named restore point), or none for the latest
archived log; --exclusive stops just before the target. Without --backup the
newest backup consistent before the target is chosen. Before anything is
written, amber checks that archived log runs from the backup to the target
without a gap, and refuses, naming the gap or the window's end, if not.

With --snapshot-data, DIR already holds the data directory of a volume
restored from a snapshot backup's VolumeSnapshot (mode: snapshot, taken
under the database's freeze): amber writes that backup's record (PostgreSQL:
backup_label) into it and configures recovery the same way, copying no data;
archived log must run from the freeze to the target.

With --engine and a connection string (--dsn-file, --dsn or
AMBER_RESTORE_DSN; never AMBER_DSN, so a restore cannot land in the backup's
source by accident), load a logical backup into that database.

Every chunk is authenticated and checked against its id before any of its
bytes are written: corrupt or foreign data stops the restore with an error
naming the damaged object.`,
		Example: `  amber restore --engine postgres --data-dir /var/lib/postgresql/restore --to-time 2026-11-21T10:15:00Z
  amber restore --engine postgres --data-dir ./pitr --to-position 0/3000060 --backup 3fa1c2d4
  AMBER_RESTORE_DSN=postgres://amber@db/copy amber restore --engine postgres --backup latest
  amber restore --backup latest --stdout > dump.sql
  amber restore --engine mongodb --stdout | mongorestore --archive --oplogReplay --uri "$TARGET_URI"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return e.runRestore(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.backupRef, "backup", "", "backup id, unique id prefix, or latest (default: latest, or the newest before the target)")
	fl.StringVar(&f.name, "name", "", "only consider backups of this name")
	fl.BoolVar(&f.toStdout, "stdout", false, "write the backup's stream to standard output")
	fl.StringVar(&f.engine, "engine", "", "database engine plugin: postgres, mysql, mongodb")
	fl.StringVar(&f.dataDir, "data-dir", "", "physical restore: the empty directory to restore into")
	fl.StringVar(&f.dsn, "dsn", "", "logical restore: the database to load into (default: env AMBER_RESTORE_DSN); prefer --dsn-file, as arguments show in ps")
	fl.StringVar(&f.dsnFile, "dsn-file", "", "logical restore: read the target database's connection string from this file")
	fl.StringVar(&f.toTime, "to-time", "", "recover up to this time (RFC 3339)")
	fl.StringVar(&f.toPosition, "to-position", "", "recover up to this log position, in the engine's notation (PostgreSQL: an LSN such as 0/3000060)")
	fl.StringVar(&f.toPosition, "to-lsn", "", "alias of --to-position for PostgreSQL")
	fl.StringVar(&f.toTxn, "to-txn", "", "recover up to this transaction (PostgreSQL: a transaction id; MariaDB: a GTID position such as 0-1-42)")
	fl.StringVar(&f.toTxn, "to-xid", "", "alias of --to-txn for PostgreSQL")
	fl.StringVar(&f.toName, "to-name", "", "recover up to this named restore point")
	fl.BoolVar(&f.exclusive, "exclusive", false, "stop just before the target instead of just after it")
	fl.BoolVar(&f.keepArchive, "keep-archiving", false, "keep the backup's own log archiving settings (default: archiving off, so the copy never writes into this archive)")
	fl.StringVar(&f.installTo, "install-to", "", "copy amber and the engine's plugin into this directory; with --data-dir, have the restored server's log fetch run them from there (a restore in one container for a server in another); alone, only copy them (for a container of another image)")
	fl.StringVar(&f.reportFile, "report-file", "", "also write the JSON report to this file (e.g. /dev/termination-log)")
	fl.BoolVar(&f.snapshotData, "snapshot-data", false, "physical restore of a snapshot backup: --data-dir already holds its files (the data directory in a volume restored from its VolumeSnapshot); write the backup's record into it and configure recovery from archived log, copying no data")
	fl.BoolVar(&f.skipRestored, "skip-restored", false, "physical restore: do nothing when --data-dir was already restored and recovered by an earlier run; start over when an earlier run stopped half-way (with --snapshot-data: do nothing when an earlier run restored this backup there)")
	fl.StringArrayVar(&f.options, "option", nil, "engine restore option as key=value (repeatable), e.g. restore_threads=4 (mysql logical); see the engine's docs")
	settingFlag(cmd)(&f.settings)
	fl.StringVar(&f.cloneMarker, "clone-marker", "", "logical restore into a server that starts beside it (a clone's pod): wait for the server to answer, restore, then create this file; when it exists already, restore nothing and wait for a signal (a container that must keep running)")
	fl.DurationVar(&f.serverWait, "server-wait", 10*time.Minute, "with --clone-marker: how long to wait for the server to answer")
	fl.StringVar(&f.runAs, "owner", "", "user that will run the restored server and own its files (default: the engine's; postgres when run as root)")
	return cmd
}

func (e *env) runRestore(cmd *cobra.Command, f restoreFlags) error {
	ctx := cmd.Context()
	if f.engine == "" {
		if !f.toStdout {
			return usagef("say where to restore: --stdout, or --engine with --data-dir or a connection string")
		}
		return e.restoreStdout(cmd, job.Choice{Ref: orLatest(f.backupRef), Name: f.name})
	}
	if f.toStdout {
		return e.restoreStdout(cmd, job.Choice{Ref: f.backupRef, Name: f.name, Engine: f.engine, Mode: job.ModeLogical})
	}
	target, err := dsn(f.dsn, f.dsnFile, "AMBER_RESTORE_DSN")
	if err != nil {
		return err
	}
	if f.dataDir != "" {
		target = "" // a physical restore; AMBER_RESTORE_DSN does not apply
		if f.dsn != "" || f.dsnFile != "" {
			return usagef("--data-dir (physical) and a connection string (logical) exclude each other")
		}
	}
	if f.installTo != "" && f.dataDir == "" && target == "" {
		// Install only: a container of another image runs them from there.
		exe, err := installSelf(f.installTo, f.engine)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "installed %s and its %s plugin into %s\n", filepath.Base(exe), f.engine, f.installTo)
		return nil
	}
	if f.cloneMarker != "" && target == "" {
		return usagef("--clone-marker is for logical restores: give a connection string (--dsn-file)")
	}
	if f.cloneMarker != "" {
		if _, err := os.Lstat(f.cloneMarker); err == nil {
			fmt.Fprintf(e.stderr, "restored by an earlier run (%s exists); nothing to do\n", f.cloneMarker)
			repeatCloneReport(e.stderr, f.cloneMarker)
			<-ctx.Done()
			return nil
		}
	}
	to := job.Target{Position: f.toPosition, Txn: f.toTxn, Name: f.toName, Exclusive: f.exclusive}
	if f.toTime != "" {
		if to.Time, err = time.Parse(time.RFC3339Nano, f.toTime); err != nil {
			return usagef("--to-time %q is not an RFC 3339 time such as 2026-11-21T10:15:00Z", f.toTime)
		}
	}
	if f.snapshotData && f.dataDir == "" {
		return usagef("--snapshot-data needs --data-dir (the data directory restored from the snapshot)")
	}
	if f.dataDir != "" && f.skipRestored && !f.snapshotData {
		done, err := prepareRestoreDir(f.dataDir)
		if err != nil {
			return err
		}
		if done {
			fmt.Fprintf(e.stderr, "%s was restored by an earlier run; nothing to do\n", f.dataDir)
			return nil
		}
		if err := markRestoring(f.dataDir); err != nil {
			return err
		}
	}
	host, eng, r, err := e.openEngineAndRepo(ctx, f.engine)
	if err != nil {
		return err
	}
	defer host.Close()
	defer r.Close()
	set, err := parseSettings(f.settings)
	if err != nil {
		return err
	}
	tgt := api.Target{DSN: target, Settings: set}
	if f.cloneMarker != "" {
		if err := e.waitServer(ctx, eng, tgt, f.serverWait); err != nil {
			return err
		}
	}
	o := job.EngineRestore{Engine: f.engine, Choice: job.Choice{Ref: f.backupRef, Name: f.name}, DataDir: f.dataDir,
		To: to, KeepArchiving: f.keepArchive, RunAs: f.runAs, Target: tgt, SnapshotData: f.snapshotData,
		SkipRestored: f.skipRestored && f.snapshotData}
	if o.Options, err = parseOptions(f.options); err != nil {
		return err
	}
	if f.dataDir != "" {
		if o.Fetch, err = e.logFetch(); err != nil {
			return err
		}
		if f.installTo != "" {
			if o.Fetch.Exe, err = installSelf(f.installTo, f.engine); err != nil {
				return err
			}
		}
	}
	rep, err := job.RestoreEngine(ctx, r, eng, o, nil)
	if err != nil {
		return e.jobError(err)
	}
	if f.dataDir != "" && f.skipRestored && !f.snapshotData {
		// Marks the restore complete for a rerun (--skip-restored); the
		// directory goes when recovery ends.
		if err := os.WriteFile(filepath.Join(f.dataDir+".amber", restoredMark), nil, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := unmarkRestoring(f.dataDir); err != nil {
			return err
		}
	}
	if f.cloneMarker != "" {
		if err := os.WriteFile(f.cloneMarker, restoreJSON(rep), 0o600); err != nil {
			return fmt.Errorf("--clone-marker: %w", err)
		}
	}
	if f.reportFile != "" {
		if err := os.WriteFile(f.reportFile, restoreJSON(rep), 0o644); err != nil {
			return fmt.Errorf("--report-file: %w", err)
		}
	}
	return e.reportRestore(rep)
}

// repeatCloneReport logs the report a clone marker holds (the run that
// loaded the data wrote it there and as its termination message) on one
// line after job.CloneReportPrefix, for a controller that missed that
// run's termination message: the kubelet keeps a restarted container's
// last state only on a best-effort basis (kubernetes#101044), and the
// controller then reads this container's log. Nothing is logged for a
// marker that does not hold one line of JSON.
func repeatCloneReport(w io.Writer, marker string) {
	if rep, err := os.ReadFile(marker); err == nil && json.Valid(rep) && !bytes.ContainsAny(rep, "\r\n") {
		fmt.Fprintf(w, "%s%s\n", job.CloneReportPrefix, rep)
	}
}

// waitServer waits until the database target names answers eng's probe.
func (e *env) waitServer(ctx context.Context, eng api.Engine, target api.Target, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for said := false; ; {
		p, err := eng.Probe(ctx, target)
		if err == nil && p.ServerVersion != "" {
			return nil
		}
		if err == nil {
			err = errors.New(p.Detail)
		}
		last = err
		if !said {
			fmt.Fprintf(e.stderr, "waiting for the database to answer: %v\n", err)
			said = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the database did not answer within %s: %w", limit, last)
		case <-time.After(time.Second):
		}
	}
}

// restoredMark, in the log access directory beside a restored data
// directory, says the restore finished (recovery may not have).
const restoredMark = "restored"

// prepareRestoreDir reports whether dataDir was restored completely by an
// earlier run. When an earlier run stopped half-way (its mark, see
// markRestoring, is still there, or its log access directory lacks
// restoredMark), it empties dataDir and removes the access directory so
// the restore starts over.
func prepareRestoreDir(dataDir string) (bool, error) {
	access := dataDir + ".amber"
	_, besideErr := os.Lstat(dataDir + api.RestoringMark)
	_, insideErr := os.Lstat(filepath.Join(dataDir, api.RestoringMark))
	_, accessErr := os.Lstat(access)
	marked := besideErr == nil || insideErr == nil
	if marked || accessErr == nil {
		if !marked {
			if _, err := os.Lstat(filepath.Join(access, restoredMark)); err == nil {
				return true, nil // restored, recovery not finished yet
			}
		}
		// Half-way: start over, keeping the inside mark and dataDir itself
		// (it may be the root of a volume).
		if err := emptyDir(dataDir); err != nil {
			return false, err
		}
		return false, os.RemoveAll(access)
	}
	entries, err := os.ReadDir(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// Restored and recovered (the access directory goes when recovery
	// ends), or a directory this restore must not touch: either way not
	// ours to overwrite.
	return len(entries) > 0, nil
}

// emptyDir removes everything in dir but api.RestoringMark.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == api.RestoringMark {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// restoringMark is where markRestoring puts dataDir's mark: beside it, or
// inside it when dataDir is the root of a volume (its parent is on another
// file system), where a mark beside it would not outlive the container.
func restoringMark(dataDir string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", err
	}
	var st, parent unix.Stat_t
	if err := unix.Stat(dataDir, &st); err != nil {
		return "", err
	}
	if err := unix.Stat(filepath.Dir(dataDir), &parent); err != nil {
		return "", err
	}
	if st.Dev != parent.Dev {
		return filepath.Join(dataDir, api.RestoringMark), nil
	}
	return dataDir + api.RestoringMark, nil
}

// markRestoring writes the mark that says a restore into dataDir has begun
// and not finished, and syncs it, before the first byte of the data: a run
// killed at any point, even with the machine, is then seen as half-way by
// the next one. Engines take a data directory holding only the mark for
// empty (api.RestoringMark).
func markRestoring(dataDir string) error {
	mark, err := restoringMark(dataDir)
	if err != nil {
		return fmt.Errorf("mark %s as being restored: %w", dataDir, err)
	}
	f, err := os.OpenFile(mark, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("mark %s as being restored: %w", dataDir, err)
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("mark %s as being restored: %w", dataDir, err)
	}
	return syncDir(filepath.Dir(mark))
}

// unmarkRestoring removes the mark once the restore is complete.
func unmarkRestoring(dataDir string) error {
	for _, mark := range []string{filepath.Join(dataDir, api.RestoringMark), dataDir + api.RestoringMark} {
		if err := os.Remove(mark); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := syncDir(filepath.Dir(mark)); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// installSelf copies this binary and the engine's plugin into dir and
// returns the path of the copied binary.
func installSelf(dir, engine string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("--install-to: %w", err)
	}
	for _, name := range []string{filepath.Base(exe), pluginhost.Prefix + engine} {
		src := filepath.Join(filepath.Dir(exe), name)
		if err := copyExecutable(src, filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("--install-to: %w", err)
		}
	}
	return filepath.Join(dir, filepath.Base(exe)), nil
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// logFetch says how a restored server runs this binary to fetch log.
func (e *env) logFetch() (*job.LogFetch, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	url, err := location.Absolute(e.repoURL)
	if err != nil {
		return nil, &usageError{err: err}
	}
	return &job.LogFetch{Exe: exe, RepoURL: url}, nil
}

func orLatest(ref string) string {
	if ref == "" {
		return "latest"
	}
	return ref
}

func (e *env) restoreStdout(cmd *cobra.Command, c job.Choice) error {
	ctx := cmd.Context()
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	var man *repo.Manifest
	if c.Engine == "" {
		man, err = r.FindBackup(ctx, c.Ref, c.Name)
	} else {
		man, err = job.PickBackup(ctx, r, c)
	}
	if err != nil {
		return err
	}
	if !job.Printable(man) && man.Engine != "" {
		// A dump of many entries (MongoDB's): its plugin converts it to
		// the engine's stock tool format.
		host, eng, err := e.openEngine(ctx, man.Engine)
		if err != nil {
			return err
		}
		defer host.Close()
		progress, stop := e.track("restore", 0)
		err = job.ExportStream(ctx, r, eng, man, e.stdout, progress)
		stop()
		return err
	}
	var total int64
	if len(man.Entries) == 1 {
		total = man.Entries[0].Size
	}
	progress, stop := e.track("restore", total)
	err = job.RestoreStream(ctx, r, man, e.stdout, progress)
	stop()
	return err
}

func (e *env) reportRestore(rep *job.RestoreReport) error {
	m := rep.Backup
	if e.jsonOut {
		return e.printJSON(restoreDoc(rep))
	}
	if rep.DataDir == "" {
		fmt.Fprintf(e.stdout, "restored backup %s (%s) in %.1fs\n", m.ID.Short(), rep.Mode, rep.Duration.Seconds())
		return nil
	}
	if rep.Skipped {
		fmt.Fprintf(e.stdout, "backup %s was restored into %s by an earlier run; nothing to do\n", m.ID.Short(), rep.DataDir)
		return nil
	}
	if r := rep.Replayed; r != nil {
		last := ""
		if !r.ReachedTime.IsZero() {
			last = " (last commit " + r.ReachedTime.UTC().Format(time.RFC3339) + ")"
		}
		fmt.Fprintf(e.stdout, "restored backup %s into %s in %.1fs, archived log applied up to %s%s for %s; start the server on it\n",
			m.ID.Short(), rep.DataDir, rep.Duration.Seconds(), r.Reached, last, rep.To)
	} else {
		fmt.Fprintf(e.stdout, "restored backup %s into %s in %.1fs; start the server on it to recover to %s\n",
			m.ID.Short(), rep.DataDir, rep.Duration.Seconds(), rep.To)
	}
	if rep.Note != "" {
		fmt.Fprintf(e.stdout, "note: %s\n", rep.Note)
	}
	return nil
}

// jobError turns a job's complaint about its request into a usage error.
func (e *env) jobError(err error) error {
	if errors.Is(err, job.ErrUsage) {
		return &usageError{err: err}
	}
	return err
}

// printWindows prints each lineage's recoverable window and its gaps.
func printWindows(out io.Writer, ws []job.Window) {
	for _, w := range ws {
		fmt.Fprintf(out, "\nrecoverable window of %s (%s):\n  from %s (%s)\n  to   %s (%s)\n", w.Stream, w.Engine,
			w.EarliestTime.Local().Format(time.DateTime+".000"), w.EarliestPosition,
			w.LatestTime.Local().Format(time.DateTime+".000"), w.LatestPosition)
		for _, g := range w.Gaps {
			fmt.Fprintf(out, "  GAP: %s; points in between cannot be recovered\n", g)
		}
		if w.Note != "" {
			fmt.Fprintf(out, "  %s\n", w.Note)
		}
	}
}

// restoreDoc is the JSON report of a restore (--json, --report-file).
func restoreDoc(rep *job.RestoreReport) map[string]any {
	m := rep.Backup
	doc := map[string]any{"backup": m.ID.String(), "data_dir": rep.DataDir, "mode": rep.Mode,
		"position": m.Position, "consistent_time": m.ConsistentTime, "duration_s": rep.Duration.Seconds()}
	if rep.Mode == job.ModeLogical && !rep.To.IsLatest() {
		doc["target"] = rep.To.String()
		if rep.Reach != nil {
			doc["log_reaches"] = rep.Reach.EndText
			doc["log_reaches_time"] = rep.Reach.LastTime
		}
	}
	if rep.Skipped {
		doc["skipped"] = true
	}
	if rep.Mode == job.ModePhysical || rep.Mode == repo.ModeSnapshot {
		doc["target"] = rep.To.String()
		if rep.Reach != nil {
			doc["log_reaches"] = rep.Reach.EndText
			doc["log_reaches_time"] = rep.Reach.LastTime
		}
		if rep.Note != "" {
			doc["note"] = rep.Note
		}
		if r := rep.Replayed; r != nil {
			doc["log_applied_to"] = r.Reached.String()
			doc["log_applied_time"] = r.ReachedTime
		}
	}
	return doc
}

func restoreJSON(rep *job.RestoreReport) []byte {
	b, _ := json.Marshal(restoreDoc(rep))
	return b
}
