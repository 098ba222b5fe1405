// Package job runs Amber's work: backups from a stream or through an engine
// plugin, restores (choosing the backup for a target and checking the target
// against the archived log), the continuous archiving loop, recoverable
// windows, and the PostgreSQL-style log-file commands that a database server
// runs itself (archive_command, restore_command).
//
// The command line (sidecar/cli) and the in-pod agent call the same
// functions: flags or API requests in, a job, a report out. Jobs take what
// they need — a repository, an engine, a clock, a logger in the context —
// as arguments; they never read flags, the environment or a terminal.
//
// Engine knowledge stays in the plugins: a job knows positions, epochs and
// recovery targets only as the plugin contract (plugins/api) types them,
// and asks the plugin to parse, describe and configure everything in the
// engine's own terms. A rule for the next engine's author: if a line here
// would name a WAL file, a binlog, an oplog, a recovery setting or a file
// owner, it belongs in the plugin, reached through the contract.
//
// job may import storage, repo, archive, pluginhost and plugins/api; it
// must never import sidecar/cli or anything under controller/.
package job
