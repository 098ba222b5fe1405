// Package retry wraps a storage.Backend so that transient failures are
// retried in one place instead of in every caller: exponential backoff with
// jitter, at least as long as a server's Retry-After (storage.RetryAfter),
// bounded in attempts and in total time, cut short by the context, and never
// for errors storage.IsPermanent reports (not found, denied, cancelled).
//
// Readers returned by Load heal themselves: a connection reset or a stream
// that ends before the requested length (or, for whole-object reads, before
// the object's size) is reopened at the first byte not yet delivered, so a
// caller sees the complete byte stream or a final error, never silently
// short data.
//
// Time goes through Options.Now and Options.Sleep so tests run without
// sleeping. Options.OnRetry lets callers log each retry.
//
// This package depends only on package storage; it must never import
// sidecar/repo, sidecar/archive, sidecar/agent or sidecar/pluginhost.
package retry
