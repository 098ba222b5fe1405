// Package mgengine owns Amber's MongoDB knowledge: connecting from a
// mongodb:// URI (with errors that name the fix and never the password),
// probing a server (version, role, replica set, oplog), logical dumps of
// every database and collection as BSON, read in parallel, with the oplog
// window that makes them consistent, and their parallel restore (data
// first, indexes after); oplog positions, archiving the oplog from a
// tailable cursor, and replaying it, idempotently, up to a target.
//
// It is a plain Go package: it knows nothing about storage, repositories or
// gRPC, and must never import sidecar/ or controller/ (plugins/mongodb
// adapts it to the plugin contract).
package mgengine
