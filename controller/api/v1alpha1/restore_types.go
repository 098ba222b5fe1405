package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RestoreSpec asks for a StatefulSet's database to be restored into a
// clone StatefulSet, at a backup or at a point in time.
//
// +kubebuilder:validation:XValidation:rule="has(self.policyRef) != has(self.repository)",message="give exactly one of policyRef and repository"
// +kubebuilder:validation:XValidation:rule="!(has(self.pointInTime) && has(self.position))",message="give at most one of pointInTime and position"
type RestoreSpec struct {
	// PolicyRef names the BackupPolicy whose repository holds the backup.
	// +optional
	PolicyRef *LocalRef `json:"policyRef,omitempty"`
	// Repository names the repository directly (for a cluster that has
	// only the bucket and the key).
	// +optional
	Repository *RepositorySpec `json:"repository,omitempty"`
	// Engine of the database (required with repository).
	// +optional
	Engine Engine `json:"engine,omitempty"`
	// SourceStatefulSet is the StatefulSet the backup was taken of.
	// +kubebuilder:validation:MinLength=1
	SourceStatefulSet string `json:"sourceStatefulSet"`
	// SourceNamespace is the namespace the backup was taken in; default:
	// the Restore's. The clone is always created in the Restore's.
	// +optional
	SourceNamespace string `json:"sourceNamespace,omitempty"`
	// BackupID restores this backup: alone, to its consistent point; with
	// pointInTime or position (PostgreSQL), from it to that target.
	// +kubebuilder:validation:MinLength=1
	// +optional
	BackupID string `json:"backupID,omitempty"`
	// PointInTime restores the state at this time (needs archived log).
	// +optional
	PointInTime *metav1.Time `json:"pointInTime,omitempty"`
	// Position restores up to this log position, in the engine's notation
	// (PostgreSQL: an LSN such as 0/3000060).
	// +kubebuilder:validation:MinLength=1
	// +optional
	Position string `json:"position,omitempty"`
	// CloneName names the clone StatefulSet; default <source>-restore-<restore name>.
	// +kubebuilder:validation:MaxLength=52
	// +optional
	CloneName string `json:"cloneName,omitempty"`
	// Image of the init container that restores the data (amber); default:
	// the controller's --sidecar-image.
	// +optional
	Image string `json:"image,omitempty"`
}

// RecoveryPoint is where a restored database stands.
type RecoveryPoint struct {
	// Time of the point: the target time, or the time of the last
	// transaction the archived log reaches.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
	// Position in the engine's notation (PostgreSQL: an LSN), when known.
	// +optional
	Position string `json:"position,omitempty"`
	// Description of the target as amber restore reports it.
	// +optional
	Description string `json:"description,omitempty"`
}

// RestoreTimings split the time from the request to a ready database.
type RestoreTimings struct {
	// Scheduling: from the request to the restoring init container's start
	// (clone objects created, volume provisioned, pod scheduled, image ready).
	// +optional
	Scheduling *metav1.Duration `json:"scheduling,omitempty"`
	// DataTransfer: the init container's run (the backup read from the
	// repository and written into the data directory).
	// +optional
	DataTransfer *metav1.Duration `json:"dataTransfer,omitempty"`
	// Recovery: from the init container's end to the database container's
	// readiness (the server replays archived log up to the target).
	// +optional
	Recovery *metav1.Duration `json:"recovery,omitempty"`
}

// RestoreStatus records what happened.
type RestoreStatus struct {
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// CloneName is the clone StatefulSet (its pod is <cloneName>-0).
	// +optional
	CloneName string `json:"cloneName,omitempty"`
	// BackupID is the repository backup the clone was restored from.
	// +optional
	BackupID string `json:"backupID,omitempty"`
	// Progress says what the restore is doing now.
	// +optional
	Progress string `json:"progress,omitempty"`
	// PointReached is the point the clone's database was restored to.
	// +optional
	PointReached *RecoveryPoint `json:"pointReached,omitempty"`
	// LogReachesTime is the time of the last transaction the archived log
	// held when the restore ran (what a restore to the latest point gets).
	// +optional
	LogReachesTime *metav1.Time `json:"logReachesTime,omitempty"`
	// ReadyTime is when the clone's database became ready.
	// +optional
	ReadyTime *metav1.Time `json:"readyTime,omitempty"`
	// RTO is the time from the request (the Restore's creation) to a ready
	// database.
	// +optional
	RTO *metav1.Duration `json:"rto,omitempty"`
	// Timings split the RTO.
	// +optional
	Timings *RestoreTimings `json:"timings,omitempty"`
	// Error says why the restore failed.
	// +optional
	Error string `json:"error,omitempty"`
	// Conditions: Ready says whether the clone's database is ready and why not.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Restore is a request to restore a database into a clone StatefulSet.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=amber
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.sourceStatefulSet`
// +kubebuilder:printcolumn:name="Backup ID",type=string,JSONPath=`.spec.backupID`
// +kubebuilder:printcolumn:name="Point In Time",type=string,JSONPath=`.spec.pointInTime`
// +kubebuilder:printcolumn:name="Clone",type=string,JSONPath=`.status.cloneName`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="RTO",type=string,JSONPath=`.status.rto`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
type Restore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RestoreSpec   `json:"spec,omitempty"`
	Status RestoreStatus `json:"status,omitempty"`
}

// RestoreList is a list of Restore.
//
// +kubebuilder:object:root=true
type RestoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Restore `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Restore{}, &RestoreList{})
}
