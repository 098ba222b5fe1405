// Package sidecarapi is what the controller needs from a sidecar, and
// nothing more: probe it, ask it for a backup, start and stop archiving,
// read its status. The sidecar's own gRPC API (sidecar/agent/agentpb) is
// richer; its client adapts to this interface, and the reconcilers take a
// Dialer so they never see gRPC.
//
// It imports nothing of Amber's.
package sidecarapi

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Role of a database server, as its plugin reports it.
type Role string

const (
	RolePrimary Role = "primary"
	RoleStandby Role = "standby"
)

// ProbeResult is what a sidecar says about its database.
type ProbeResult struct {
	Healthy bool
	Role    Role
	// Lag is how far a standby's replay is behind its primary (zero for a
	// primary).
	Lag time.Duration
	// Archiving reports whether this sidecar is archiving now.
	Archiving bool
	// SystemID identifies the database cluster (replicas share it).
	SystemID string
	// ServerVersion as the server reports it.
	ServerVersion string
}

// BackupRequest asks a sidecar for one backup.
type BackupRequest struct {
	// Name groups the database's backups in the repository (listing and
	// retention): the StatefulSet's namespace/name.
	Name string
	// Mode is "physical" or "logical".
	Mode string
	// UploadBytesPerSecond caps upload bandwidth; 0: no cap.
	UploadBytesPerSecond int64
	// Tags are stored with the backup.
	Tags map[string]string
}

// BackupResult is a finished backup.
type BackupResult struct {
	ID string
	// Bytes read from the database, and bytes the backup added to the
	// repository (after deduplication, compression and encryption).
	Bytes, BytesAdded int64
	// File-level physical backups: files read, files reused unchanged
	// from the previous backup, and the reused files' bytes.
	FilesRead, FilesReused, BytesReused int64
}

// ArchiveRequest asks a sidecar to archive continuously.
type ArchiveRequest struct {
	UploadBytesPerSecond int64
}

// Status is a sidecar's view of its own work.
type Status struct {
	Archiving bool
	// ArchivedUpTo is the time of the newest archived log, if any: the
	// recoverable window's end.
	ArchivedUpTo time.Time
	// WindowStart is where the recoverable window begins (the oldest
	// backup that archived log continues from); Gaps is log missing in
	// between, as people read it.
	WindowStart time.Time
	Gaps        []string
	// RunningBackup names the backup request in progress, if any.
	RunningBackup string
}

// Position is a point in the database's log, as its plugin reports it:
// Epoch and Offset order positions of one lineage, Text is the engine's
// notation.
type Position struct {
	Epoch  uint32
	Offset uint64
	Text   string
}

// FreezeRequest asks a sidecar to quiesce its database for a volume
// snapshot.
type FreezeRequest struct {
	// Lease: the database thaws by itself unless Thaw or RenewLease comes
	// within it.
	Lease time.Duration
	// Label the engine records (PostgreSQL: the backup label).
	Label string
}

// Frozen is a freeze held under a lease.
type Frozen struct {
	LeaseID   string
	ExpiresAt time.Time
	// Position is the log position at freeze time (PostgreSQL: the backup's
	// start); a restored snapshot replays log from here.
	Position       Position
	ConsistentTime time.Time
}

// File is a small file a restored snapshot needs in its data directory.
type File struct {
	Name    string
	Content []byte
	Mode    uint32
}

// Thawed is what a snapshot taken under a freeze needs to be restorable.
type Thawed struct {
	// Consistent: a restored snapshot must replay log at least to here.
	Consistent     Position
	ConsistentTime time.Time
	Files          []File
	Metadata       map[string]string
}

// ErrLeaseExpired is returned (wrapped) by Thaw and RenewLease when the
// freeze's lease ran out first: the database thawed by itself and a
// snapshot taken under the freeze must be discarded.
var ErrLeaseExpired = errors.New("the freeze lease expired before the thaw; the database thawed by itself")

// Sidecar is one connection to a sidecar's API.
type Sidecar interface {
	Probe(ctx context.Context) (ProbeResult, error)
	// Backup runs a backup and returns when it is stored.
	Backup(ctx context.Context, req BackupRequest) (BackupResult, error)
	StartArchiving(ctx context.Context, req ArchiveRequest) error
	StopArchiving(ctx context.Context) error
	// Freeze quiesces the database under a lease; RenewLease extends it to
	// lease from now; Thaw ends it.
	Freeze(ctx context.Context, req FreezeRequest) (Frozen, error)
	RenewLease(ctx context.Context, leaseID string, lease time.Duration) (time.Time, error)
	Thaw(ctx context.Context, leaseID string) (Thawed, error)
	Status(ctx context.Context) (Status, error)
	Close() error
}

// Dialer connects to the sidecar of a pod (over mTLS, with the
// certificates the controller issues).
type Dialer interface {
	Dial(ctx context.Context, pod *corev1.Pod) (Sidecar, error)
}
