// Package inject is the mutating admission webhook that adds Amber's
// sidecar to the pods that opt in (docs/annotations.md). It never blocks a
// pod: whatever goes wrong — a malformed annotation, an unknown policy, an
// unreachable API — the pod is admitted unchanged and a Warning Event names
// the problem. A pod already injected is left as it is.
//
// It imports the CRD types and certs; never the sidecar or a plugin.
package inject
