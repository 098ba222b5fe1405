// Package mgengine owns Amber's MongoDB knowledge: connecting from a
// mongodb:// URI (with errors that name the fix and never the password),
// probing a server (version, role, replica set, oplog), and logical dumps
// of every database and collection as BSON, read in parallel, and their
// parallel restore (data first, indexes after).
//
// It is a plain Go package: it knows nothing about storage, repositories or
// gRPC, and must never import sidecar/ or controller/ (plugins/mongodb
// adapts it to the plugin contract).
package mgengine
