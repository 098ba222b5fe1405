// Package faulty wraps a storage.Backend and injects faults into it, so that
// the layers above (package retry, the repository, the archiver) are tested
// against the failures real object stores produce: transient and permanent
// errors, throttling with Retry-After, latency, Load streams that end early
// or break with a connection reset, Saves that fail after reading part
// of their source, and Saves, Creates and Removes that succeed but whose
// reply is lost. Which calls fail is chosen by operation, by call number
// or by probability from a seeded random source, so a failing run can be
// replayed. It follows kopia's FaultyStorage; fault injection lives in this
// wrapper, never as flags inside real backends.
//
// This package is for tests. It depends only on package storage and must
// never import sidecar/repo, sidecar/archive, sidecar/agent or
// sidecar/pluginhost.
package faulty
