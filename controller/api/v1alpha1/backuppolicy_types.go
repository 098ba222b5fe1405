package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Engine names a database engine; each has its own plugin.
// +kubebuilder:validation:Enum=postgres;mysql;mongodb
type Engine string

const (
	EnginePostgres Engine = "postgres"
	EngineMySQL    Engine = "mysql"
	EngineMongoDB  Engine = "mongodb"
)

// Mode is how a backup copies the database.
// +kubebuilder:validation:Enum=physical;logical;snapshot
type Mode string

const (
	ModePhysical Mode = "physical"
	ModeLogical  Mode = "logical"
	// ModeSnapshot takes CSI VolumeSnapshots of the pod's volumes while the
	// sidecar holds the database frozen under a lease, and records them in
	// the repository with the positions a restore needs.
	ModeSnapshot Mode = "snapshot"
)

// ReplicaPreference says which pod of a StatefulSet a backup is taken from.
// +kubebuilder:validation:Enum=standby;primary;any
type ReplicaPreference string

const (
	// PreferStandby takes the standby with the least lag within MaxLag, and
	// the primary when no standby qualifies.
	PreferStandby ReplicaPreference = "standby"
	// PreferPrimary takes the primary only.
	PreferPrimary ReplicaPreference = "primary"
	// PreferAny takes the healthy pod with the least lag within MaxLag.
	PreferAny ReplicaPreference = "any"
)

// Compression is how the sidecar compresses the backup data it stores:
// zstd at its fastest level, its default level (3) or its "better" level,
// or S2 (faster, larger). The values of amber's --compression.
// +kubebuilder:validation:Enum=fastest;default;better;s2
type Compression string

const (
	CompressionFastest Compression = "fastest"
	CompressionDefault Compression = "default"
	CompressionBetter  Compression = "better"
	CompressionS2      Compression = "s2"
)

// SecretRef names a Secret in the policy's namespace.
type SecretRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// PasswordKey is the key holding the repository password.
	// Other keys are storage credentials named like the environment
	// variables the storage backends read (AWS_ACCESS_KEY_ID,
	// AWS_SECRET_ACCESS_KEY, B2_APPLICATION_KEY_ID, B2_APPLICATION_KEY).
	// +kubebuilder:default=password
	// +optional
	PasswordKey string `json:"passwordKey,omitempty"`
}

// RepositorySpec says where backups are stored.
type RepositorySpec struct {
	// URL of the repository: file:///path, s3://bucket/prefix or
	// b2://bucket/prefix (query parameters as the amber CLI takes them).
	// +kubebuilder:validation:Pattern=`^(file|s3|b2)://\S+$`
	URL string `json:"url"`
	// CredentialsSecret holds the repository password and storage keys.
	// It is mounted into the sidecar as files, never passed in the
	// environment.
	CredentialsSecret SecretRef `json:"credentialsSecret"`
}

// RetentionSpec says which backups prune keeps. A backup is kept when any
// rule keeps it; with no rule set every backup is kept.
type RetentionSpec struct {
	// KeepLast keeps the newest N backups.
	// +kubebuilder:validation:Minimum=0
	// +optional
	KeepLast int32 `json:"keepLast,omitempty"`
	// KeepWithin keeps every backup younger than this (a Go duration,
	// e.g. 168h).
	// +optional
	KeepWithin *metav1.Duration `json:"keepWithin,omitempty"`
}

// ReplicaSpec chooses the pod a backup is taken from.
type ReplicaSpec struct {
	// Preference: standby (default), primary or any.
	// +kubebuilder:default=standby
	// +optional
	Preference ReplicaPreference `json:"preference,omitempty"`
	// MaxLag is the most replication lag a standby may have to be backed
	// up; a standby further behind is never chosen. Unset: no bound.
	// +optional
	MaxLag *metav1.Duration `json:"maxLag,omitempty"`
}

// ThrottleSpec bounds the bandwidth a backup or the archiver uses.
type ThrottleSpec struct {
	// UploadBytesPerSecond caps upload bandwidth (a quantity, e.g. 50Mi).
	// +optional
	UploadBytesPerSecond *resource.Quantity `json:"uploadBytesPerSecond,omitempty"`
}

