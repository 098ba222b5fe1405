//go:build tools

// Package mongotools pins MongoDB's database tools (mongodump,
// mongorestore) for the test bed: build.sh builds them into .deps/bin so
// tests can check that `amber restore --stdout` output loads with the
// stock mongorestore, and benchmarks can compare with mongodump.
package mongotools

import (
	_ "github.com/mongodb/mongo-tools/mongodump/main"
	_ "github.com/mongodb/mongo-tools/mongorestore/main"
)
