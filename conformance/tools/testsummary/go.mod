// Tools module for testsummary, which `make test` pipes `go test -json` into.
// Kept apart from the project's go.mod; it needs only the standard library.
module github.com/amber-backup/amber/conformance/tools/testsummary

go 1.26.8