// BackupPolicySpec is what a platform engineer declares per database.
type BackupPolicySpec struct {
	// Engine of the database: postgres, mysql or mongodb.
	Engine Engine `json:"engine"`
	// Repository where backups and archived log go.
	Repository RepositorySpec `json:"repository"`
	// Schedule of backups in cron format (five fields, or @daily, @hourly,
	// @every 6h ...), in UTC. Empty: no scheduled backups.
	// +kubebuilder:validation:Pattern=`^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every [0-9]+[0-9hmsu.]*|(\S+ ){4}\S+)$`
	// +optional
	Schedule string `json:"schedule,omitempty"`
	// Suspend stops scheduled backups (archiving goes on).
	// +optional
	Suspend bool `json:"suspend,omitempty"`
	// DataDir is the database's data directory (PostgreSQL: PGDATA) as the
	// database container sees it, for the pods of this policy that have no
	// amber.dev/data-dir annotation (the annotation wins): the webhook
	// mounts it into the sidecar, whose physical backups then read the
	// files (file-level, incremental). An absolute, clean path. Reaches a
	// pod when it is created.
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^/[^\x00-\x1f]*$`
	// +kubebuilder:validation:XValidation:rule="self == '/' || !(self.endsWith('/') || self.contains('//') || self.contains('/./') || self.contains('/../') || self.endsWith('/.') || self.endsWith('/..'))",message="dataDir must be a clean absolute path: no trailing slash, no //, . or .. elements"
	// +optional
	DataDir string `json:"dataDir,omitempty"`
	// Retention applied by a prune after each successful backup.
	// +optional
	Retention RetentionSpec `json:"retention,omitempty"`
	// Mode: physical (default), logical or snapshot (CSI VolumeSnapshots
	// of the pod's volumes under a freeze; see spec.snapshot).
	// +kubebuilder:default=physical
	// +optional
	Mode Mode `json:"mode,omitempty"`
	// Snapshot configures mode: snapshot.
	// +optional
	Snapshot *SnapshotSpec `json:"snapshot,omitempty"`
	// Archive turns continuous log archiving on: exactly one sidecar per
	// StatefulSet archives, and the role moves on failover.
	// +optional
	Archive bool `json:"archive,omitempty"`
	// Replica chooses the pod backups are taken from.
	// +optional
	Replica ReplicaSpec `json:"replica,omitempty"`
	// Throttle bounds bandwidth.
	// +optional
	Throttle ThrottleSpec `json:"throttle,omitempty"`
	// Compression of the data the sidecar stores, for backups and archived
	// log: fastest, default or better (zstd levels) or s2 (less CPU, larger
	// repository; needs an amber that reads S2 blobs). Empty: amber's
	// default, fastest. Readers need no setting, so a change affects only
	// new data. The webhook gives it to the sidecar (AMBER_COMPRESSION), so
	// it reaches a pod when the pod is created.
	// +optional
	Compression Compression `json:"compression,omitempty"`
	// Drills schedule restore drills: a restore into a throwaway clone,
	// an optional probe, RTO and RPO recorded, the clone deleted.
	// +optional
	Drills *DrillSpec `json:"drills,omitempty"`
}

// SnapshotSpec says how mode: snapshot takes its VolumeSnapshots.
type SnapshotSpec struct {
	// VolumeSnapshotClassName of the VolumeSnapshots; empty: the cluster's
	// default class for the volumes' CSI driver.
	// +optional
	VolumeSnapshotClassName string `json:"volumeSnapshotClassName,omitempty"`
	// Lease of the freeze: the sidecar thaws the database by itself when
	// the controller neither thaws nor renews it within this time (a
	// controller that crashes never leaves it frozen). The controller
	// renews it while it waits. Default 1m.
	// +optional
	Lease *metav1.Duration `json:"lease,omitempty"`
	// Timeout bounds the whole snapshot: frozen until every VolumeSnapshot
	// is cut, then until every one is readyToUse. Default 10m.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// DrillTarget is the point a drill restores to.
// +kubebuilder:validation:Enum=latest;random
type DrillTarget string

const (
	DrillLatest DrillTarget = "latest"
	DrillRandom DrillTarget = "random"
)

// DrillSpec says when and how to rehearse a restore.
type DrillSpec struct {
	// Schedule of drills, cron format like spec.schedule (UTC).
	// +kubebuilder:validation:Pattern=`^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every [0-9]+[0-9hmsu.]*|(\S+ ){4}\S+)$`
	Schedule string `json:"schedule"`
	// Target: latest (default: everything the archive holds) or random (a
	// random instant of the recoverable window).
	// +kubebuilder:default=latest
	// +optional
	Target DrillTarget `json:"target,omitempty"`
	// Probe is an SQL query run on the clone once it is ready; the drill
	// fails when it errors or returns no row.
	// +optional
	Probe string `json:"probe,omitempty"`
	// StatefulSet to drill when several carry the policy; default: the
	// first archiving one.
	// +optional
	StatefulSet string `json:"statefulSet,omitempty"`
	// Timeout of one drill, request to ready and probed; default 15m.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// DrillStatus records the last drill.
type DrillStatus struct {
	// LastScheduleTime is the schedule time of the last drill started.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`
	// NextScheduleTime is when the next drill starts.
	// +optional
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`
	// Restore is the drill's Restore object (deleted when the drill ends).
	// +optional
	Restore string `json:"restore,omitempty"`
	// Phase of the last drill: Running, Succeeded or Failed.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// StartedAt and FinishedAt of the last drill.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// +optional
	FinishedAt *metav1.Time `json:"finishedAt,omitempty"`
	// Target the last drill restored to: "latest" or the random time.
	// +optional
	Target string `json:"target,omitempty"`
	// RTO measured: the drill's request to a ready (and probed) database.
	// +optional
	RTO *metav1.Duration `json:"rto,omitempty"`
	// RPO achieved: the drill's request time minus the time of the last
	// transaction the archived log held then (what a disaster at that
	// moment would have lost).
	// +optional
	RPO *metav1.Duration `json:"rpo,omitempty"`
	// Message says what happened, and why a drill failed.
	// +optional
	Message string `json:"message,omitempty"`
	// LastSuccessfulTime is when a drill last succeeded.
	// +optional
	LastSuccessfulTime *metav1.Time `json:"lastSuccessfulTime,omitempty"`
}

// ArchiverStatus names the pod archiving for one StatefulSet.
type ArchiverStatus struct {
	StatefulSet string      `json:"statefulSet"`
	Pod         string      `json:"pod"`
	Since       metav1.Time `json:"since"`
	// RecoverableFrom and RecoverableTo bound the recoverable window of
	// the StatefulSet's database (every instant between them can be
	// restored, except inside Gaps), as its archiver last computed it.
	// +optional
	RecoverableFrom *metav1.Time `json:"recoverableFrom,omitempty"`
	// +optional
	RecoverableTo *metav1.Time `json:"recoverableTo,omitempty"`
	// Gaps is log missing from the repository inside the window, as
	// people read it; `amber ls` shows the same.
	// +optional
	Gaps []string `json:"gaps,omitempty"`
}

// BackupPolicyStatus is what the controller observed.
type BackupPolicyStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready (schedule and references valid), Archiving.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// LastScheduleTime is the schedule time of the last Backup created.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`
	// NextScheduleTime is when the next Backup will be created.
	// +optional
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`
	// LastSuccessfulBackup names the Backup object of the newest good backup.
	// +optional
	LastSuccessfulBackup string `json:"lastSuccessfulBackup,omitempty"`
	// LastSuccessfulTime is when the newest good backup finished; its age
	// is shown by `kubectl get backuppolicies`.
	// +optional
	LastSuccessfulTime *metav1.Time `json:"lastSuccessfulTime,omitempty"`
	// Archivers lists the archiving pod of each StatefulSet.
	// +optional
	Archivers []ArchiverStatus `json:"archivers,omitempty"`
	// Drill records the last restore drill (spec.drills).
	// +optional
	Drill *DrillStatus `json:"drill,omitempty"`
}

// BackupPolicy says how the databases of the StatefulSets whose pods carry
// `amber.dev/policy: <name>` are backed up.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=bp,categories=amber
// +kubebuilder:printcolumn:name="Engine",type=string,JSONPath=`.spec.engine`
// +kubebuilder:printcolumn:name="Schedule",type=string,JSONPath=`.spec.schedule`
// +kubebuilder:printcolumn:name="Archive",type=boolean,JSONPath=`.spec.archive`
// +kubebuilder:printcolumn:name="Last Good",type=date,JSONPath=`.status.lastSuccessfulTime`
// +kubebuilder:printcolumn:name="Recoverable To",type=date,JSONPath=`.status.archivers[0].recoverableTo`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
type BackupPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BackupPolicySpec   `json:"spec,omitempty"`
	Status BackupPolicyStatus `json:"status,omitempty"`
}

// BackupPolicyList is a list of BackupPolicy.
//
// +kubebuilder:object:root=true
type BackupPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BackupPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BackupPolicy{}, &BackupPolicyList{})
}
