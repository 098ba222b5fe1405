// Package archive is the host side of continuous log archiving: it receives
// log segments (PostgreSQL WAL, MySQL/MariaDB binlog, MongoDB oplog) from an engine plugin's Archive stream,
// makes each one durable in the repository, removes the partial segments it
// supersedes, and only then tells the plugin the position up to which the
// database may release its log.
//
// archive knows storage only through sidecar/repo and databases only
// through the plugin contract (plugins/api); it never parses SQL or engine
// file formats.
package archive
