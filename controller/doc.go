// Package controller is the root of amber-controller, the Kubernetes side of
// Amber. It holds no code of its own; its parts are:
//
//   - api/v1alpha1: the CRD types BackupPolicy, Backup and Restore (group
//     amber.dev); config/crd holds their generated YAML.
//   - inject: the mutating webhook that adds the sidecar to opted-in pods.
//   - certs: the controller's CA, the webhook's serving certificate and the
//     sidecars' mTLS certificates.
//   - sidecarapi: the small interface the controller needs from a sidecar
//     (probe, back up, archive); the agent's gRPC client implements it.
//   - controllers: the reconcilers (schedules, replica choice, archiver
//     placement, retention, restores).
//   - retention: pruning a repository after a backup.
//   - kubectl: `amber k8s backup|ls|status`, the kubectl plugin `kubectl
//     amber`; linked into the amber binary, it imports only api/v1alpha1
//     of the controller.
//
// The controller talks to sidecars only through sidecarapi. It may import
// sidecar/storage/location, sidecar/repo and plugins/api/clock for
// repository access and time; it must never import an engine plugin or the
// plugin host.
package controller
