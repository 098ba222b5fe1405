// Package agent is the long-running process in a database pod (`amber
// sidecar`): it holds one repository and one engine plugin open and serves
// the controller the agent API (package agentpb, amber.agent.v1) over gRPC
// with mutual TLS 1.3, and Prometheus metrics, /healthz and /readyz over
// plain HTTP on a port of their own.
//
// It owns the agent's state: the one backup that may run, freeze leases it
// handed out, the archiver role (started and stopped on request), the last
// results and errors, and the recoverable window it recomputes. The work
// itself is sidecar/job's: a backup is job.BackupEngine, archiving is
// job.Archive, the window is job.Windows. The agent never chunks, stores or
// reads engine log itself.
//
// Leases are the plugin contract's (api.Serve expires a freeze nobody
// renews, on the plugin's side), so a controller that disappears never
// leaves the database frozen; the agent only passes them through and
// remembers which are held for Status.
//
// agent may import sidecar/job, sidecar/repo, sidecar/archive, plugins/api
// and agentpb; it must never import sidecar/cli or anything under
// controller/, and agentpb must never import agent.
package agent
