package cli

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/repo"
)

// engineRestore holds the flags of `amber restore --engine`.
type engineRestore struct {
	engine, dataDir, dsn                string
	toTime, toLSN, toXID, toName, owner string
	exclusive, keepArchiving            bool
}

func (o engineRestore) targetTime() (time.Time, error) {
	if o.toTime == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, o.toTime)
	if err != nil {
		return t, usagef("--to-time %q is not an RFC 3339 time such as 2026-11-21T10:15:00Z", o.toTime)
	}
	return t, nil
}

func (e *env) restoreEngineStdout(ctx context.Context, engine, ref, name string) error {
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	m, err := pickBackup(ctx, r, ref, name, engine, "logical", time.Time{})
	if err != nil {
		return err
	}
	return e.writeStdout(ctx, r, m)
}

func (e *env) restoreEngine(ctx context.Context, ref, name string, o engineRestore) error {
	if (o.dataDir == "") == (o.dsn == "") {
		return usagef("--engine restores need exactly one of --data-dir (physical) or --dsn (logical)")
	}
	targets := 0
	for _, v := range []string{o.toTime, o.toLSN, o.toXID, o.toName} {
		if v != "" {
			targets++
		}
	}
	if targets > 1 {
		return usagef("give at most one of --to-time, --to-lsn, --to-xid, --to-name")
	}
	target, err := o.targetTime()
	if err != nil {
		return err
	}
	mode := "physical"
	if o.dsn != "" {
		mode = "logical"
		if targets > 0 {
			return usagef("a logical restore has no point in time: drop --to-*")
		}
	}
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	m, err := pickBackup(ctx, r, ref, name, o.engine, mode, target)
	if err != nil {
		return err
	}
	rec, err := engineRecord(m)
	if err != nil {
		return err
	}
	host, eng, err := e.openEngine(ctx, o.engine)
	if err != nil {
		return err
	}
	defer host.Close()
	src := &entrySource{r: r, m: m}
	defer src.close()
	start := time.Now()
	if mode == "logical" {
		if _, err := eng.LogicalRestore(ctx, api.RestoreRequest{Target: api.Target{DSN: api.Secret(o.dsn)}, Backup: rec}, src); err != nil {
			return fmt.Errorf("restore %s into the database: %w", m.ID.Short(), err)
		}
		return e.reportRestore(m, "", start)
	}

	// Physical: the window must reach the target.
	stream := streamName(o.engine, rec.SystemID)
	if !target.IsZero() {
		if err := checkTarget(ctx, r, stream, target); err != nil {
			return err
		}
	}
	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return err
	}
	settings, uid, gid, err := ownerSettings(o.owner)
	if err != nil {
		return err
	}
	fetch, err := e.walFetchCommand(dataDir, stream, uid, gid)
	if err != nil {
		return err
	}
	opts := map[string]string{"restore_command": fetch}
	switch {
	case o.toTime != "":
		opts["recovery_target_time"] = target.UTC().Format(time.RFC3339Nano)
	case o.toLSN != "":
		opts["recovery_target_lsn"] = o.toLSN
	case o.toXID != "":
		opts["recovery_target_xid"] = o.toXID
	case o.toName != "":
		opts["recovery_target_name"] = o.toName
	}
	if o.exclusive {
		opts["recovery_target_inclusive"] = "false"
	}
	if !o.keepArchiving {
		// A restored copy shares the original's system identifier: left
		// archiving, it would write its own timeline into the original's
		// archive. Turn archiving on again once it is meant to replace it.
		opts["setting.archive_mode"] = "off"
	}
	req := api.RestoreRequest{Target: api.Target{DataDir: dataDir, Settings: settings}, Backup: rec, Options: opts}
	if _, err := eng.PhysicalRestore(ctx, req, src); err != nil {
		return fmt.Errorf("restore %s into %s: %w", m.ID.Short(), dataDir, err)
	}
	return e.reportRestore(m, dataDir, start)
}

func (e *env) reportRestore(m *repo.Manifest, dataDir string, start time.Time) error {
	if e.jsonOut {
		return e.printJSON(map[string]any{"backup": m.ID.String(), "data_dir": dataDir, "mode": m.Mode,
			"position": m.Position, "consistent_time": m.ConsistentTime, "duration_s": time.Since(start).Seconds()})
	}
	if dataDir == "" {
		fmt.Fprintf(e.stdout, "restored backup %s (%s) in %.1fs\n", m.ID.Short(), m.Mode, time.Since(start).Seconds())
		return nil
	}
	fmt.Fprintf(e.stdout, "restored backup %s into %s in %.1fs; start the server on it to recover to the target\n",
		m.ID.Short(), dataDir, time.Since(start).Seconds())
	return nil
}

// ownerSettings: files of a restored server belong to the user who runs it.
func ownerSettings(owner string) (map[string]string, int, int, error) {
	if owner == "" {
		if os.Geteuid() != 0 {
			return nil, os.Geteuid(), os.Getegid(), nil
		}
		owner = "postgres"
	}
	u, err := user.Lookup(owner)
	if err != nil {
		return nil, 0, 0, usagef("--owner %q: %v", owner, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return map[string]string{"owner_uid": u.Uid, "owner_gid": u.Gid}, uid, gid, nil
}

// walFetchCommand writes what `amber wal-fetch` needs beside the data
// directory (never inside it, so it is not copied into later backups) and
// returns the restore_command that calls it.
func (e *env) walFetchCommand(dataDir, stream string, uid, gid int) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	pw, err := e.password()
	if err != nil {
		return "", err
	}
	aux := dataDir + ".amber"
	if err := os.MkdirAll(aux, 0o700); err != nil {
		return "", err
	}
	pwFile := filepath.Join(aux, "password")
	if err := os.WriteFile(pwFile, pw, 0o600); err != nil {
		return "", err
	}
	for _, p := range []string{aux, pwFile} {
		if err := os.Chown(p, uid, gid); err != nil && os.Geteuid() == 0 {
			return "", err
		}
	}
	loc := e.repoURL
	if !strings.Contains(loc, "://") {
		if loc, err = filepath.Abs(loc); err != nil {
			return "", err
		}
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'" }
	return fmt.Sprintf("%s wal-fetch --repo %s --password-file %s --cache-dir - --stream %s %%f %%p",
		q(exe), q(loc), q(pwFile), q(stream)), nil
}
