// Package controllers holds amber-controller's reconcilers:
//
//   - PolicyReconciler: runs each BackupPolicy's cron schedule (creating
//     Backup objects) and keeps exactly one archiver per StatefulSet when
//     archiving is on, moving it on failover.
//   - BackupReconciler: picks the replica a Backup is taken from by
//     probing the sidecars, asks that sidecar to back up, records the
//     result and prunes per the policy's retention.
//   - RestoreReconciler: validates Restores; restoring into clone
//     StatefulSets is not implemented yet and its condition says so.
//
// Sidecars are reached only through sidecarapi.Dialer; time only through a
// clock.Clock, so schedules are tested without sleeping. It must never
// import an engine plugin or the plugin host.
package controllers
