// Package repo implements Amber's repository format (docs/repository-format.md):
// content-defined chunking, deduplication, zstd compression, authenticated
// encryption under a master key held in password-wrapped key slots, packs and
// index files, backup manifests written last, verification and prune, and the
// namespace for whole log segments (PostgreSQL WAL, MySQL/MariaDB binlog, MongoDB oplog).
//
// repo writes through sidecar/storage and knows nothing of databases: it must
// never import plugins/ or sidecar/pluginhost.
package repo
