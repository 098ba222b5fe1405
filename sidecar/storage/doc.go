// Package storage defines the Backend interface through which Amber reads and
// writes objects, whatever holds them: a local directory, Backblaze B2 or an S3
// bucket. It owns the error vocabulary of storage (ErrNotFound, IsPermanent,
// RetryAfter) so that retry policy lives in one wrapper (package retry) and not
// in every caller.
//
// Backends live in sub-packages (file, b2, s3) and all pass the shared suite in
// storagetest. Storage knows nothing of the repository format: it must never
// import sidecar/repo, sidecar/archive, sidecar/agent or sidecar/pluginhost.
package storage
