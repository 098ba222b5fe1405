// Package myengine owns Amber's MySQL and MariaDB knowledge: connecting
// from a DSN, probing a server (version, role, lineage, binlog health and
// privileges), binlog positions, and consistent logical dumps written as
// SQL that the stock `mariadb`/`mysql` client loads, and their restore.
//
// It is a plain Go package: it knows nothing about storage, repositories or
// gRPC, and must never import sidecar/ or controller/ (plugins/mysql adapts
// it to the plugin contract).
package myengine
