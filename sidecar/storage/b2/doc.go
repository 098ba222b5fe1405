// Package b2 is the Backblaze B2 storage backend: a storage.Backend over B2's
// native API, built on blazer's low-level package
// (github.com/Backblaze/blazer/base).
//
// It owns the mapping of object names onto a bucket and prefix, small and
// large-file uploads (parts hashed and sent in parallel, the file visible only
// after b2_finish_large_file), ranged downloads checked against the stored
// SHA1, listing of the latest visible version of each name, removal by hide
// marker (or, with Config.Purge, of every version of a name), a conditional
// create checked against the name's versions, Object Lock retention on upload
// (except for the names amber removes routinely), and the translation of B2's
// errors into storage's vocabulary (ErrNotFound, Permanent, RetryAfter).
//
// Retries: blazer's high-level package (github.com/Backblaze/blazer/b2) retries
// transient errors in an unbounded loop and hides status codes, so this package
// uses blazer/base, which makes exactly one request per call. The only repeat
// here is one re-authorisation when B2 reports an expired or invalid account
// token; every other failure is returned at once, for storage/retry to judge.
//
// Object Lock: blazer v0.7.2 cannot send retention with an upload. When
// Config.LockDays is set, a RoundTripper around blazer's HTTP client adds the
// documented X-Bz-File-Retention-Mode and
// X-Bz-File-Retention-Retain-Until-Timestamp headers to b2_upload_file and a
// fileRetention object to b2_start_large_file's JSON body, so each object is
// locked atomically with its upload (no window between upload and lock).
// What a lock protects, and what it does not, is said at Config.LockDays.
//
// Sub-package b2fake is an in-memory B2 API server for tests.
//
// Like all backends, b2 must never import sidecar/repo, sidecar/archive,
// sidecar/agent or sidecar/pluginhost.
package b2
