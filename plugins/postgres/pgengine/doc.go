// Package pgengine owns Amber's PostgreSQL knowledge: probing a server,
// physical backups over the replication protocol (BASE_BACKUP), restoring
// them into an empty data directory with recovery settings, logical dumps
// with pg_dump/pg_restore (one stream, or by section and table from one
// exported snapshot with parallel dump and restore, roles and tablespaces
// with pg_dumpall, SQL export for psql), continuous WAL archiving through a physical
// replication slot, and Freeze/Thaw with pg_backup_start/pg_backup_stop.
//
// It is a plain Go package: it knows nothing about storage, repositories or
// gRPC. Callers hand it sinks and sources of named byte streams and tell the
// archiver which WAL positions are durable. It must never import sidecar/ or
// controller/ (plugins/api adapts it to the plugin contract).
package pgengine
