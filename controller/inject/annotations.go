package inject

// The annotations and label that drive injection; docs/annotations.md
// documents each.
const (
	// LabelInject opts a pod into the webhook: the webhook configuration's
	// objectSelector matches it, as selectors cannot match annotations.
	LabelInject = "amber.dev/inject"
	// AnnotationPolicy names the BackupPolicy (in the pod's namespace).
	AnnotationPolicy = "amber.dev/policy"
	// AnnotationDataVolume names the pod volume holding the database's
	// data; default: the first volume backed by a PersistentVolumeClaim.
	AnnotationDataVolume = "amber.dev/data-volume"
	// AnnotationDataDir is the database's data directory (PGDATA), an
	// absolute path inside the database container on one of its volume
	// mounts. The sidecar mounts that volume read-only at the same path
	// and its physical backups read the files there (file-level,
	// incremental); without it they go over the replication protocol.
	AnnotationDataDir = "amber.dev/data-dir"
	// AnnotationDatabaseContainer names the database container; default:
	// the first container.
	AnnotationDatabaseContainer = "amber.dev/database-container"
	// AnnotationInjected is set by the webhook: the sidecar image injected.
	AnnotationInjected = "amber.dev/injected"
	// AnnotationIdentity is set by the webhook: the DNS name in the
	// sidecar's certificate, the server name the controller dials.
	AnnotationIdentity = "amber.dev/sidecar-identity"
)

// SidecarName is the injected container's name.
const SidecarName = "amber-sidecar"

// Paths inside the sidecar container.
const (
	PathRepository  = "/var/run/amber/repository"
	PathTLS         = "/var/run/amber/tls"
	PathCache       = "/var/cache/amber"
	PathTmp         = "/tmp"
	PathDataDefault = "/var/lib/amber/data"
)

// Volume names added to the pod.
const (
	VolumeRepository = "amber-repository"
	VolumeTLS        = "amber-tls"
	VolumeCache      = "amber-cache"
	VolumeTmp        = "amber-tmp"
)

// DSNKey is the key of the policy's credentials Secret that holds the
// connection string the sidecar uses to reach its local database (for
// PostgreSQL a role with REPLICATION, e.g.
// "host=/var/run/postgresql user=amber dbname=postgres"). It is mounted as a
// file, never put in the environment.
const DSNKey = "dsn"
