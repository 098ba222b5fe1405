package controllers

import (
	amberv1 "github.com/amber-backup/amber/controller/api/v1alpha1"
	"github.com/amber-backup/amber/sidecar/repo"
)

// mysqlDataDirClone reports whether backup m of engine is a MySQL/MariaDB
// backup that a clone restores into its data directory before the server
// starts, as PostgreSQL's: a physical backup (mariadb-backup's stream,
// unpacked and prepared by the init container) or a snapshot backup (the
// claims restored from its VolumeSnapshots). A point-in-time target is
// reached in the same init container, which replays archived binlog
// through a private server on the data directory before the clone's own
// server starts. Logical backups, and Restores that name no backup, load
// into the running server instead (followLogical).
func mysqlDataDirClone(engine amberv1.Engine, m *repo.Manifest) bool {
	if engine != amberv1.EngineMySQL || m == nil {
		return false
	}
	return m.Mode == string(amberv1.ModePhysical) || m.Mode == repo.ModeSnapshot
}

// mysqlDataDir is where the source server kept its data directory
// (@@datadir, recorded with a physical backup and with a snapshot's thaw),
// so the clone's restore lays the copy out, or finds the snapshot's files,
// where the clone's server looks; "" when not recorded (the data volume's
// mount path is used then).
func mysqlDataDir(m *repo.Manifest) string {
	if m.Record == nil {
		return ""
	}
	return m.Record.Metadata["datadir"]
}
